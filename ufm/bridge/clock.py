"""The clock of a fit: how observed steps map to model time (THEORY §8.6), declared, fitted or known.

A fit compares observed Grams with a model's Grams at *model times*. How the
observed steps become model times is part of the model, and ufm says which
clock each fit used:

``"gd"`` (known)
    The source is a :func:`ufm.simulate` GD run: the model is plain GD with
    the run's step ``lr``, compared at the same step counts. Nothing is fitted.
``"flow"`` (known)
    The source is a gradient-flow run: the observed clock *is* model time.
``"linear"`` (declared, 1 parameter)
    ``tau = c * step``: what constant-step GD or SGD on a network gives.
``"power"`` (declared, 2 parameters)
    ``tau = c * step ** alpha``: adds a constant drift of the effective step
    size (Adam's normalized steps grow the effective rate as gradients
    shrink); ``alpha = 1`` is the linear map.
``"broken"`` (declared, 4 parameters; the default for a network)
    ``tau = c * step ** alpha * (1 + step / b) ** (beta - alpha)``: a power
    law with exponent ``alpha`` before the step ``b`` and ``beta`` after it.
    On the Adam-trained reference networks the aligned model time rises
    faster than any single power law early and slower late (measured:
    ``docs/bridge/fits.md``); a single power law then misses the gap's rise.
    After a run has collapsed nothing moves, so ``beta`` (and ``b``) may be
    reported as not identifiable.
``"free"`` (for comparison)
    Any non-decreasing map, found by monotone alignment of the records to the
    model curve (:func:`align_refined`): ``T`` free numbers. A fit with the
    free map matches at least as well as any declared map; the difference
    says how much of a match the clock carries.

The parameters of the declared maps are ``log10 c`` (``"time_scale"``) and
``alpha`` (``"time_exponent"``); they are fitted with the model's own and get
intervals like every other parameter (:mod:`ufm.bridge.estimate`).

References
----------
THEORY.md §8.6; Zhao, Papadimitriou, Thrampoulidis, "Structure Before Collapse", arXiv 2606.26749.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLOCKS", "Clock", "align_monotone", "align_refined", "at_fraction", "powerlaw_init"]

#: The clocks a fit can use (``fit(clock=...)``); ``"auto"`` picks a known one for a ufm Trajectory, else ``"power"``.
CLOCKS = ("auto", "gd", "flow", "linear", "power", "broken")


class Clock:
    """How observed steps map to model time: known (``"gd"``, ``"flow"``) or declared (``"linear"``, ``"power"``).

    Parameters
    ----------
    kind : {"gd", "flow", "linear", "power"}
        The map (module docstring).
    lr : float, optional
        The GD step of a ``"gd"`` clock.

    Attributes
    ----------
    names : tuple of str
        The fitted parameters, in the order of the clock's part of a parameter vector
        (``()``, ``("log10_time_scale",)`` or ``("log10_time_scale", "time_exponent")``).
    """

    #: Box of the declared maps' parameters (``log10 c``, ``alpha``).
    BOUNDS = {"log10_time_scale": (-12.0, 12.0), "time_exponent": (0.05, 20.0), "log10_time_break": (-1.0, 9.0),
              "late_exponent": (0.05, 20.0)}

    def __init__(self, kind: str, lr: float | None = None):
        if kind not in CLOCKS[1:]:
            raise ValueError(f"clock must be one of {CLOCKS}, got {kind!r}.")
        if kind == "gd" and not (lr is not None and lr > 0):
            raise ValueError("a 'gd' clock needs the run's step lr > 0.")
        self.kind, self.lr = kind, (None if lr is None else float(lr))
        self.names = {"gd": (), "flow": (), "linear": ("log10_time_scale",),
                      "power": ("log10_time_scale", "time_exponent"),
                      "broken": ("log10_time_scale", "time_exponent", "log10_time_break", "late_exponent")}[kind]

    @property
    def known(self) -> bool:
        """Whether the map is the run's own (nothing fitted)."""
        return self.kind in ("gd", "flow")

    def describe(self) -> str:
        if self.kind == "gd":
            return f"known: GD with the run's step lr = {self.lr:g}, compared at the same steps"
        return {"flow": "known: the run's flow time is model time",
                "linear": "declared: tau = c * step (c fitted)",
                "power": "declared: tau = c * step^alpha (c and alpha fitted)",
                "broken": "declared: tau = c * step^alpha * (1 + step/b)^(beta - alpha) (c, alpha, b, beta fitted)"}[
            self.kind]

    def unpack(self, xc) -> dict:
        """``{"time_scale": c, "time_exponent": alpha}`` of the clock's part ``xc`` of a parameter vector.

        Parameters
        ----------
        xc : array
            The clock's part of a parameter vector (:attr:`names`).
        """
        xc = list(np.asarray(xc, dtype=np.float64))
        if self.kind == "linear":
            return {"time_scale": 10.0 ** xc[0], "time_exponent": 1.0}
        if self.kind == "power":
            return {"time_scale": 10.0 ** xc[0], "time_exponent": float(xc[1])}
        if self.kind == "broken":
            return {"time_scale": 10.0 ** xc[0], "time_exponent": float(xc[1]), "time_break": 10.0 ** xc[2],
                    "late_exponent": float(xc[3])}
        return {}

    def times(self, xc, steps) -> np.ndarray:
        """Model times of observed steps (the steps themselves for a ``"flow"`` clock; ``lr * steps`` for GD).

        Parameters
        ----------
        xc : array
            The clock's parameters.
        steps : array
            Observed steps.
        """
        steps = np.asarray(steps, dtype=np.float64)
        if self.kind == "gd":
            return self.lr * steps
        if self.kind == "flow":
            return steps
        q = self.unpack(xc)
        s = np.maximum(steps, 1e-300)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):     # a far step may overflow to inf
            tau = q["time_scale"] * np.power(s, q["time_exponent"])
            if self.kind == "broken":
                tau = tau * np.power(1.0 + s / q["time_break"], q["late_exponent"] - q["time_exponent"])
        return np.where(steps > 0, tau, 0.0)

    def steps(self, xc, tau) -> np.ndarray:
        """Observed steps of model times (the inverse of :meth:`times`).

        Parameters
        ----------
        xc : array
            The clock's parameters.
        tau : array
            Model times.
        """
        tau = np.asarray(tau, dtype=np.float64)
        if self.kind == "gd":
            return tau / self.lr
        if self.kind == "flow":
            return tau
        q = self.unpack(xc)
        with np.errstate(divide="ignore"):
            out = np.where(tau > 0, np.power(np.maximum(tau, 1e-300) / q["time_scale"], 1.0 / q["time_exponent"]), 0.0)
        if self.kind == "broken":              # monotone: bisection in log10 step, all times at once
            t = np.atleast_1d(tau).astype(np.float64)
            lo, hi = np.full(t.shape, -12.0), np.full(t.shape, 30.0)
            for _ in range(60):                # 42 decades / 2^60: far below float64's resolution of a step
                mid = 0.5 * (lo + hi)
                below = self.times(xc, 10.0 ** mid) < t
                lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
            out = np.where(t > 0, 10.0 ** (0.5 * (lo + hi)), 0.0).reshape(np.shape(tau))
        return out

    def bounds(self):
        """``(low, high)`` arrays of the clock's parameters."""
        return (np.array([self.BOUNDS[n][0] for n in self.names]), np.array([self.BOUNDS[n][1] for n in self.names]))


def powerlaw_init(kind: str, steps, tau) -> np.ndarray:
    """Starting values of a declared map from aligned model times: least squares of ``log tau`` on ``log step``.

    Parameters
    ----------
    kind : {"linear", "power"}
        The map.
    steps, tau : array (T,)
        Observed steps and the model times aligned with them (e.g. by :func:`align_refined`).

    Returns
    -------
    ndarray
        ``[log10 c]`` or ``[log10 c, alpha]`` (``alpha`` kept within [0.2, 5]); ``None`` when fewer than two records
        have a positive step and a positive aligned time.
    """
    steps, tau = np.asarray(steps, float), np.asarray(tau, float)
    m = (steps > 0) & (tau > 0)
    if m.sum() < 2:
        return None
    ls, lt = np.log10(steps[m]), np.log10(tau[m])
    if kind == "broken" and m.sum() >= 4 and np.ptp(ls) > 0:
        half = len(ls) // 2           # two power laws, early and late records, meeting at the middle step
        a1 = np.polyfit(ls[:half + 1], lt[:half + 1], 1)[0] if np.ptp(ls[:half + 1]) > 0 else 1.0
        a2 = np.polyfit(ls[half:], lt[half:], 1)[0] if np.ptp(ls[half:]) > 0 else 1.0
        a1, a2 = float(np.clip(a1, 0.2, 5.0)), float(np.clip(a2, 0.2, 5.0))
        return np.array([float(np.mean(lt[:half + 1] - a1 * ls[:half + 1])), a1, float(ls[half]), a2])
    if kind in ("power", "broken") and np.ptp(ls) > 0:
        alpha, off = np.polyfit(ls, lt, 1)
        alpha = float(np.clip(alpha, 0.2, 5.0))
        out = np.array([float(np.mean(lt - alpha * ls)), alpha])
        return out if kind == "power" else np.concatenate([out, [float(ls[-1]) + 1.0, alpha]])
    off = float(np.mean(lt - ls))
    return {"linear": np.array([off]), "power": np.array([off, 1.0]), "broken": np.array([off, 1.0, 3.0, 1.0])}[kind]


# -- the free map: monotone alignment -----------------------------------------------------------
def align_monotone(D) -> tuple[np.ndarray, float]:
    """Non-decreasing indices ``j_i`` minimizing ``sum_i D[i, j_i]`` (dynamic programming).

    ``j_0 <= j_1 <= ... <= j_{T-1}``; O(T J).

    Parameters
    ----------
    D : array (T, J)
        Cost matrix (observed records x model times).

    Returns
    -------
    j : ndarray of int (T,)
        The indices.
    cost : float
        The minimal mean cost.
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


def align_refined(inner, adjacent) -> tuple[np.ndarray, float]:
    """Monotone alignment of unit observations to a model curve, refined between model times.

    ``inner[i, j]`` is ``<o_i, m_j>`` for unit observations ``o_i`` and unit
    model points ``m_j``; ``adjacent[j] = <m_j, m_{j+1}>``. The dynamic
    programme of :func:`align_monotone` on ``||o_i - m_j||^2 = 2 - 2 inner``
    picks a model point per record; each record then moves to the nearest
    point of the two segments ``[m_{j-1}, m_j]``, ``[m_j, m_{j+1}]``
    (straight chords of the model curve), which removes the discretization of
    the model's time grid from the cost.

    Parameters
    ----------
    inner : array (T, J)
        Inner products of the unit observations with the unit model points.
    adjacent : array (J - 1,)
        Inner products of consecutive model points.

    Returns
    -------
    frac : ndarray (T,)
        Fractional model indices ``j + theta`` of the records.
    cost : float
        Mean squared distance of the records to their points on the model curve.
    """
    inner = np.asarray(inner, dtype=np.float64)
    T, J = inner.shape
    path, _ = align_monotone(np.maximum(2.0 - 2.0 * inner, 0.0))
    frac = path.astype(np.float64)
    d2 = np.maximum(2.0 - 2.0 * inner[np.arange(T), path], 0.0)
    for lo in (-1, 0):
        j = path + lo
        ok = (j >= 0) & (j + 1 < J)
        jj = np.clip(j, 0, J - 2)
        a = np.maximum(2.0 - 2.0 * inner[np.arange(T), jj], 0.0)          # ||o - m_j||^2
        step2 = np.maximum(2.0 - 2.0 * adjacent[jj], 0.0)                  # ||m_{j+1} - m_j||^2
        proj = inner[np.arange(T), jj + 1] - inner[np.arange(T), jj] - adjacent[jj] + 1.0
        theta = np.where(step2 > 0, np.clip(proj / np.where(step2 > 0, step2, 1.0), 0.0, 1.0), 0.0)
        cand = np.maximum(a - 2.0 * theta * proj + theta ** 2 * step2, 0.0)
        better = ok & (cand < d2)
        d2 = np.where(better, cand, d2)
        frac = np.where(better, jj + theta, frac)
    return frac, float(d2.mean())


def at_fraction(values, frac, *, log=False):
    """Linear interpolation of ``values`` at fractional indices.

    Parameters
    ----------
    values : array (J, ...)
        Values at the integer indices.
    frac : array (T,)
        Fractional indices in ``[0, J - 1]``.
    log : bool
        Interpolate ``log values`` where both neighbours are positive (times on a log grid).

    Returns
    -------
    ndarray (T, ...)
        The interpolated values.
    """
    values = np.asarray(values, dtype=np.float64)
    j = np.clip(np.floor(frac).astype(np.int64), 0, len(values) - 2)
    th = (frac - j).reshape((-1,) + (1,) * (values.ndim - 1))
    a, b = values[j], values[j + 1]
    if log:
        pos = (a > 0) & (b > 0)
        la, lb = np.log(np.where(pos, a, 1.0)), np.log(np.where(pos, b, 1.0))
        return np.where(pos, np.exp(la + th * (lb - la)), a + th * (b - a))
    return a + th * (b - a)


