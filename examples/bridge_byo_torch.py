"""Bring your own network: a plain torch training loop, recorded with ``Exporter``, fitted with your inputs.

Nothing here comes from ``ufm.settings`` or ``ufm.bridge.networks``: the data,
the model and the loop are written the way a user writes them, and ufm only
records (``Exporter.attach`` on the classifier) and fits (``ufm.fit``).

* Data: ``levels`` latent factors (e.g. 3 x 3 x 3 = 27 items). Item ``i`` has a
  real-valued input ``x_i = sum_f E_f[level_f(i)] + item_scale * u_i``: one
  random embedding per factor level plus an item-specific random vector, in
  ``p = 32`` dimensions. Each item is its own class; training examples are
  ``x_i`` plus small noise (``n_per_class`` per class).
* Model: a wide linear feature layer on the inputs (``h = A x``, no bias) and a
  linear classifier ``fc``; cross-entropy plus the UFM's penalties, written in
  the loss (``feature_decay / 2`` times the squared features per class) and as
  the classifier's weight decay; full-batch SGD with a constant step, float64.
  The features are linear in the inputs, so the input-coupled models with the
  network's own inputs are the network (THEORY §8.2, §8.2b); a ReLU network's
  effective kernel is not its inputs' (``bridge_byo_numpy.py`` shows that).
* Recording: class means, within-class spread and classifier rows on the
  training examples, at log-spaced steps.
* Fit: the attribute table as an integer array, M2 and M2-H given the
  network's own inputs (the class-mean inputs, p x K: their Gram is the
  kernel, so no ``sigma`` or strengths are fitted), and the clock SGD gives,
  ``tau = c * step`` (``clock="linear"``): fitted are the weight decay, the
  start scale, ``c`` and the Grams' overall size.

Run: ``python examples/bridge_byo_torch.py [--out run.npz]`` (about half a minute on one core).
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np


def make_data(levels=(3, 3, 3), p=32, item_scale=1.0, n_per_class=8, noise=0.1, seed=0):
    """Inputs of the items (K x p), the attribute table (K x F), training inputs and labels."""
    rng = np.random.default_rng(seed)
    attributes = np.array(list(itertools.product(*[range(L) for L in levels])))
    K = len(attributes)
    embeddings = [rng.standard_normal((L, p)) / np.sqrt(p) for L in levels]
    X = sum(E[attributes[:, f]] for f, E in enumerate(embeddings)) + item_scale * rng.standard_normal((K, p)) / np.sqrt(p)
    y = np.repeat(np.arange(K), n_per_class)
    X_train = X[y] + noise * rng.standard_normal((len(y), p)) / np.sqrt(p)
    return X, attributes, X_train, y


def train(X, X_train, y, *, width=64, steps=3000, lr=0.5, feature_decay=1e-3, classifier_decay=1e-3,
          init=1e-3, n_records=40, seed=0, attributes=None):
    """Train the linear-feature network with a plain torch loop; return the recorded bridge Run."""
    import torch

    from ufm.bridge import Exporter, log_steps

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    K, p = X.shape
    n_per_class = len(y) // K

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Linear(p, width, bias=False)
            self.fc = torch.nn.Linear(width, K, bias=False)
            for layer in (self.features, self.fc):                 # a small start: the rich regime
                torch.nn.init.normal_(layer.weight, std=init)

        def forward(self, x):
            return self.fc(self.features(x))

    model = Net().double()
    opt = torch.optim.SGD([{"params": model.features.parameters()},
                           {"params": model.fc.parameters(), "weight_decay": classifier_decay}], lr=lr)
    xb, yb = torch.tensor(X_train), torch.tensor(y)
    exporter = Exporter(labels=np.arange(K), attributes=attributes, name="byo torch linear-feature network")
    exporter.attach(model.fc, weight=True)          # records fc's input (the features) and fc.weight
    record_at = set(log_steps(steps, n_records).tolist())
    for step in range(steps + 1):
        if step in record_at:
            with torch.no_grad(), exporter.capture(step, y) as cap:
                cap.loss = float(torch.nn.functional.cross_entropy(model(xb), yb))
        if step == steps:
            break
        h = model.features(xb)
        loss = (torch.nn.functional.cross_entropy(model.fc(h), yb)
                + 0.5 * feature_decay * h.pow(2).sum() / n_per_class)     # feature_decay/2 sum_k ||h_k||^2
        opt.zero_grad()
        loss.backward()
        opt.step()
    exporter.detach()
    return exporter.run()


def main(argv=None, *, levels=(3, 3, 3), steps=3000, bootstrap=30):
    import ufm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also save the recorded run here (.npz)")
    args = ap.parse_args(argv)
    X, attributes, X_train, y = make_data(levels)
    run = train(X, X_train, y, steps=steps, attributes=attributes)
    if args.out:
        run.save(args.out)
    class_inputs = np.stack([X_train[y == k].mean(axis=0) for k in range(len(X))], axis=1)     # p x K
    fit = ufm.fit(run, attributes=attributes, inputs=class_inputs, clock="linear", bootstrap=bootstrap,
                  models=("static", "input_coupled", "feature_penalty"))
    print(fit.message)
    return run, fit


if __name__ == "__main__":
    main()
