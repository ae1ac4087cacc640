"""The bridge format: record features during training, save and load them (THEORY §8.6).

The format is :class:`ufm.results.Run` saved as ``.npz`` (``allow_pickle=False``,
schema version and content hash in the header). :class:`Exporter` builds a
``Run`` from a training loop without importing torch: call
``exporter.record(step, features, labels, W=...)`` with the penultimate
features of a fixed probe set at each recorded step.
"""

from __future__ import annotations

import os

import numpy as np

from .._checks import check_int
from ..results import RUN_SCHEMA, Run, load

__all__ = ["Exporter", "RUN_SCHEMA", "Run", "load_run", "log_steps"]


def log_steps(total: int, n_records: int = 60) -> np.ndarray:
    """Record steps for a run of ``total`` steps: 0, the last step, and ``n_records`` log-spaced steps.

    The same grid as :func:`ufm.simulate`'s ``grid="log"`` (rounded, duplicates removed).
    """
    from .._simulate import record_grid

    return record_grid(total, n_records, "log")


def _as_numpy(x, name: str) -> np.ndarray:
    """A float64 copy of an array-like, torch tensors included (via ``.detach().cpu()``), without importing torch."""
    if hasattr(x, "detach"):
        x = x.detach()
    if hasattr(x, "cpu"):
        x = x.cpu()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN/inf entries; the run diverged or the features were not computed "
                         f"(lower the learning rate, or stop recording before the divergence).")
    return arr


class Exporter:
    """Accumulate class-mean Grams, class means, classifiers and within-class traces over training.

    Torch-free: ``features`` may be a numpy array, a list or a torch tensor
    (read through ``.detach().cpu().numpy()``).

    Parameters
    ----------
    labels : sequence of int
        The label id of each class, in the order the Gram rows should have
        (distinct). Samples whose label is not listed are an error.
    attributes : int array (K, F), optional
        Latent attribute table of the classes, in the order of ``labels``.
    keep_means : bool
        Store the class means (T x d x K) as well as their Gram (default True).
    name : str
        A short description of the run.
    meta : dict, optional
        How the run was made (JSON-friendly); stored in ``Run.meta``.

    Examples
    --------
    >>> import numpy as np
    >>> ex = Exporter(labels=[0, 1, 2])
    >>> rng = np.random.default_rng(0)
    >>> for step in (0, 10, 100):
    ...     ex.record(step, rng.normal(size=(6, 4)), labels=[0, 1, 2, 0, 1, 2])
    >>> ex.run().grams.shape
    (3, 3, 3)
    """

    def __init__(self, labels, *, attributes=None, keep_means: bool = True, name: str = "", meta: dict | None = None):
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 1-D sequence of integer label ids (one per class), got "
                             f"dtype {labels.dtype}, shape {labels.shape}.")
        if len(np.unique(labels)) != len(labels) or len(labels) < 2:
            raise ValueError(f"labels must hold at least 2 distinct label ids, got {labels.tolist()[:10]}.")
        self.labels = labels.astype(np.int64)
        self._index = {int(v): k for k, v in enumerate(self.labels)}
        self.attributes = None if attributes is None else np.asarray(attributes)
        self.keep_means = bool(keep_means)
        self.name = str(name)
        self.meta = dict(meta or {})
        self._rows: dict[str, list] = {"steps": [], "grams": [], "means": [], "W": [], "within": [], "loss": []}
        self._counts = None

    @property
    def K(self) -> int:
        return len(self.labels)

    def record(self, step: int, features, labels, *, W=None, loss=None) -> None:
        """Record one step.

        Parameters
        ----------
        step : int
            Training step (larger than the previous record's).
        features : array (n, d)
            Penultimate features of the probe set, one row per example.
        labels : int array (n,)
            Label id of each row; every class of the exporter must appear, and
            with the same counts at every record.
        W : array (K_out, d), optional
            Classifier weights (rows = output labels). When ``K_out > K`` the
            rows ``labels`` are kept (e.g. the next-token rows of a vocabulary).
        loss : float, optional
            Training loss at this step.
        """
        step = check_int("step", step, 0)
        if self._rows["steps"] and step <= self._rows["steps"][-1]:
            raise ValueError(f"step {step} is not after the previous record's step {self._rows['steps'][-1]}; "
                             f"record steps in increasing order.")
        X = _as_numpy(features, "features")
        if X.ndim != 2:
            raise ValueError(f"features must be (n_examples, d) (one row per example), got shape {X.shape}.")
        y = np.asarray(_as_numpy(labels, "labels") if hasattr(labels, "detach") else labels)
        if y.shape != (X.shape[0],):
            raise ValueError(f"labels must have one entry per feature row ({X.shape[0]}), got shape {y.shape}.")
        try:
            idx = np.array([self._index[int(v)] for v in y], dtype=np.int64)
        except KeyError as err:
            raise ValueError(f"labels holds {err.args[0]}, which is not one of the exporter's classes "
                             f"{self.labels.tolist()[:10]}...; pass every class id when creating the Exporter.") from None
        counts = np.bincount(idx, minlength=self.K)
        if np.any(counts == 0):
            missing = self.labels[counts == 0].tolist()[:10]
            raise ValueError(f"classes {missing} have no example in this record; the probe set must cover every class.")
        if self._counts is not None and not np.array_equal(counts, self._counts):
            raise ValueError("the examples per class changed between records; record the same probe set each time.")
        self._counts = counts
        M = np.zeros((X.shape[1], self.K))
        np.add.at(M.T, idx, X)
        M /= counts
        within = np.bincount(idx, weights=np.sum((X - M.T[idx]) ** 2, axis=1), minlength=self.K) / counts
        self._rows["steps"].append(step)
        self._rows["grams"].append(M.T @ M)
        self._rows["means"].append(M)
        self._rows["within"].append(within)
        if W is not None:
            Wn = _as_numpy(W, "W")
            if Wn.ndim != 2 or Wn.shape[1] != X.shape[1]:
                raise ValueError(f"W must be (K_out, d = {X.shape[1]}), got shape {Wn.shape}.")
            if Wn.shape[0] != self.K:
                if Wn.shape[0] <= int(self.labels.max()):
                    raise ValueError(f"W has {Wn.shape[0]} rows, too few to select the label ids "
                                     f"(largest {int(self.labels.max())}); pass the full classifier.")
                Wn = Wn[self.labels]
            self._rows["W"].append(Wn)
        elif self._rows["W"]:
            raise ValueError("W was recorded before; record it at every step or never.")
        if loss is not None:
            self._rows["loss"].append(float(loss))

    def __len__(self) -> int:
        return len(self._rows["steps"])

    def run(self) -> Run:
        """The recorded run (validated, read-only)."""
        T = len(self)
        if T == 0:
            raise ValueError("nothing recorded yet; call record(step, features, labels) first.")
        for name in ("W", "loss"):
            if self._rows[name] and len(self._rows[name]) != T:
                raise ValueError(f"{name} was recorded at {len(self._rows[name])} of {T} steps; "
                                 f"record it at every step or never.")
        r = self._rows
        return Run(steps=np.array(r["steps"]), grams=np.stack(r["grams"]), labels=self.labels,
                   counts=self._counts, attributes=self.attributes,
                   means=np.stack(r["means"]) if self.keep_means else None,
                   W=np.stack(r["W"]) if r["W"] else None, within=np.stack(r["within"]),
                   loss=np.array(r["loss"]) if r["loss"] else None, name=self.name, meta=self.meta)

    def save(self, path: str | os.PathLike) -> str:
        """Write the run to ``path`` (``.npz``); returns the path written."""
        return self.run().save(path)


def load_run(path: str | os.PathLike) -> Run:
    """Load a bridge run from ``.npz`` (written by :meth:`Run.save` / :meth:`Exporter.save`).

    Every field is validated (see :class:`ufm.results.Run`); a corrupted file
    fails the content-hash check.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"path {path!r} does not exist.")
    obj = load(path)
    if not isinstance(obj, Run):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a bridge Run; pass a file written by "
                         f"Exporter.save or Run.save (or a Trajectory to ufm.fit directly).")
    return obj
