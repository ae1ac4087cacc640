"""Reference networks: train a small real network on a synthetic setting and record its Gram trajectory.

:func:`train_network` trains, on one of the settings of :mod:`ufm.settings`
(items with latent attributes, each with its own one-hot label), either

* an **MLP** (attribute settings, :func:`~ufm.settings.factorial`,
  :func:`~ufm.settings.hierarchy`): the input of item ``i`` is column ``i`` of
  the M2 encoding ``Phi = [Phi_attr; item_scale * I_N]`` (THEORY §8.2,
  :meth:`~ufm.settings.Setting.encoding`): the attribute one-hots plus an
  item-id one-hot scaled by ``item_scale``, the per-item *input capacity*
  (``sigma`` of M2); then ``depth`` linear layers of ``width`` units, each
  followed by a ReLU except the last when ``feature_layer="linear"``, and a
  linear classifier to ``N`` outputs (with bias); item ``i`` has label ``i``;
* a small **causal transformer** (token settings,
  :func:`~ufm.settings.ntp_contexts`): token + position embeddings (small,
  std 0.02), ``depth`` pre-LayerNorm blocks (causal multi-head self-attention,
  GELU MLP; torch's default initialization), a final LayerNorm and a bias-free
  classifier over the whole vocabulary; the feature is the last position's
  final hidden state and the target of context ``i`` is its next token
  ``setting.next_tokens[i]``,

with full-batch (default) or mini-batch cross-entropy, optionally regularized
as in the UFM (THEORY §0.1, eq. 0.1, with ``lambda_b = 0``): the objective is

    mean_i CE(W h_i + b, y_i) + (feature_decay/2) sum_i ||h_i||^2 + (classifier_decay/2) ||W||_F^2,

with ``h_i`` the penultimate feature of item ``i`` and ``W`` the classifier
weight (all its rows). ``weight_decay`` is separate: the optimizer's decay on
every parameter. :class:`~ufm.bridge.io.Exporter` records the penultimate
features of every item (the class means; one example per class), the
classifier rows and the cross-entropy on the log-spaced grid
:func:`~ufm.bridge.io.log_steps`. The result is a :class:`ufm.results.Run`
(the bridge format), ready for the semantic metrics
(``ufm.metrics.semantic_gap(run.grams[t], run.attributes)``) and for fitting.

What the networks show (measured, ``docs/bridge/networks.md``): with the
defaults the semantic gap of the feature Gram rises while the loss drops
(shared attributes are learned first), then falls to 0 while the features
reach the simplex ETF (centred ETF distance below 0.02 in 3/3 seeds on
factorial((2,)*5), hierarchy(2, depth=5) and ntp_contexts(4, 8, 2, 32)):
the whole of structure before collapse. The end state is the regularized
UFM optimum: the objective depends on the network only through ``(H, W, b)``,
its minimizers over free features are the ETF (THEORY §1.1), and the MLP can
realize any features (``item_scale > 0``, ``width >= N``); the input kernel
only shapes the path (THEORY §8.2), not the end. Without these penalties (the earlier
defaults, ``feature_layer="relu", feature_decay=0, classifier_decay=0``) the
gap rises and falls but the features do not reach the ETF: the MLP's go
low-rank (ETF distance 0.8-1.1), the transformer's spread only part way.

torch is optional: ``pip install 'ufm[torch]'`` (``torch==2.13.0``). It is
imported inside the functions, so ``import ufm.bridge`` works without it.

References
----------
Zhao, Papadimitriou, Thrampoulidis, "Structure Before Collapse", arXiv 2606.26749;
Zhu et al., "A geometric analysis of neural collapse with unconstrained features",
arXiv 2105.02375 (the regularized UFM and its ETF minimizers);
THEORY.md §0.1 (the objective), §1.1 (its minimizers), §6.3 (order of learned
modes), §7.2 (ETF distance), §7.4 (semantic gap), §8.2 (M2 encodings and
capacity), §8.6 (Gram-matrix bridge).
"""

from __future__ import annotations

import math
import os

import numpy as np

from .. import _memory
from .._checks import check_int, check_nonneg, check_positive
from .._progress import Progress, check_progress
from ..metrics import etf_distance, semantic_gap
from ..settings import Setting, generator_of
from .io import Exporter, file_format, log_steps, save_run
from .report import within_class

__all__ = ["DEFAULTS", "LEGACY", "gap_summary", "run_path", "train_network"]

#: Defaults of :func:`train_network` per architecture (``None`` arguments take these).
#: Measured to show the rise of the semantic gap and then the simplex ETF (ETF distance < 0.02, 3/3 seeds)
#: on factorial((2,)*5), hierarchy(2, depth=5) (MLP, ~5 s on one CPU thread) and ntp_contexts(4, 8, 2, 32)
#: (transformer, ~10 s); see docs/bridge/networks.md. The earlier defaults (end ETF distance 0.8-1.1) are
#: ``LEGACY``.
DEFAULTS = {
    "mlp": {"steps": 3000, "optimizer": "adam", "lr": {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.05}, "width": 256,
            "depth": 2, "item_scale": 1.0, "feature_layer": "linear", "feature_decay": 1e-3,
            "classifier_decay": 1e-3},
    "transformer": {"steps": 2000, "optimizer": "adam", "lr": {"adam": 1e-2, "adamw": 1e-2, "sgd": 0.05},
                    "width": 64, "depth": 2, "heads": 4, "feature_decay": 1e-3, "classifier_decay": 1e-3},
}

#: The defaults before the feature and classifier penalties (gap rises and falls, features stay far from
#: the ETF): pass ``**LEGACY[arch]`` to :func:`train_network` to reproduce those runs.
LEGACY = {
    "mlp": {"steps": 8000, "item_scale": 2.5, "feature_layer": "relu", "feature_decay": 0.0,
            "classifier_decay": 0.0},
    "transformer": {"steps": 1000, "optimizer": "sgd", "lr": 0.05, "feature_decay": 0.0, "classifier_decay": 0.0},
}

_OPTIMIZERS = ("adam", "adamw", "sgd")
_FEATURE_LAYERS = ("linear", "relu")
_SGD_MOMENTUM = 0.9
_EMB_STD = 0.02   # transformer: std of the token and position embeddings at initialization


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError("train_network needs PyTorch: pip install 'ufm[torch]' (installs torch==2.13.0, the "
                          "CPU build this package is tested with).") from None
    return torch


def _torch_seed(seed: int) -> int:
    """A 63-bit torch seed derived from ``np.random.SeedSequence(seed)``."""
    return int(np.random.SeedSequence(seed).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


# -- the networks (built after torch is imported) --------------------------------------------
def _build_mlp(torch, p: int, width: int, depth: int, n_out: int, feature_layer: str):
    nn = torch.nn

    class MLP(nn.Module):
        """``depth`` linear layers of ``width``; a ReLU after each, except after the last when
        ``feature_layer == "linear"``; ``features`` is the output of the last hidden layer."""

        def __init__(self):
            super().__init__()
            layers, fan_in = [], p
            for i in range(depth):
                layers.append(nn.Linear(fan_in, width))
                if i < depth - 1 or feature_layer == "relu":
                    layers.append(nn.ReLU())
                fan_in = width
            self.body = nn.Sequential(*layers)
            self.head = nn.Linear(width, n_out)

        def features(self, x):
            return self.body(x)

    return MLP()


def _build_transformer(torch, vocab: int, length: int, width: int, depth: int, heads: int):
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        """Pre-LN block: x + attn(LN(x)) (causal), then x + MLP(LN(x))."""

        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

        def forward(self, x):
            B, L, d = x.shape
            q, k, v = (t.reshape(B, L, heads, d // heads).transpose(1, 2)
                       for t in self.qkv(self.ln1(x)).split(d, dim=-1))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(B, L, d))
            return x + self.mlp(self.ln2(x))

    class Transformer(nn.Module):
        """Causal transformer; ``features`` is the final (LayerNormed) hidden state at the last position."""

        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(length, width)
            self.blocks = nn.Sequential(*[Block() for _ in range(depth)])
            self.ln_f = nn.LayerNorm(width)
            self.head = nn.Linear(width, vocab, bias=False)
            # small embeddings (the pre-LN blocks see them normalized), torch's default for the linear layers
            nn.init.normal_(self.tok.weight, 0.0, _EMB_STD)
            nn.init.normal_(self.pos.weight, 0.0, _EMB_STD)

        def features(self, tokens):
            pos = torch.arange(tokens.shape[1], device=tokens.device)
            x = self.blocks(self.tok(tokens) + self.pos(pos))
            return self.ln_f(x)[:, -1]

    return Transformer()


def _optimizer(torch, name: str, params, lr: float, weight_decay: float):
    if name == "adam":    # L2 added to the gradient (coupled), as torch.optim.Adam does
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":   # decoupled weight decay
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=_SGD_MOMENTUM, weight_decay=weight_decay)


# -- the entry point -----------------------------------------------------------------------------
def train_network(setting, *, arch: str = "auto", steps: int | None = None, lr: float | None = None,
                  optimizer: str | None = None, weight_decay: float = 0.0, width: int | None = None,
                  depth: int | None = None, item_scale: float | None = None, feature_layer: str | None = None,
                  feature_decay: float | None = None, classifier_decay: float | None = None,
                  batch_size: int | None = None, n_records: int = 60, seed: int = 0, progress="auto",
                  out=None, callback=None):
    """Train a reference network on a synthetic setting and record its feature Grams (the bridge format).

    Parameters
    ----------
    setting : ufm.settings.Setting
        Items with latent attributes and distinct labels (:func:`~ufm.settings.factorial`,
        :func:`~ufm.settings.hierarchy`, :func:`~ufm.settings.ntp_contexts`, or a custom one).
    arch : {"auto", "mlp", "transformer"}
        ``"auto"``: the transformer when the setting has token contexts
        (``setting.tokens``), else the MLP. The MLP also runs on a token
        setting (its attribute block is then the bag-of-positions one-hot).
    steps : int, optional
        Optimizer steps (default: ``DEFAULTS[arch]["steps"]``: 3000 MLP, 2000 transformer).
    lr : float, optional
        Learning rate (default: MLP 1e-3 for Adam/AdamW; transformer 1e-2 for
        Adam/AdamW; 0.05 for SGD).
    optimizer : {"adam", "adamw", "sgd"}, optional
        ``torch.optim.Adam`` (``weight_decay`` is an L2 term added to the
        gradient), ``torch.optim.AdamW`` (decoupled decay) or SGD with momentum 0.9
        (L2 added to the gradient). Default ``"adam"`` for both architectures.
    weight_decay : float
        The optimizer's weight decay (``>= 0``), applied to every parameter
        (default 0). Not the UFM's regularization: see ``feature_decay`` and
        ``classifier_decay``.
    width : int, optional
        MLP hidden width (default 256) / transformer model width (default 64,
        a multiple of the 4 heads).
    depth : int, optional
        MLP hidden layers / transformer blocks (default 2 for both).
    item_scale : float, optional
        MLP only: the weight ``sigma`` of the item-id one-hot in the input
        ``Phi = [Phi_attr; sigma I_N]`` (THEORY §8.2), the per-item input capacity
        (default 1.0; 0 gives the attributes alone). Not defined for the
        transformer, whose inputs are the tokens alone.
    feature_layer : {"linear", "relu"}, optional
        MLP only: ``"linear"`` (default) leaves out the ReLU after the last
        hidden layer, so the features are that layer's affine output (any sign);
        ``"relu"`` keeps it (non-negative features, the earlier default). Not
        defined for the transformer (its features are the final LayerNorm output).
    feature_decay : float, optional
        ``lambda_H >= 0``: adds ``(lambda_H/2) * sum_i ||h_i||^2`` over the
        ``N`` items' penultimate features to the loss (THEORY §0.1, "Zhu
        normalization": mean cross-entropy, summed feature norms; a mini-batch
        of ``B`` items adds ``(lambda_H/2) (N/B) sum_batch ||h_i||^2``, the same
        in expectation). Default 1e-3 (both architectures); 0 turns it off.
    classifier_decay : float, optional
        ``lambda_W >= 0``: adds ``(lambda_W/2) ||W||_F^2`` of the classifier
        weight (all its rows: ``N`` for the MLP, the whole vocabulary for the
        transformer; the MLP's classifier bias is not penalized, ``lambda_b = 0``).
        Default 1e-3; 0 turns it off. With both penalties and ``K = N`` classes
        the UFM minimizer is the simplex ETF with cross-entropy
        ``-log(1 - (K-1) sqrt(lambda_W lambda_H))`` when ``K sqrt(lambda_W
        lambda_H) < 1`` (THEORY §1.2); above that bound it is ``W = H = 0``.
    batch_size : int, optional
        Items per step, drawn without replacement each step; ``None`` (default)
        is full-batch training. Records always use every item.
    n_records : int
        Records on the log-spaced grid ``log_steps(steps, n_records)`` (always
        step 0, before training, and the last step).
    seed : int
        ``torch.manual_seed`` gets an integer derived from
        ``np.random.SeedSequence(seed)``; the global torch RNG state is restored
        afterwards. Runs are deterministic for a seed (one thread).
    progress : {"auto", True, False}
        A progress display (tqdm when installed, else lines on stderr; never stdout):
        ``"auto"`` (default) once the work has run 2 s, ``True`` from the start,
        ``False`` never. Every ``ufm`` entry point takes the same values.
    out : str or path, optional
        Also write the run there with :func:`ufm.bridge.io.save_run` (``.npz``
        by default; ``.safetensors`` / ``.h5`` by extension; the folder must
        exist), whole or not at all. Written after an interruption too, but an
        interrupted run never replaces a file already at ``out``: it goes beside
        it as ``<stem>.interrupted<ext>`` (:func:`run_path`).
    callback : callable, optional
        ``callback(step, loss)`` after each record, e.g. to print or to stop
        early by raising ``KeyboardInterrupt``.

    Returns
    -------
    ufm.results.Run
        ``steps`` (the record grid), ``grams`` (T x K x K Grams of the
        penultimate features, uncentred), ``means`` (T x d x K), ``W`` (T x K x d:
        the classifier rows of the labels), ``loss`` (full-batch mean
        cross-entropy, without the penalties), ``attributes = setting.attributes``, ``counts`` (all 1).
        ``labels``: ``arange(N)`` (item ids) for the MLP, ``setting.next_tokens``
        (vocabulary ids) for the transformer; class ``k`` is item ``k`` either way.
        ``meta`` records the setting, the network, the optimizer, the penalties
        (``feature_decay``, ``classifier_decay``, ``objective``), the seeds, the
        torch version, ``status`` (the name of a :class:`~ufm.results.Status`:
        ``"completed"``, ``"interrupted"`` after Ctrl-C with the records made so
        far, or ``"nonfinite"`` when the loss diverged; ``Status[run.meta["status"]]``
        gives the member), ``message`` and ``steps_run``; no wall time, so equal runs
        have equal content hashes.

    Raises
    ------
    ValueError
        A bad argument; the message names it and the fix.
    ImportError
        torch is missing (``pip install 'ufm[torch]'``).

    Notes
    -----
    Parameters are float32; the cross-entropy is computed from the logits in
    float64, so the loss and its gradient stay exact below float32's epsilon
    (long runs without weight decay reach losses of 1e-8 and below, where a
    float32 softmax saturates and Adam's normalized updates turn into noise).
    ``torch.set_num_threads(1)`` during training (restored afterwards).

    The penalties are added to the loss, not given to the optimizer, so their
    stationary points are those of the objective above for every optimizer
    (coupled, unlike AdamW's decoupled ``weight_decay``). For the earlier
    defaults pass ``**LEGACY[arch]``.

    Examples
    --------
    >>> from ufm.settings import factorial                     # doctest: +SKIP
    >>> from ufm.metrics import semantic_gap                   # doctest: +SKIP
    >>> run = train_network(factorial((2,) * 5))                # doctest: +SKIP
    >>> [semantic_gap(G, run.attributes) for G in run.grams]    # doctest: +SKIP
    """
    check_progress(progress)
    cfg = _options(setting, arch=arch, steps=steps, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                   width=width, depth=depth, item_scale=item_scale, feature_layer=feature_layer,
                   feature_decay=feature_decay, classifier_decay=classifier_decay, batch_size=batch_size,
                   n_records=n_records, seed=seed, callback=callback, out=out)
    N = setting.N
    grid = log_steps(cfg["steps"], cfg["n_records"])
    _memory.check({f"{N} x {N} Grams": 8 * len(grid) * N * N,          # every record, float64
                   f"{cfg['width']} x {N} class means and classifier": 8 * len(grid) * 2 * cfg["width"] * N},
                  f"train_network (recording {len(grid)} steps)", "Lower n_records or use a setting with fewer items.")
    torch = _import_torch()
    x_all, labels, network = _inputs(setting, cfg)
    exporter = Exporter(labels, attributes=setting.attributes, name=f"{cfg['kind']} on {setting.name}",
                        meta=_meta(setting, cfg, network, torch.__version__))
    status, message, current = _train(torch, setting, cfg, x_all, labels, exporter, grid, callback, progress)
    if len(exporter) == 0:   # non-finite at step 0
        raise ValueError("the network's features are non-finite at initialization; check the setting's encoding.")
    exporter.meta.update(status=status, message=message, steps_run=current)
    run = exporter.run()
    if cfg["out"] is not None:
        save_run(run, run_path(cfg["out"], status))
    return run


def run_path(out, status: str) -> str:
    """The file :func:`train_network` writes for ``out`` when its run ends with ``status``.

    ``out`` itself (``.npz`` appended when it has no extension), except that an interrupted
    run never replaces a file already there (an earlier, complete run, say): it is written
    beside it, as ``<stem>.interrupted<ext>``.

    Parameters
    ----------
    out : str or path
        The ``out`` argument.
    status : str
        The run's ``meta["status"]``.

    Returns
    -------
    str
        The path.
    """
    path = os.fspath(out)
    if file_format(path, default_npz=True) == "npz" and not path.lower().endswith(".npz"):
        path += ".npz"
    if status != "interrupted" or not os.path.exists(path):
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}.interrupted{ext}"


def _options(setting, *, arch, steps, lr, optimizer, weight_decay, width, depth, item_scale, feature_layer,
             feature_decay, classifier_decay, batch_size, n_records, seed, callback, out) -> dict:
    """The arguments of :func:`train_network`, checked, with the architecture's defaults filled in."""
    if not isinstance(setting, Setting):
        raise ValueError(f"setting must be a ufm.settings.Setting (e.g. ufm.settings.factorial((2, 2, 2))), "
                         f"got {type(setting).__name__}.")
    if arch not in ("auto", "mlp", "transformer"):
        raise ValueError(f"arch must be 'auto', 'mlp' or 'transformer', got {arch!r}.")
    kind = ("transformer" if setting.tokens is not None else "mlp") if arch == "auto" else arch
    if kind == "transformer" and setting.tokens is None:
        raise ValueError(f"arch='transformer' needs token contexts, but setting {setting.name!r} has none "
                         f"(setting.tokens is None); use arch='mlp' or a token setting such as ntp_contexts().")
    defaults = DEFAULTS[kind]
    optimizer = defaults["optimizer"] if optimizer is None else optimizer
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(_OPTIMIZERS)} (or None for the architecture's default), "
                         f"got {optimizer!r}.")
    steps = check_int("steps", defaults["steps"] if steps is None else steps, 1)
    lr = check_positive("lr", defaults["lr"][optimizer] if lr is None else lr, "the learning rate")
    weight_decay = check_nonneg("weight_decay", weight_decay)
    width = check_int("width", defaults["width"] if width is None else width, 1)
    depth = check_int("depth", defaults["depth"] if depth is None else depth, 1)
    heads = defaults.get("heads")
    if kind == "transformer":
        if width % heads:
            raise ValueError(f"width must be a multiple of the {heads} attention heads for the transformer, got "
                             f"{width}; use e.g. width={heads * max(1, round(width / heads))}.")
        if item_scale is not None:
            raise ValueError("item_scale is the MLP's per-item input weight; the transformer sees the tokens only. "
                             "Drop item_scale, or pass arch='mlp' to train an MLP on the setting's encoding.")
        if feature_layer is not None:
            raise ValueError("feature_layer chooses the MLP's last hidden layer; the transformer's features are its "
                             "final LayerNorm output. Drop feature_layer, or pass arch='mlp'.")
    else:
        item_scale = check_nonneg("item_scale", defaults["item_scale"] if item_scale is None else item_scale,
                                  "the weight of the item-id one-hot in the input")
        feature_layer = defaults["feature_layer"] if feature_layer is None else feature_layer
        if feature_layer not in _FEATURE_LAYERS:
            raise ValueError(f"feature_layer must be 'linear' (no ReLU after the last hidden layer) or 'relu' "
                             f"(post-ReLU features), got {feature_layer!r}.")
    feature_decay = check_nonneg("feature_decay", defaults["feature_decay"] if feature_decay is None
                                 else feature_decay, "lambda_H, the weight of (lambda_H/2) ||H||_F^2")
    classifier_decay = check_nonneg("classifier_decay", defaults["classifier_decay"] if classifier_decay is None
                                    else classifier_decay, "lambda_W, the weight of (lambda_W/2) ||W||_F^2")
    N = setting.N
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
        if batch_size > N:
            raise ValueError(f"batch_size={batch_size} exceeds the {N} items; use batch_size <= {N} or None "
                             "(full batch).")
    n_records = check_int("n_records", n_records, 2)
    seed = check_int("seed", seed, 0)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable as callback(step, loss), got {type(callback).__name__}.")
    if out is not None:
        out = os.fspath(out)
        folder = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(folder):
            raise ValueError(f"out={out!r}: the folder {folder!r} does not exist; create it first.")
        file_format(out, default_npz=True)     # an unknown extension fails now, not after training

    return {"kind": kind, "heads": heads, "optimizer": optimizer, "steps": steps, "lr": lr,
            "weight_decay": weight_decay, "width": width, "depth": depth, "item_scale": item_scale,
            "feature_layer": feature_layer, "feature_decay": feature_decay, "classifier_decay": classifier_decay,
            "batch_size": batch_size, "n_records": n_records, "seed": seed, "out": out,
            "torch_seed": _torch_seed(seed)}


def _inputs(setting, cfg: dict):
    """What the network sees (``x_all``, one row per item) and predicts (``labels``), and its description."""
    N, width, depth = setting.N, cfg["width"], cfg["depth"]
    if cfg["kind"] == "mlp":
        x_all = setting.encoding(cfg["item_scale"]).T          # N x p, row i = Phi[:, i] (THEORY §8.2)
        labels = np.arange(N, dtype=np.int64)
        network = {"arch": "mlp", "depth": depth, "width": width, "activation": "relu",
                   "input": "Phi = [attribute one-hots; item_scale * I_N] (THEORY 8.2)", "input_dim": x_all.shape[1],
                   "classifier": f"linear {width} -> {N} outputs with bias", "outputs": N,
                   "feature_layer": cfg["feature_layer"],
                   "features": ("output of the last hidden ReLU layer" if cfg["feature_layer"] == "relu" else
                                "output of the last hidden linear layer (no ReLU after it)")}
    else:
        x_all = np.asarray(setting.tokens, dtype=np.int64)
        labels = np.asarray(setting.next_tokens, dtype=np.int64)
        V, L = len(setting.vocab), x_all.shape[1]
        network = {"arch": "transformer", "depth": depth, "width": width, "heads": cfg["heads"],
                   "mlp_width": 4 * width, "norm": "pre-LayerNorm, final LayerNorm", "attention": "causal",
                   "context_length": L, "vocab_size": V,
                   "init": f"embeddings N(0, {_EMB_STD}^2); linear layers torch default (Kaiming-uniform)",
                   "classifier": f"linear {width} -> vocabulary ({V}) without bias", "outputs": V,
                   "features": "final LayerNorm output at the last position"}
    return x_all, labels, network


def _meta(setting, cfg: dict, network: dict, torch_version: str) -> dict:
    """The run's ``meta``: the setting, the network, the optimizer and the objective."""
    kind = cfg["kind"]
    setting_meta = {"name": setting.name, "generator": generator_of(setting), "params": dict(setting.params),
                    "factor_names": list(setting.factor_names), "N": setting.N, "F": setting.F}
    return {"source": "ufm.bridge.train_network", "setting": setting_meta, "network": network,
            "optimizer": cfg["optimizer"], "lr": cfg["lr"], "weight_decay": cfg["weight_decay"],
            "momentum": _SGD_MOMENTUM if cfg["optimizer"] == "sgd" else None, "feature_decay": cfg["feature_decay"],
            "classifier_decay": cfg["classifier_decay"],
            "objective": ("mean cross-entropy + (feature_decay/2) * sum over items of ||h_i||^2 + "
                          "(classifier_decay/2) * ||classifier weight||_F^2 (THEORY 0.1, lambda_b = 0); "
                          "weight_decay through the optimizer"),
            "steps_requested": cfg["steps"],
            "batch_size": cfg["batch_size"], "seed": cfg["seed"], "torch_seed": cfg["torch_seed"],
            "item_scale": cfg["item_scale"] if kind == "mlp" else None,
            "labels": "item index arange(N)" if kind == "mlp" else "next-token vocabulary ids (setting.next_tokens)",
            "loss_kind": "mean cross-entropy over the batch (float64 from float32 logits)",
            "dtype": "float32", "torch": torch_version}


def _train(torch, setting, cfg: dict, x_all, labels, exporter, grid, callback, progress):
    """Train on one thread (restored after), recording at the steps of ``grid``: ``(status, message, steps run)``.

    Ctrl-C ends the training with the records so far (``"interrupted"``), or propagates when there are none.
    """
    N, steps, batch_size = setting.N, cfg["steps"], cfg["batch_size"]
    feature_decay, classifier_decay = cfg["feature_decay"], cfg["classifier_decay"]
    threads = torch.get_num_threads()
    status, message = "completed", f"ran {steps} steps."
    bar = Progress(progress, steps, f"train_network ({cfg['kind']})")
    current = 0
    try:
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg["torch_seed"])
            if cfg["kind"] == "mlp":
                model = _build_mlp(torch, x_all.shape[1], cfg["width"], cfg["depth"], N, cfg["feature_layer"])
                X = torch.tensor(x_all, dtype=torch.float32)
            else:
                model = _build_transformer(torch, len(setting.vocab), x_all.shape[1], cfg["width"], cfg["depth"],
                                           cfg["heads"])
                X = torch.tensor(x_all)
            y = torch.tensor(labels)
            opt = _optimizer(torch, cfg["optimizer"], model.parameters(), cfg["lr"], cfg["weight_decay"])
            ce = torch.nn.functional.cross_entropy
            gen = torch.Generator().manual_seed(cfg["torch_seed"]) if batch_size is not None else None

            def record(step):
                with torch.no_grad():
                    h = model.features(X)
                    loss = float(ce(model.head(h).double(), y))
                if not (math.isfinite(loss) and torch.isfinite(h).all()):
                    return False
                exporter.record(step, h, labels, W=model.head.weight, loss=loss)
                if callback is not None:
                    callback(int(step), loss)
                return True

            for target in grid:
                while current < target:
                    if batch_size is None:
                        xb, yb = X, y
                    else:
                        idx = torch.randperm(N, generator=gen)[:batch_size]
                        xb, yb = X[idx], y[idx]
                    h = model.features(xb)
                    loss = ce(model.head(h).double(), yb)
                    if feature_decay:     # (lambda_H/2) ||H||_F^2 over all N items; a batch estimates it
                        loss = loss + (0.5 * feature_decay * N / len(yb)) * h.double().pow(2).sum()
                    if classifier_decay:  # (lambda_W/2) ||W||_F^2
                        loss = loss + 0.5 * classifier_decay * model.head.weight.double().pow(2).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    current += 1
                if not record(int(target)):
                    status = "nonfinite"
                    message = (f"the loss or the features became non-finite by step {int(target)}; lower lr. "
                               f"Records before it are kept.")
                    break
                bar.update(current)
    except KeyboardInterrupt:
        status, message = "interrupted", f"interrupted at step {current}; {len(exporter)} records kept."
        if len(exporter) == 0:
            raise
    finally:
        torch.set_num_threads(threads)
        bar.close()
    return status, message, current


def gap_summary(run, attributes=None, *, rise: float = 0.05, fall: float = 0.6, collapse: float = 0.1) -> dict:
    """Semantic gap and ETF distance of a run: start, peak / minimum, end; whether it rises, falls and collapses.

    The gap is :func:`ufm.metrics.semantic_gap` and the ETF distance
    :func:`ufm.metrics.etf_distance` of each recorded Gram (both centred with
    ``P_K``, THEORY §7.2, §7.4); a record where one is undefined (an item's
    centred feature is zero, e.g. dead ReLU features, or all features equal)
    counts as NaN and is skipped.

    Parameters
    ----------
    run : ufm.results.Run
        A recorded run (e.g. from :func:`train_network`).
    attributes : int array (K, F), optional
        Attribute table of the classes (default ``run.attributes``).
    rise, fall : float
        The transient criterion: ``peak >= start + rise`` and ``end <= fall * peak``
        (defaults 0.05 and 0.6).
    collapse : float
        The collapse criterion: ETF distance at the last record ``<= collapse``
        (default 0.1; the distance is in ``[0, 2]``, 0 at the simplex ETF).

    Returns
    -------
    dict
        ``gaps`` (T,), ``etf`` (T,), ``start``, ``peak``, ``peak_step``, ``end``
        (the gap), ``etf_start``, ``etf_min``, ``etf_min_step``, ``etf_end``,
        ``loss_start``, ``loss_end`` (``None`` without losses), ``transient``
        (bool, the gap criterion) and ``collapsed`` (bool, the ETF criterion).
        A run shows the whole of structure before collapse when both hold.
        When the run kept within-class traces of more than one example per
        class: ``nc1`` and ``cdnv`` (T,), NC1 in its trace-ratio variant and
        the mean CDNV per record (:func:`ufm.bridge.fitting.within_class`; the
        other NC1 variants need the whole within-class covariance), and their
        ``*_start`` / ``*_end``; otherwise these are ``None``.
    """
    A = run.attributes if attributes is None else np.asarray(attributes)
    if A is None:
        raise ValueError("attributes: the run records no attribute table; pass attributes=(K x F levels).")
    collapse = check_nonneg("collapse", collapse, "an ETF-distance threshold")

    def safe(fn, *args):
        try:
            return fn(*args)
        except ValueError:
            return np.nan

    gaps = np.array([safe(semantic_gap, G, A) for G in run.grams])
    etf = np.array([safe(etf_distance, G) for G in run.grams])
    if np.all(np.isnan(gaps)):
        raise ValueError("the semantic gap is undefined at every record (no factor splits the classes, or the "
                         "features are degenerate); check the attribute table.")
    k = int(np.nanargmax(gaps))
    start, peak, end = float(gaps[0]), float(gaps[k]), float(gaps[-1])
    transient = bool(peak >= start + rise and end <= fall * peak)
    j = None if np.all(np.isnan(etf)) else int(np.nanargmin(etf))
    loss = run.loss
    wc = None
    if run.within is not None and np.any(np.asarray(run.counts) > 1):
        wc = within_class(run.grams, run.within, run.counts)
    within = {"nc1": None, "cdnv": None, "nc1_start": None, "nc1_end": None, "cdnv_start": None, "cdnv_end": None}
    if wc is not None:
        nc1, cd = wc["nc1_trace_ratio"], wc["cdnv_mean"]
        within = {"nc1": nc1, "cdnv": cd, "nc1_start": float(nc1[0]), "nc1_end": float(nc1[-1]),
                  "cdnv_start": float(cd[0]), "cdnv_end": float(cd[-1])}
    return {**within, "gaps": gaps, "etf": etf, "start": start, "peak": peak, "peak_step": int(run.steps[k]),
            "end": end,
            "etf_start": float(etf[0]), "etf_min": float("nan") if j is None else float(etf[j]),
            "etf_min_step": None if j is None else int(run.steps[j]), "etf_end": float(etf[-1]),
            "loss_start": None if loss is None else float(loss[0]),
            "loss_end": None if loss is None else float(loss[-1]), "transient": transient,
            "collapsed": bool(etf[-1] <= collapse)}
