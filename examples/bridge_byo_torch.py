"""Bring your own network: a plain torch training loop, recorded with ``Exporter``, fitted with your inputs.

Nothing here comes from ``ufm.settings`` or ``ufm.bridge.networks``: the data,
the model and the loop are written the way a user writes them, and ufm only
records (``Exporter.attach`` on the classifier) and fits (``ufm.fit``).

* Data: ``levels`` latent factors (e.g. 3 x 3 x 3 = 27 items). Item ``i`` has a
  real-valued input ``x_i = sum_f E_f[level_f(i)] + item_scale * u_i``: one
  random embedding per factor level plus an item-specific random vector, in
  ``p = 32`` dimensions. Each item is its own class; training examples are
  ``x_i`` plus small noise (``n_per_class`` per class).
* Model: a two-layer ReLU MLP, a linear classifier ``fc``; cross-entropy, Adam,
  full batch, float32.
* Recording: class means, within-class spread and classifier rows on the
  training examples, at log-spaced steps.
* Fit: the attribute table as an integer array, and M2 given the network's own
  inputs (the class-mean inputs, p x K): M2's kernel is their Gram, so no
  ``sigma`` or strengths are fitted, only the weight decay, the start scale and
  the time map.

Run: ``python examples/bridge_byo_torch.py [--out run.npz]`` (about a minute on one core).
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


def train(X, X_train, y, *, width=128, steps=1500, lr=3e-3, n_records=30, seed=0, attributes=None):
    """Train the MLP with a plain torch loop; return the recorded bridge Run."""
    import torch

    from ufm.bridge import Exporter, log_steps

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    K, p = X.shape

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(p, width), torch.nn.ReLU(),
                                            torch.nn.Linear(width, width), torch.nn.ReLU())
            self.fc = torch.nn.Linear(width, K)

        def forward(self, x):
            return self.fc(self.body(x))

    model = MLP()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xb, yb = torch.tensor(X_train, dtype=torch.float32), torch.tensor(y)
    probe, probe_y = xb, y                             # probe with the training examples: class means and spread
    exporter = Exporter(labels=np.arange(K), attributes=attributes, name="byo torch MLP")
    exporter.attach(model.fc, weight=True)          # records fc's input (the features) and fc.weight
    record_at = set(log_steps(steps, n_records).tolist())
    for step in range(steps + 1):
        if step in record_at:
            model.eval()
            with torch.no_grad(), exporter.capture(step, probe_y) as cap:
                cap.loss = float(torch.nn.functional.cross_entropy(model(probe), yb))
            model.train()
        if step == steps:
            break
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    exporter.detach()
    return exporter.run()


def main(argv=None, *, levels=(3, 3, 3), steps=1500, max_iter=200):
    import ufm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also save the recorded run here (.npz)")
    args = ap.parse_args(argv)
    X, attributes, X_train, y = make_data(levels)
    run = train(X, X_train, y, steps=steps, attributes=attributes)
    if args.out:
        run.save(args.out)
    class_inputs = np.stack([X_train[y == k].mean(axis=0) for k in range(len(X))], axis=1)     # p x K
    fit = ufm.fit(run, attributes=attributes, inputs=class_inputs, max_iter=max_iter)
    print(fit.message)
    return run, fit


if __name__ == "__main__":
    main()
