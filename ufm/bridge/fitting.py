"""Fit UFM models to observed Gram trajectories (THEORY §8.6): which model explains a network best?

:func:`fit` takes class-mean Grams recorded over training (a bridge :class:`~ufm.results.Run`
file, arrays, or a :class:`~ufm.results.Trajectory` of :func:`ufm.simulate`) and fits, side by side:

``"static"``
    At each record, the least-squares decomposition of the centred, unit-norm
    Gram into the ETF part and one attribute kernel per factor,
    ``G_c ~ a P_K + sum_f b_f P_K S_f P_K`` (THEORY §8.6 step 2), with
    confidence intervals. Descriptive: it has ``1 + F`` free numbers per record.
``"input_coupled"`` (M2, THEORY §8.2)
    ``H = A Phi`` with ``Phi = [Phi_attr(strengths); sigma I]``, gradient flow
    of ``ufm.simulate`` from a small random start. Fitted: the capacity
    ``sigma``, the attribute strengths (one per block, geometric mean fixed to
    1, since the overall scale of ``Phi`` trades against time), optionally the
    weight decay, and a monotone time map from observed steps to model time.
``"anchored"`` (M1, THEORY §8.1)
    The minimizer of the anchored MSE UFM (8.1) on a grid of ``beta``, anchor
    ``H_0`` = the attribute one-hots; fitted: a non-increasing path
    ``beta(step)`` (``1/beta`` reads as capacity x training time). Its semantic
    gap can only fall along such a path, so it cannot produce the early rise.

Conventions (THEORY §8.6 step 5): Grams are compared only after centring with
``P_K`` and scaling to unit Frobenius norm (overall scale, rotations and the
bias along ``1`` are not identifiable). Distances are Frobenius norms between
such unit Grams (in ``[0, 2]``). The semantic gap and ETF distance are those
of :mod:`ufm.metrics` (centred Gram, THEORY §7.2, §7.4).

Goodness of fit, per model (``FitResult.gof``): ``gap_r2`` (R^2 of the
semantic-gap curve over records), ``gram_r2`` (``1 - sum_t ||G_obs - G_model||^2
/ sum_t ||G_obs - mean_t G_obs||^2``), ``gram_distance`` (mean Frobenius
distance) and ``n_params``.

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
from .._checks import check_int, check_nonneg
from ..results import FitResult, Run, Trajectory
from .io import _as_numpy, load_run

__all__ = ["fit", "static_decomposition", "align_monotone", "anchored_path", "isotropic_init", "pattern_ids",
           "project_patterns", "unit_centred"]

MODELS = ("static", "input_coupled", "anchored")


# -- observed data -------------------------------------------------------------------
def unit_centred(grams) -> np.ndarray:
    """``P_K G P_K / ||P_K G P_K||_F`` for one Gram (K x K) or a stack (T x K x K) (THEORY §8.6 steps 1, 5)."""
    Gc = metrics.double_centre(np.asarray(grams, dtype=np.float64))
    norm = np.linalg.norm(Gc, axis=(-2, -1), keepdims=True)
    if np.any(norm <= 1e-300):
        raise ValueError("a Gram is zero after centring (all class means equal); it has no geometry to fit. "
                         "Drop that record (often step 0 of a zero-initialized model).")
    return Gc / norm


def pattern_ids(attributes) -> np.ndarray:
    """K x K integer map: pairs ``(k, l)`` get the same id iff they share the same set of factors.

    The diagonal has its own id. Averaging a Gram over each id is the
    orthogonal projection onto the matrices that depend on a pair only through
    which attributes it shares (every kernel built from the attribute table,
    THEORY §7.4, lies there).
    """
    A = np.asarray(attributes)
    K, F = A.shape
    eq = A[:, None, :] == A[None, :, :]                       # (K, K, F)
    code = (eq * (1 << np.arange(F, dtype=np.int64))).sum(axis=-1) + 1
    code[np.diag_indices(K)] = 0
    _, ids = np.unique(code, return_inverse=True)
    return ids.reshape(K, K)


def project_patterns(grams, ids) -> np.ndarray:
    """Average each Gram of a stack (T x K x K) over the pairs of equal ``ids``; rescaled to unit Frobenius norm."""
    G = np.asarray(grams, dtype=np.float64)
    flat = ids.ravel()
    n = np.bincount(flat)
    sums = np.stack([np.bincount(flat, weights=g.ravel(), minlength=len(n)) for g in G.reshape(len(G), -1)])
    out = (sums / n)[:, flat].reshape(G.shape)
    return out / np.linalg.norm(out, axis=(-2, -1), keepdims=True)


def _observed(source, setting, attributes, steps):
    """(steps (T,), grams (T,K,K), attributes (K,F), setting or None, description)."""
    from ..settings import Setting

    desc = type(source).__name__
    run_attrs = None
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        source = _load_source(path)
        desc = f"{type(source).__name__} {os.path.basename(path)}"
    if isinstance(source, Run):
        obs_steps, grams, run_attrs = np.asarray(source.steps, float), np.asarray(source.grams), source.attributes
        if source.name:
            desc = f"Run {source.name!r}"
        if setting is None and "setting" in source.meta:
            setting = _setting_from_meta(source.meta["setting"])
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
    if attributes is None:
        attributes = setting.attributes if setting is not None else run_attrs
    if attributes is None:
        raise ValueError("no attribute table: pass setting=... (e.g. ufm.factorial((2, 2, 2))) or attributes=... "
                         "(K x F levels), or record the attributes in the run.")
    attributes = np.asarray(attributes)
    if attributes.ndim != 2 or attributes.shape[0] != K:
        raise ValueError(f"attributes must be (K = {K}, F), got shape {attributes.shape}.")
    if setting is None:
        setting = Setting(attributes=attributes, name="from attributes")
    return obs_steps, grams, attributes, setting, desc


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

    Returns
    -------
    dict with ``a`` (T,), ``b`` (T, F_kept), ``a_ci`` (T, 2), ``b_ci`` (T, F_kept, 2),
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


# -- monotone alignment -----------------------------------------------------------------
def align_monotone(D) -> tuple[np.ndarray, float]:
    """Indices ``j_0 <= j_1 <= ... <= j_{T-1}`` minimizing ``sum_i D[i, j_i]`` (dynamic programming).

    ``D`` is a ``T x J`` cost matrix (observed records x model times). Returns
    the indices and the minimal mean cost. O(T J).
    """
    D = np.asarray(D, dtype=np.float64)
    T, J = D.shape
    cost = np.empty_like(D)
    cost[0] = D[0]
    for i in range(1, T):
        cost[i] = D[i] + np.minimum.accumulate(cost[i - 1])
    path = np.empty(T, dtype=np.int64)
    j = int(np.argmin(cost[-1]))
    path[-1] = j
    for i in range(T - 2, -1, -1):
        j = int(np.argmin(cost[i, : j + 1]))
        path[i] = j
    return path, float(cost[-1, path[-1]] / T)


def _dist2(obs, model):
    """Squared Frobenius distances between unit Grams: (T, J)."""
    o = obs.reshape(len(obs), -1)
    m = model.reshape(len(model), -1)
    return np.maximum(2.0 - 2.0 * o @ m.T, 0.0)


# -- M2: input-coupled UFM -------------------------------------------------------------
def isotropic_init(problem, init_scale: float) -> dict:
    """The deterministic wide-network start of the input-coupled UFM: ``{"W0": ..., "A0": ...}``.

    With ``d >= p + K``: ``A0 = init_scale [I_p; 0]`` and ``W0 = init_scale [0, I_K]``, so
    ``A0^T A0 = init_scale^2 I_p``, ``W0 W0^T = init_scale^2 I_K`` and ``W0 A0 = 0``: the limit of a
    Gaussian start in a wide layer (``A0^T A0 ~ s^2 d I``, ``W0 A0 / (s^2 d) -> 0``), without its
    seed-to-seed noise. Every rotation of the feature space gives the same Gram trajectory.
    """
    K, p, d = problem.K, problem.p, problem.d
    if d < p + K:
        raise ValueError(f"the isotropic start needs d >= p + K = {p + K}, got d = {d}; pass d=None.")
    A0 = np.zeros((d, p))
    A0[:p] = init_scale * np.eye(p)
    W0 = np.zeros((K, d))
    W0[:, p:p + K] = init_scale * np.eye(K)
    return {"W0": W0, "A0": A0}


class _M2:
    """Simulated unit-centred Gram trajectories of the input-coupled UFM for a parameter vector."""

    def __init__(self, setting, loss, d, init_scale, seed, horizon, n_model, lam, project=None):
        self.project = project if project is not None else (lambda G: G)
        self.setting, self.loss, self.d = setting, loss, d
        self.init_scale, self.seed, self.horizon, self.n_model = init_scale, seed, horizon, n_model
        self.lam = lam                      # float, or None = fitted
        self.B = len(setting.blocks)
        self.cache = {}

    def unpack(self, x):
        x = np.asarray(x, dtype=np.float64)
        sigma = math.exp(x[0])
        u = np.concatenate([x[1:self.B], [-np.sum(x[1:self.B])]]) if self.B > 1 else np.zeros(self.B)
        strengths = np.exp(u)
        lam = self.lam if self.lam is not None else 10.0 ** x[-1]
        return sigma, strengths, lam

    def problem(self, x):
        from ..problems import InputCoupledUFM

        sigma, strengths, lam = self.unpack(x)
        d = self.d if self.d is not None else self.setting.N + self.setting.encoding(0.0).shape[0]
        return InputCoupledUFM.from_setting(self.setting, sigma, d=d, loss=self.loss, lam_W=lam, lam_A=lam,
                                            strengths=strengths)

    def trajectory(self, x):
        from .._simulate import simulate

        key = tuple(np.round(np.asarray(x, float), 12))
        if key in self.cache:
            return self.cache[key]
        prob = self.problem(x)
        _, _, lam = self.unpack(x)
        horizon = self.horizon if lam == 0 else min(self.horizon, 50.0 / lam)
        steps = 10**6
        init = {} if self.d is not None else isotropic_init(prob, self.init_scale)
        tr = simulate(prob, steps=steps, lr=horizon / steps, mode="flow", record=("gram_H",),
                      n_records=self.n_model, init_scale=self.init_scale, seed=self.seed, rtol=1e-6, atol=1e-9,
                      **init)   # Grams to ~1e-6, far below what distinguishes a fit; 3x faster than the default
        times = np.asarray(tr.times)
        G = self.project(unit_centred(np.asarray(tr.records["gram_H"])[0]))
        out = (times, G, tr)
        if len(self.cache) > 256:
            self.cache.clear()
        self.cache[key] = out
        return out

    def score(self, x, obs):
        try:
            times, G, _ = self.trajectory(x)
        except (ValueError, FloatingPointError):
            return np.inf
        _, cost = align_monotone(_dist2(obs, G))
        return cost


def _fit_m2(obs, setting, *, loss, lam, d, init_scale, seed, horizon, n_model, fit_strengths, sigma_grid,
            maxiter, log, project):
    from scipy.optimize import minimize

    model = _M2(setting, loss, d, init_scale, seed, horizon, n_model, None if lam == "fit" else lam, project)
    B = model.B
    n_u = (B - 1) if fit_strengths else 0
    lam_grid = [None] if model.lam is not None else [-4.0, -3.0, -2.0]
    best = None
    for s in sigma_grid:
        for lg in lam_grid:
            x = [math.log(s)] + [0.0] * (B - 1) + ([] if lg is None else [lg])
            c = model.score(x, obs)
            if best is None or c < best[0]:
                best = (c, np.array(x, dtype=float))
    log(f"input_coupled: grid start sigma={math.exp(best[1][0]):.3g}, cost {best[0]:.4g}")
    free = [0] + list(range(1, 1 + n_u)) + ([len(best[1]) - 1] if model.lam is None else [])
    x_full = best[1].copy()

    best_seen = {"cost": best[0], "z": x_full[free].copy(), "nfev": 0}

    def f(z):
        x = x_full.copy()
        x[free] = z
        c = model.score(x, obs)
        best_seen["nfev"] += 1
        if c < best_seen["cost"]:
            best_seen["cost"], best_seen["z"] = c, np.array(z, dtype=float)
        return c

    interrupted = False
    try:
        minimize(f, x_full[free], method="Nelder-Mead",
                 options={"xatol": 2e-3, "fatol": 1e-7, "maxiter": maxiter,
                          "initial_simplex": _simplex(x_full[free], 0.15)})
    except KeyboardInterrupt:      # Ctrl-C: keep the best point found so far
        interrupted = True
        log("input_coupled: interrupted; keeping the best parameters found so far")
    x_full[free] = best_seen["z"]
    times, G, tr = model.trajectory(x_full)
    path, cost = align_monotone(_dist2(obs, G))
    sigma, strengths, lam_v = model.unpack(x_full)
    log(f"input_coupled: sigma={sigma:.4g}, strengths={np.round(strengths, 4).tolist()}, lam={lam_v:.3g}, "
        f"cost {cost:.4g} ({best_seen['nfev']} simulations)")
    return {"interrupted": interrupted, "sigma": sigma, "strengths": strengths, "lam": lam_v, "times": times, "model_grams": G,
            "path": path, "cost": cost, "nfev": best_seen["nfev"], "n_free": len(free), "problem": model.problem(x_full)}


def _simplex(x0, step):
    x0 = np.asarray(x0, dtype=float)
    pts = [x0]
    for i in range(len(x0)):
        p = x0.copy()
        p[i] += step
        pts.append(p)
    return np.array(pts)


def _time_map_powerlaw(obs_steps, model_times):
    """Least squares ``log tau = offset + exponent log step`` over records with step > 0 and tau > 0."""
    m = (obs_steps > 0) & (model_times > 0)
    if m.sum() < 2 or np.ptp(np.log(obs_steps[m])) == 0:
        return None, None
    exponent, offset = np.polyfit(np.log(obs_steps[m]), np.log(model_times[m]), 1)
    return float(exponent), float(offset)


def _transition_index(G, gaps=None):
    peak = int(np.argmax(gaps)) if gaps is not None else 0
    end = G[-1]
    for j in range(peak, len(G)):
        if np.linalg.norm(G[j] - end) < np.linalg.norm(G[j] - G[peak]):
            return j
    return None


# -- M1: anchored UFM -------------------------------------------------------------------
def anchored_path(H0, betas, *, labels=None, lam_W: float = 1e-2, lam_H: float = 1e-2, tol: float = 1e-12,
                  max_iter: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Minimizers of the anchored MSE UFM (8.1) along a ``beta`` grid (THEORY §8.1, TV9).

    Objective (Tirer, Huang, Niles-Weed, arXiv 2210.16658, Eq. 2; ``n`` examples per class)::

        1/(2Kn) ||W H - Y||^2 + lam_W/(2K) ||W||^2 + lam_H/(2Kn) ||H||^2 + beta/(2Kn) ||H - H0||^2

    minimized by exact block-coordinate steps ``W = Y H^T (H H^T + n lam_W I)^{-1}``,
    ``H = (W^T W + (lam_H + beta) I)^{-1} (W^T Y + beta H0)`` until the relative
    change of ``H`` is below ``tol``, warm-started along the grid from the
    largest ``beta`` down (the first start is ``H0`` plus a ``1e-3`` Gaussian
    perturbation, which breaks the symmetry of zero rows of ``H0``). Each
    point is a stationary point; for large ``beta`` the objective is strongly
    convex in ``H`` near ``H0`` and it is the minimizer.

    Parameters
    ----------
    H0 : array (d, N)
        Anchor features, one column per example.
    betas : array of float > 0
        The grid (any order).
    labels : int array (N,), optional
        Class of each example, balanced (``n = N / K``); default: distinct labels (``K = N``, ``n = 1``).
    lam_W, lam_H : float
        Weight decays in the normalization above.

    Returns
    -------
    (W, H) : arrays (len(betas), K, d) and (len(betas), d, N), in the order of ``betas``.
    """
    H0 = np.asarray(H0, dtype=np.float64)
    d, N = H0.shape
    y = np.arange(N) if labels is None else np.asarray(labels)
    K = int(y.max()) + 1
    counts = np.bincount(y, minlength=K)
    if np.any(counts != counts[0]):
        raise ValueError(f"labels must be balanced (the same number of examples per class), got counts {counts.tolist()}.")
    n = int(counts[0])
    Y = np.zeros((K, N))
    Y[y, np.arange(N)] = 1.0
    betas = np.asarray(betas, dtype=np.float64)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    H = H0 + 1e-3 * rng.standard_normal(H0.shape)
    Ws, Hs = np.empty((len(betas), K, d)), np.empty((len(betas), d, N))
    I_d = np.eye(d)
    for i in np.argsort(-betas):
        for _ in range(max_iter):
            W = np.linalg.solve(H @ H.T + n * lam_W * I_d, H @ Y.T).T
            H_new = np.linalg.solve(W.T @ W + (lam_H + betas[i]) * I_d, W.T @ Y + betas[i] * H0)
            change = np.linalg.norm(H_new - H) / max(np.linalg.norm(H), 1e-300)
            H = H_new
            if change < tol:
                break
        Ws[i], Hs[i] = W, H
    return Ws, Hs


def _fit_m1(obs, H0, *, lam_W, lam_H, betas, seed, project):
    _, H = anchored_path(H0, betas, lam_W=lam_W, lam_H=lam_H, seed=seed)
    grams = project(unit_centred(np.einsum("bdk,bdl->bkl", H, H)))
    # non-increasing beta over training: align against the grid sorted by decreasing beta
    order = np.argsort(-betas)
    path, cost = align_monotone(_dist2(obs, grams[order]))
    return {"betas": betas[order][path], "model_grams": grams[order][path], "cost": cost}


# -- goodness of fit --------------------------------------------------------------------
def _gaps(G, attributes):
    return np.array([metrics.semantic_gap(g, attributes, center=False) for g in G])


def _etf(G):
    return np.array([metrics.etf_distance(g, center=False) for g in G])


def _r2(y, yhat):
    ss = float(np.sum((y - y.mean()) ** 2))
    return float(1.0 - np.sum((y - yhat) ** 2) / ss) if ss > 0 else float("nan")


def _gof(obs, model, gap_obs, attributes, n_params):
    gap = _gaps(model, attributes)
    d = np.linalg.norm((obs - model).reshape(len(obs), -1), axis=1)
    spread = float(np.sum((obs - obs.mean(axis=0)) ** 2))
    return gap, {"gap_r2": _r2(gap_obs, gap), "gram_r2": float(1 - np.sum(d ** 2) / spread) if spread > 0 else None,
                 "gram_distance": float(d.mean()), "n_params": int(n_params)}


# -- entry point ------------------------------------------------------------------------
def fit(source, setting=None, *, attributes=None, steps=None, models=MODELS, loss: str = "ce", lam="fit",
        fit_strengths: bool = True, d: int | None = None, init_scale: float = 1e-2, seed: int = 0,
        horizon: float = 1e6, n_model: int = 160, sigma_grid=(0.5, 1.0, 2.0, 4.0, 8.0, 16.0), maxiter: int = 300,
        anchor=None, lam_W_anchor: float = 1e-2, lam_H_anchor: float = 1e-2, betas=None, level: float = 0.95,
        match: str = "patterns", progress: bool = False) -> FitResult:
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
        The synthetic setting the classes come from (its attribute table and,
        for M2/M1, its input encoding). Default: the run's recorded setting, or
        a setting built from ``attributes``.
    attributes : int array (K, F), optional
        Attribute table, when there is no setting.
    steps : array (T,), optional
        Observed steps (default: the run's steps, the trajectory's times, or ``0..T-1``).
    models : sequence of str
        Any of ``"static"``, ``"input_coupled"``, ``"anchored"``.
    loss : {"ce", "mse"}
        Loss of the simulated M2 model (the network's loss; default CE).
    lam : "fit" or float
        Weight decay ``lam_W = lam_A`` of M2 (halved convention, THEORY §0.1).
        ``"fit"`` (default) fits ``log10 lam`` from the starts -4, -3, -2: a
        finite-time stand-in for whatever ends a network's transient (weight
        decay, the optimizer, finite training). A number holds it fixed
        (``0`` = plain CE, whose transient fades only logarithmically).
    fit_strengths : bool
        Fit one strength per attribute block (geometric mean 1), or hold them at 1.
    d, init_scale, seed, horizon, n_model
        M2 simulation: feature dimension (default N), Gaussian init scale,
        seed, last model time (with weight decay at most ``50 / lam``), model
        records (log-spaced times).
    sigma_grid : sequence of float
        Starting values of ``sigma`` (the best one starts Nelder-Mead).
    maxiter : int
        Nelder-Mead iterations.
    anchor : array (d0, K), optional
        M1 anchor ``H_0``. Default: the attribute one-hots (THEORY §8.6 step 3),
        weighted by M2's fitted strengths when M2 is fitted, stacked on a zero
        K x K block that leaves room for the ETF (as in
        :func:`ufm.phase.transient_models`).
    lam_W_anchor, lam_H_anchor : float
        M1 weight decays (Tirer normalization of (8.1)).
    betas : array, optional
        M1 grid (default ``logspace(3, -5, 81)``).
    level : float
        Confidence level of the static intervals.
    match : {"patterns", "full"}
        What the dynamical models are matched on. ``"patterns"`` (default):
        the unit-centred Grams averaged over pairs that share the same set of
        attributes (:func:`project_patterns`), which keeps every
        attribute-driven structure and removes the item-specific random part
        of a finite network's Gram that no model with these inputs produces
        (its diagonal excess remains, and reads as capacity ``sigma``).
        ``"full"``: the whole unit-centred Grams. Gram R^2 and distances in
        ``gof`` are computed in this representation; the semantic gaps always
        on the full observed Grams.
    progress : bool
        Print what is being fitted.

    Returns
    -------
    FitResult
        ``params`` (``"sigma"``, ``"strengths"``, ``"lam"``, ``"time_exponent"``,
        ``"time_offset"``, ``"beta_end"``, ``"a_end"``, ``"b_end"``,
        ``"observed_transition"`` (the first record after the gap peak whose
        Gram is closer to the last record's than to the peak's, ``None`` if
        only the last one is), ...),
        ``gof`` per model, ``curves`` (observed and fitted semantic gap and ETF
        distance, time map, beta path, static coefficients with intervals),
        ``grams`` (unit-centred observed and fitted Grams), ``best_model`` and
        ``predicted_transition`` (in observed steps).
    """
    t_start = time.perf_counter()
    log = (lambda msg: print(f"[ufm.fit] {msg}", flush=True)) if progress else (lambda msg: None)
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ValueError(f"models must be a non-empty subset of {MODELS}, got {list(models)}.")
    if loss not in ("ce", "mse"):
        raise ValueError(f"loss must be 'ce' or 'mse', got {loss!r}.")
    if lam != "fit":
        lam = check_nonneg("lam", lam)
    init_scale = check_nonneg("init_scale", init_scale, "the initialization scale")
    maxiter = check_int("maxiter", maxiter, 0)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level!r}.")
    obs_steps, grams, attributes, setting, desc = _observed(source, setting, attributes, steps)
    if match not in ("patterns", "full"):
        raise ValueError(f"match must be 'patterns' or 'full', got {match!r}.")
    obs_full = unit_centred(grams)
    T, K, _ = obs_full.shape
    ids = pattern_ids(attributes)
    project = (lambda G: project_patterns(G, ids)) if match == "patterns" else (lambda G: G)
    obs = project(obs_full)
    gap_obs, etf_obs = _gaps(obs_full, attributes), _etf(obs_full)
    curves = {"observed_gap": gap_obs, "observed_etf_distance": etf_obs}
    fitted = {"observed": obs_full, "observed_matched": obs}
    gof, params = {}, {}
    notes = []

    if "static" in models:
        st = static_decomposition(grams, attributes, level=level)
        fitted["static"] = st["fitted"]
        gap, gof["static"] = _gof(obs, project(st["fitted"]), gap_obs, attributes, T * (1 + len(st["factors"])))
        curves.update(static_gap=gap, static_a=st["a"], static_b=st["b"], static_a_ci=st["a_ci"],
                      static_b_ci=st["b_ci"], static_r2=st["r2"])
        params.update(a_end=float(st["a"][-1]), b_end=st["b"][-1].tolist(),
                      a_end_ci=st["a_ci"][-1].tolist(), b_end_ci=st["b_ci"][-1].tolist(),
                      ratio_end=(st["b"][-1] / st["a"][-1]).tolist(), static_factors=st["factors"],
                      static_df=st["df"])
        if st["dropped"]:
            notes.append(f"static: factors {st['dropped']} dropped (they do not split the classes or repeat others)")

    j_obs = _transition_index(obs, gap_obs)      # the same test on the run itself, its last record as the end
    params["observed_transition"] = None if j_obs is None or j_obs == T - 1 else float(obs_steps[j_obs])
    transition = None
    m2 = None
    if "input_coupled" in models:
        log(f"input_coupled: fitting {K} classes, {T} records")
        m2 = _fit_m2(obs, setting, loss=loss, lam=lam, d=d, init_scale=init_scale, seed=seed, horizon=horizon,
                     n_model=n_model, fit_strengths=fit_strengths, sigma_grid=sigma_grid, maxiter=maxiter, log=log,
                     project=project)
        if m2["interrupted"]:
            notes.append("input_coupled: interrupted (Ctrl-C); the parameters are the best found before it")
        model_G = m2["model_grams"][m2["path"]]
        fitted["input_coupled"] = model_G
        tau = m2["times"][m2["path"]]
        gap, gof["input_coupled"] = _gof(obs, model_G, gap_obs, attributes, m2["n_free"] + T)
        curves.update(input_coupled_gap=gap, input_coupled_etf_distance=_etf(model_G), time_map=tau,
                      model_times=m2["times"], model_gap=_gaps(m2["model_grams"], attributes))
        exponent, offset = _time_map_powerlaw(obs_steps, tau)
        params.update(sigma=m2["sigma"], strengths=m2["strengths"].tolist(), lam=m2["lam"],
                      time_exponent=exponent, time_offset=offset)
        j_tr = _transition_index(m2["model_grams"], curves["model_gap"])
        if j_tr is not None:
            tau_tr = float(m2["times"][j_tr])
            params["transition_model_time"] = tau_tr
            transition = _model_to_steps(tau_tr, obs_steps, tau, exponent, offset)
        else:
            notes.append("input_coupled: the model Gram never gets closer to its end state than to its peak "
                         "within the horizon; no transition time")

    if "anchored" in models:
        H0 = anchor
        if H0 is None:     # attribute one-hots (M2's fitted strengths if any), with room for an ETF
            strengths = None if m2 is None else m2["strengths"]
            H0 = np.vstack([setting.attribute_encoding(strengths), np.zeros((K, K))])
        H0 = np.asarray(H0, dtype=np.float64)
        if H0.ndim != 2 or H0.shape[1] != K:
            raise ValueError(f"anchor must be (d0, K = {K}), got shape {H0.shape}.")
        grid = np.logspace(3, -5, 81) if betas is None else np.asarray(betas, dtype=np.float64)
        if grid.ndim != 1 or len(grid) < 2 or np.any(grid <= 0):
            raise ValueError("betas must be a 1-D grid of at least 2 values > 0.")
        log(f"anchored: beta path over {len(grid)} values")
        m1 = _fit_m1(obs, H0, lam_W=lam_W_anchor, lam_H=lam_H_anchor, betas=grid, seed=seed,
                     project=project)
        fitted["anchored"] = m1["model_grams"]
        gap, gof["anchored"] = _gof(obs, m1["model_grams"], gap_obs, attributes, T)
        curves.update(anchored_gap=gap, anchored_etf_distance=_etf(m1["model_grams"]), beta_path=m1["betas"])
        params.update(beta_end=float(m1["betas"][-1]), beta_start=float(m1["betas"][0]))

    # the best explanation: highest Gram R^2 among the dynamical models (static is descriptive)
    dyn = {m: g for m, g in gof.items() if m != "static"}
    best = max(dyn, key=lambda m: dyn[m]["gram_r2"]) if dyn else "static"
    table = _table(gof)
    message = (f"fit of {desc}: {K} classes, {T} records; best dynamical model: {best}.\n{table}"
               + ("".join(f"\nnote: {n}" for n in notes)))
    meta = {"source": desc, "models": list(models), "match": match, "loss": loss, "lam": lam, "fit_strengths": fit_strengths,
            "init_scale": init_scale, "seed": seed, "horizon": horizon, "n_model": n_model,
            "setting": getattr(setting, "name", None), "attributes": np.asarray(attributes).tolist(),
            "seconds": time.perf_counter() - t_start, "notes": notes}
    return FitResult(params=params, gof=gof, steps=obs_steps, curves=curves, grams=fitted, best_model=best,
                     predicted_transition=transition, message=message, meta=meta)


def _model_to_steps(tau, obs_steps, tau_obs, exponent, offset):
    """Observed step at model time ``tau``: inside the aligned range by log-log interpolation, else the power law."""
    m = (obs_steps > 0) & (tau_obs > 0)
    if m.sum() >= 2 and tau_obs[m][0] <= tau <= tau_obs[m][-1]:
        lt, ls = np.log(tau_obs[m]), np.log(obs_steps[m])
        keep = np.concatenate([[True], np.diff(lt) > 0])
        if keep.sum() >= 2:
            return float(np.exp(np.interp(math.log(tau), lt[keep], ls[keep])))
    if exponent is None or exponent <= 0:
        return None
    return float(math.exp((math.log(tau) - offset) / exponent))


def _table(gof) -> str:
    rows = [f"{'model':<15}{'gap R^2':>10}{'Gram R^2':>10}{'dist':>8}{'params':>8}"]
    for m, g in gof.items():
        gr = "n/a" if g["gram_r2"] is None else f"{g['gram_r2']:.3f}"
        rows.append(f"{m:<15}{g['gap_r2']:>10.3f}{gr:>10}{g['gram_distance']:>8.3f}{g['n_params']:>8d}")
    return "\n".join(rows)
