"""Compiled adaptive Dormand-Prince 5(4) integrator for autonomous gradient flows.

``ufm.simulate(..., mode="flow")`` uses it to follow a gradient flow to log-time horizons:
CE gradient flow without weight decay converges like ``log t`` (THEORY §6.5), so the
interesting range is ``t`` up to ``1e8`` or more. A fixed step ``h`` would need ``t/h`` steps.
In the log-time variable ``s = log(1 + t)``, where ``dy/ds = (1 + t) dy/dt``, the step in ``t``
grows with ``t``: THEORY TV13 to ``t = 1e8`` takes 225 steps (1352 right-hand-side calls) at
``rtol=1e-9``. (Adaptive steps in plain ``t`` also grow; that run takes 1772 calls.)

Contents
--------
dopri5          the numba kernel, ``@njit(cache=True)``, generic in ``rhs``.
dopri5_numpy    its plain-numpy twin: same algorithm, same floating-point formulas (rounded
                apart: see Rounding), vectorised; the reference and the backend under
                ``NUMBA_DISABLE_JIT=1``.
integrate       the Python entry point: validates input, calls the kernel so that its
                on-disk cache is reused across processes, returns :class:`IntegrateResult`.
Stepper         the same integration in pieces of bounded work (Ctrl-C between pieces).
_control        the step-size controller (and ``_start_step``, ``_start_step_final``,
                ``_step_too_small``): scalar rules in ``@njit`` functions that the kernel
                and its numpy twin both call, so the two implementations share one copy.

Algorithm (both implementations)
--------------------------------
* Dormand-Prince RK5(4)7M (Dormand & Prince 1980; Hairer, Nørsett & Wanner,
  *Solving ODEs I*, 2nd ed., §II.5): 7 stages, FSAL (the last stage of an accepted
  step is the first stage of the next), 5th-order solution propagated (local extrapolation).
* Error norm (HNW §II.4): ``err = sqrt(mean((e_i / sc_i)^2))`` with
  ``e = h * sum_j (b_j - b*_j) k_j`` and ``sc_i = atol + rtol * max(|y_i|, |y_new_i|)``.
  A step is accepted when ``err <= 1``.
* Step control (HNW §II.4): ``h_new = h * min(10, max(0.2, 0.9 * err^(-1/5)))``;
  right after a rejected step the factor is also capped at 1 (HNW's dopri5 does the same).
* Starting step when ``h0 <= 0``: the heuristic of HNW §II.4 ("Starting step size", one extra
  right-hand-side call).
* Output: steps are clipped so that every output time is hit exactly (no interpolation); a
  clipped step does not shrink the step-size proposal for the steps that follow it.
* A trial step whose stages or result are not finite is rejected and the step shrunk by 0.2.
* Stop conditions: ``status`` 0 success, 1 ``max_steps`` step attempts (accepted + rejected)
  used, 2 non-finite state or derivative (the derivative at ``y0`` is not finite, or the step
  underflowed while trial steps kept giving non-finite values: overflow / blow-up), 3 step
  size underflow (``h < 10 ulp(x)``, with finite trial values: a singularity, stiffness, or
  tolerances below what float64 resolves). The rows reached so far are kept, the rest NaN.

Time variable. With ``log_time=False`` the independent variable is ``x = t``; with
``log_time=True`` it is ``x = s = log1p(t)`` and every stage derivative is multiplied by
``exp(x_stage) = 1 + t_stage``. Both implementations keep the stages unscaled (``k_j =
rhs(y_j)``, FSAL included) and fold the factor into the stage's scalar weights: a stage
argument is ``y + h * sum_j (a_ij * g_j) k_j`` with ``g_j = exp(x_j)``, likewise the new
state and the error estimate (in plain time ``g_j = 1`` and the weights are the tableau's own,
exactly). ``h0`` is given in units of ``x``. The state is at ``x = 0`` (``t = 0``); ``t_eval``
is mapped to ``x_eval = log1p(t_eval)`` in log-time mode.

Rounding. The kernel lets LLVM fuse multiply-adds in its stage sums and sums the error
norm's terms in vector lanes (``_lane_sum``); the numpy twin rounds every operation and sums
pairwise (``np.sum``). The two agree to rounding (tests/test_integrate.py compares them), not
to the last bit.

Caching finding (numba 0.68.1)
------------------------------
``@njit(cache=True)`` compiles and runs with a jitted ``rhs`` passed as an argument, but numba
types that argument as ``types.Dispatcher(rhs)``, which is keyed by the identity of the
dispatcher object: the on-disk cache never hits in a new process, and every process appends a
new ``.nbc`` file to ``__pycache__`` (unbounded growth). A factory that closes over ``rhs``
(``make_integrator(rhs)`` + ``functools.lru_cache``) fares no better: numba hashes the closure
cells into the cache key, and a pickled dispatcher carries a per-process random uuid.
The pattern that works: compile ``dopri5`` for an explicit *first-class function type*
``types.FunctionType(ret(float64[::1], typeof(data), float64[::1]))`` for ``rhs`` and call
that overload's entry point with the dispatcher. The signature is structural, so the kernel is
compiled once per ``(typeof(data), typeof(y0), ...)`` signature, shared by every ``rhs`` with
that data layout and loaded from the disk cache in later processes; ``rhs`` is called through a
function pointer (no inlining: negligible for a gradient). :func:`integrate` does this.
Calling ``dopri5(rhs, ...)`` directly from Python works but recompiles once per process (and
grows the cache). Calling it from inside another jitted function works too, but numba then
lowers ``rhs`` as a run-time address and refuses to cache that caller ("uses dynamic globals"):
drive the integrator from Python, through :func:`integrate`.

An exception raised inside ``rhs`` propagates to the caller (checked with numba 0.68.1, through
the function-type call too). Note: DESIGN.md keeps numba kernels in ``ufm/_kernels.py``; this
kernel lives here by the brief that created this module (numba caches per function and file).

References
----------
.. [1] J. R. Dormand and P. J. Prince, "A family of embedded Runge-Kutta formulae",
   J. Comput. Appl. Math. 6(1):19-26, 1980. doi:10.1016/0771-050X(80)90013-3
.. [2] E. Hairer, S. P. Nørsett and G. Wanner, *Solving Ordinary Differential Equations I:
   Nonstiff Problems*, 2nd ed., Springer, 1993, §II.4 (error estimation, step size control,
   starting step size) and §II.5 (the DOPRI5 tableau).
"""

from __future__ import annotations

import math
from fractions import Fraction as _F
from collections.abc import Callable
from typing import NamedTuple

import numba
import numpy as np
from numba import types as _nbtypes

from ufm._checks import check_int
from ufm.results import Status

__all__ = ["STATUS", "STATUS_MESSAGES", "TABLEAU", "IntegrateResult", "Stepper", "dopri5", "dopri5_numpy", "integrate"]

# ---------------------------------------------------------------------------------------------
# Butcher tableau of RK5(4)7M, Dormand & Prince (1980), exact rationals. ``B`` is the 5th-order
# weight row (equal to the last row of A: FSAL), ``BS`` the embedded 4th-order row.
# tests/test_integrate.py checks all order conditions up to order 5 (B) and 4 (BS) exactly.
TABLEAU = {
    "C": (_F(0), _F(1, 5), _F(3, 10), _F(4, 5), _F(8, 9), _F(1), _F(1)),
    "A": (
        (),
        (_F(1, 5),),
        (_F(3, 40), _F(9, 40)),
        (_F(44, 45), _F(-56, 15), _F(32, 9)),
        (_F(19372, 6561), _F(-25360, 2187), _F(64448, 6561), _F(-212, 729)),
        (_F(9017, 3168), _F(-355, 33), _F(46732, 5247), _F(49, 176), _F(-5103, 18656)),
        (_F(35, 384), _F(0), _F(500, 1113), _F(125, 192), _F(-2187, 6784), _F(11, 84)),
    ),
    "B": (_F(35, 384), _F(0), _F(500, 1113), _F(125, 192), _F(-2187, 6784), _F(11, 84), _F(0)),
    "BS": (_F(5179, 57600), _F(0), _F(7571, 16695), _F(393, 640), _F(-92097, 339200),
           _F(187, 2100), _F(1, 40)),
}
_A = TABLEAU["A"]
_C = TABLEAU["C"]
# Error weights E = B - BS, formed exactly before rounding to float64.
_E = tuple(b - bs for b, bs in zip(TABLEAU["B"], TABLEAU["BS"]))

C2, C3, C4, C5 = (float(c) for c in _C[1:5])
A21 = float(_A[1][0])
A31, A32 = (float(a) for a in _A[2])
A41, A42, A43 = (float(a) for a in _A[3])
A51, A52, A53, A54 = (float(a) for a in _A[4])
A61, A62, A63, A64, A65 = (float(a) for a in _A[5])
B1, _B2, B3, B4, B5, B6 = (float(a) for a in _A[6])
E1, _E2, E3, E4, E5, E6, E7 = (float(e) for e in _E)

SAFETY = 0.9
FAC_MIN = 0.2
FAC_MAX = 10.0
ERR_EXP = -0.2  # -1/(q+1) with q = 4, the order of the embedded error estimate

STATUS_MESSAGES = {
    0: "Reached every time in t_eval.",
    1: "Stopped: max_steps step attempts used before the last time in t_eval; "
       "raise max_steps, loosen rtol/atol, or use log_time=True for long horizons.",
    2: "Stopped: the state or its derivative became non-finite (overflow in rhs, or a "
       "finite-time blow-up of the flow).",
    3: "Stopped: the step size underflowed (below 10 ulp of the time variable) with finite "
       "values: a singularity or stiffness, or rtol/atol tighter than float64 resolves.",
}


# ---------------------------------------------------------------------------------------------
# The step-size controller: scalar rules shared by the kernel and its numpy twin (plain
# functions under njit, called from Python by the twin), so the two cannot drift apart.

@numba.njit(cache=True)
def _start_step(d0, d1, ha_max):
    """First trial step of the starting heuristic (HNW §II.4) from ``d0 = ||y0||``, ``d1 = ||f(y0)||``
    (scaled RMS norms), at most ``ha_max`` (the distance to the last output time)."""
    if d0 < 1e-5 or d1 < 1e-5:
        ha = 1e-6
    else:
        ha = 0.01 * d0 / d1
    return min(ha, ha_max)


@numba.njit(cache=True)
def _start_step_final(ha, d1, d2):
    """The starting step from the trial step ``ha`` and ``d2 = ||f(y0 + ha f(y0)) - f(y0)|| / ha``."""
    if not math.isfinite(d2):
        return ha
    dm = max(d1, d2)
    if dm <= 1e-15:
        hb = max(1e-6, ha * 1e-3)
    else:
        hb = (0.01 / dm) ** 0.2
    return min(100.0 * ha, hb)


@numba.njit(cache=True)
def _step_too_small(h, x):
    """True when ``h`` is below 10 ulp of ``x`` (the step underflows)."""
    return h < 10.0 * (np.nextafter(x, np.inf) - x)


@numba.njit(cache=True)
def _control(err, finite, hs, h, clipped, rejected):
    """Accept or reject a trial step of size ``hs`` and propose the next step size (HNW §II.4).

    ``err`` is the scaled error norm, ``finite`` whether every stage and the result are
    finite, ``h`` the proposal the trial step came from (``hs < h`` when it was clipped to an
    output time: a clipped step does not shrink the proposal), ``rejected`` whether the
    previous attempt was rejected (then an accepted step may not grow). Returns
    ``(accepted, h_next, nonfinite)``.
    """
    if finite and err <= 1.0:
        if err == 0.0:
            fac = FAC_MAX
        else:
            fac = min(FAC_MAX, SAFETY * err ** ERR_EXP)
        if rejected:
            fac = min(fac, 1.0)
        h_next = hs * fac
        return True, (max(h, h_next) if clipped else h_next), False
    if finite:
        return False, hs * max(FAC_MIN, SAFETY * err ** ERR_EXP), False
    return False, hs * FAC_MIN, True


# ---------------------------------------------------------------------------------------------
# Numba kernel (the source also runs as plain Python under NUMBA_DISABLE_JIT=1).

@numba.njit(cache=True)
def _all_finite(a):
    for i in range(a.shape[0]):
        if not math.isfinite(a[i]):
            return False
    return True


@numba.njit(cache=True)
def _dopri5_begin(rhs, y, data, x_end, rtol, atol, log_time, h0, k1):
    """First derivative (into ``k1``) and first step; returns ``(h, nfev, status)``, status 2 if ``k1`` is not finite.

    Starting step when ``h0 <= 0`` (HNW §II.4): ``h = min(100 h_a, (0.01 / max(d1, d2))^(1/5))``.
    """
    n = y.shape[0]
    x = 0.0
    rhs(y, data, k1)  # exp(0) = 1: no log-time scaling at x = 0
    nfev = 1
    if not _all_finite(k1):
        return 0.0, nfev, 2
    if h0 > 0.0:
        return h0, nfev, 0
    ys = np.empty(n)
    k2 = np.empty(n)
    d0 = 0.0
    d1 = 0.0
    for i in range(n):
        sc = atol + rtol * abs(y[i])
        d0 += (y[i] / sc) ** 2
        d1 += (k1[i] / sc) ** 2
    d0 = math.sqrt(d0 / n)
    d1 = math.sqrt(d1 / n)
    ha = _start_step(d0, d1, x_end - x)
    for i in range(n):
        ys[i] = y[i] + ha * k1[i]
    rhs(ys, data, k2)
    g = math.exp(x + ha) if log_time else 1.0
    nfev += 1
    d2 = 0.0
    for i in range(n):
        sc = atol + rtol * abs(y[i])
        d2 += ((k2[i] * g - k1[i]) / sc) ** 2
    d2 = math.sqrt(d2 / n) / ha
    return _start_step_final(ha, d1, d2), nfev, 0


@numba.njit(cache=True, fastmath={"reassoc"})
def _lane_sum(a):
    """``sum(a)`` in vector lanes: ``reassoc`` lets LLVM keep several partial sums (their
    number is fixed in the compiled code, so the result is deterministic). The flag covers
    this function's additions only, not the kernel that calls it."""
    acc = 0.0
    for i in range(a.shape[0]):
        acc += a[i]
    return acc


@numba.njit(cache=True, error_model="numpy", fastmath={"contract"})
def _dopri5_advance(rhs, y, k1, data, x_eval, Y, j, x, h, rtol, atol, log_time, budget, rejected,
                    nonfinite):
    """Steps from ``(x, y, k1, h)`` until ``x_eval`` is done or ``budget`` step attempts are used.

    ``y`` and ``k1`` (the FSAL derivative) are updated in place; reached rows of
    ``x_eval`` are written into ``Y`` from row ``j`` on. Calling it again with the
    returned values continues the integration exactly as one longer call would
    (the step-size controller's flags ``rejected`` and ``nonfinite`` carry over).

    Returns ``(x, h, j, nfev, nsteps, status, rejected, nonfinite)``; ``status`` 0: every
    row of ``x_eval`` reached, 1: ``budget`` used, 2: non-finite, 3: step underflow.

    Per step: six passes that form the stage arguments (the last one is the new state
    ``yn``, stage 7's argument), one pass for the error norm's squared terms (into ``ys``,
    free by then) and their sum (:func:`_lane_sum`): 42 reads and writes of state-sized
    arrays, in plain and log time alike. The log-time factors ``g_j = exp(x_j)`` are folded
    into the scalar weights (module docstring), so the stages are never rescaled. Each pass
    writes one array: LLVM vectorizes a loop only when run-time checks rule out overlap
    between the arrays it writes and the others it touches (numba cannot declare arrays
    distinct), and it caps their number; every pass here, the error norm's (one array
    written, eight read) included, compiles to packed (ymm) arithmetic.

    Finiteness: a non-finite ``k1, k3 .. k7`` makes the error estimate ``e`` (each has a
    nonzero weight in it) and so ``err`` non-finite; ``k2`` (weight 0 in ``yn`` and ``e``)
    is checked in the pass that forms stage 3's argument, which reads it anyway, and ``yn``
    (which enters ``err`` only through ``max``) in the error-norm pass.

    Compiled with numba's ``error_model="numpy"``: a division by zero gives inf/NaN instead
    of raising, so the error norm's divisions carry no zero test and its loop vectorizes.
    The norm's divisor ``atol + rtol * max(|y_i|, |yn_i|)`` is ``>= atol > 0``
    (:func:`integrate` checks ``atol > 0``); were it 0 (``atol = 0`` passed to the kernel
    directly), ``0/0`` is NaN, the norm non-finite, and the step rejected like any
    non-finite step (status 2 if it persists). And with ``fastmath={"contract"}`` (fused
    multiply-adds, one rounding where the twin has two; no other fast-math licence, so
    ``isfinite`` and NaN propagation behave as written).
    """
    n = y.shape[0]
    m = x_eval.shape[0]
    y_in = y
    k1_in = k1
    swapped = False
    yn = np.empty(n)
    ys = np.empty(n)
    k2 = np.empty(n)
    k3 = np.empty(n)
    k4 = np.empty(n)
    k5 = np.empty(n)
    k6 = np.empty(n)
    k7 = np.empty(n)
    nfev = 0
    status = 0
    nsteps = 0
    while j < m:
        if nsteps >= budget:
            status = 1
            break
        target = x_eval[j]
        if _step_too_small(h, x):
            status = 2 if nonfinite else 3
            break
        hs = h
        clipped = False
        if x + hs >= target:
            hs = target - x
            clipped = True
        x_new = target if clipped else x + hs
        # Stage j's derivative is k_j = g_j rhs(y_j), g_j = exp(x_j) in log time (1 in plain
        # time). The stages are kept unscaled and g_j goes into the scalar weights, whose
        # products with 1.0 are exact: plain time gets the tableau's own coefficients.
        g1 = g2 = g3 = g4 = g5 = g6 = g7 = 1.0
        if log_time:
            g1, g2, g3 = math.exp(x), math.exp(x + C2 * hs), math.exp(x + C3 * hs)
            g4, g5, g6, g7 = math.exp(x + C4 * hs), math.exp(x + C5 * hs), math.exp(x + hs), math.exp(x_new)
        a21 = A21 * g1
        a31, a32 = A31 * g1, A32 * g2
        a41, a42, a43 = A41 * g1, A42 * g2, A43 * g3
        a51, a52, a53, a54 = A51 * g1, A52 * g2, A53 * g3, A54 * g4
        a61, a62, a63, a64, a65 = A61 * g1, A62 * g2, A63 * g3, A64 * g4, A65 * g5
        b1, b3, b4, b5, b6 = B1 * g1, B3 * g3, B4 * g4, B5 * g5, B6 * g6
        e1, e3, e4, e5, e6, e7 = E1 * g1, E3 * g3, E4 * g4, E5 * g5, E6 * g6, E7 * g7

        for i in range(n):
            ys[i] = y[i] + hs * (a21 * k1[i])
        rhs(ys, data, k2)
        checked = True
        for i in range(n):
            ys[i] = y[i] + hs * (a31 * k1[i] + a32 * k2[i])
            checked &= math.isfinite(k2[i])   # k2 has weight 0 in yn and e: checked here
        rhs(ys, data, k3)
        for i in range(n):
            ys[i] = y[i] + hs * (a41 * k1[i] + a42 * k2[i] + a43 * k3[i])
        rhs(ys, data, k4)
        for i in range(n):
            ys[i] = y[i] + hs * (a51 * k1[i] + a52 * k2[i] + a53 * k3[i] + a54 * k4[i])
        rhs(ys, data, k5)
        for i in range(n):
            ys[i] = y[i] + hs * (a61 * k1[i] + a62 * k2[i] + a63 * k3[i] + a64 * k4[i] + a65 * k5[i])
        rhs(ys, data, k6)
        for i in range(n):
            yn[i] = y[i] + hs * (b1 * k1[i] + b3 * k3[i] + b4 * k4[i] + b5 * k5[i] + b6 * k6[i])
        rhs(yn, data, k7)
        nfev += 6
        nsteps += 1

        for i in range(n):
            e = hs * (e1 * k1[i] + e3 * k3[i] + e4 * k4[i] + e5 * k5[i] + e6 * k6[i] + e7 * k7[i])
            sc = atol + rtol * max(abs(y[i]), abs(yn[i]))
            ys[i] = (e / sc) ** 2             # sc >= atol > 0 (NaN if yn is: caught below)
            checked &= math.isfinite(yn[i])
        err = math.sqrt(_lane_sum(ys) / n)
        accepted, h, nonfinite = _control(err, checked and math.isfinite(err), hs, h, clipped, rejected)
        rejected = not accepted
        if accepted:
            x = x_new
            y, yn = yn, y
            k1, k7 = k7, k1
            swapped = not swapped
            if clipped:
                while j < m and x_eval[j] <= x:
                    for i in range(n):
                        Y[j, i] = y[i]
                    j += 1
    if swapped:      # the current state lives in the work buffers: hand it back in the caller's arrays
        for i in range(n):
            y_in[i] = y[i]
            k1_in[i] = k1[i]
    return x, h, j, nfev, nsteps, status, rejected, nonfinite


@numba.njit(cache=True)
def dopri5(rhs, y0, data, t_eval, rtol, atol, log_time, max_steps, h0):
    """Integrate ``dy/dt = rhs(y)`` from ``y(0) = y0``; states at ``t_eval``, hit exactly.

    Parameters
    ----------
    rhs : jitted function ``rhs(y, data, out)``
        Writes ``dy/dt`` (plain time) into ``out``; autonomous (no ``t`` argument).
    y0 : float64[::1]
        State at ``t = 0``.
    data : tuple
        Passed to ``rhs`` untouched.
    t_eval : float64[::1]
        Strictly increasing output times, ``t_eval[0] >= 0`` (not checked here: see
        :func:`integrate`).
    rtol, atol : float
        Relative and absolute tolerances of the error norm (module docstring).
    log_time : bool
        Integrate in ``s = log1p(t)`` with ``dy/ds = exp(s) rhs(y)``.
    max_steps : int
        Maximum number of step attempts (accepted + rejected).
    h0 : float
        First step in units of the integration variable; ``<= 0`` picks it automatically.

    Returns
    -------
    Y : ndarray (len(t_eval), len(y0))
        States at ``t_eval``; rows not reached are NaN.
    n_ok : int
        Number of rows filled (always the leading rows).
    nfev : int
        Number of ``rhs`` evaluations.
    status : int
        0 success, 1 max_steps reached, 2 non-finite state or derivative, 3 step underflow.

    Notes
    -----
    One call of :func:`_dopri5_begin` and one of :func:`_dopri5_advance` with the whole
    budget; :class:`Stepper` makes the same calls in bounded pieces.
    """
    n = y0.shape[0]
    m = t_eval.shape[0]
    Y = np.empty((m, n))      # rows not reached are set to NaN at the end (one write per row)
    x_eval = np.empty(m)
    for j in range(m):
        x_eval[j] = math.log1p(t_eval[j]) if log_time else t_eval[j]

    y = np.empty(n)
    for i in range(n):
        y[i] = y0[i]
    k1 = np.empty(n)
    x = 0.0
    j = 0
    while j < m and x_eval[j] <= x:
        for i in range(n):
            Y[j, i] = y[i]
        j += 1
    if j == m:
        return Y, j, 0, 0
    h, nfev, status = _dopri5_begin(rhs, y, data, x_eval[m - 1], rtol, atol, log_time, h0, k1)
    if status == 0:
        x, h, j, nf, nsteps, status, rejected, nonfinite = _dopri5_advance(
            rhs, y, k1, data, x_eval, Y, j, x, h, rtol, atol, log_time, max_steps, False, False)
        nfev += nf
    Y[j:] = np.nan
    return Y, j, nfev, status


# ---------------------------------------------------------------------------------------------
# Plain-numpy twin: the same algorithm and the same elementwise formulas, vectorised.

@np.errstate(over="ignore", invalid="ignore", divide="ignore")  # non-finite -> status, as in numba
def dopri5_numpy(rhs, y0, data, t_eval, rtol, atol, log_time, max_steps, h0):
    """Plain-numpy twin of :func:`dopri5`: same arguments, same algorithm, same return value.

    ``rhs(y, data, out)`` may be any Python callable with the contract of :func:`dopri5`
    (a jitted function works too, called from Python). Used as the reference in the tests and
    as the backend of :func:`integrate` under ``NUMBA_DISABLE_JIT=1``.
    """
    y0 = np.ascontiguousarray(y0, dtype=np.float64)
    t_eval = np.ascontiguousarray(t_eval, dtype=np.float64)
    n, m = y0.shape[0], t_eval.shape[0]
    Y = np.full((m, n), np.nan)
    x_eval = np.log1p(t_eval) if log_time else t_eval.copy()

    def f(yv):
        out = np.empty(n)
        rhs(yv, data, out)
        return out

    x, y, nfev = 0.0, y0.copy(), 0
    j = int(np.searchsorted(x_eval, x, side="right"))
    Y[:j] = y
    if j == m:
        return Y, j, nfev, 0
    k1 = f(y)  # unscaled stages, as in the kernel: the log-time factors go into the weights
    nfev += 1
    if not np.all(np.isfinite(k1)):
        return Y, j, nfev, 2

    if h0 > 0.0:
        h = h0
    else:
        sc = atol + rtol * np.abs(y)
        d0 = math.sqrt(np.sum((y / sc) ** 2) / n)
        d1 = math.sqrt(np.sum((k1 / sc) ** 2) / n)
        ha = float(_start_step(d0, d1, x_eval[-1] - x))
        k2 = f(y + ha * k1)
        g = math.exp(x + ha) if log_time else 1.0
        nfev += 1
        d2 = math.sqrt(np.sum(((k2 * g - k1) / sc) ** 2) / n) / ha
        h = float(_start_step_final(ha, d1, d2))

    status, nsteps, rejected, nonfinite = 0, 0, False, False
    while True:
        if nsteps >= max_steps:
            status = 1
            break
        target = x_eval[j]
        if _step_too_small(h, x):
            status = 2 if nonfinite else 3
            break
        hs, clipped = h, False
        if x + hs >= target:
            hs, clipped = target - x, True
        x_new = target if clipped else x + hs
        g1 = g2 = g3 = g4 = g5 = g6 = g7 = 1.0
        if log_time:
            g1, g2, g3 = math.exp(x), math.exp(x + C2 * hs), math.exp(x + C3 * hs)
            g4, g5, g6, g7 = math.exp(x + C4 * hs), math.exp(x + C5 * hs), math.exp(x + hs), math.exp(x_new)
        k2 = f(y + hs * ((A21 * g1) * k1))
        k3 = f(y + hs * ((A31 * g1) * k1 + (A32 * g2) * k2))
        k4 = f(y + hs * ((A41 * g1) * k1 + (A42 * g2) * k2 + (A43 * g3) * k3))
        k5 = f(y + hs * ((A51 * g1) * k1 + (A52 * g2) * k2 + (A53 * g3) * k3 + (A54 * g4) * k4))
        k6 = f(y + hs * ((A61 * g1) * k1 + (A62 * g2) * k2 + (A63 * g3) * k3 + (A64 * g4) * k4
                         + (A65 * g5) * k5))
        yn = y + hs * ((B1 * g1) * k1 + (B3 * g3) * k3 + (B4 * g4) * k4 + (B5 * g5) * k5 + (B6 * g6) * k6)
        k7 = f(yn)
        nfev += 6
        nsteps += 1
        e = hs * ((E1 * g1) * k1 + (E3 * g3) * k3 + (E4 * g4) * k4 + (E5 * g5) * k5 + (E6 * g6) * k6
                  + (E7 * g7) * k7)
        sc = atol + rtol * np.maximum(np.abs(y), np.abs(yn))
        err = math.sqrt(float(np.sum((e / sc) ** 2)) / n)
        finite = math.isfinite(err) and all(
            np.all(np.isfinite(a)) for a in (yn, k2, k3, k4, k5, k6, k7))
        accepted, h, nonfinite = _control(err, finite, hs, h, clipped, rejected)
        h, rejected = float(h), not accepted
        if accepted:
            x, y, k1 = x_new, yn, k7
            if clipped:
                while j < m and x_eval[j] <= x:
                    Y[j] = y
                    j += 1
                if j == m:
                    break
    return Y, j, nfev, status


# ---------------------------------------------------------------------------------------------
# Python entry point.

#: the kernels' stop codes as result statuses
STATUS = {0: Status.completed, 1: Status.max_steps, 2: Status.nonfinite, 3: Status.step_underflow}


class IntegrateResult(NamedTuple):
    """Result of :func:`integrate` (field names after ``scipy.optimize.OptimizeResult``; a light
    tuple, not a saved result: ODE solves inside fits make many of them)."""

    y: np.ndarray
    """(len(t_eval), len(y0)) states at t_eval; rows from ``n_ok`` on are NaN."""
    n_ok: int
    """Number of leading rows of ``y`` that were reached."""
    nfev: int
    """Number of right-hand-side evaluations."""
    status: Status
    """``completed``, ``max_steps``, ``nonfinite`` (state or derivative) or ``step_underflow``."""
    message: str
    """Human-readable description, starting with ``status.message``."""
    success: bool
    """``status.success``: every time in ``t_eval`` was reached."""


_ENTRIES: dict = {}


def _layout(x):
    """A hashable summary of what numba's ``typeof`` depends on (type, dtype, ndim, layout, writeability)."""
    if isinstance(x, np.ndarray):
        return (np.ndarray, x.dtype.str, x.ndim, x.flags.c_contiguous, x.flags.f_contiguous, x.flags.writeable)
    if isinstance(x, tuple):
        return (tuple,) + tuple(_layout(v) for v in x)
    return (type(x),)


def _kernel_entry(rhs, y0, data, t_eval, log_time, max_steps, h0):
    """Entry point of ``dopri5`` compiled with ``rhs`` as a first-class function type.

    See the module docstring ("Caching finding"): the structural signature makes the
    compiled kernel reusable across processes through numba's on-disk cache. Entry points are
    memoized per ``rhs`` and argument layout, so repeated calls (a fit runs thousands) skip
    numba's type inference.
    """
    key = (rhs, _layout(y0), _layout(data), _layout(t_eval))
    entry = _ENTRIES.get(key)
    if entry is None:
        entry = _ENTRIES[key] = _compile_entry(rhs, y0, data, t_eval)
    return entry


def _compile_entry(rhs, y0, data, t_eval):
    arr = numba.typeof(y0)  # array(float64, 1d, C)
    dty = numba.typeof(data)
    rhs_args = (arr, dty, arr)
    rhs.compile(rhs_args)
    ret = rhs.overloads[rhs_args].signature.return_type
    fty = _nbtypes.FunctionType(ret(*rhs_args))
    sig = (fty, arr, dty, numba.typeof(t_eval), _nbtypes.float64, _nbtypes.float64,
           _nbtypes.boolean, _nbtypes.int64, _nbtypes.float64)
    cres = dopri5.overloads.get(sig)
    if cres is None:
        dopri5.compile(sig)
        cres = dopri5.overloads[sig]
    return cres.entry_point


def _positive(name, value, minimum=0.0, hint=""):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive real number, got {value!r}.") from None
    if isinstance(value, (bool, np.bool_)) or not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"{name} must be a finite real number > 0, got {value!r}.{hint}")
    if v < minimum:
        raise ValueError(f"{name}={v!r} is below {minimum:.1e}, which float64 cannot resolve;"
                         f" pass {name} >= {minimum:.1e}.")
    return v


def _checked(rhs, y0, data, t_eval, rtol, atol, log_time, max_steps, h0, backend):
    """The arguments of :func:`integrate` checked and converted (shared with :class:`Stepper`)."""
    if backend not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}.")
    if backend == "auto":
        backend = "numpy" if numba.config.DISABLE_JIT else "numba"
    if not callable(rhs):
        raise ValueError(f"rhs must be a function rhs(y, data, out), got {type(rhs).__name__}.")
    if (backend == "numba" and not numba.config.DISABLE_JIT
            and not isinstance(rhs, numba.core.dispatcher.Dispatcher)):
        raise ValueError("rhs must be a numba.njit function for backend='numba'; decorate it "
                         "with @numba.njit or pass backend='numpy'.")
    if not isinstance(data, tuple):
        raise ValueError(f"data must be a tuple of arrays/scalars (use () for none), "
                         f"got {type(data).__name__}.")

    y0a = np.asarray(y0)
    if y0a.ndim != 1 or y0a.size == 0:
        raise ValueError(f"y0 must be a non-empty 1-D array, got shape {y0a.shape}; "
                         "flatten the state (e.g. np.concatenate([W.ravel(), H.ravel()])).")
    if not np.issubdtype(y0a.dtype, np.number) or np.iscomplexobj(y0a):
        raise ValueError(f"y0 must be real numbers, got dtype {y0a.dtype}.")
    y0a = np.array(y0a, dtype=np.float64, order="C")
    if not np.all(np.isfinite(y0a)):
        raise ValueError(f"y0 must be finite; entries {np.flatnonzero(~np.isfinite(y0a))[:5]} "
                         "are NaN or inf.")

    t = np.asarray(t_eval)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"t_eval must be a non-empty 1-D array of times, got shape {t.shape}.")
    if not np.issubdtype(t.dtype, np.number) or np.iscomplexobj(t):
        raise ValueError(f"t_eval must be real numbers, got dtype {t.dtype}.")
    t = np.array(t, dtype=np.float64, order="C")
    if not np.all(np.isfinite(t)):
        raise ValueError("t_eval must be finite; remove NaN/inf times.")
    if t[0] < 0:
        raise ValueError(f"t_eval must be >= 0 (the state y0 is at t = 0), got t_eval[0]={t[0]}.")
    if t.size > 1 and np.any(np.diff(t) <= 0):
        k = int(np.flatnonzero(np.diff(t) <= 0)[0])
        raise ValueError(f"t_eval must be strictly increasing; t_eval[{k}]={t[k]} >= "
                         f"t_eval[{k + 1}]={t[k + 1]}. Sort it and drop duplicates.")

    rtol = _positive("rtol", rtol, minimum=1e-14)
    atol = _positive("atol", atol)
    if not isinstance(log_time, (bool, np.bool_)):
        raise ValueError(f"log_time must be True or False, got {log_time!r}.")
    log_time = bool(log_time)
    max_steps = check_int("max_steps", max_steps, 1)
    if h0 is None:
        h0v = 0.0
    else:
        h0v = _positive("h0", h0, hint=" Pass h0=None to choose the first step automatically.")

    return rhs, y0a, data, t, rtol, atol, log_time, max_steps, h0v, backend


def integrate(rhs: Callable, y0, data: tuple, t_eval, rtol: float = 1e-9, atol: float = 1e-12,
              log_time: bool = False, max_steps: int = 10**7, *, h0: float | None = None,
              backend: str = "auto") -> IntegrateResult:
    """Integrate the autonomous flow ``dy/dt = rhs(y)`` with adaptive Dormand-Prince 5(4).

    Parameters
    ----------
    rhs : callable ``rhs(y, data, out) -> None``
        Writes ``dy/dt`` (plain time ``t``) into ``out`` (float64 1-D, same length as ``y``).
        A ``numba.njit`` function for ``backend="numba"``; any callable for ``"numpy"``.
    y0 : array_like, 1-D
        Finite initial state at ``t = 0``.
    data : tuple
        Arrays and scalars handed to ``rhs`` untouched (``()`` if none).
    t_eval : array_like, 1-D
        Strictly increasing output times, all ``>= 0``; they are hit exactly (no interpolation).
    rtol, atol : float
        Tolerances of the error norm ``sqrt(mean((e_i/(atol + rtol*max(|y_i|,|y_new_i|)))^2))``;
        ``rtol >= 1e-14`` (float64 cannot do better), ``atol > 0``.
    log_time : bool
        Integrate in ``s = log1p(t)`` (``dy/ds = (1+t) rhs(y)``): steps grow with ``t``, for
        log-time horizons (CE flow without weight decay, THEORY §6.5).
    max_steps : int
        Maximum number of step attempts (accepted + rejected).
    h0 : float, optional
        First step, in units of ``t`` or of ``s = log1p(t)``; ``None`` chooses it (HNW §II.4).
    backend : {"auto", "numba", "numpy"}
        ``"numba"``: the compiled kernel :func:`dopri5`; ``"numpy"``: :func:`dopri5_numpy`;
        ``"auto"``: numba unless ``NUMBA_DISABLE_JIT=1``.

    Returns
    -------
    IntegrateResult
        ``(y, n_ok, nfev, status, message, success)``; ``status`` is a
        :class:`~ufm.results.Status` (:data:`STATUS` maps the kernels' codes).

    Notes
    -----
    The compiled kernel is specialised on the *types* of ``data`` and ``y0`` only, with ``rhs``
    as a first-class function: one compilation per data layout, reused by every ``rhs`` and
    cached on disk (module docstring). References: Dormand & Prince (1980); Hairer, Nørsett &
    Wanner, Solving ODEs I, §II.4-II.5.

    Examples
    --------
    >>> import numba, numpy as np
    >>> @numba.njit
    ... def decay(y, data, out):
    ...     out[:] = -data[0] * y
    >>> res = integrate(decay, [1.0], (2.0,), [0.0, 1.0])
    >>> bool(abs(res.y[1, 0] - np.exp(-2.0)) < 1e-9)
    True
    """
    rhs, y0a, data, t, rtol, atol, log_time, max_steps, h0v, backend = _checked(
        rhs, y0, data, t_eval, rtol, atol, log_time, max_steps, h0, backend)
    if backend == "numpy":
        Y, n_ok, nfev, status = dopri5_numpy(rhs, y0a, data, t, rtol, atol, log_time,
                                             max_steps, h0v)
    elif numba.config.DISABLE_JIT:
        Y, n_ok, nfev, status = dopri5(rhs, y0a, data, t, rtol, atol, log_time, max_steps, h0v)
    else:
        entry = _kernel_entry(rhs, y0a, data, t, log_time, max_steps, h0v)
        Y, n_ok, nfev, status = entry(rhs, y0a, data, t, rtol, atol, log_time, max_steps, h0v)

    n_ok, nfev, code = int(n_ok), int(nfev), int(status)
    status = STATUS[code]
    message = f"{status.message} {STATUS_MESSAGES[code]}"
    if code != 0:
        where = (f"after t = {t[n_ok - 1]:.6g} (row {n_ok - 1})" if n_ok
                 else f"before t_eval[0] = {t[0]:.6g}")
        message = (f"{message} Reached {n_ok} of {t.size} output times; stopped {where}; "
                   f"rows {n_ok}.. are NaN.")
    return IntegrateResult(Y, n_ok, nfev, status, message, status.success)


# ---------------------------------------------------------------------------------------------
# The same integration in pieces of bounded work (Ctrl-C and progress between them).

def _entry(kernel, sig):
    cres = kernel.overloads.get(sig)
    if cres is None:
        kernel.compile(sig)
        cres = kernel.overloads[sig]
    return cres.entry_point


_STEPPER_ENTRIES: dict = {}


def _stepper_entries(rhs, y, data, Y):
    """Entry points of ``_dopri5_begin`` and ``_dopri5_advance`` with ``rhs`` as a first-class function
    type (cached on disk like :func:`dopri5`'s; see the module docstring)."""
    key = (rhs, _layout(y), _layout(data))
    entries = _STEPPER_ENTRIES.get(key)
    if entries is None:
        arr = numba.typeof(y)
        dty = numba.typeof(data)
        rhs_args = (arr, dty, arr)
        rhs.compile(rhs_args)
        fty = _nbtypes.FunctionType(rhs.overloads[rhs_args].signature.return_type(*rhs_args))
        f8, b1, i8 = _nbtypes.float64, _nbtypes.boolean, _nbtypes.int64
        begin = _entry(_dopri5_begin, (fty, arr, dty, f8, f8, f8, b1, f8, arr))
        advance = _entry(_dopri5_advance, (fty, arr, arr, dty, arr, numba.typeof(Y), i8, f8, f8, f8, f8, b1, i8,
                                           b1, b1))
        entries = _STEPPER_ENTRIES[key] = (begin, advance)
    return entries


class Stepper:
    """:func:`integrate` in pieces: the same steps, in calls of at most ``budget`` step attempts.

    A caller that must react while a long integration runs (Ctrl-C, a progress bar, a
    memory-bounded recorder) drives the integration from Python: each :meth:`advance`
    call returns after reaching the requested output times or after ``budget`` step
    attempts, and the next call continues exactly where it stopped (same state, step
    size and controller flags), so the states equal those of one :func:`integrate` call
    over the same output times, to the last bit.

    Parameters
    ----------
    rhs, y0, data, rtol, atol, log_time, max_steps, h0, backend :
        As in :func:`integrate` (``max_steps`` counts the step attempts of all calls).
    t_end : float
        The last output time (``> 0``); the automatic first step depends on it, as in
        :func:`integrate` with ``t_eval[-1] = t_end``.

    Attributes
    ----------
    y : ndarray
        The current state, at time :attr:`t`.
    status : int or None
        ``None`` while the integration can go on; else the code of :data:`STATUS_MESSAGES`
        (1 ``max_steps`` used, 2 non-finite, 3 step underflow; 0 is never set here).
    nfev, nsteps : int
        Right-hand-side evaluations and step attempts so far.
    """

    def __init__(self, rhs, y0, data: tuple, t_end: float, rtol: float = 1e-9, atol: float = 1e-12,
                 log_time: bool = False, max_steps: int = 10**7, *, h0: float | None = None,
                 backend: str = "auto"):
        t_end = _positive("t_end", t_end)
        (rhs, y, data, _, self.rtol, self.atol, self.log_time, self.max_steps, self._h0,
         backend) = _checked(rhs, y0, data, [0.0, t_end], rtol, atol, log_time, max_steps, h0, backend)
        self.rhs, self.data, self.y = rhs, data, y
        self.k1 = np.empty_like(y)
        self._x_end = math.log1p(t_end) if self.log_time else t_end
        self._compiled = backend == "numba" and not numba.config.DISABLE_JIT
        self.x, self.h, self.nfev, self.nsteps = 0.0, None, 0, 0
        self.rejected = self.nonfinite = False
        self.status = None

    @property
    def t(self) -> float:
        """The time of the current state."""
        return math.expm1(self.x) if self.log_time else self.x

    def _kernels(self, Y):
        if self._compiled:
            return _stepper_entries(self.rhs, self.y, self.data, Y)
        jit = not numba.config.DISABLE_JIT
        return ((_dopri5_begin.py_func if jit else _dopri5_begin),
                (_dopri5_advance.py_func if jit else _dopri5_advance))

    def advance(self, t_eval, Y, j: int, budget: int) -> int:
        """Integrate toward the output times ``t_eval``, writing the states reached into ``Y``.

        Parameters
        ----------
        t_eval : float64 array (m,)
            Increasing output times, all later than :attr:`t` from row ``j`` on.
        Y : float64 array (m, len(y0)), C-contiguous
            Receives the state at each time reached (rows ``j`` and later).
        j : int
            The first row of ``t_eval`` not reached yet.
        budget : int
            At most this many step attempts in this call (``>= 1``).

        Returns
        -------
        int
            The first row not reached after this call (``m`` when all are); :attr:`status`
            says when the integration cannot go on.
        """
        if self.status is not None:
            return j
        begin, advance = self._kernels(Y)
        if self.h is None:
            h, nfev, status = begin(self.rhs, self.y, self.data, self._x_end, self.rtol, self.atol, self.log_time,
                                    self._h0, self.k1)
            self.nfev += int(nfev)
            if status != 0:
                self.status = int(status)
                return j
            self.h = float(h)
        left = self.max_steps - self.nsteps
        if left <= 0:
            self.status = 1
            return j
        x_eval = np.array([math.log1p(v) for v in t_eval] if self.log_time else t_eval, dtype=np.float64)
        x, h, j, nfev, nsteps, status, rej, nonf = advance(
            self.rhs, self.y, self.k1, self.data, x_eval, Y, j, self.x, self.h, self.rtol, self.atol, self.log_time,
            min(int(budget), left), self.rejected, self.nonfinite)
        self.x, self.h, self.rejected, self.nonfinite = float(x), float(h), bool(rej), bool(nonf)
        self.nfev += int(nfev)
        self.nsteps += int(nsteps)
        if status in (2, 3) or (status == 1 and self.nsteps >= self.max_steps):
            self.status = int(status)
        return int(j)
