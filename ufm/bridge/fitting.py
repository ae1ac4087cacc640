"""Fit UFM models to observed Gram trajectories (THEORY §8.6), and say honestly what they explain.

:func:`fit` takes class-mean Grams recorded over training (a bridge :class:`~ufm.results.Run`
file, arrays, or a :class:`~ufm.results.Trajectory` of :func:`ufm.simulate`) and fits, side by side:

``"static"``
    At each record, the least-squares decomposition of the centred, unit-norm
    Gram into the ETF part and one attribute kernel per factor,
    ``G_c ~ a P_K + sum_f b_f P_K S_f P_K`` (THEORY §8.6 step 2), with
    confidence intervals. Descriptive: ``1 + F`` free numbers per record, so
    it is never a candidate explanation, and it is flagged *saturated* when it
    has as many numbers per record as the representation it is matched on.
``"input_coupled"`` (M2, THEORY §8.2; :mod:`ufm.bridge.m2`)
    ``H = A Phi`` under gradient flow, with ufm's encoding
    ``Phi = [Phi_attr(strengths); sigma I]`` (``sigma`` and the strengths
    fitted) or the user's own inputs / kernel (used as given); the weight
    decay, the start scale and a monotone time map from observed steps to
    model time are fitted. Started isotropically or from the run's own first
    record.
``"anchored"`` (M1, THEORY §8.1)
    The minimizer of the anchored MSE UFM (8.1) on a grid of ``beta``, anchor
    ``H_0`` = the attribute one-hots; fitted: a non-increasing path
    ``beta(step)`` (``1/beta`` reads as capacity x training time). Its semantic
    gap can only fall along such a path, so it cannot produce the early rise.

Representations (THEORY §8.6 step 5). Grams are compared after centring with
``P_K`` and scaling to unit Frobenius norm. *Full*: the whole unit-centred
Gram. *Patterns*: its average over pairs of classes that share the same set of
attributes (:mod:`ufm.bridge.patterns`), renormalized: everything an attribute
model can express, without the item-specific part of a finite network's Gram.
The fit is *matched* on one of them (``match``) and judged on both.

Goodness of fit (``FitResult.gof[model]``): ``gap_r2`` and ``etf_r2`` (R^2 of
the semantic-gap and ETF-distance curves over the records, model against the
full observed Grams, with their RMSE), ``gram_r2`` (matched representation),
``gram_r2_patterns``, ``gram_r2_full`` (``1 - sum_t ||G_obs - G_model||^2 /
sum_t ||G_obs - mean_t G_obs||^2``), ``gram_distance``, ``n_params`` (the time
map and per-record coefficients count, one per record) and ``n_data``
(independent numbers in the matched representation: ``T (R - 2)`` for ``R``
patterns, ``T (K(K-1)/2 - 1)`` for full Grams). The data's own
``outside_patterns`` (share of the Gram variance, and of its change over
training, that no attribute model can produce) is in ``FitResult.params``.

A dynamical model is *accepted* as an explanation only if it explains the
gap curve, the ETF-distance curve and the matched Grams and does better than
the time-averaged Gram on the full Grams (thresholds: :data:`ACCEPT`);
``best_model`` is the accepted model with the highest matched Gram R^2, or
``None``. ``FitResult.verdict`` says in one line what is and is not explained.

References
----------
THEORY.md §7.2, §7.4, §8.1, §8.2, §8.6; Tirer, Huang, Niles-Weed, arXiv
2210.16658 (M1); Zhao, Papadimitriou, Thrampoulidis, "Structure Before
Collapse", arXiv 2606.26749.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from .. import metrics
from .._checks import check_int, check_nonneg, check_positive
from ..results import FitResult, Run, Trajectory
from .io import _as_numpy, load_run
from .m1 import anchored_path, anchored_path_patterns
from .m2 import ENGINES, STARTS, M2Model, _Reporter, align_monotone, align_refined, at_fraction, fit_m2
from .patterns import PatternAlgebra, outside_fraction, pattern_ids, project_patterns

__all__ = ["ACCEPT", "MODELS", "align_monotone", "anchored_path", "fit", "isotropic_init", "observed_transition",
           "pattern_ids", "project_patterns", "static_decomposition", "unit_centred", "within_class"]

MODELS = ("static", "input_coupled", "anchored")
NAMES = {"static": "static", "input_coupled": "M2 (input-coupled)", "anchored": "M1 (anchored)"}

#: Minimum quality for a dynamical model to count as an explanation (``fit(accept=...)`` overrides).
#: A curve is explained when its R^2 reaches ``*_r2`` *or* its RMSE is below ``*_rmse`` (a curve that
#: hardly moves has no meaningful R^2, but a model that sits on it still explains it).
ACCEPT = {"gap_r2": 0.8, "gap_rmse": 0.01, "etf_r2": 0.5, "etf_rmse": 0.02, "gram_r2": 0.5,
          "full_gram_r2": 0.0}

#: The observed transition needs a clear transient: a rise of at least ``rise`` above the first record,
#: then a fall of at least ``max(rise, fall * (peak - start))`` below the peak by the last record.
TRANSIENT = {"rise": 0.02, "fall": 0.25}


# -- observed data -------------------------------------------------------------------
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


class _Obs:
    """What :func:`fit` reads from its source."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _observed(source, setting, attributes, steps) -> _Obs:
    """Steps, Grams, attributes, setting, description, and when present the first record's state and the
    within-class traces."""
    from ..settings import Setting

    desc = type(source).__name__
    run_attrs, run = None, None
    W0 = M0 = within = counts = None
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        source = _load_source(path)
        desc = f"{type(source).__name__} {os.path.basename(path)}"
    recorded = None
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
        obs_steps = np.asarray(source.times, float)
        desc = f"Trajectory ({name}, {source.n_seeds} seed(s) averaged)"
        prob_attrs = source.meta.get("attributes")
        run_attrs = None if prob_attrs is None else np.asarray(prob_attrs)
        if source.n_seeds == 1 and "H" in rec and name == "gram_H":
            M0 = np.asarray(rec["H"][0, 0], dtype=np.float64)
            W0 = np.asarray(rec["W"][0, 0], dtype=np.float64) if "W" in rec else None
    else:
        grams = _as_numpy(source, "source")
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
    return _Obs(steps=obs_steps, grams=grams, attributes=attributes, setting=setting, desc=desc, run=run,
                W0=W0, M0=M0, within=within, counts=counts, K=K, T=len(grams))


def _load_source(path: str):
    """A bridge run (any format :func:`~ufm.bridge.io.load_run` reads) or a saved Trajectory."""
    from ..results import load

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
    from .. import settings

    if not isinstance(meta, dict):
        return None
    gen = meta.get("generator") or str(meta.get("name", "")).split("(")[0]
    params = meta.get("params")
    if gen in ("factorial", "hierarchy", "ntp_contexts") and isinstance(params, dict):
        try:
            return getattr(settings, gen)(**params)
        except (TypeError, ValueError):
            return None
    return None


# -- static decomposition (THEORY §8.6 step 2) ----------------------------------------
def _regressors(attributes):
    """Basis ``[P_K, P_K S_f P_K ...]`` over the factors that split the classes; names of the kept factors."""
    A = np.asarray(attributes)
    K = A.shape[0]
    P = np.eye(K) - 1.0 / K
    basis, kept = [P], []
    for f in range(A.shape[1]):
        S = (A[:, None, f] == A[None, :, f]).astype(float)
        B = P @ S @ P
        X = np.stack([b.ravel() for b in basis + [B]], axis=1)
        sv = np.linalg.svd(X, compute_uv=False)
        if sv[-1] > 1e-10 * sv[0]:
            basis.append(B)
            kept.append(f)
    return basis, kept


def static_decomposition(grams, attributes, *, level: float = 0.95) -> dict:
    """Least squares ``G_c = a P_K + sum_f b_f P_K S_f P_K + E`` per Gram, with confidence intervals.

    ``G_c`` is the centred, unit-norm Gram (THEORY §8.6 steps 1-2). Factors
    that do not split the classes or repeat earlier ones (their ``P S_f P`` is
    linearly dependent on the basis) are dropped and listed in ``"dropped"``.

    The regression runs over the ``K(K+1)/2`` distinct entries (off-diagonal
    entries weighted by sqrt 2, so the fit is the Frobenius projection); the
    centred symmetric matrices span ``K(K-1)/2`` dimensions, which gives
    ``df = K(K-1)/2 - (1 + F_kept)`` residual degrees of freedom. Intervals are
    the t-intervals of ordinary least squares, which treat the residual
    entries as independent with equal variance: residuals of real Grams are
    correlated, so read them as a lower bound on the uncertainty.

    Parameters
    ----------
    grams : array (K, K) or (T, K, K)
        Observed Grams (centred and normalized here).
    attributes : array of int (K, F)
        Factor levels, one row per class.
    level : float
        Confidence level of the intervals.

    Returns
    -------
    dict
        ``a`` (T,), ``b`` (T, F_kept), ``a_ci`` (T, 2), ``b_ci`` (T, F_kept, 2),
        ``r2`` (T,), ``fitted`` (T, K, K, unit-centred model Grams), ``factors``
        (kept factor indices), ``dropped``, ``df``.
    """
    from scipy import stats

    G = unit_centred(grams)
    single = G.ndim == 2
    G = G[None] if single else G
    T, K, _ = G.shape
    basis, kept = _regressors(attributes)
    iu = np.triu_indices(K)
    w = np.where(iu[0] == iu[1], 1.0, math.sqrt(2.0))
    X = np.stack([b[iu] * w for b in basis], axis=1)
    y = G[:, iu[0], iu[1]] * w
    XtX_inv = np.linalg.inv(X.T @ X)
    coef = y @ X @ XtX_inv.T                                  # (T, p)
    resid = y - coef @ X.T
    rss = np.sum(resid ** 2, axis=1)
    df = K * (K - 1) // 2 - X.shape[1]
    if df > 0:
        se = np.sqrt(np.outer(rss / df, np.diag(XtX_inv)))
        q = stats.t.ppf(0.5 + level / 2, df)
        ci = np.stack([coef - q * se, coef + q * se], axis=-1)
    else:
        ci = np.full(coef.shape + (2,), np.nan)
    fitted = np.einsum("tp,pkl->tkl", coef, np.stack(basis))
    return {"a": coef[:, 0], "b": coef[:, 1:], "a_ci": ci[:, 0], "b_ci": ci[:, 1:], "r2": 1.0 - rss,
            "fitted": fitted, "factors": kept,
            "dropped": [f for f in range(np.asarray(attributes).shape[1]) if f not in kept], "df": df,
            "level": level}


# -- M2's wide-layer start, for simulating with ufm.simulate ----------------------------
def isotropic_init(problem, init_scale: float) -> dict:
    """The deterministic wide-network start of the input-coupled UFM: ``{"W0": ..., "A0": ...}``.

    With ``d >= p + K``: ``A0 = init_scale [I_p; 0]`` and ``W0 = init_scale [0, I_K]``, so
    ``A0^T A0 = init_scale^2 I_p``, ``W0 W0^T = init_scale^2 I_K`` and ``W0 A0 = 0``: the limit of a
    Gaussian start in a wide layer (``A0^T A0 ~ s^2 d I``, ``W0 A0 / (s^2 d) -> 0``), without its
    seed-to-seed noise. Every rotation of the feature space gives the same Gram trajectory.

    Parameters
    ----------
    problem : InputCoupledUFM
        The model (``d >= p + K``).
    init_scale : float
        The scale ``s`` above.

    Returns
    -------
    dict
        ``{"W0": (K, d) array, "A0": (d, p) array}``.
    """
    K, p, d = problem.K, problem.p, problem.d
    if d < p + K:
        raise ValueError(f"the isotropic start needs d >= p + K = {p + K}, got d = {d}; pass d=None.")
    A0 = np.zeros((d, p))
    A0[:p] = init_scale * np.eye(p)
    W0 = np.zeros((K, d))
    W0[:, p:p + K] = init_scale * np.eye(K)
    return {"W0": W0, "A0": A0}


# -- within-class metrics from a run's traces --------------------------------------------
def within_class(grams, within, counts) -> dict:
    """NC1 (trace ratio) and mean CDNV per record, from class-mean Grams and within-class traces.

    A bridge :class:`~ufm.results.Run` keeps, per record, the class-mean Gram
    ``M^T M`` and each class's within-class trace
    ``(1/n_k) sum_{y_i = k} ||h_i - mu_k||^2``. Those determine
    ``NC1~ = tr Sigma_W / tr Sigma_B`` (the ``"trace_ratio"`` variant of
    :func:`ufm.metrics.nc1`: ``Sigma_W`` pooled over examples, ``Sigma_B``
    over classes around the *sample* global mean) and the CDNV of
    :func:`ufm.metrics.cdnv_mean` (THEORY §7.1). NC1's ``"pinv"`` / ``"svd"``
    variants need the whole within-class covariance, which a run does not
    keep. With one example per class (``within = 0``) both are 0.

    Parameters
    ----------
    grams : array (T, K, K)
        Class-mean Grams ``M^T M``.
    within : array (T, K)
        Within-class traces per class.
    counts : array (K,)
        Examples per class.

    Returns
    -------
    dict
        ``nc1_trace_ratio`` (T,) and ``cdnv_mean`` (T,).
    """
    G = np.asarray(grams, dtype=np.float64)
    w = np.asarray(within, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    N, K = n.sum(), len(n)
    nc1, cd = [], []
    off = ~np.eye(K, dtype=bool)
    for g, wt in zip(G, w):
        dg = np.diag(g)
        gn = g @ n / N
        between = dg - 2 * gn + (n @ gn) / N                  # ||mu_k - mu_G||^2, mu_G the sample mean
        tb = between.sum() / K
        nc1.append(np.nan if tb <= 0 else float((n @ wt / N) / tb))
        dist2 = dg[:, None] + dg[None, :] - 2 * g
        with np.errstate(divide="ignore", invalid="ignore"):
            V = 0.5 * (wt[:, None] + wt[None, :]) / dist2
        cd.append(float(np.mean(V[off])) if np.all(dist2[off] > 0) else np.inf)
    return {"nc1_trace_ratio": np.array(nc1), "cdnv_mean": np.array(cd)}


# -- goodness of fit --------------------------------------------------------------------
def _gaps(G, attributes):
    return np.array([metrics.semantic_gap(g, attributes, center=False) for g in G])


def _etf(G):
    return np.array([metrics.etf_distance(g, center=False) for g in G])


def _r2(y, yhat):
    ss = float(np.sum((y - y.mean()) ** 2))
    return float(1.0 - np.sum((y - yhat) ** 2) / ss) if ss > 0 else float("nan")


def _gram_r2(obs, model):
    spread = float(np.sum((obs - obs.mean(axis=0)) ** 2))
    res = float(np.sum((obs - model) ** 2))
    return float(1.0 - res / spread) if spread > 0 else float("nan")


def _unit(G):
    n = np.linalg.norm(G, axis=(-2, -1), keepdims=True)
    return G / np.where(n > 0, n, 1.0)


def _gof(rep, model_full, n_params):
    """Goodness of fit of one model's unit-centred Grams (T, K, K) against the observed representations."""
    gap = _gaps(model_full, rep.attributes)
    etf = _etf(model_full)
    model_pat = project_patterns(model_full, rep.ids)
    model_matched = model_pat if rep.match == "patterns" else model_full
    d = np.linalg.norm((rep.matched - model_matched).reshape(rep.T, -1), axis=1)
    g = {"gap_r2": _r2(rep.gap, gap), "gap_rmse": float(np.sqrt(np.mean((rep.gap - gap) ** 2))),
         "etf_r2": _r2(rep.etf, etf), "etf_rmse": float(np.sqrt(np.mean((rep.etf - etf) ** 2))),
         "gram_r2": _gram_r2(rep.matched, model_matched),
         "gram_r2_patterns": _gram_r2(rep.patterns, model_pat), "gram_r2_full": _gram_r2(rep.full, model_full),
         "gram_distance": float(d.mean()), "n_params": int(n_params), "n_data": int(rep.n_data)}
    return gap, etf, g


def _explains(g, accept, rep) -> dict:
    """Which of the curves and Grams a model explains, by the thresholds of ``accept``.

    A curve is explained when its R^2 reaches the threshold, or, for a *flat* curve (the observed values
    span less than 3 times the RMSE tolerance, where R^2 measures noise), when the model stays within
    the RMSE tolerance of it.
    """
    def ok(r2, r2_min, rmse=None, rmse_max=None, span=None):
        if np.isfinite(r2) and r2 >= r2_min:
            return True
        return bool(rmse is not None and span <= 3 * rmse_max and rmse <= rmse_max)

    return {"gap": ok(g["gap_r2"], accept["gap_r2"], g["gap_rmse"], accept["gap_rmse"], float(np.ptp(rep.gap))),
            "etf": ok(g["etf_r2"], accept["etf_r2"], g["etf_rmse"], accept["etf_rmse"], float(np.ptp(rep.etf))),
            "gram": ok(g["gram_r2"], accept["gram_r2"]),
            "full_gram": ok(g["gram_r2_full"], accept["full_gram_r2"])}


# -- transitions --------------------------------------------------------------------------
def observed_transition(steps, gaps, grams, *, rise: float = TRANSIENT["rise"],
                        fall: float = TRANSIENT["fall"]) -> dict:
    """The observed transition of a run: defined only after a clear rise and a clear fall of the gap.

    Definition (documented in ``docs/bridge/fits.md``): with ``p`` the record
    of the largest semantic gap, the run has a transient when ``p`` is neither
    the first nor the last record, ``gap[p] - gap[0] >= rise`` and
    ``gap[p] - gap[-1] >= max(rise, fall * (gap[p] - gap[0]))``. The transition
    is then the first record after ``p`` whose Gram (the representation the
    fit is matched on) is closer to the last record's Gram than to the peak's.
    A monotone gap curve (peak at the first or last record) has no transition.

    Parameters
    ----------
    steps : array (T,)
        The record steps.
    gaps : array (T,)
        The semantic gap of each record.
    grams : array (T, K, K)
        The Grams the fit is matched on.
    rise, fall : float
        The thresholds of the definition above.

    Returns
    -------
    dict
        ``step`` (float or None), ``index``, ``peak_step`` and ``reason`` (why there is
        none, or how it was found).
    """
    gaps = np.asarray(gaps, dtype=np.float64)
    T = len(gaps)
    if T < 3 or not np.all(np.isfinite(gaps)):
        return {"step": None, "index": None, "peak_step": None,
                "reason": "fewer than 3 records, or an undefined gap at some record"}
    p = int(np.argmax(gaps))
    peak_step = float(steps[p])
    up, down = gaps[p] - gaps[0], gaps[p] - gaps[-1]
    if p == 0:
        return {"step": None, "index": None, "peak_step": peak_step,
                "reason": "no rise: the semantic gap is largest at the first record"}
    if p == T - 1:
        return {"step": None, "index": None, "peak_step": peak_step,
                "reason": "no fall: the semantic gap is largest at the last record (still rising)"}
    if up < rise:
        return {"step": None, "index": None, "peak_step": peak_step,
                "reason": f"no clear rise: the gap rises by {up:.3g} < {rise:g} above the first record"}
    if down < max(rise, fall * up):
        return {"step": None, "index": None, "peak_step": peak_step,
                "reason": f"no clear fall: the gap falls by {down:.3g} after its peak, less than "
                          f"{max(rise, fall * up):.3g} (max({rise:g}, {fall:g} x the rise))"}
    end = grams[-1]
    for j in range(p + 1, T):
        if np.linalg.norm(grams[j] - end) < np.linalg.norm(grams[j] - grams[p]):
            return {"step": float(steps[j]), "index": j, "peak_step": peak_step,
                    "reason": "first record after the gap peak whose Gram is closer to the last record's than "
                              "to the peak's"}
    return {"step": None, "index": None, "peak_step": peak_step, "reason": "the Grams never get closer to the "
            "last record's than to the peak's"}


def _time_map_powerlaw(obs_steps, model_times):
    """Least squares ``log tau = offset + exponent log step`` over records with step > 0 and tau > 0."""
    m = (obs_steps > 0) & (model_times > 0)
    if m.sum() < 2 or np.ptp(np.log(obs_steps[m])) == 0 or np.ptp(np.log(model_times[m])) == 0:
        return None, None
    exponent, offset = np.polyfit(np.log(obs_steps[m]), np.log(model_times[m]), 1)
    return float(exponent), float(offset)


def _predicted_transition(tau_tr, obs_steps, tau_obs, exponent, offset) -> dict:
    """Map the model's transition time to observed steps, only inside the aligned range."""
    m = (obs_steps > 0) & (tau_obs > 0)
    out = {"model_time": tau_tr, "step": None, "extrapolated_step": None, "inside": False}
    if m.sum() >= 2 and exponent is not None and exponent > 0:
        out["extrapolated_step"] = float(math.exp((math.log(tau_tr) - offset) / exponent))
    if m.sum() < 2:
        out["reason"] = "fewer than two records aligned with positive model times; no time map"
        return out
    lt, ls = np.log(tau_obs[m]), np.log(obs_steps[m])
    if tau_tr > tau_obs[m][-1]:
        out["reason"] = (f"M2 reaches its transition at model time {tau_tr:.3g}, after the model time aligned with "
                         f"the last record ({tau_obs[m][-1]:.3g}): the run ends before the predicted transition"
                         + ("" if out["extrapolated_step"] is None else
                            f"; the power-law time map would put it at step {out['extrapolated_step']:.3g}, "
                            f"outside the observed steps (not reported as a prediction)"))
        return out
    if tau_tr < tau_obs[m][0]:
        out["reason"] = (f"M2's transition (model time {tau_tr:.3g}) comes before the model time aligned with the "
                         f"first positive step ({tau_obs[m][0]:.3g})")
        return out
    keep = np.concatenate([[True], np.diff(lt) > 0])
    if keep.sum() < 2:
        out["reason"] = "the aligned model times do not advance; no time map"
        return out
    out.update(step=float(np.exp(np.interp(math.log(tau_tr), lt[keep], ls[keep]))), inside=True,
               reason="inside the observed steps (log-log interpolation of the aligned time map)")
    return out


# -- the verdict ------------------------------------------------------------------------------
def _verdict(gof, explains, best, outside_change, static_saturated, accept) -> str:
    """One plain-language line: what the dynamical models explain and what nothing here explains."""
    dyn = [m for m in gof if m != "static"]
    if not dyn:
        msg = "no dynamical model was fitted; the static decomposition describes each record separately"
        if static_saturated:
            msg += " (saturated here: as many numbers per record as the data, so its R^2 = 1 says nothing)"
        return msg + "."
    parts, missing = [], []
    for key, label, r2, rmse in (("gap", "the semantic-gap curve", "gap_r2", "gap_rmse"),
                                 ("etf", "the ETF distance", "etf_r2", "etf_rmse"),
                                 ("full_gram", "the full Grams", "gram_r2_full", "full_gram_r2")):
        def score(m):
            return gof[m][r2] if np.isfinite(gof[m][r2]) else -np.inf
        who = [m for m in dyn if explains[m][key]]
        if who:
            m = max(who, key=score)
            how = (f"R^2 {gof[m][r2]:.2f}" if score(m) >= accept[r2 if key != "full_gram" else rmse] else
                   f"a flat curve, RMSE {gof[m][rmse]:.3f}")
            parts.append((m, label, how))
        else:
            m = max(dyn, key=score)
            missing.append(f"{label} (best R^2 {gof[m][r2]:.2f}, {NAMES[m]})")
    by_model = {}
    for m, label, how in parts:
        by_model.setdefault(m, []).append(f"{label} ({how})")
    said = [f"{NAMES[m]} explains " + _join(items) for m, items in by_model.items()]
    if missing:
        said.append("nothing here explains " + _join(missing))
    if outside_change > 0.2:
        said.append(f"{100 * outside_change:.0f}% of the Grams' change over training lies outside the attribute "
                    f"patterns, which no attribute model started isotropically produces")
    end = (f"best model: {NAMES[best]}" if best is not None else
           "no dynamical model is accepted as an explanation (best_model = None)")
    return "; ".join(said) + f". {end[0].upper()}{end[1:]}."


def _join(items):
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# -- entry point ------------------------------------------------------------------------
class _Rep:
    """The observed Grams in every representation the fit uses or reports."""

    def __init__(self, obs, match, algebra):
        self.attributes, self.T, self.K = obs.attributes, obs.T, obs.K
        self.ids = algebra.ids if algebra is not None else pattern_ids(obs.attributes)
        self.algebra, self.match = algebra, match
        self.full = unit_centred(obs.grams)
        self.patterns = project_patterns(self.full, self.ids)
        self.matched = self.patterns if match == "patterns" else self.full
        self.gap, self.etf = _gaps(self.full, obs.attributes), _etf(self.full)
        self.R = int(self.ids.max()) + 1
        dims = (self.R - 2 if algebra is not None else _pattern_dims(self.ids) - 1) if match == "patterns" \
            else self.K * (self.K - 1) // 2 - 1
        self.dims = max(int(dims), 0)
        self.n_data = self.T * self.dims
        self.outside = outside_fraction(self.full, self.ids)          # per record
        change = self.full - self.full.mean(axis=0)
        total = float(np.sum(change ** 2))
        out = float(np.sum((change - project_patterns(change, self.ids, normalize=False)) ** 2))
        self.outside_change = out / total if total > 0 else 0.0

    def m2_cost(self, model):
        """``(cost, inner, adjacent)``: ``cost(model, x)`` is the mean squared distance of the refined monotone
        alignment (:func:`~ufm.bridge.m2.align_refined`) in the matched representation; ``inner(G)`` the
        observation-model inner products and ``adjacent(G)`` those of consecutive model points."""
        if model.engine == "patterns":
            a = model.algebra
            eig = a.eigen(a.values(self.full))                       # projections of the unit Grams
            if self.match == "patterns":
                eig = eig / np.sqrt(np.sum(a.mult * eig ** 2, axis=1, keepdims=True))

            def inner(G):
                return a.inner(eig, G)

            def adjacent(G):
                return np.sum(a.mult * G[:-1] * G[1:], axis=1)
        else:
            flat = self.matched.reshape(self.T, -1)

            def rep(G):
                return (project_patterns(G, self.ids) if self.match == "patterns" else G).reshape(len(G), -1)

            def inner(G):
                return flat @ rep(G).T

            def adjacent(G):
                R = rep(G)
                return np.sum(R[:-1] * R[1:], axis=1)

        def cost(m, x):
            try:
                out = m.trajectory(x)
            except (ValueError, FloatingPointError, np.linalg.LinAlgError):
                return np.inf
            if out is None:
                return np.inf
            return align_refined(inner(out[1]), adjacent(out[1]))[1]

        return cost, inner, adjacent


def _pattern_dims(ids):
    K = ids.shape[0]
    if K > 400:
        return int(ids.max()) + 1 - 1
    P = np.eye(K) - 1.0 / K
    basis = np.stack([(P @ (ids == r).astype(float) @ P).ravel() for r in range(int(ids.max()) + 1)])
    return int(np.linalg.matrix_rank(basis, tol=1e-9))


def _check_models(models):
    if isinstance(models, str) or not all(isinstance(m, str) for m in np.atleast_1d(np.asarray(models, object))):
        raise ValueError(f"models must be a sequence of model names from {MODELS}, e.g. ('static', "
                         f"'input_coupled'), got {models!r}.")
    models = tuple(models)
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ValueError(f"models must be a non-empty subset of {MODELS}, got {list(models)}.")
    return models


def _check_grid(sigma_grid):
    if isinstance(sigma_grid, (str, bytes)) or np.ndim(sigma_grid) != 1 or len(sigma_grid) == 0:
        raise ValueError(f"sigma_grid must be a non-empty sequence of capacities > 0, e.g. (1.0, 2.0, 4.0), got "
                         f"{sigma_grid!r}.")
    return tuple(check_positive("sigma_grid", s, "a starting capacity") for s in sigma_grid)


def _check_accept(accept):
    out = dict(ACCEPT)
    if accept is None:
        return out
    if not isinstance(accept, dict) or set(accept) - set(ACCEPT):
        raise ValueError(f"accept must be a dict with keys among {sorted(ACCEPT)}, got {accept!r}.")
    for k, v in accept.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"accept[{k!r}] must be a number, got {v!r}.") from None
    return out


def fit(source, setting=None, *, attributes=None, steps=None, models=MODELS, loss: str = "ce", lam="fit",
        fit_strengths: bool = True, inputs=None, kernel=None, start: str = "isotropic", init_scale="fit",
        match: str = "auto", engine: str = "auto", horizon: float = 1e6, n_model: int = 160,
        sigma_grid=(0.5, 1.0, 2.0, 4.0, 8.0, 16.0), maxiter: int = 300, anchor=None, lam_W_anchor: float = 1e-2,
        lam_H_anchor: float = 1e-2, betas=None, level: float = 0.95, accept=None, seed: int = 0,
        progress: bool = False) -> FitResult:
    """Fit the static decomposition, the input-coupled UFM (M2) and the anchored UFM (M1) to observed Grams.

    Parameters
    ----------
    source : Run, path, Trajectory or array
        A bridge run (:class:`~ufm.results.Run` or the path of a file that
        :func:`ufm.bridge.load_run` reads), a :class:`~ufm.results.Trajectory`
        (its ``"gram_means"`` or ``"gram_H"`` record, averaged over seeds; the
        observed clock is ``traj.times``), or class-mean Grams ``(T, K, K)`` /
        ``(K, K)``. Grams are uncentred ``M^T M`` of class means (symmetric PSD).
    setting : Setting, optional
        The synthetic setting the classes come from (its attribute table and
        ufm's encoding for M2 / M1). Default: the run's recorded setting, or a
        setting built from ``attributes``. A setting whose attribute table
        differs from the one the run records is an error.
    attributes : int array (K, F), optional
        Attribute table, when there is no setting.
    steps : array (T,), optional
        Observed steps (default: the run's steps, the trajectory's times, or ``0..T-1``).
    models : sequence of str
        Any of ``"static"``, ``"input_coupled"``, ``"anchored"``.
    loss : {"ce", "mse"}
        Loss of M2 (the network's loss; default CE, mean over classes).
    lam : "fit" or float
        Weight decay ``lam_W = lam_A`` of M2 (halved convention, THEORY §0.1).
        ``"fit"`` (default) fits ``log10 lam`` from the starts -4, -3, -2: a
        finite-time stand-in for whatever ends a network's transient.
    fit_strengths : bool
        With ufm's encoding: fit one strength per attribute block (geometric
        mean 1), or hold them at 1.
    inputs : array (p, K), optional
        The network's own inputs, one column per class (e.g. class-mean input
        vectors): M2 uses ``K_x = inputs^T inputs`` as given, and ``sigma`` and
        the strengths are not fitted.
    kernel : array (K, K), optional
        The input kernel itself (symmetric PSD), instead of ``inputs``.
    start : {"isotropic", "observed"}
        M2's start (:mod:`ufm.bridge.m2`): the wide-layer isotropic start, or
        the run's first record (class means and classifier rows when recorded,
        else the first Gram), which carries the run's random initialization.
    init_scale : "fit" or float
        Start scale ``s`` (``||W0||^2 + ||H0||^2 = s^2 (K + tr K_x)``); fitted
        by default from the starts 1e-3, 1e-2, 1e-1.
    match : {"auto", "patterns", "full"}
        The representation the dynamical models are fitted on (module
        docstring). ``"auto"``: ``"full"`` with ``start="observed"`` (the model
        then carries the run's own item-specific start), else ``"patterns"``.
        Goodness of fit is reported in both.
    engine : {"auto", "patterns", "dense"}
        M2's integrator (:class:`~ufm.bridge.m2.M2Model`). ``"auto"``: the exact
        pattern reduction when the attribute table is an association scheme,
        the kernel constant on its patterns and the start isotropic (factorial
        and hierarchy settings: milliseconds per simulation at any K); else
        dense (``O(K^3)`` per step). With ``start="observed"`` and a scheme,
        the isotropic pattern fit runs first and starts the dense search.
    horizon, n_model
        M2: last model time (with weight decay at most ``50 / lam``) and
        model records (0 and a log-spaced grid).
    sigma_grid : sequence of float
        Starting values of ``sigma`` (ufm's encoding).
    maxiter : int
        Nelder-Mead iterations (0: the best grid point, no search).
    anchor : array (d0, K), optional
        M1 anchor ``H_0``. Default: the attribute one-hots (THEORY §8.6 step 3),
        weighted by M2's fitted strengths when M2 is fitted, stacked on a zero
        K x K block that leaves room for the ETF.
    lam_W_anchor, lam_H_anchor : float
        M1 weight decays (Tirer normalization of (8.1)).
    betas : array, optional
        M1 grid (default ``logspace(3, -5, 81)``).
    level : float
        Confidence level of the static intervals.
    accept : dict, optional
        Overrides of :data:`ACCEPT`, the minimum quality of an explanation.
    seed : int
        Seed of M1's symmetry-breaking perturbation.
    progress : bool
        Progress lines on stderr (at most every 2 s).

    Returns
    -------
    FitResult
        ``params``: M2's ``sigma``, ``strengths``, ``lam``, ``init_scale``,
        ``time_exponent``, ``time_offset``; M1's ``beta_start``, ``beta_end``;
        the static coefficients at the last record; ``observed_transition``
        (see :func:`observed_transition`); ``outside_patterns`` (mean share of
        the unit Grams outside the patterns) and ``outside_patterns_change``.
        ``gof`` per model (module docstring) with ``explains`` and
        ``accepted``; ``curves``; ``grams``; ``best_model`` (``None`` when no
        model is accepted); ``predicted_transition`` (a step inside the
        observed range, else ``None``); ``transitions`` (both, with the reason
        when undefined or extrapolated); ``verdict``.

    Raises
    ------
    ValueError
        A bad argument or source, named with the fix, before any simulation;
        a dynamical model with fewer than 3 records.
    """
    t_start = time.perf_counter()
    report = _Reporter(progress)
    models = _check_models(models)
    if loss not in ("ce", "mse"):
        raise ValueError(f"loss must be 'ce' or 'mse', got {loss!r}.")
    if not (isinstance(lam, str) and lam == "fit"):
        lam = check_nonneg("lam", lam)
    if not (isinstance(init_scale, str) and init_scale == "fit"):
        init_scale = check_positive("init_scale", init_scale, "the start scale, or 'fit'")
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}.")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}.")
    if match not in ("auto", "patterns", "full"):
        raise ValueError(f"match must be 'auto', 'patterns' or 'full', got {match!r}.")
    horizon = check_positive("horizon", horizon, "the last model time")
    n_model = check_int("n_model", n_model, 3)
    maxiter = check_int("maxiter", maxiter, 0)
    sigma_grid = _check_grid(sigma_grid)
    accept = _check_accept(accept)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level!r}.")
    if inputs is not None and kernel is not None:
        raise ValueError("pass inputs= or kernel=, not both.")
    obs = _observed(source, setting, attributes, steps)
    K, T = obs.K, obs.T
    user = None
    if inputs is not None:
        user = _as_numpy(inputs, "inputs")
        if user.ndim != 2 or user.shape[1] != K:
            raise ValueError(f"inputs must be (p, K = {K}), one column per class in the run's order, got shape "
                             f"{user.shape}.")
    if kernel is not None:
        user = _as_numpy(kernel, "kernel")
        if user.shape != (K, K) or not np.allclose(user, user.T, atol=1e-10 * max(1.0, np.abs(user).max())):
            raise ValueError(f"kernel must be a symmetric (K = {K}, K) input kernel, got shape {user.shape}.")
        if np.linalg.eigvalsh(0.5 * (user + user.T))[0] < -1e-10 * max(1.0, np.abs(user).max()):
            raise ValueError("kernel must be positive semidefinite (an input Gram X^T X).")
    dynamical = [m for m in models if m != "static"]
    if dynamical and T < 3:
        raise ValueError(f"the source has {T} record(s); fitting a trajectory ({', '.join(dynamical)}) needs at "
                         f"least 3 (more make it identifiable). Use models=('static',) for single Grams.")
    if match == "auto":
        match = "full" if start == "observed" else "patterns"
    notes = []
    try:
        algebra = PatternAlgebra.from_attributes(obs.attributes)
    except ValueError as err:
        algebra = None
        notes.append(f"patterns: {err} (M2 runs on the dense engine)")
    rep = _Rep(obs, match, algebra)

    curves = {"observed_gap": rep.gap, "observed_etf_distance": rep.etf, "outside_patterns": rep.outside}
    if obs.within is not None and np.any(obs.counts > 1):
        wc = within_class(obs.grams, obs.within, obs.counts)
        curves.update(observed_nc1_trace_ratio=wc["nc1_trace_ratio"], observed_cdnv=wc["cdnv_mean"])
    fitted = {"observed": rep.full, "observed_patterns": rep.patterns}
    gof, params, transitions = {}, {}, {}
    params.update(outside_patterns=float(rep.outside.mean()), outside_patterns_change=rep.outside_change)
    static_saturated = False

    if "static" in models:
        st = static_decomposition(obs.grams, obs.attributes, level=level)
        fitted["static"] = st["fitted"]
        per = 1 + len(st["factors"])
        gap, etf, gof["static"] = _gof(rep, st["fitted"], T * per)
        static_saturated = per >= rep.dims
        gof["static"]["saturated"] = static_saturated
        curves.update(static_gap=gap, static_etf_distance=etf, static_a=st["a"], static_b=st["b"],
                      static_a_ci=st["a_ci"], static_b_ci=st["b_ci"], static_r2=st["r2"])
        params.update(a_end=float(st["a"][-1]), b_end=st["b"][-1].tolist(), a_end_ci=st["a_ci"][-1].tolist(),
                      b_end_ci=st["b_ci"][-1].tolist(), ratio_end=(st["b"][-1] / st["a"][-1]).tolist(),
                      static_factors=st["factors"], static_df=st["df"])
        if st["dropped"]:
            notes.append(f"static: factors {st['dropped']} dropped (they do not split the classes or repeat others)")
        if static_saturated:
            notes.append(f"static: {per} numbers per record for {rep.dims} in the {match} representation: "
                         f"saturated, its Gram R^2 says nothing")

    ot = observed_transition(obs.steps, rep.gap, rep.matched)
    transitions["observed"] = ot
    params["observed_transition"] = ot["step"]

    m2 = None
    if "input_coupled" in models:
        report(f"input_coupled: fitting {K} classes, {T} records", force=True)
        m2 = _fit_input_coupled(rep, obs, user=user, inputs_given=inputs is not None, loss=loss, lam=lam,
                                init_scale=init_scale, fit_strengths=fit_strengths, start=start, engine=engine,
                                horizon=horizon, n_model=n_model, sigma_grid=sigma_grid, maxiter=maxiter,
                                report=report)
        notes += m2["notes"]
        model_G = m2["aligned"]
        fitted["input_coupled"] = model_G
        tau = m2["tau"]
        n_free = len(m2["x"])
        gap, etf, gof["input_coupled"] = _gof(rep, model_G, n_free + T)
        curves.update(input_coupled_gap=gap, input_coupled_etf_distance=etf, time_map=tau,
                      model_times=m2["times"], model_gap=m2["model_gap"], model_etf_distance=m2["model_etf"])
        exponent, offset = _time_map_powerlaw(obs.steps, tau)
        q = m2["params"]
        params.update({k: v for k, v in (("sigma", q.get("sigma")), ("strengths", q.get("strengths"))) if v is not None})
        params.update(lam=q["lam"], init_scale=q["scale"], time_exponent=exponent, time_offset=offset,
                      m2_engine=m2["engine"], m2_start=start, m2_kernel=m2["kernel_kind"],
                      m2_simulations=m2["n_sim"])
        if m2["transition_time"] is None:
            transitions["predicted"] = {"step": None, "model_time": None, "inside": False,
                                        "reason": m2["transition_reason"]}
        else:
            transitions["predicted"] = _predicted_transition(m2["transition_time"], obs.steps, tau, exponent, offset)
            params["transition_model_time"] = m2["transition_time"]

    if "anchored" in models:
        H0 = anchor
        if H0 is None:     # attribute one-hots (M2's fitted strengths if any), with room for an ETF
            strengths = None if m2 is None or "strengths" not in m2["params"] else m2["params"]["strengths"]
            H0 = np.vstack([obs.setting.attribute_encoding(strengths), np.zeros((K, K))])
        H0 = _as_numpy(H0, "anchor")
        if H0.ndim != 2 or H0.shape[1] != K:
            raise ValueError(f"anchor must be (d0, K = {K}), got shape {H0.shape}.")
        grid = np.logspace(3, -5, 81) if betas is None else np.asarray(betas, dtype=np.float64)
        if grid.ndim != 1 or len(grid) < 2 or np.any(grid <= 0):
            raise ValueError("betas must be a 1-D grid of at least 2 values > 0.")
        report(f"anchored: beta path over {len(grid)} values", force=True)
        m1 = _fit_m1(rep, H0, lam_W=lam_W_anchor, lam_H=lam_H_anchor, betas=grid, seed=seed)
        fitted["anchored"] = m1["model_grams"]
        gap, etf, gof["anchored"] = _gof(rep, m1["model_grams"], T)
        curves.update(anchored_gap=gap, anchored_etf_distance=etf, beta_path=m1["betas"])
        params.update(beta_end=float(m1["betas"][-1]), beta_start=float(m1["betas"][0]), m1_solver=m1["solver"])

    explains, accepted = {}, {}
    for m, g in gof.items():
        if m == "static":
            g["explains"], g["accepted"] = {}, False
            continue
        e = _explains(g, accept, rep)
        explains[m] = e
        g["explains"] = e
        g["accepted"] = accepted[m] = all(e.values())
    best = max((m for m in accepted if accepted[m]), key=lambda m: gof[m]["gram_r2"], default=None)
    verdict = _verdict(gof, explains, best, rep.outside_change, static_saturated, accept)
    pred = transitions.get("predicted")
    predicted = pred["step"] if pred is not None and pred.get("inside") else None
    interrupted = bool(m2 is not None and m2["interrupted"])
    table = _table(gof, rep)
    message = (f"fit of {obs.desc}: {K} classes, {T} records, matched on {match} Grams.\n{table}\nverdict: {verdict}"
               + _transition_lines(transitions) + _within_lines(curves)
               + "".join(f"\nnote: {n}" for n in notes))
    meta = {"source": obs.desc, "models": list(models), "match": match, "loss": loss, "lam": lam,
            "fit_strengths": fit_strengths, "start": start, "init_scale": init_scale, "engine": engine,
            "horizon": horizon, "n_model": n_model, "maxiter": maxiter, "accept": accept, "seed": seed,
            "setting": getattr(obs.setting, "name", None), "attributes": np.asarray(obs.attributes).tolist(),
            "seconds": time.perf_counter() - t_start, "notes": notes, "interrupted": interrupted}
    return FitResult(params=params, gof=gof, steps=obs.steps, curves=curves, grams=fitted, best_model=best,
                     predicted_transition=predicted, transitions=transitions, verdict=verdict, message=message,
                     meta=meta)


def _fit_input_coupled(rep, obs, *, user, inputs_given, loss, lam, init_scale, fit_strengths, start, engine,
                       horizon, n_model, sigma_grid, maxiter, report):
    """Fit M2 (grid, then Nelder-Mead) and describe its best trajectory."""
    K = rep.K
    notes = []
    lam_v = None if isinstance(lam, str) else lam
    scale_v = None if isinstance(init_scale, str) else init_scale
    common = dict(loss=loss, lam=lam_v, scale=scale_v, fit_strengths=fit_strengths, horizon=horizon,
                  n_model=n_model, algebra=rep.algebra)
    if user is None:
        common["setting"] = obs.setting
        kind = "encoding"
    elif inputs_given:
        common["inputs"] = user
        kind = "inputs"
    else:
        common["kernel"] = user
        kind = "kernel"
    observed_start = None
    if start == "observed":
        observed_start = _start_state(obs)
        if obs.M0 is None:
            notes.append("input_coupled: start='observed' from the first Gram only (the run has no class means); "
                          "the classifier starts isotropic and orthogonal to the features")
        elif obs.W0 is None:
            notes.append("input_coupled: start='observed' from the first class means; the run has no classifier "
                          "rows, so the classifier starts isotropic and orthogonal to the features")
    model = M2Model(K, start=start, observed_start=observed_start, engine=engine, **common)

    def grid(m):
        sig = sigma_grid if m.kind == "encoding" else [None]
        lams = [None] if m.lam is not None else [1e-4, 1e-3, 1e-2]
        scales = [None] if m.scale is not None else ([1e-3, 1e-2, 1e-1] if m.engine == "patterns" or
                                                      m.start == "observed" else [1e-2])
        return [m.pack(sigma=s, strengths=np.ones(m.B), lam=lv, scale=sv)
                for s in sig for lv in lams for sv in scales]

    starts = grid(model)
    interrupted = False
    if model.engine == "dense" and start == "observed" and rep.algebra is not None and kind == "encoding":
        # the isotropic pattern fit is cheap: its strengths and weight decay seed the observed-start grid
        pre = M2Model(K, start="isotropic", engine="patterns", **common)
        r1 = fit_m2(pre, rep.m2_cost(pre)[0], starts=grid(pre), maxiter=maxiter, report=report)
        interrupted = r1["interrupted"]
        q1 = pre.unpack(r1["x"])
        starts = [r1["x"]] + [model.pack(sigma=s, strengths=q1["strengths"], lam=q1["lam"], scale=sv)
                              for s in sigma_grid for sv in ([None] if model.scale is not None else [1e-3, 1e-2, 1e-1])]
        notes.append(f"input_coupled: the isotropic pattern fit ({pre.n_sim} simulations) seeded the observed-start "
                     f"search")
    cost, inner, adjacent = rep.m2_cost(model)
    x = starts[0]
    if not interrupted:
        seeded = model.engine == "dense" and len(starts) and start == "observed" and rep.algebra is not None
        r = fit_m2(model, cost, starts=starts, maxiter=min(maxiter, 150) if seeded else maxiter, report=report,
                   n_searches=2)
        interrupted, x = r["interrupted"], r["x"]
    if interrupted:
        notes.append("input_coupled: interrupted (Ctrl-C); the parameters are the best found before it")
    if maxiter == 0:
        notes.append("input_coupled: maxiter=0, so Nelder-Mead did not run: the parameters are the best grid point")
    out = model.trajectory(x)
    if out is None:
        raise RuntimeError("the best M2 parameters no longer integrate; this is a bug, please report it.")
    times, G = out
    frac, c = align_refined(inner(G), adjacent(G))
    aligned = _unit(model.dense(at_fraction(G, frac)))
    if model.engine == "patterns":
        aligned = unit_centred(aligned)
    if model.engine == "patterns":
        a = rep.algebra
        model_gap, model_etf = a.semantic_gap(G, rep.attributes), a.etf_distance(G)

        def dist(i, j):
            return math.sqrt(max(float(np.sum(a.mult * (G[i] - G[j]) ** 2)), 0.0))
    else:
        model_gap, model_etf = _gaps(G, rep.attributes), _etf(G)

        def dist(i, j):
            return float(np.linalg.norm(G[i] - G[j]))
    j_tr, p = _model_transition_idx(model_gap, dist)
    if j_tr is None:
        tt, reason = None, ("M2's semantic gap has no interior peak within the horizon" if p in (0, len(times) - 1)
                            else "M2's Gram never gets closer to its end state than to its peak within the horizon")
    else:
        tt, reason = float(times[j_tr]), ""
    q = model.unpack(x)
    report(f"input_coupled ({model.engine}): done, {model.n_sim} simulations, cost {c:.4g}", force=True)
    return {"x": x, "params": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in q.items()},
            "times": times, "tau": at_fraction(times, frac, log=True), "frac": frac, "cost": c, "aligned": aligned,
            "model_gap": model_gap,
            "model_etf": model_etf, "transition_time": tt, "transition_reason": reason, "engine": model.engine,
            "kernel_kind": kind, "n_sim": model.n_sim, "interrupted": interrupted, "notes": notes}


def _model_transition_idx(gaps, dist):
    gaps = np.asarray(gaps, dtype=np.float64)
    if not np.any(np.isfinite(gaps)):
        return None, 0
    p = int(np.nanargmax(gaps))
    J = len(gaps)
    if p == 0 or p == J - 1:
        return None, p
    for j in range(p + 1, J):
        if dist(j, J - 1) < dist(j, p):
            return j, p
    return None, p


def _start_state(obs):
    """``(W0 or None, H0)`` of the first record in a basis of ``span [W0^T, M0]`` (or ``sqrtm(G0)``)."""
    from .m2 import _psd_root

    if obs.M0 is None:
        return None, _psd_root(np.asarray(obs.grams[0], dtype=np.float64))
    M0 = obs.M0
    if obs.W0 is None:
        U, s, _ = np.linalg.svd(M0, full_matrices=False)
        keep = s > 1e-12 * max(s.max(), 1e-300)
        return None, U[:, keep].T @ M0
    B = np.hstack([obs.W0.T, M0])
    U, s, _ = np.linalg.svd(B, full_matrices=False)
    keep = s > 1e-12 * max(s.max(), 1e-300)
    Q = U[:, keep]
    return obs.W0 @ Q, Q.T @ M0


def _fit_m1(rep, H0, *, lam_W, lam_H, betas, seed):
    """The M1 path: minimizers on the ``beta`` grid (pattern closed form when the anchor allows), then a
    non-increasing ``beta(step)`` by monotone alignment in the matched representation."""
    a = rep.algebra
    S0 = H0.T @ H0
    if a is not None and a.contains(S0, rtol=1e-9):
        full = unit_centred(a.dense(anchored_path_patterns(a.eigen(a.values(S0)), betas, lam_W=lam_W,
                                                           lam_H=lam_H)))
        how = "patterns"
    else:
        _, H = anchored_path(H0, betas, lam_W=lam_W, lam_H=lam_H, seed=seed)
        full = unit_centred(np.einsum("bdk,bdl->bkl", H, H))
        how = "block-coordinate descent"
    grams = project_patterns(full, rep.ids) if rep.match == "patterns" else full
    order = np.argsort(-betas)               # non-increasing beta over training
    D = np.maximum(2.0 - 2.0 * rep.matched.reshape(rep.T, -1) @ grams[order].reshape(len(order), -1).T, 0.0)
    path, cost = align_monotone(D)
    return {"betas": betas[order][path], "model_grams": full[order][path], "cost": cost, "solver": how}


def _table(gof, rep) -> str:
    head = (f"{'model':<15}{'gap R^2':>9}{'ETF R^2':>9}{'Gram R^2':>10}{'patt R^2':>10}{'full R^2':>10}"
            f"{'params':>8}{'data':>7}  accepted")
    rows = [head]

    def f(v):
        return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"
    for m, g in gof.items():
        if m == "static" and g.get("saturated"):
            tail = "saturated (descriptive)"
        elif m == "static":
            tail = "descriptive"
        else:
            tail = "yes" if g["accepted"] else "no (" + ", ".join(k for k, v in g["explains"].items() if not v) + ")"
        rows.append(f"{m:<15}{f(g['gap_r2']):>9}{f(g['etf_r2']):>9}{f(g['gram_r2']):>10}"
                    f"{f(g['gram_r2_patterns']):>10}{f(g['gram_r2_full']):>10}{g['n_params']:>8d}{g['n_data']:>7d}"
                    f"  {tail}")
    rows.append(f"data: {100 * rep.outside.mean():.0f}% of the unit Grams (mean over records) and "
                f"{100 * rep.outside_change:.0f}% of their change over training lie outside the attribute patterns")
    return "\n".join(rows)


def _transition_lines(transitions) -> str:
    out = ""
    o = transitions.get("observed")
    if o is not None:
        out += ("\nobserved transition: " + (f"step {o['step']:.4g}" if o["step"] is not None else "none")
                + f" ({o['reason']})")
    p = transitions.get("predicted")
    if p is not None:
        out += ("\npredicted transition (M2): " + (f"step {p['step']:.4g}" if p.get("inside") else "none")
                + f" ({p['reason']})")
    return out


def _within_lines(curves) -> str:
    if "observed_nc1_trace_ratio" not in curves:
        return ""
    nc1, cd = curves["observed_nc1_trace_ratio"], curves["observed_cdnv"]
    return (f"\nwithin-class (observed, from the recorded traces; no model here has within-class spread): "
            f"NC1 trace ratio {nc1[0]:.3g} -> {nc1[-1]:.3g}, mean CDNV {cd[0]:.3g} -> {cd[-1]:.3g}")
