"""What a fit observes: a run's Grams read from any source, in every representation the fit compares.

:func:`read_observed` turns a bridge :class:`~ufm.results.Run` (or its file), a
:class:`~ufm.results.Trajectory` or plain Gram arrays into an :class:`Observed`
(steps, Grams, attribute table, setting, and when recorded the first record's
class means and classifier rows and the within-class traces), checking every
argument. :class:`Representations` holds the centred unit-norm Grams (*full*),
their attribute-pattern projection (*patterns*), the observed semantic gap and
ETF distance, the data's degrees of freedom and the share of the Grams outside
the patterns (THEORY §8.6 steps 1, 5).
"""

from __future__ import annotations

import json
import os

import numpy as np

from .. import metrics, settings
from .._util import numerical_rank
from ..results import Run, Trajectory, load
from ..settings import Setting
from .io import as_numpy, load_run
from .patterns import outside_fraction, pattern_ids, project_patterns, psd_root
from .report import TRANSIENT, etf_of, gaps_of

# Observed, Representations, read_observed and first_state are the fit's own plumbing
__all__ = ["unit_centred"]


def unit_centred(grams) -> np.ndarray:
    """``P_K G P_K / ||P_K G P_K||_F`` for one Gram (K x K) or a stack (T x K x K) (THEORY §8.6 steps 1, 5).

    Parameters
    ----------
    grams : array (K, K) or (T, K, K)
        Grams, nonzero after centring.

    Returns
    -------
    ndarray
        Centred, unit-norm Grams, same shape.
    """
    Gc = metrics.double_centre(np.asarray(grams, dtype=np.float64))
    norm = np.linalg.norm(Gc, axis=(-2, -1), keepdims=True)
    if np.any(norm <= 1e-300):
        raise ValueError("a Gram is zero after centring (all class means equal); it has no geometry to fit. "
                         "Drop that record (often step 0 of a zero-initialized model).")
    return Gc / norm


class Observed:
    """What :func:`fit` reads from its source."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def read_observed(source, setting, attributes, steps) -> Observed:
    """Steps, Grams, attributes, setting, description, and when present the first record's state and the
    within-class traces."""
    desc = type(source).__name__
    run_attrs, run = None, None
    W0 = M0 = within = counts = None
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        source = _load_source(path)
        desc = f"{type(source).__name__} {os.path.basename(path)}"
    recorded = None
    run_clock = None          # what a ufm Trajectory says about its own clock and start (ufm.bridge.clock)
    if isinstance(source, Run):
        run = source
        obs_steps, grams, run_attrs = np.asarray(source.steps, float), np.asarray(source.grams), source.attributes
        if source.name:
            desc = f"Run {source.name!r}"
        if "setting" in source.meta:
            recorded = _setting_from_meta(source.meta["setting"])
        if source.means is not None:
            M0 = np.asarray(source.means[0], dtype=np.float64)
            W0 = None if source.W is None else np.asarray(source.W[0], dtype=np.float64)
        within = None if source.within is None else np.asarray(source.within, dtype=np.float64)
        counts = np.asarray(source.counts)
    elif isinstance(source, Trajectory):
        rec = source.records
        name = "gram_means" if "gram_means" in rec else "gram_H" if "gram_H" in rec else None
        if name is None:
            raise ValueError(f"source: the Trajectory recorded {sorted(rec)}, none of 'gram_means', 'gram_H'; "
                             f"simulate with record=('gram_means',) to fit it.")
        grams = np.asarray(rec[name]).mean(axis=0)          # mean over seeds
        meta = source.meta
        lr = float(meta.get("lr", 1.0))
        gd = source.mode == "gd"
        # a GD run is compared step for step (its own clock); a flow run at its flow times
        obs_steps = np.asarray(source.steps if gd else source.times, float)
        problem = meta.get("problem") or {}
        gaussian = (meta.get("start") == "gaussian" or ("start" not in meta and float(meta.get("init_scale", 0)) > 0))
        run_clock = {"kind": "gd" if gd else "flow", "lr": lr, "seeds": int(source.n_seeds),
                     "width": (float(problem["d"]) if gaussian and problem.get("model") == "input_coupled"
                               and problem.get("d") else None)}
        desc = f"Trajectory ({name}, {source.n_seeds} seed(s) averaged)"
        prob_attrs = source.meta.get("attributes")
        run_attrs = None if prob_attrs is None else np.asarray(prob_attrs)
        if source.n_seeds == 1 and "H" in rec and name == "gram_H":
            M0 = np.asarray(rec["H"][0, 0], dtype=np.float64)
            W0 = np.asarray(rec["W"][0, 0], dtype=np.float64) if "W" in rec else None
    else:
        grams = as_numpy(source, "source")
        if grams.ndim == 2:
            grams = grams[None]
        if grams.ndim != 3 or grams.shape[1] != grams.shape[2]:
            raise ValueError(f"source: arrays must be one Gram (K, K) or a stack (T, K, K), got shape {grams.shape}.")
        obs_steps = np.arange(len(grams), dtype=float)
        desc = f"array of {len(grams)} Gram(s)"
    if steps is not None:
        obs_steps = np.asarray(steps, dtype=np.float64)
        if obs_steps.shape != (len(grams),):
            raise ValueError(f"steps must have one entry per Gram ({len(grams)}), got shape {obs_steps.shape}.")
    if np.any(np.diff(obs_steps) <= 0) or np.any(obs_steps < 0):
        raise ValueError("steps must be >= 0 and strictly increasing (one per Gram, in training order).")
    # validate the Grams through the bridge format (symmetric PSD, finite)
    K = grams.shape[1]
    Run(steps=np.arange(len(grams)), grams=grams, labels=np.arange(K), counts=np.ones(K, dtype=np.int64))

    if setting is not None and not isinstance(setting, Setting):
        raise ValueError(f"setting must be a ufm.settings.Setting (e.g. ufm.factorial((2, 2, 2))), "
                         f"got {type(setting).__name__}.")
    if setting is not None and setting.N != K:
        raise ValueError(f"setting has N = {setting.N} items but the Grams have K = {K} classes; pass the "
                         f"setting the network was trained on.")
    if setting is not None and run_attrs is not None and not np.array_equal(setting.attributes, run_attrs):
        raise ValueError(f"setting {setting.name!r} has another attribute table than the one the run records; the "
                         f"run's own table is what the network was trained on. Drop setting= (the run's setting "
                         f"is used), or fix the run.")
    if setting is None:
        setting = recorded
    if attributes is None:
        attributes = setting.attributes if setting is not None else run_attrs
    if attributes is None:
        raise ValueError("no attribute table: pass setting=... (e.g. ufm.factorial((2, 2, 2))) or attributes=... "
                         "(K x F levels), or record the attributes in the run.")
    attributes = np.asarray(attributes)
    if attributes.ndim != 2 or attributes.shape[0] != K:
        raise ValueError(f"attributes must be (K = {K}, F), got shape {attributes.shape}.")
    if setting is not None and not np.array_equal(setting.attributes, attributes):
        raise ValueError("attributes= and the setting's attribute table differ; pass one of them.")
    if setting is None:
        setting = Setting(attributes=attributes, name="from attributes")
    return Observed(steps=obs_steps, grams=grams, attributes=attributes, setting=setting, desc=desc, run=run,
                    W0=W0, M0=M0, within=within, counts=counts, K=K, T=len(grams), clock=run_clock)


def until_step(obs: Observed, until) -> Observed:
    """The records of ``obs`` up to step ``until`` (all of them for ``None``); at least 3 must remain."""
    if until is None:
        return obs
    keep = obs.steps <= until
    n = int(keep.sum())
    if n < 3:
        raise ValueError(f"until={until!r} keeps {n} record(s) (steps {obs.steps[:4].tolist()}...); a trajectory fit "
                         f"needs at least 3. Pass a later step.")
    kw = dict(obs.__dict__)
    kw.update(steps=obs.steps[keep], grams=obs.grams[keep], T=n,
              within=None if obs.within is None else obs.within[keep])
    return Observed(**kw)


def _load_source(path: str):
    """A bridge run (any format :func:`~ufm.bridge.io.load_run` reads) or a saved Trajectory."""
    if path.endswith(".npz") and os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as data:
                kind = json.loads(str(data["__header__"])).get("type") if "__header__" in data.files else None
        except Exception:      # unreadable: load_run says what is wrong with the file
            kind = None
        if kind == "Trajectory":
            return load(path)
    return load_run(path)


def _setting_from_meta(meta):
    """Rebuild a setting from the run's ``meta["setting"]`` (``{"name": "factorial(...)", "params": {...}}``, as
    :func:`ufm.bridge.train_network` records it; ``"generator"`` may name the function); ``None`` if it cannot."""
    if not isinstance(meta, dict):
        return None
    gen = meta.get("generator") or str(meta.get("name", "")).split("(")[0]
    params = meta.get("params")
    if gen in settings.NAMED_SETTINGS and isinstance(params, dict):
        try:
            return getattr(settings, gen)(**params)
        except (TypeError, ValueError):
            return None
    return None


class Representations:
    """The observed Grams in every representation the fit uses or reports."""

    def __init__(self, obs, match, algebra):
        self.attributes, self.T, self.K = obs.attributes, obs.T, obs.K
        self.ids = algebra.ids if algebra is not None else pattern_ids(obs.attributes)
        self.algebra, self.match = algebra, match
        self.full = unit_centred(obs.grams)
        self.patterns = project_patterns(self.full, self.ids)
        self.matched = self.patterns if match == "patterns" else self.full
        self.gap, self.etf = gaps_of(self.full, obs.attributes), etf_of(self.full)
        # the records of the gap's clear rise (first record to the peak), when the gap rises clearly
        p = int(np.argmax(self.gap)) if np.all(np.isfinite(self.gap)) else 0
        self.rise = (slice(0, p + 1) if 2 <= p < self.T - 1 and self.gap[p] - self.gap[0] >= TRANSIENT["rise"]
                     else None)
        self.R = int(self.ids.max()) + 1
        dims = (self.R - 2 if algebra is not None else pattern_dims(self.ids) - 1) if match == "patterns" \
            else self.K * (self.K - 1) // 2 - 1
        self.dims = max(int(dims), 0)
        self.n_data = self.T * self.dims
        self.outside = outside_fraction(self.full, self.ids)          # per record
        change = self.full - self.full.mean(axis=0)
        total = float(np.sum(change ** 2))
        out = float(np.sum((change - project_patterns(change, self.ids, normalize=False)) ** 2))
        self.outside_change = out / total if total > 0 else 0.0

def pattern_dims(ids):
    K = ids.shape[0]
    if K > 400:
        return int(ids.max()) + 1 - 1
    P = metrics.centering_matrix(K)
    basis = np.stack([(P @ (ids == r).astype(float) @ P).ravel() for r in range(int(ids.max()) + 1)])
    return int(np.linalg.matrix_rank(basis, tol=1e-9))


def first_state(obs):
    """``(W0 or None, H0)`` of the first record in a basis of ``span [W0^T, M0]`` (or ``sqrtm(G0)``)."""
    if obs.M0 is None:
        return None, psd_root(np.asarray(obs.grams[0], dtype=np.float64))
    M0 = obs.M0
    if obs.W0 is None:
        U, s, _ = np.linalg.svd(M0, full_matrices=False)
        return None, U[:, :numerical_rank(s, floor=1e-300)].T @ M0
    B = np.hstack([obs.W0.T, M0])
    U, s, _ = np.linalg.svd(B, full_matrices=False)
    Q = U[:, :numerical_rank(s, floor=1e-300)]
    return obs.W0 @ Q, Q.T @ M0
