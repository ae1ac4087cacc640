"""Fitting M2 / M2-H to observed Grams by least squares, with intervals from a parametric bootstrap.

What is matched
---------------
Per record ``i`` the residual has two channels (THEORY §8.6):

* **shape**: the observed centred, unit-norm Gram against the model's, in the
  matched representation (attribute patterns, renormalized, or the full Gram;
  on the patterns engine as the algebra's eigenvalues weighted by the square
  roots of their multiplicities, so Euclidean distances are Frobenius ones);
* **size**: ``log ||P_K G P_K||_F`` against the model's. A Gram's size says
  when each mode grows (its log rises with slope ``2 x`` the mode's rate
  whatever the random start did), which the unit Gram alone hides. For a
  source that is not a ufm Trajectory the overall size is arbitrary: a free
  offset ``log_gram_scale`` absorbs it.

Each channel is divided by its noise level, estimated from the residuals of a
first fit (two-stage feasible generalized least squares), and
:func:`scipy.optimize.least_squares` (trust region, bounds, finite-difference
Jacobian) minimizes the sum of squares from the best points of a starting
grid. The parameters are those of :class:`~ufm.bridge.m2.M2Model` and of the
clock (:class:`~ufm.bridge.clock.Clock`).

Intervals
---------
The residuals of a finite run are not independent noise: they are the
imprint of its random start (and, for a network, of everything the model
leaves out), smooth over time and correlated across patterns. A Gauss-Newton
covariance treats them as independent and is several times too narrow. The
intervals are therefore a **parametric bootstrap** (:func:`bootstrap`): ``B``
synthetic runs of the fitted model from Gaussian starts of width ``d``
(:meth:`M2Model.random_run`), recorded at the same steps, each refitted from
the estimate (Gauss-Newton with the estimate's Jacobian, :func:`chord_refit`);
the interval of a parameter is the bias-corrected normal interval of the refits
on its fitted scale (:func:`interval_table`). The bias correction matters: a
finite start biases the isotropic-start estimate (sigma and ``lam`` low), and
without it the 90% intervals covered sigma in 63% of the calibration runs
(``benchmarks/bench_calibration.py``; percentile intervals 33%, resampling the
fit's own residuals with random signs 33%). ``d`` is the run's own width for a
:func:`ufm.simulate` run from a Gaussian start; otherwise an *effective* width
at which the synthetic runs misfit the model as much as the data does (chosen
in :mod:`ufm.bridge.fitting`, floored at ``K``, and the intervals widened when
the floor is reached). What the intervals cover: the randomness of a
finite-width start, at the size of the observed misfit. What they do not cover:
a model that is wrong in shape (read the goodness of fit first), or a search
that found the wrong local minimum.

A parameter is **identifiable** when its interval lies inside the search box
(:attr:`M2Model.BOUNDS`, :attr:`Clock.BOUNDS`), no refit reached the box's edge,
and the interval spans less than :data:`FLAT_SPAN` on its fitted scale;
otherwise ``identifiable[name]`` is False and its interval is widened to its
*flat range* (:func:`flat_range`), where the fit is as good as at the estimate.

References
----------
THEORY.md §8.2, §8.2b, §8.6; Efron & Tibshirani, *An Introduction to the Bootstrap* (1993), ch. 6
(parametric bootstrap) and ch. 10 (bias); Zhao, Papadimitriou, Thrampoulidis, "Structure Before Collapse",
arXiv 2606.26749.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .. import _interrupt
from ..metrics import double_centre
from .clock import Clock, align_refined, at_fraction, powerlaw_init
from .m2 import M2Model, Points, unit_centred_dense
from .patterns import project_patterns
from .report import etf_of, gaps_of, model_events

__all__ = ["FLAT_SPAN", "Estimator", "bootstrap", "chord_refit", "interval_table", "jacobian"]

#: A parameter whose interval spans more than this on its fitted scale (natural log for ``sigma`` and the
#: strengths, log10 for ``lam``, the start scale and the time scale, the value itself for the time exponent)
#: is not identifiable: a factor e^3 = 20 in sigma, three decades in lam.
FLAT_SPAN = {"log_sigma": 3.0, "u": 3.0, "log10_lam": 3.0, "log10_scale": 3.0, "log10_time_scale": 3.0,
             "time_exponent": 2.0, "log10_time_break": 3.0, "late_exponent": 2.0, "log_gram_scale": 6.0}

#: The box of the free size offset (natural log).
GRAM_SCALE_BOUNDS = (-60.0, 60.0)


#: Relative tolerances of the least-squares searches on the parameters and on the cost (far below the spread
#: of the bootstrap refits, which is what an interval measures).
XTOL, FTOL = 1e-6, 1e-8

#: Gauss-Newton iterations of a chord refit (:func:`chord_refit`: one simulation each).
CHORD_ITERATIONS = 4

#: How far past the last record (in model time) the model's long curve runs, for its events and forecasts.
LONG_REACH = 20.0


class Estimator:
    """The least-squares problem of one model, clock and set of records.

    Parameters
    ----------
    model : M2Model
        The model (its fitted parameters come first in a parameter vector).
    clock : Clock
        The clock (its parameters next).
    steps : array (T,)
        Observed steps.
    grams : array (T, K, K)
        Observed raw Grams (uncentred ``M^T M``).
    match : {"patterns", "full"}
        The representation of the shape channel.
    ids : int array (K, K)
        The attribute pattern ids.
    attributes : int array (K, F)
        The attribute table (for the model's semantic gap).
    size_offset : bool
        Fit a free offset of the size channel (a source whose scale is not the model's).
    horizon : float
        Last model time of the model's curves (with weight decay at most ``m2.END_TIME / lam``).
    """

    def __init__(self, model: M2Model, clock: Clock, steps, grams, *, match: str, ids, attributes, size_offset: bool,
                 horizon: float = 1e6):
        self.model, self.clock, self.match, self.ids = model, clock, match, ids
        self.attributes = np.asarray(attributes)
        self.steps = np.asarray(steps, dtype=np.float64)
        self.T = len(self.steps)
        self.size_offset, self.horizon = bool(size_offset), float(horizon)
        self.names = list(model.names) + list(clock.names) + (["log_gram_scale"] if size_offset else [])
        self.n_model, self.n_clock = len(model.names), len(clock.names)
        self.weights = (1.0, 1.0)
        self._best = None
        self.set_data(grams)
        if clock.kind == "gd":
            if np.any(np.abs(self.steps - np.round(self.steps)) > 1e-9):
                raise ValueError("a 'gd' clock needs integer steps (the run's GD step counts).")
            self.points = Points(gd_steps=np.round(self.steps).astype(np.int64), lr=clock.lr)
        elif clock.kind == "flow":
            self.points = Points(times=self.steps)
        else:
            self.points = None      # declared clocks: curves on the model's grid, interpolated at tau(steps)

    def with_clock(self, clock: Clock) -> "Estimator":
        """The same model and records under another declared clock (the model's simulations are shared).

        Parameters
        ----------
        clock : Clock
            The other clock (a declared one).
        """
        other = Estimator.__new__(Estimator)
        other.__dict__.update(self.__dict__)
        other.clock, other.points, other._best = clock, None, None
        other.names = list(self.model.names) + list(clock.names) + (["log_gram_scale"] if self.size_offset else [])
        other.n_clock = len(clock.names)
        return other

    # -- the data ----------------------------------------------------------------------------
    def set_data(self, grams) -> None:
        """Observed raw Grams ``(T, K, K)`` in the two channels (used again for each bootstrap run).

        Parameters
        ----------
        grams : array (T, K, K)
            Raw Grams, one per record.
        """
        G = double_centre(np.asarray(grams, dtype=np.float64))
        norm = np.linalg.norm(G, axis=(-2, -1))
        if np.any(norm <= 1e-300):
            raise ValueError("a Gram is zero after centring (all class means equal); it has no geometry to fit. "
                             "Drop that record (often step 0 of a zero-initialized model).")
        self.obs_size = np.log(norm)
        self.obs_shape = self._shape_of_dense(G / norm[:, None, None])

    def _shape_of_dense(self, U) -> np.ndarray:
        """Unit-centred dense Grams in the shape channel's coordinates (T, n)."""
        m = self.model
        if m.engine == "patterns":
            a = m.algebra
            xi = a.eigen(a.values(U))
            xi[:, 0] = 0.0
            if self.match == "patterns":
                xi = xi / np.sqrt(np.sum(a.mult * xi ** 2, axis=1, keepdims=True))
            return (xi * np.sqrt(a.mult))[:, 1:]
        if self.match == "patterns":
            U = project_patterns(U, self.ids)
        return U.reshape(len(U), -1)

    def _shape_of_unit(self, U) -> np.ndarray:
        """Unit-centred model Grams (eigenvalues or dense) in the shape channel's coordinates."""
        m = self.model
        if m.engine == "patterns":
            return (U * np.sqrt(m.algebra.mult))[:, 1:]
        if self.match == "patterns":
            U = project_patterns(U, self.ids)
        return U.reshape(len(U), -1)

    # -- the model at the records ---------------------------------------------------------------
    def split(self, x):
        """``(model part, clock part, size offset)`` of a parameter vector.

        Parameters
        ----------
        x : array
            A parameter vector (:attr:`names`).
        """
        x = np.asarray(x, dtype=np.float64)
        a, b = self.n_model, self.n_model + self.n_clock
        return x[:a], x[a:b], (float(x[b]) if self.size_offset else 0.0)

    def curves(self, xm):
        """The model on its long grid (declared clocks): ``(times, unit Grams, size)`` or None.

        Parameters
        ----------
        xm : array
            The model's part of a parameter vector.
        """
        m = self.model
        t = m.grid(m.unpack(xm), self.horizon)
        S = m.run(xm, Points(times=t))
        if S is None:
            return None
        return t, m.centred_unit(S), m.log_norm(S)

    def _at_records(self, x):
        """Unit-centred model Grams (eigenvalues or dense) and sizes at the records, or None."""
        xm, xc, off = self.split(x)
        if self.points is not None:
            S = self.model.run(xm, self.points)
            if S is None:
                return None
            return self.model.centred_unit(S), self.model.log_norm(S) + off
        c = self.curves(xm)
        if c is None:
            return None
        t, U, size = c
        tau = self.clock.times(xc, self.steps)
        return _interp_log(t, U, tau), _interp_log(t, size, tau) + off

    def predict(self, x):
        """Model shape (T, n) and size (T,) at the records, or None when the model cannot be simulated.

        Parameters
        ----------
        x : array
            A parameter vector (:attr:`names`).
        """
        p = self._at_records(x)
        if p is None:
            return None
        return self._shape_of_unit(p[0]), p[1]

    def model_grams(self, x):
        """The model's dense unit-centred Grams (T, K, K) at the records, or None.

        Parameters
        ----------
        x : array
            A parameter vector (:attr:`names`).
        """
        p = self._at_records(x)
        return None if p is None else self.model.dense(p[0])

    def model_times(self, x) -> np.ndarray:
        """Model times of the records (the clock at ``x``).

        Parameters
        ----------
        x : array
            A parameter vector (:attr:`names`).
        """
        return self.clock.times(self.split(x)[1], self.steps)

    def long_curve(self, x):
        """The model past the records: ``{"times", "steps", "grams" (unit-centred), "gap", "etf"}`` or None.

        Declared clocks reuse the fit's curve; known clocks run the model on a log grid to
        :data:`LONG_REACH` x the last record's model time (GD at whole steps).

        Parameters
        ----------
        x : array
            A parameter vector (:attr:`names`).
        """
        xm, xc, _ = self.split(x)
        m = self.model
        q = m.unpack(xm)
        if self.points is None:
            c = self.curves(xm)
            if c is None:
                return None
            t, U = c[0], c[1]
        else:
            last = max(float(self.model_times(x)[-1]), 1e-12)
            t = m.grid(q, min(self.horizon, LONG_REACH * last))
            if self.points.gd:
                n = np.unique(np.round(t / self.clock.lr).astype(np.int64))
                pts = Points(gd_steps=n, lr=self.clock.lr)
            else:
                pts = Points(times=t)
            S = m.run(xm, pts)
            if S is None:
                return None
            t, U = pts.times, m.centred_unit(S)
        if m.engine == "patterns":
            gap, etf = m.algebra.semantic_gap(U, self.attributes), m.algebra.etf_distance(U)
        else:
            gap, etf = gaps_of(U, self.attributes), etf_of(U)
        return {"times": t, "steps": self.clock.steps(xc, t), "grams": U, "gap": gap, "etf": etf}

    def free_map(self, x):
        """The best monotone map of the records onto the model's curve (same model): ``(tau (T,), dense
        unit-centred model Grams (T, K, K))``, or None.

        Parameters
        ----------
        x : array
            A parameter vector (:attr:`names`).
        """
        long = self.long_curve(x)
        if long is None:
            return None
        U = long["grams"]
        shape = self._shape_of_unit(U)
        nm = shape / np.maximum(np.linalg.norm(shape, axis=1, keepdims=True), 1e-300)
        no = self.obs_shape / np.maximum(np.linalg.norm(self.obs_shape, axis=1, keepdims=True), 1e-300)
        frac, _ = align_refined(no @ nm.T, np.sum(nm[:-1] * nm[1:], axis=1))
        return at_fraction(long["times"], frac, log=True), self.model.dense(at_fraction(U, frac))

    def residuals(self, x) -> np.ndarray:
        """Weighted residuals ``[shape / sigma_shape, size / sigma_size]`` (a large constant where the model fails).

        Parameters
        ----------
        x : array
            A parameter vector (:attr:`names`).
        """
        p = self.predict(x)
        n = self.obs_shape.size + self.obs_size.size
        if p is None:
            return np.full(n, 1e3)
        shape, size = p
        r = np.concatenate([((self.obs_shape - shape) / self.weights[0]).ravel(),
                            (self.obs_size - size) / self.weights[1]])
        return np.where(np.isfinite(r), r, 1e3)

    def channel_rss(self, x) -> tuple:
        """Unweighted sums of squares of the shape and size residuals at ``x``.

        Parameters
        ----------
        x : array
            A parameter vector (:attr:`names`).
        """
        p = self.predict(x)
        if p is None:
            return math.inf, math.inf
        shape, size = p
        return float(np.sum((self.obs_shape - shape) ** 2)), float(np.sum((self.obs_size - size) ** 2))

    def bounds(self):
        """``(low, high)`` of the parameter vector: the model's, the clock's and the size offset's boxes."""
        lo_m, hi_m = self.model.bounds()
        lo_c, hi_c = self.clock.bounds()
        lo = np.concatenate([lo_m, lo_c, [GRAM_SCALE_BOUNDS[0]] if self.size_offset else []])
        hi = np.concatenate([hi_m, hi_c, [GRAM_SCALE_BOUNDS[1]] if self.size_offset else []])
        return lo, hi

    def values(self, x) -> dict:
        """The parameters of ``x`` by name: ``sigma``, ``strengths`` (list), ``lam``, ``init_scale``, and for a
        declared clock ``time_scale``, ``time_exponent``, ``gram_scale`` (known ones included).

        Parameters
        ----------
        x : array
            A parameter vector (:attr:`names`).
        """
        xm, xc, off = self.split(x)
        q = self.model.unpack(xm)
        out = {}
        if "sigma" in q:
            out["sigma"] = float(q["sigma"])
            out["strengths"] = [float(v) for v in q["strengths"]]
        out["lam"] = float(q["lam"])
        out["init_scale"] = float(q["scale"])
        out.update({k: float(v) for k, v in self.clock.unpack(xc).items()})
        if self.size_offset:
            out["gram_scale"] = float(math.exp(off))
        return out

    # -- starting points ----------------------------------------------------------------------------
    def start_from(self, xm):
        """A full parameter vector from a model part: the clock and the size offset set from the data.

        A declared clock starts from the power law through the monotone alignment of the records
        to the model curve (:func:`~ufm.bridge.clock.align_refined`); the size offset from the mean
        log-size difference. None when the model cannot be simulated or aligned.

        Parameters
        ----------
        xm : array
            The model's part of a parameter vector.
        """
        xm = np.asarray(xm, dtype=np.float64)
        if self.points is not None:
            x = np.concatenate([xm, [0.0] if self.size_offset else []])
        else:
            c = self.curves(xm)
            if c is None:
                return None
            t, U, _ = c
            shape = self._shape_of_unit(U)
            nm = shape / np.maximum(np.linalg.norm(shape, axis=1, keepdims=True), 1e-300)
            no = self.obs_shape / np.maximum(np.linalg.norm(self.obs_shape, axis=1, keepdims=True), 1e-300)
            frac, _ = align_refined(no @ nm.T, np.sum(nm[:-1] * nm[1:], axis=1))
            xc = powerlaw_init(self.clock.kind, self.steps, at_fraction(t, frac, log=True))
            if xc is None:        # the records align with the start alone: spread them over the curve instead
                xc = powerlaw_init(self.clock.kind, self.steps, self.steps / max(self.steps[-1], 1e-300) * t[len(t) // 2])
            if xc is None:
                return None
            lo, hi = self.clock.bounds()
            x = np.concatenate([xm, np.clip(xc, lo, hi), [0.0] if self.size_offset else []])
        if self.size_offset:
            p = self.predict(x)
            if p is None:
                return None
            x[-1] = float(np.clip(np.mean(self.obs_size - p[1]), *GRAM_SCALE_BOUNDS))
        return x

    def cost(self, x) -> float:
        return self._track(x, self.residuals(x))

    def _track(self, x, r) -> float:
        """The cost ``r @ r`` of residuals ``r`` at ``x``, kept as :meth:`best_so_far` when it is the lowest yet."""
        c = float(r @ r)
        if self._best is None or c < self._best["cost"]:
            self._best = {"x": np.array(x, dtype=np.float64), "cost": c}
        return c

    def best_so_far(self):
        """``{"x", "cost", "starts", "nfev", "weights"}`` of the best point evaluated so far, or None."""
        if self._best is None:
            return None
        return {**self._best, "starts": 0, "nfev": 0, "weights": self.weights}

    # -- the fit ---------------------------------------------------------------------------------
    def solve(self, x0, *, max_nfev: int = 200) -> dict:
        """``least_squares`` from ``x0`` within the box; ``{"x", "cost", "nfev", "status"}``.

        Parameters
        ----------
        x0 : array
            The start (clipped into the box).
        max_nfev : int
            Function evaluations at most (0: ``x0`` itself).
        """
        from scipy.optimize import least_squares

        lo, hi = self.bounds()
        x0 = np.clip(np.asarray(x0, dtype=np.float64), lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
        if _interrupt.requested():
            raise KeyboardInterrupt
        if max_nfev == 0:
            return {"x": x0, "cost": self.cost(x0), "nfev": 0, "status": 0}

        def fun(x):
            if _interrupt.requested():       # Ctrl-C inside ufm.fit: stop at this safe point
                raise KeyboardInterrupt
            r = self.residuals(x)
            self._track(x, r)
            return r

        res = least_squares(fun, x0, bounds=(lo, hi), method="trf", diff_step=1e-5, x_scale=1.0,
                            max_nfev=max_nfev, xtol=XTOL, ftol=FTOL, gtol=1e-8)
        return {"x": np.asarray(res.x, dtype=np.float64), "cost": float(2 * res.cost), "nfev": int(res.nfev),
                "status": int(res.status)}

    def reweight(self, x) -> None:
        """Set each channel's noise level to its RMS residual at ``x`` (floors keep a perfect channel finite).

        Parameters
        ----------
        x : array
            A parameter vector (:attr:`names`).
        """
        rs, rn = self.channel_rss(x)
        ns, nn = self.obs_shape.size, self.obs_size.size
        s_shape = math.sqrt(max(rs / ns, 1e-24))
        s_size = math.sqrt(max(rn / nn, 1e-24))
        # a channel never counts more than the other would at 100 x its noise: keeps an exact channel from
        # turning the other one off
        s_size = max(s_size, 1e-2 * s_shape)
        s_shape = max(s_shape, 1e-2 * s_size)
        self.weights = (s_shape, s_size)
        self._best = None

    def fit(self, starts, *, max_nfev: int = 200, n_best: int = 3, report=None) -> dict:
        """Grid, then least squares from the ``n_best`` best distinct points, then a reweighted refit.

        Returns ``{"x", "cost", "starts", "nfev", "weights"}``; ``x`` is None when no start could be simulated.

        Parameters
        ----------
        starts : sequence of array
            Model parts of starting vectors (:meth:`start_from` completes them).
        max_nfev : int
            Function evaluations of each search.
        n_best : int
            How many of the best distinct starts are searched from.
        report : callable, optional
            ``report(text)`` for progress lines.
        """
        report = report or (lambda *a, **k: None)
        scored = []
        n = self.obs_shape.size + self.obs_size.size
        for i, xm in enumerate(starts):
            if _interrupt.requested():
                raise KeyboardInterrupt
            x = self.start_from(xm)
            if x is not None:
                c = self.cost(x)
                if np.isfinite(c) and c < 1e5 * n:
                    scored.append((c, x))
            report(f"{i + 1}/{len(starts)} starting points")
        if not scored:
            return {"x": None, "cost": math.inf, "starts": len(starts), "nfev": 0, "weights": self.weights}
        scored.sort(key=lambda s: s[0])
        chosen = []
        for c, x in scored:
            if all(np.max(np.abs(x[:self.n_model] - y[:self.n_model])) > 0.2 for y in chosen):
                chosen.append(x)
            if len(chosen) == n_best:
                break
        best, nfev = None, 0
        for k, x in enumerate(chosen):
            r = self.solve(x, max_nfev=max_nfev)
            nfev += r["nfev"]
            report(f"search {k + 1}/{len(chosen)}: cost {r['cost']:.4g}")
            if best is None or r["cost"] < best["cost"]:
                best = r
        self.reweight(best["x"])
        r = self.solve(best["x"], max_nfev=max_nfev)
        nfev += r["nfev"]
        return {"x": r["x"], "cost": r["cost"], "starts": len(starts), "nfev": nfev, "weights": self.weights}


def _interp_log(t, values, tau):
    """``values`` (J, ...) on times ``t`` (0, then increasing) interpolated linearly in ``log t`` at ``tau``.

    ``tau = 0`` gives ``values[0]``; ``0 < tau < t[1]`` interpolates linearly in ``t``; past the last time
    the last value is held (the grid ends at the model's end state or its horizon)."""
    values = np.asarray(values, dtype=np.float64)
    tau = np.asarray(tau, dtype=np.float64)
    lt = np.log(t[1:])
    flat = values.reshape(len(values), -1)
    out = np.empty((len(tau), flat.shape[1]))
    early = tau < t[1]
    w = np.clip(tau[early] / t[1], 0.0, 1.0)[:, None]
    out[early] = (1 - w) * flat[0] + w * flat[1]
    late = ~early
    if np.any(late):
        ls = np.log(np.minimum(tau[late], t[-1]))
        j = np.clip(np.searchsorted(lt, ls, side="right") - 1, 0, len(lt) - 2)
        w = ((ls - lt[j]) / (lt[j + 1] - lt[j]))[:, None]
        out[late] = (1 - w) * flat[j + 1] + w * flat[j + 2]
    return out.reshape((len(tau),) + values.shape[1:])


# -- the parametric bootstrap --------------------------------------------------------------------------
def jacobian(est: Estimator, x) -> np.ndarray:
    """Forward-difference Jacobian of the weighted residuals at ``x`` (the step of ``least_squares``' default).

    Parameters
    ----------
    est : Estimator
        The problem.
    x : array
        Where.
    """
    x = np.asarray(x, dtype=np.float64)
    lo, hi = est.bounds()
    r0 = est.residuals(x)
    J = np.empty((r0.size, x.size))
    for i in range(x.size):
        h = 1e-5 * max(1.0, abs(x[i]))
        if x[i] + h > hi[i]:
            h = -h
        xi = x.copy()
        xi[i] += h
        J[:, i] = (est.residuals(xi) - r0) / h
    return J


def chord_refit(est: Estimator, x_hat, J, *, iterations: int = CHORD_ITERATIONS) -> np.ndarray:
    """Gauss-Newton from ``x_hat`` with the Jacobian ``J`` of the estimate held fixed (the chord method).

    Each iteration costs one residual evaluation (one simulation); a step that does not lower the cost is
    halved up to three times, and the iterate stays in the box. This is the refit of a bootstrap run: it
    starts at the estimate, where the run's own optimum lies within the spread the interval measures.

    Parameters
    ----------
    est : Estimator
        The problem, holding the run to refit.
    x_hat : array
        The estimate (the start).
    J : array
        The Jacobian of the weighted residuals at ``x_hat`` (:func:`jacobian`).
    iterations : int
        Gauss-Newton iterations.
    """
    lo, hi = est.bounds()
    x = np.asarray(x_hat, dtype=np.float64).copy()
    r = est.residuals(x)
    cost = float(r @ r)
    pinv = np.linalg.pinv(J, rcond=1e-10)
    for _ in range(iterations):
        step = -pinv @ r
        for _ in range(4):
            xn = np.clip(x + step, lo, hi)
            rn = est.residuals(xn)
            cn = float(rn @ rn)
            if cn < cost:
                break
            step = step / 2
        else:
            break
        x, r, cost = xn, rn, cn
    return x


def bootstrap(est: Estimator, x_hat, *, width: float, n_runs: int, rng, report=None, seeds: int = 1,
              J=None, events=None) -> dict:
    """Refits of ``n_runs`` synthetic runs of the fitted model from Gaussian starts of width ``width``.

    Each run is simulated at the records' model times (or GD steps) by
    :meth:`M2Model.random_run` (the mean over ``seeds`` starts when the observed
    Grams are a mean over seeds), its size offset set to the fit's, and refitted
    by :func:`chord_refit` from ``x_hat`` with the fit's channel weights and the
    Jacobian ``J`` at ``x_hat`` (computed when not given). On the calibration runs
    this covered as well as least-squares refits of 12 evaluations (sigma 20 of 20
    against 24 of 24, ``lam`` 19 of 20 against 22 of 24) at a fraction of the
    simulations; a near-flat direction sends its steps far, which shows as a
    parameter that is not identifiable.

    With ``events = (collapse, steps)`` each run is also simulated at the model times of
    ``steps`` (the whole run's record steps, when known: its events are then read at the
    resolution the run's own are) or, for ``steps=None``, on the model's long curve
    (:meth:`Estimator.long_curve` at ``x_hat``), and its own events
    (:func:`ufm.bridge.report.model_events` on its dense Grams, mapped to steps by the clock
    at ``x_hat``) are returned: what a run of the fitted model actually does after the
    records, for prediction intervals.

    Parameters
    ----------
    est : Estimator
        The fitted problem (its data are restored afterwards).
    x_hat : array
        The estimate.
    width : float
        The starts' width ``d``.
    n_runs : int
        Synthetic runs.
    rng : numpy.random.Generator
        Source of the starts.
    report : callable, optional
        ``report(text)`` for progress lines.
    seeds : int
        Starts averaged per run (the observed Grams' own number of seeds).
    J : array, optional
        The Jacobian at ``x_hat`` (computed when not given).
    events : (float, array or None), optional
        ``(collapse, steps)``: also read each run's own events (above).

    Returns
    -------
    dict
        ``refits`` (B, n) of the runs that could be simulated, ``costs`` (B,) their
        unweighted shape misfits at the refit, ``failed`` (how many runs could not be
        simulated), ``seconds``, and with ``events`` the list ``events`` (one dict of
        steps or None per refit). Ctrl-C raises ``KeyboardInterrupt`` with the runs
        done so far in its ``partial`` attribute.
    """
    report = report or (lambda *a, **k: None)
    t0 = time.perf_counter()
    xm, xc, off = est.split(x_hat)
    if est.points is not None:
        points, where = est.points, np.arange(est.T)
    else:        # records past the model's end state hold it, as in the fit (Estimator.curves)
        t_end = est.model.grid(est.model.unpack(xm), est.horizon)[-1]
        tau = np.minimum(est.clock.times(xc, est.steps), t_end)
        times, where = np.unique(tau, return_inverse=True)
        points = Points(times=times)
    n_rec = len(points.times)
    long = None
    if events is not None:
        long = _event_points(est, x_hat, events[1])
    if long is not None:            # one run covers the records and the long curve
        points, n_long = _joined(points, long, est.clock), len(long["times"])
    J = jacobian(est, x_hat) if J is None else J
    obs_shape, obs_size, best = est.obs_shape, est.obs_size, est._best
    refits, costs, failed, run_events = [], [], 0, []

    def done():
        out = {"refits": np.array(refits).reshape(len(refits), len(x_hat)), "costs": np.array(costs),
               "failed": failed, "seconds": time.perf_counter() - t0}
        if events is not None:
            out["events"] = run_events
        return out

    try:
        for b in range(n_runs):
            if _interrupt.requested():
                raise KeyboardInterrupt
            if b == 5 and failed == 5:      # the model cannot be run from such starts: stop wasting the time
                break
            runs = [est.model.random_run(xm, width, points, rng) for _ in range(seeds)]
            if any(S is None for S in runs):
                failed += 1
                continue
            S = np.mean(runs, axis=0)
            if isinstance(points, _UnionPoints):
                S = S[points.inverse]
            try:
                est.set_data(S[:n_rec][where] * math.exp(off))
            except ValueError:
                failed += 1
                continue
            if long is not None:
                run_events.append(_run_events(est, xc, long, S[n_rec:n_rec + n_long], events[0]))
            xr = chord_refit(est, x_hat, J)
            refits.append(xr)
            costs.append(est.channel_rss(xr)[0])
            report(f"bootstrap {b + 1}/{n_runs}")
    except KeyboardInterrupt as err:
        err.partial = done()
        raise
    finally:
        est.obs_shape, est.obs_size, est._best = obs_shape, obs_size, best
    return done()


def _event_points(est, x, steps):
    """``{"times": model times}`` where a synthetic run's events are read: the clock at ``x`` of ``steps`` (past
    the model's end state, its end), or the model's long curve."""
    if steps is None:
        return est.long_curve(x)
    xm, xc, _ = est.split(x)
    tau = est.clock.times(xc, np.asarray(steps, dtype=np.float64))
    if not est.clock.known:
        tau = np.minimum(tau, est.model.grid(est.model.unpack(xm), est.horizon)[-1])
    return {"times": tau}


def _joined(points: Points, long: dict, clock) -> Points:
    """The record points followed by the long curve's (one simulation for both; the integrator needs increasing
    times, so the union is simulated and split back by index)."""
    if points.gd:
        return _UnionPoints(points.steps, np.round(long["times"] / clock.lr).astype(np.int64), lr=points.lr)
    return _UnionPoints(points.times, long["times"])


class _UnionPoints(Points):
    """Points whose ``run`` output is the first list's values then the second's (duplicates allowed)."""

    def __init__(self, first, second, lr=None):
        both = np.concatenate([np.asarray(first), np.asarray(second)])
        uniq, self.inverse = np.unique(both, return_inverse=True)
        super().__init__(gd_steps=uniq, lr=lr) if lr is not None else super().__init__(times=uniq)


def _run_events(est, xc, long, S, collapse) -> dict:
    """The events of a synthetic run's dense Grams on the long curve, in steps by the clock ``xc``."""
    U = unit_centred_dense(S)               # a synthetic run is dense whatever the model's engine
    gap, etf = gaps_of(U, est.attributes), etf_of(U)
    times, _ = model_events(long["times"], gap, etf, lambda i, j: float(np.linalg.norm(U[i] - U[j])),
                            collapse=collapse)
    return {k: (None if t is None else float(est.clock.steps(xc, [t])[0])) for k, t in times.items()}


# -- intervals ---------------------------------------------------------------------------------------
#: How each reported parameter is put on its fitted scale, and its box: (transform, inverse, low, high).
_SCALES = {"sigma": ("log", *M2Model.BOUNDS["sigma"]), "strengths": ("log", *M2Model.BOUNDS["strengths"]),
           "lam": ("log10", *M2Model.BOUNDS["lam"]), "init_scale": ("log10", *M2Model.BOUNDS["scale"]),
           "time_scale": ("log10", 10.0 ** Clock.BOUNDS["log10_time_scale"][0],
                          10.0 ** Clock.BOUNDS["log10_time_scale"][1]),
           "time_exponent": ("linear", *Clock.BOUNDS["time_exponent"]),
           "time_break": ("log10", 10.0 ** Clock.BOUNDS["log10_time_break"][0],
                          10.0 ** Clock.BOUNDS["log10_time_break"][1]),
           "late_exponent": ("linear", *Clock.BOUNDS["late_exponent"]),
           "gram_scale": ("log", math.exp(GRAM_SCALE_BOUNDS[0]), math.exp(GRAM_SCALE_BOUNDS[1]))}
_SPAN_KEY = {"sigma": "log_sigma", "strengths": "u", "lam": "log10_lam", "init_scale": "log10_scale",
             "time_scale": "log10_time_scale", "time_exponent": "time_exponent", "time_break": "log10_time_break",
             "late_exponent": "late_exponent", "gram_scale": "log_gram_scale"}


def _fwd(kind, v):
    v = np.asarray(v, dtype=np.float64)
    return np.log(v) if kind == "log" else np.log10(v) if kind == "log10" else v


def _inv(kind, v):
    return math.exp(v) if kind == "log" else 10.0 ** v if kind == "log10" else float(v)


def fitted_names(est: Estimator) -> list:
    """The reported parameters that the fit estimates (known ones are not): e.g. ``["sigma", "strengths", ...]``."""
    out = []
    m = est.model
    if "log_sigma" in m.names:
        out.append("sigma")
    if m.fit_strengths:
        out.append("strengths")
    if m.lam is None:
        out.append("lam")
    if m.scale is None:
        out.append("init_scale")
    out += [{"log10_time_scale": "time_scale", "time_exponent": "time_exponent", "log10_time_break": "time_break",
             "late_exponent": "late_exponent"}[n] for n in est.clock.names]
    if est.size_offset:
        out.append("gram_scale")
    return out


def interval_table(est: Estimator, x_hat, refits, level: float, inflate: float = 1.0) -> tuple:
    """Intervals and identifiability of every fitted parameter, from bootstrap refits.

    On each parameter's fitted scale (log for ``sigma``, the strengths and the size, log10 for ``lam``,
    the start scale and the time scale, the value for the time exponent) the interval is
    ``theta_hat - bias +- z sd`` over the refits (bias-corrected normal; ``bias`` = mean refit minus
    estimate), clipped to the box. A parameter is identifiable when its interval lies strictly inside the
    box, no refit reached the box's edge, and the interval spans less than :data:`FLAT_SPAN`.
    ``inflate`` multiplies the half-widths (the bootstrap's runs misfit less than the data: see
    :func:`ufm.bridge.fitting.fit`).

    Parameters
    ----------
    est : Estimator
        The fitted problem.
    x_hat : array
        The estimate.
    refits : array (B, n)
        The bootstrap refits.
    level : float
        Confidence level.
    inflate : float
        Factor on the half-widths.

    Returns
    -------
    intervals : dict
        name -> ``[low, high]`` (strengths: a list of pairs, ``None`` for a block held at 1).
    identifiable : dict
        name -> bool (strengths: a list).
    corrected : dict
        name -> the bias-corrected estimate ``theta_hat - bias`` (the interval's centre on the fitted scale).
    """
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    point = est.values(x_hat)
    reps = [est.values(r) for r in refits]
    intervals, ident = {}, {}

    def one(name, v, vals):
        kind, lo_b, hi_b = _SCALES[name]
        t, tv = _fwd(kind, vals), float(_fwd(kind, v))
        lo_t, hi_t = float(_fwd(kind, lo_b)), float(_fwd(kind, hi_b))
        bias = float(t.mean()) - tv
        sd = float(t.std(ddof=1))
        low, high = tv - bias - z * inflate * sd, tv - bias + z * inflate * sd
        edge = 1e-3 * (hi_t - lo_t)
        reached = bool(np.min(t) <= lo_t + edge or np.max(t) >= hi_t - edge)
        ok = bool(low > lo_t and high < hi_t and high - low < FLAT_SPAN[_SPAN_KEY[name]] and not reached)
        low, high = min(max(low, lo_t), hi_t), max(min(high, hi_t), lo_t)
        return [_inv(kind, low), _inv(kind, high)], ok, _inv(kind, min(max(tv - bias, lo_t), hi_t))

    free = set(est.model.free_blocks)
    corrected = {}
    for name in fitted_names(est):
        if name == "strengths":
            pairs, oks, cs = [], [], []
            for b, v in enumerate(point["strengths"]):
                if b not in free:
                    pairs.append(None)
                    oks.append(None)
                    cs.append(v)
                    continue
                iv, ok, c = one(name, v, np.array([r["strengths"][b] for r in reps]))
                pairs.append(iv)
                oks.append(ok)
                cs.append(c)
            intervals[name], ident[name], corrected[name] = pairs, oks, cs
        else:
            intervals[name], ident[name], corrected[name] = one(name, point[name], np.array([r[name] for r in reps]))
    return intervals, ident, corrected


#: The vector coordinate of each reported scalar parameter that is one coordinate of ``x``.
_COORDINATE = {"sigma": "log_sigma", "lam": "log10_lam", "init_scale": "log10_scale",
               "time_scale": "log10_time_scale", "time_exponent": "time_exponent",
               "time_break": "log10_time_break", "late_exponent": "late_exponent", "gram_scale": "log_gram_scale"}


def flat_range(est: Estimator, x_hat, name: str, *, points: int = 25):
    """The range of parameter ``name`` over which the fit is as good as at the estimate, or None.

    A scan of ``points`` values across the search box with the other parameters held at the estimate:
    the contiguous values around the estimate whose weighted cost exceeds the estimate's by at most
    ``2.71 x cost / T`` (the 90% point of a chi-square with one degree of freedom, in units of one
    record's share of the cost: the records, not their entries, are the independent units). Holding
    the others fixed makes it a lower bound on the true flat range (a profile would let them follow).
    """
    coord = _COORDINATE.get(name)
    if coord not in est.names:
        return None
    i = est.names.index(coord)
    lo, hi = est.bounds()
    x = np.asarray(x_hat, dtype=np.float64)
    c0 = est.cost(x)
    grid = np.unique(np.concatenate([np.linspace(lo[i], hi[i], points), [x[i]]]))
    costs = []
    for v in grid:
        xv = x.copy()
        xv[i] = v
        costs.append(est.cost(xv))
    ok = np.asarray(costs) - c0 <= 2.71 * c0 / max(est.T, 1)
    j = int(np.searchsorted(grid, x[i]))
    a = b = j
    while a > 0 and ok[a - 1]:
        a -= 1
    while b < len(grid) - 1 and ok[b + 1]:
        b += 1
    kind = _SCALES[name][0]
    return [_inv(kind, grid[a]), _inv(kind, grid[b])]
