"""Theory curves: predicted learning dynamics on the time grid of :func:`ufm.simulate`.

Every function returns a frozen :class:`ufm.results.TheoryCurve` evaluated at
``times``: pass ``trajectory.times`` to overlay a simulation. Time is the
gradient-flow time of :func:`ufm.simulate` (``t = steps * lr``) for the losses
of :mod:`ufm.problems`: means over the N examples (mean CE,
``1/(2N)||Z - Y||^2``) and halved weight decays (THEORY §0.1).

* :func:`mode_curves`, :func:`semantic_curve`: the input-coupled UFM
  (THEORY §6.3, §8.2) with distinct one-hot labels: its modes, the linear CE
  phase, the mode-restricted CE flow that models saturation (Appendix C.1);
  the start each curve assumes (aligned, one run's ``W0, A0``, or the wide
  limit of a Gaussian start, with the spread over finite-width starts;
  Appendix C.2); the peak, rise times ``t50``/``t90`` and transition
  (Appendix C.3).
* :func:`transient_times`: the same peak, rise and transition read off a
  recorded curve, to compare like with like.
* :func:`symmetric_flow`: the symmetric-subspace flows of the standard UFM
  (THEORY §6.4, §6.5; Appendix C.4).
* :func:`block_kernel`, :func:`kernel_flow`: the block-kernel flow M3 (THEORY §8.3).

Appendix C of the theory page documents each model, what it neglects and how
far it was checked against :func:`ufm.simulate`.

References
----------
THEORY.md §5.3, §6.1-6.5, §7.4, §8.2, Appendix C; Saxe, McClelland, Ganguli,
arXiv 1312.6120 and 1810.10531; Lyu & Li, arXiv 1906.05890; Zhao,
Papadimitriou, Thrampoulidis, "Structure Before Collapse", arXiv 2606.26749.
"""

from __future__ import annotations

import functools
import inspect
import math

import numpy as np

from . import _memory
from ._simulate import initial_states
from ._checks import check_bool, check_nonneg
from .loss_registry import get_loss
from .problems import InputCoupledUFM, UFMProblem
from ._solve import solve
from .metrics import centering_matrix, double_centre, etf_distance, semantic_gap
from .results import NotConverged, TheoryCurve

__all__ = ["mode_curves", "semantic_curve", "transient_times", "symmetric_flow", "input_modes", "block_kernel",
           "kernel_flow", "DEFAULT_INIT_SCALE", "RISE_FRACTIONS", "SPREAD_QUANTILES"]

#: The default ``init_scale`` of :func:`ufm.simulate`, used when no initialization is named.
DEFAULT_INIT_SCALE = 1e-3

_CITATION_MODES = ("THEORY §5.3, §6.3, §8.2 (mode dynamics of the input-coupled UFM); Saxe, McClelland, Ganguli "
                   "arXiv 1312.6120; ufm.dynamics")
_CITATION_KERNEL = ("THEORY §8.3 (M3, function-space kernel flow dZ/dt = -grad g(Z) Theta; Seleznova et al. "
                    "arXiv 2305.16427); ufm.dynamics.kernel_flow")
_CITATION_SYMMETRIC = ("THEORY §6.4 (Mixon, Parshall, Pi arXiv 2011.11619), §6.5 (symmetric CE flow); "
                       "ufm.dynamics.symmetric_flow")


def _failure_as_result(kind: str):
    """A curve whose ODE or linear program fails is a TheoryCurve with ``status`` ``solver_failed``
    (no records, the solver's message), as every entry point reports a failure; bad input still raises."""
    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def curve(*args, **kwargs):
            arguments = signature.bind(*args, **kwargs).arguments
            throw = check_bool("throw", arguments.get("throw", False))
            try:
                result = fn(*args, **kwargs)
            except NotConverged as err:
                times = np.atleast_1d(np.asarray(arguments["times"], dtype=float))
                result = TheoryCurve(times=times, records={}, kind=kind, status="solver_failed", message=str(err),
                                     meta={"function": fn.__name__})
            return result.raise_on_failure() if throw else result
        return curve
    return wrap


# =====================================================================================
# argument checks
# =====================================================================================
def _check_times(times) -> np.ndarray:
    t = np.array(times, dtype=np.float64).ravel() if np.ndim(times) else np.array([float(times)])
    if t.size == 0:
        raise ValueError("times is empty; pass the time grid, e.g. trajectory.times.")
    if not np.all(np.isfinite(t)) or t.min() < 0:
        raise ValueError("times must be finite and >= 0 (gradient-flow time t = steps * lr).")
    if np.any(np.diff(t) < 0):
        raise ValueError("times must be non-decreasing (e.g. trajectory.times).")
    return t


def _check_semantic_problem(problem) -> InputCoupledUFM:
    if not isinstance(problem, InputCoupledUFM):          # input validation: the mode theory is M2's
        raise ValueError(f"problem must be an InputCoupledUFM (THEORY §8.2), got {type(problem).__name__}; "
                         "build one with InputCoupledUFM.from_setting(setting, sigma). For the standard UFM "
                         "use symmetric_flow.")
    if problem.soft or problem.K != problem.N or not np.array_equal(problem.y, np.arange(problem.N)):
        raise ValueError("the mode theory needs distinct one-hot labels (item i has label i, Y = I_N), as built by "
                         "InputCoupledUFM.from_setting; this problem's labels differ.")
    if problem.lam_H > 0:
        raise ValueError(f"the theory curves of ufm.dynamics are derived for lam_H = 0 (M2, THEORY §8.2), got "
                         f"lam_H={problem.lam_H:g}; simulate the feature penalty with ufm.simulate (its early "
                         f"rates are in THEORY §8.2b and ufm.symbolic.feature_penalty_mode) or set lam_H=0.")
    _require_dynamics_theory(problem.loss)
    return problem


def _require_dynamics_theory(loss):
    """The curves here are derived for the softmax cross-entropy and the squared error (the loss says so)."""
    if "dynamics" not in loss.closed_forms:
        raise ValueError(f"the theory curves of ufm.dynamics are derived for loss='ce' and loss='mse', not "
                         f"{loss}; simulate it with ufm.simulate instead.")


# =====================================================================================
# modes of the input encodings
# =====================================================================================
def input_modes(problem, *, tol: float = 1e-10):
    """The modes of an input-coupled UFM with distinct labels (THEORY §6.3, §5.3).

    MSE: the thin SVD ``Phi = P D Q^T``. CE: the SVD of the centred inputs
    ``Phi P_N`` (``1_N``, a common logit offset, is not learned). Singular
    values below ``tol * max`` are dropped (those directions never grow).
    Inside an eigenspace of a repeated singular value the basis is fixed by
    the eigenvectors of ``Q_b^T (K_x o K_x) Q_b`` (Hadamard square of the
    input kernel): the linear phase is isotropic there, but CE saturation is
    not, and this choice follows the item permutations that preserve ``K_x``
    (for a factorial setting it separates e.g. pairwise from triple
    interactions). Each ``q_a`` has a positive largest-magnitude entry.

    Parameters
    ----------
    problem : InputCoupledUFM
        Distinct one-hot labels.
    tol : float
        Relative cutoff of the singular values.

    Returns
    -------
    P : ndarray (p, r)
        Input-space singular vectors (``p_a``).
    singular_values : ndarray (r,)
        The singular values ``d_a`` (not the feature dimension ``d``), decreasing: the mode
        of ``d_a`` grows at rate ``2 d_a/N``.
    Q : ndarray (N, r)
        Item-space singular vectors (``q_a``): the item Gram is ``Q diag(.) Q^T``.
    """
    problem = _check_semantic_problem(problem)
    Phi = problem.Phi
    X = Phi - Phi.mean(axis=1, keepdims=True) if problem.loss.shift_invariant else Phi
    P, d, Qt = np.linalg.svd(X, full_matrices=False)
    keep = d > tol * d[0] if d.size and d[0] > 0 else np.zeros(d.shape, bool)
    if not keep.any():
        raise ValueError("Phi has no nonzero singular value (after centring for CE): nothing can be learned.")
    P, d, Q = P[:, keep], d[keep], Qt[keep].T
    # Degenerate singular values leave the basis of their eigenspace free. The linear phase does not
    # care, but saturation (and the end state) does: split each degenerate block by the Hadamard
    # square K_x o K_x, which is invariant under every item permutation that preserves K_x, so the
    # modes follow the symmetry of the setting (e.g. pairwise vs triple interactions of a factorial).
    Kx = Phi.T @ Phi
    H2 = Kx * Kx
    i = 0
    while i < d.size:
        j = i
        while j + 1 < d.size and d[i] - d[j + 1] <= 1e-9 * d[0]:
            j += 1
        if j > i:
            Qb = Q[:, i:j + 1]
            _, V = np.linalg.eigh(Qb.T @ H2 @ Qb)
            V = V[:, ::-1]
            Q[:, i:j + 1] = Qb @ V
            P[:, i:j + 1] = P[:, i:j + 1] @ V
        i = j + 1
    # a fixed sign convention (each q_a has a positive largest-magnitude entry), for reproducible constants
    sgn = np.sign(Q[np.argmax(np.abs(Q), axis=0), np.arange(Q.shape[1])])
    sgn[sgn == 0] = 1.0
    return P * sgn, d, Q * sgn


def _initial_modes(problem, P, d, Q, z0, init_scale, W0, A0):
    """The initialization seen by each mode: ``(init, ww, vv, wv)`` per mode.

    ``w = W0^T q_a`` and ``v = A0 p_a`` are vectors in R^d; ``ww = |w|^2``,
    ``vv = |v|^2``, ``wv = w.v``. An aligned balanced start ``z0`` is
    ``ww = vv = wv = z0/d_a``; ``init_scale`` gives the Gaussian expectations
    ``ww = vv = d init_scale^2``, ``wv = 0``.
    """
    given = [name for name, v in (("z0", z0), ("init_scale", init_scale), ("W0/A0", W0 if W0 is not None else A0))
             if v is not None]
    if len(given) > 1:
        raise ValueError(f"give one of z0 (aligned init), W0 and A0 (one run's init) or init_scale (random init "
                         f"in expectation); got {given}.")
    r = d.size
    if z0 is not None:
        z = np.broadcast_to(np.asarray(z0, dtype=np.float64), (r,)).copy() if np.ndim(z0) == 0 \
            else np.asarray(z0, dtype=np.float64)
        if z.shape != (r,):
            raise ValueError(f"z0 must be a scalar or have one value per mode ({r} modes), got shape {z.shape}.")
        if not np.all(np.isfinite(z)) or np.any(z <= 0):
            raise ValueError("z0 must be finite and > 0 (the initial mode outputs of an aligned init).")
        u = z / d
        return "aligned", u, u.copy(), u.copy()
    if W0 is not None or A0 is not None:
        if W0 is None or A0 is None:
            raise ValueError("give both W0 (K x d) and A0 (d x p) for a run's initialization.")
        W0 = np.asarray(W0, dtype=np.float64)
        A0 = np.asarray(A0, dtype=np.float64)
        if W0.shape != (problem.K, problem.d) or A0.shape != (problem.d, problem.p):
            raise ValueError(f"W0 must be K x d = {problem.K} x {problem.d} and A0 d x p = {problem.d} x {problem.p}, "
                             f"got {W0.shape} and {A0.shape}.")
        if not (np.all(np.isfinite(W0)) and np.all(np.isfinite(A0))):
            raise ValueError("W0 and A0 must be finite.")
        w = W0.T @ Q                                   # d x r: w_a = W^T q_a
        v = A0 @ P                                     # d x r: v_a = A p_a
        return "given", np.sum(w * w, 0), np.sum(v * v, 0), np.sum(w * v, 0)
    s0 = DEFAULT_INIT_SCALE if init_scale is None else check_nonneg("init_scale", init_scale, "the init std")
    if s0 == 0:
        raise ValueError("init_scale = 0 is a fixed point (nothing grows); pass init_scale > 0.")
    e = np.full(r, problem.d * s0**2)
    return "random", e, e.copy(), np.zeros(r)


class _LinearPhase:
    """Exact small-logit flow of each mode: d/dt (w, v) = [[-lam_W, s], [s, -lam_A]] (w, v), s = d_a/N.

    With m = -(lam_W + lam_A)/2, delta = (lam_W - lam_A)/2 and omega = sqrt(s^2 + delta^2),
    exp(M t) = e^{m t} (cosh(omega t) I + sinh(omega t)/omega [[-delta, s], [s, delta]]), which splits
    into a growing part e^{(m + omega) t} Pi_+ and a decaying part e^{(m - omega) t} Pi_-,
    Pi_+- = (I +- [[-delta, s], [s, delta]]/omega)/2. Without decay this is ufm.symbolic.random_init_mode.
    """

    def __init__(self, sv, N, lam_W, lam_A, ww, vv, wv):
        self.sv, self.ww, self.vv, self.wv = sv, ww, vv, wv        # sv: the singular values d_a of the modes
        self.s = sv / N
        self.m = -(lam_W + lam_A) / 2.0
        self.delta = (lam_W - lam_A) / 2.0
        self.omega = np.sqrt(self.s**2 + self.delta**2)
        self.rate = 2.0 * (self.m + self.omega)            # growth rate of z in the linear phase
        so, do = self.s / self.omega, self.delta / self.omega
        # growing parts w+ = ((1 - do) w0 + so v0)/2, v+ = (so w0 + (1 + do) v0)/2 and decaying v-
        self.z_grow = sv * so * ((1 - do) * ww + (1 + do) * vv + 2 * so * wv) / 4.0
        self.vplus_vminus = (so**2 * (vv - ww) - 2 * so * do * wv) / 4.0
        self.vminus_sq = (so**2 * ww + (1 - do) ** 2 * vv - 2 * so * (1 - do) * wv) / 4.0

    def z(self, t):
        """d w(t).v(t), (T, r), as three exponentials (rates 2(m + omega), 2m, 2(m - omega)).

        Written in exponentials rather than cosh/sinh so that long times give the growing
        term alone: it exceeds the float range (inf, the linear phase has no bound) without
        an inf * 0 = nan from the decaying terms.
        """
        tt = t[:, None]
        so, do = self.s / self.omega, self.delta / self.omega
        c_grow = self.z_grow / self.sv
        c_flat = do * (so * (self.ww - self.vv) + 2 * do * self.wv) / 2.0
        c_decay = so * (-(1 + do) * self.ww - (1 - do) * self.vv + 2 * so * self.wv) / 4.0
        out = np.zeros((tt.shape[0], np.broadcast(c_grow, self.omega).size))
        with np.errstate(over="ignore", under="ignore"):
            for c, rate in ((c_grow, 2 * (self.m + self.omega)), (c_flat, 2 * self.m),
                            (c_decay, 2 * (self.m - self.omega))):
                c, rate = np.broadcast_to(c, out.shape[1:]), np.broadcast_to(rate, out.shape[1:])
                nz = c != 0
                out[:, nz] += c[nz] * np.exp(rate[nz] * tt)
        return self.sv * out

    def gram_rest(self, t):
        """d^2 (|v|^2 - |v+|^2): the part of the Gram weight that does not grow (cross and decaying terms)."""
        tt = t[:, None]
        return self.sv**2 * (2 * np.exp(2 * self.m * tt) * self.vplus_vminus
                            + np.exp(2 * (self.m - self.omega) * tt) * self.vminus_sq)


# =====================================================================================
# the mode models
# =====================================================================================
class _ModeModel:
    """Mode outputs z_a(t) and the balanced/unbalanced factors of one input-coupled problem."""

    def __init__(self, problem, z0=None, init_scale=None, W0=None, A0=None, rtol=1e-9):
        self.problem = _check_semantic_problem(problem)
        self.loss = problem.loss
        self.N = problem.N
        self.P, self.sv, self.Q = input_modes(problem)
        self.r = self.sv.size
        self.lam_W, self.lam_A = float(problem.lam_W), float(problem.lam_A)
        self.init, ww, vv, wv = _initial_modes(problem, self.P, self.sv, self.Q, z0, init_scale, W0, A0)
        self.init_scale = None if self.init != "random" else float(DEFAULT_INIT_SCALE if init_scale is None
                                                                    else init_scale)
        self.linear = _LinearPhase(self.sv, self.N, self.lam_W, self.lam_A, ww, vv, wv)
        self.rate = self.linear.rate                            # growth rate of z in the linear phase
        self.z0 = np.asarray(z0, dtype=np.float64) * np.ones(self.r) if self.init == "aligned" else self.linear.z_grow
        if np.any(self.z0 <= 0):
            raise ValueError("the initialization has no component on the growing direction of some mode "
                             "(e.g. W0^T q_a + A0 p_a = 0); perturb the init.")
        self.rtol = rtol
        if self.loss.quadratic and self.lam_W == self.lam_A:
            self.kind = "closed_form"
            self.zinf = 1.0 - self.lam_W * self.N / self.sv      # carrying capacity (THEORY §6.3 with decay)
        else:
            self.kind = "ode"
            self.PhiTP = problem.Phi.T @ self.P                 # N x r: Phi^T p_a
            self.PtPhi = self.P.T @ problem.Phi                 # r x N
            self._sol = None
            self._t_end = 0.0

    # -- logits and the projected gradient --------------------------------------------
    def logits(self, u):
        """Z for mode products u = a b (N x N)."""
        if self.loss.quadratic:
            return (self.Q * (u * self.sv)) @ self.Q.T
        return (self.Q * u) @ self.PtPhi

    def drive(self, u):
        """c_a = q_a^T (1/N)(Y - softmax(Z) or Z) Phi^T p_a (the projected negative gradient)."""
        if self.loss.quadratic:
            return self.sv * (1.0 - u * self.sv) / self.N
        Z = self.logits(u)
        Z = Z - Z.max(axis=0, keepdims=True)
        S = np.exp(Z)
        S /= S.sum(axis=0, keepdims=True)
        G = -S
        G[np.diag_indices(self.N)] += 1.0
        G /= self.N
        return np.sum(self.Q * (G @ self.PhiTP), axis=0)

    # -- ODE in (log a, log b) -----------------------------------------------------------
    def _rhs(self, _t, y):
        # ratios and products in log space: a mode that dies out (end-state weight 0, e.g. the interactions at
        # small sigma with weight decay) takes log a, log b to -inf, where exp(lb)/exp(la) would be 0/0
        la, lb = y[:self.r], y[self.r:]
        c = self.drive(np.exp(la + lb))
        return np.concatenate([np.exp(lb - la) * c - self.lam_W, np.exp(la - lb) * c - self.lam_A])

    def _integrate(self, t_end):
        from scipy.integrate import solve_ivp

        if self._sol is not None and t_end <= self._t_end:
            return
        u0 = self.z0 / self.sv
        y0 = np.concatenate([0.5 * np.log(u0), 0.5 * np.log(u0)])
        t_end = max(t_end, 1.0)
        sol = solve_ivp(self._rhs, (0.0, t_end), y0, method="LSODA", dense_output=True, rtol=self.rtol,
                        atol=1e-10)
        if not sol.success:
            raise NotConverged(f"the mode ODE failed: {sol.message}")
        self._sol, self._t_end = sol.sol, t_end

    def factors(self, t):
        """(a(t), b(t)), each (T, r)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if self.kind == "closed_form":
            z = self.z_closed(t)
            u = np.sqrt(z / self.sv)
            return u, u
        self._integrate(float(t.max()))
        y = self._sol(t).T
        return np.exp(y[:, :self.r]), np.exp(y[:, self.r:])

    def z_closed(self, t):
        """Logistic z(t) with carrying capacity zinf (THEORY §6.3; decay version when lam > 0)."""
        t = np.asarray(t, dtype=np.float64)[:, None]
        z0, zinf, r = self.z0, self.zinf, 2.0 * self.sv / self.N
        out = np.empty((t.shape[0], self.r))
        for j in range(self.r):
            if abs(zinf[j]) < 1e-14:
                out[:, j] = z0[j] / (1.0 + r[j] * z0[j] * t[:, 0])
            else:
                e = np.exp(-r[j] * zinf[j] * t[:, 0])
                out[:, j] = zinf[j] / (1.0 + (zinf[j] / z0[j] - 1.0) * e)
        return out

    def z(self, t):
        a, b = self.factors(t)
        return a * b * self.sv

    def z_linear(self, t):
        """The linear (small-logit) phase: exact growth of each mode output from its initialization."""
        return self.linear.z(np.atleast_1d(np.asarray(t, dtype=np.float64)))

    def gram_weights(self, t):
        """Per-mode weights g_a(t) with centred item Gram = Q diag(g) Q^T (then centred with P_N)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        a, b = self.factors(t)
        g = b * b * self.sv**2
        if self.init != "aligned":      # the parts of the linear phase that do not grow
            g = g + self.linear.gram_rest(t)
        return np.maximum(g, 0.0)

    def gram(self, t):
        """Centred item Grams P_N H^T H P_N, shape (T, N, N)."""
        g = self.gram_weights(t)
        G = np.einsum("ia,ta,ja->tij", self.Q, g, self.Q)
        return double_centre(G)

    def map_grams(self, t, fn):
        """``[fn(G) for G in self.gram(t)]`` in chunks of at most ~32 MB of Grams."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        step = max(1, (1 << 25) // (8 * self.N * self.N))
        out = []
        for i in range(0, t.size, step):
            out.extend(fn(G) for G in self.gram(t[i:i + step]))
        return np.array(out)

    def saturation_time(self):
        """A time by which every mode has left its linear phase (used to size searches)."""
        rate = np.abs(self.rate) + 1e-3 * float(np.max(2.0 * self.sv / self.N))    # modes that decay: their scale
        return float(np.max((np.log(1.0 / np.minimum(self.z0, 0.5)) + 12.0) / rate))

    # -- end states ---------------------------------------------------------------------
    def end_weights(self):
        """Gram weights of the model's end state (t -> infinity), and a description."""
        if self.kind == "closed_form":
            zinf = np.maximum(self.zinf, 0.0)
            return zinf * self.sv, "closed form: z_a -> max(1 - lam N/d_a, 0)"
        if self.loss.quadratic:
            return self._restricted_optimum(), "restricted optimum (unequal decays)"
        if self.lam_W == 0 and self.lam_A == 0:
            return self._max_margin(), "max-margin point of the mode-aligned family (linear program)"
        return self._restricted_optimum(), "minimizer of CE + sqrt(lam_W lam_A) sum z/d over the mode family"

    def _max_margin(self):
        """min sum_a u_a s.t. Z(u)_ii - Z(u)_ji >= 1, u >= 0 (u = a b; Gram weight u d^2)."""
        from scipy.optimize import linprog

        N = self.N
        what = "the max-margin linear program (3 r N^2 floats)"
        _memory.check({what: 3 * 8 * self.r * N * N}, what, "Use a setting with fewer items.")
        # Z(u) = sum_a u_a M_a with M_a = q_a (P^T Phi)_a; the margins Z_ii - Z_ji are linear in u
        M = np.einsum("ia,aj->aij", self.Q, self.PtPhi)
        diag = M[:, np.arange(N), np.arange(N)]                       # (r, N): Z_ii per mode
        margins = diag[:, None, :] - M                                 # (r, j, i): Z_ii - Z_ji
        off = ~np.eye(N, dtype=bool)
        A_ub = -margins[:, off].T                                      # one row per (j, i), j != i
        res = linprog(np.ones(self.r), A_ub=A_ub, b_ub=-np.ones(A_ub.shape[0]), bounds=[(0, None)] * self.r,
                      method="highs")
        if res.status != 0:
            raise NotConverged(f"the max-margin linear program failed: {res.message}")
        return res.x * self.sv**2

    def _restricted_optimum(self):
        """min_u loss(Z(u)) + mu sum u over u >= 0 (mu = sqrt(lam_W lam_A)); Gram weight u d^2 at balance."""
        from scipy.optimize import minimize

        mu = math.sqrt(self.lam_W * self.lam_A)
        Y = np.eye(self.N)

        def fun(u):
            Z = self.logits(u)
            if self.loss.quadratic:
                R = Z - Y
                f = 0.5 * np.sum(R * R) / self.N
            else:
                m = Z.max(axis=0)
                lse = m + np.log(np.exp(Z - m).sum(axis=0))
                f = np.mean(lse - np.diag(Z))
            grad = -self.drive(u) + mu      # d/du_a of the loss is -c_a
            return f + mu * u.sum(), grad

        u0 = np.maximum(self.factors([self.saturation_time()])[0][0] ** 2, 1e-8)
        res = minimize(fun, u0, jac=True, method="L-BFGS-B", bounds=[(0, None)] * self.r,
                       options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 20000})
        return res.x * self.sv**2


class _CoreModel(_ModeModel):
    """One run's start with the overlaps of its growing vectors kept: the random-start correction.

    After the exact linear phase (:class:`_LinearPhase`) the growing part of
    mode ``a`` is ``(w, v) = (e_w g_a, e_v g_a)`` with one vector ``g_a`` in
    R^d and ``(e_w, e_v)`` the growing eigenvector of the mode's 2 x 2 system.
    The diagonal model keeps only ``|g_a|^2``; here ``G = [g_a] = R T``
    (``R`` d x k orthonormal, ``k = min(d, r)``) is kept whole, so
    ``W = Q Wc R^T``, ``A = R Ac P^T`` with ``Wc = diag(e_w) T^T`` (r x k),
    ``Ac = T diag(e_v)`` (k x r), and the full flow restricted to this family is

        dWc/dt = Gc Ac^T - lam_W Wc,   dAc/dt = Wc^T Gc - lam_A Ac,   Gc = Q^T (-grad_Z g) Phi^T P,

    with logits ``Z = Q Wc Ac P^T Phi``; for CE ``P`` gets one more column,
    the mean input ``Phi 1_N`` (orthogonalized), whose coefficient in ``A`` is a
    class bias driven by the row sums of ``Y - softmax(Z)`` (zero on the
    symmetric states of the diagonal model, not on a random core). The family
    is invariant when the modes span the whole centred item space
    (``r = N - 1`` for CE, ``r = N`` for MSE) and ``1_N`` is an eigenvector of
    ``K_x`` (factorial and hierarchy settings); otherwise the parts of the
    gradient that leave it are dropped, as in the diagonal model. The decaying parts of the linear phase are kept
    in the Gram with their linear-phase law. Integrated by an explicit
    Runge-Kutta method (the flow is not stiff), segment by segment as far as
    a search asks.
    """

    def __init__(self, problem, W0, A0, rtol=1e-9):
        super().__init__(problem, W0=W0, A0=A0, rtol=rtol)
        self.kind = "core"
        L = self.linear
        ew = L.s / np.sqrt(2.0 * L.omega * (L.omega + L.delta))          # growing eigenvector (e_w, e_v) of
        ev = np.sqrt((L.omega + L.delta) / (2.0 * L.omega))                # [[-delta, s], [s, delta]] / omega
        w = np.asarray(W0, dtype=np.float64).T @ self.Q                    # d x r: w_a = W0^T q_a
        v = np.asarray(A0, dtype=np.float64) @ self.P                      # d x r: v_a = A0 p_a
        G = ew * w + ev * v
        R, T = np.linalg.qr(G)                                             # R: d x k, T: k x r
        self.k = T.shape[0]
        # CE: the mean input Phi 1 lies outside the centred modes; A's component along it is a class bias
        # (logits W A Phi 1 1^T/N), driven once the softmax is not symmetric (row sums of Y - softmax(Z))
        P = self.P
        if self.loss.shift_invariant:
            u = problem.Phi.sum(axis=1)
            u = u - P @ (P.T @ u)
            if np.linalg.norm(u) > 1e-10 * max(1.0, np.linalg.norm(problem.Phi)):
                P = np.column_stack([P, u / np.linalg.norm(u)])
        self.rt = P.shape[1]
        Ac0 = np.column_stack([T * ev, R.T @ (np.asarray(A0, dtype=np.float64) @ P[:, self.r:])])
        self.y0 = np.concatenate([(T.T * ew[:, None]).ravel(), Ac0.ravel()])
        Vm = v - ev * G                                                    # decaying part of v_a
        self.RtVm, self.VmVm = R.T @ Vm, Vm.T @ Vm
        self.rate_minus = L.m - L.omega                                    # v_- decays like e^{(m - omega) t}
        self.PhiTP = problem.Phi.T @ P
        self._segments = []                                                # (t_start, t_end, dense solution)

    def _split(self, y):
        r, k = self.r, self.k
        return y[..., :r * k].reshape(y.shape[:-1] + (r, k)), y[..., r * k:].reshape(y.shape[:-1] + (k, self.rt))

    def _core_rhs(self, _t, y):
        Wc, Ac = self._split(y)
        C = Wc @ Ac
        Z = (self.Q @ C) @ self.PhiTP.T
        if self.loss.quadratic:
            D = np.eye(self.N) - Z
        else:
            Z = Z - Z.max(axis=0, keepdims=True)
            S = np.exp(Z)
            S /= S.sum(axis=0, keepdims=True)
            D = -S
            D[np.diag_indices(self.N)] += 1.0
        Gc = self.Q.T @ (D / self.N) @ self.PhiTP
        return np.concatenate([(Gc @ Ac.T - self.lam_W * Wc).ravel(), (Wc.T @ Gc - self.lam_A * Ac).ravel()])

    def _integrate(self, t_end):
        from scipy.integrate import solve_ivp

        t0 = self._segments[-1][1] if self._segments else 0.0
        if self._segments and t_end <= t0:
            return
        y0 = self._segments[-1][2](t0) if self._segments else self.y0
        t1 = max(float(t_end), 2.0 * t0, self.saturation_time())
        sol = solve_ivp(self._core_rhs, (t0, t1), y0, method="RK45", dense_output=True, rtol=self.rtol,
                        atol=1e-12 * max(1.0, float(np.abs(y0).max())))
        if not sol.success:
            raise NotConverged(f"the core ODE of the run's start failed: {sol.message}")
        self._segments.append((t0, t1, sol.sol))

    def state(self, t):
        """(Wc, Ac) at times t: (T, r, k) and (T, k, rt) (``rt = r``, or ``r + 1`` with the CE class bias)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        self._integrate(float(t.max()))
        ends = np.array([seg[1] for seg in self._segments])
        which = np.minimum(np.searchsorted(ends, t), len(self._segments) - 1)
        y = np.empty((t.size, self.y0.size))
        for i in np.unique(which):
            sel = which == i
            y[sel] = self._segments[i][2](t[sel]).T
        return self._split(y)

    def z(self, t):
        Wc, Ac = self.state(t)
        return np.einsum("tak,tka->ta", Wc, Ac[..., :self.r]) * self.sv

    def factors(self, t):
        """Diagonal stand-ins ``a = b = sqrt(|C_aa|)`` (only a starting point for the end-state search)."""
        u = np.sqrt(np.abs(self.z(t)) / self.sv)
        return u, u

    def gram(self, t):
        """Centred item Grams ``Q diag(d) (A P)^T (A P) diag(d) Q^T`` (then centred), shape (T, N, N)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        Ac = self.state(t)[1][..., :self.r]
        e = np.exp(self.rate_minus[None, :] * t[:, None])                  # (T, r)
        X = np.einsum("tka,tkb->tab", Ac, Ac)
        cross = np.einsum("tka,kb->tab", Ac, self.RtVm) * e[:, None, :]
        X = X + cross + np.swapaxes(cross, 1, 2) + self.VmVm * e[:, :, None] * e[:, None, :]
        Qd = self.Q * self.sv
        return double_centre(np.einsum("ia,tab,jb->tij", Qd, X, Qd, optimize=True))

    def end_weights(self):
        """The end state does not depend on the start (a unique optimum for the factorial/hierarchy settings)."""
        return _ModeModel(self.problem, z0=self.z0, rtol=self.rtol).end_weights()


def _make_model(problem, z0=None, init_scale=None, W0=None, A0=None, rtol=1e-9):
    """The diagonal mode model, or for one run's start (``W0``, ``A0``) the core model with its overlaps."""
    if W0 is not None and A0 is not None and z0 is None and init_scale is None:
        return _CoreModel(problem, W0, A0, rtol)
    return _ModeModel(problem, z0, init_scale, W0, A0, rtol)


def _unit(G):
    return G / np.linalg.norm(G, axis=(-2, -1), keepdims=True)


def _model_meta(model, problem):
    start, label, description = _start_of(model)
    return {"problem": problem.as_dict(), "loss": str(model.loss), "init": model.init, "solution": model.kind,
            "n_modes": int(model.r), "time": "gradient-flow time t = steps * lr of ufm.simulate (mean losses)",
            "mode_basis": "SVD of Phi P_N (centred inputs)" if model.loss.shift_invariant else "SVD of Phi",
            "start": start, "start_label": label, "start_description": description}


# =====================================================================================
# public: mode curves
# =====================================================================================
@_failure_as_result("modes")
def mode_curves(problem, times, *, z0=None, init_scale=None, W0=None, A0=None, rtol: float = 1e-9,
                throw: bool = False) -> TheoryCurve:
    """Predicted mode outputs of the input-coupled UFM (THEORY §6.3, §5.3), on ``times``.

    Parameters
    ----------
    problem : InputCoupledUFM
        Distinct one-hot labels (``Y = I_N``), loss ``"mse"`` or ``"ce"``,
        any weight decays (halved).
    times : array
        Gradient-flow times (``trajectory.times``).
    z0 : float or array, optional
        Initial mode outputs of an aligned, balanced initialization.
    init_scale : float, optional
        Standard deviation of a Gaussian initialization (as in
        :func:`ufm.simulate`) in the wide limit: ``z0`` is its expectation
        ``d_a * d * init_scale**2 / 2`` and the modes start aligned (the
        isotropic start of scale ``init_scale sqrt(d)``). Default ``1e-3`` when
        nothing is given.
    W0, A0 : array, optional
        One run's initialization: exact linear phase (``z0`` is its growing
        component ``d_a |W0^T q_a + A0 p_a|^2 / 4``), then the core model that
        keeps the overlaps between the modes' growing vectors (module
        docstring); ``"z"`` is then the diagonal ``(Q^T Z Q)_aa`` (MSE) or
        ``(Wc Ac)_aa d_a`` (CE).
    rtol : float
        Tolerance of the mode ODE (CE, or MSE with unequal decays).
    throw : bool
        Raise :class:`ufm.results.NotConverged` (with the curve in ``err.result``) instead
        of returning a curve whose ODE or linear program failed.

    Returns
    -------
    TheoryCurve
        ``kind="modes"``; records ``"z"`` (T, r): the mode outputs
        ``z_a = q_a^T Z q_a`` (MSE; ``Q^T Z Q = diag(z)`` on the aligned
        family) or the logit coefficients of the centred modes (CE);
        ``"z_linear"`` (T, r): the linear (small-logit) phase, exact until the
        logits reach O(1). Constants ``"singular_values"`` (the ``d_a``), ``"Q"`` (N x r
        item-space modes), ``"P"`` (p x r), ``"rate"`` (``2 d/N``), ``"z0"``.
        When the ODE (or linear program) behind the curve fails, the curve has
        ``status`` ``solver_failed``, ``success=False``, no records and the
        solver's message.

    Notes
    -----
    See the module docstring for the models: the closed-form logistic law
    (MSE, THEORY §6.3), the linearized CE phase and the mode-restricted CE flow,
    and how ``z0`` follows from the initialization.
    """
    t = _check_times(times)
    model = _make_model(problem, z0, init_scale, W0, A0, rtol)
    records = {"z": model.z(t), "z_linear": model.z_linear(t)}
    constants = {"singular_values": model.sv, "Q": model.Q, "P": model.P, "rate": model.rate, "z0": model.z0}
    return TheoryCurve(times=t, records=records, kind="modes", constants=constants,
                       meta=_model_meta(model, problem), citation=_CITATION_MODES)


# =====================================================================================
# public: semantic curve, peak and transition
# =====================================================================================
def _gap_fn(attributes):
    return lambda G: semantic_gap(G, attributes, center=True)


#: Fractions of the rise (peak - start) at which the rise times are taken: ``t50`` and ``t90``.
RISE_FRACTIONS = (0.5, 0.9)
#: Quantiles reported for the spread over sampled random starts (``meta["spread"]``).
SPREAD_QUANTILES = (0.1, 0.5, 0.9)


def _start_of(model):
    """``(id, legend label, description)`` of the start a curve assumes."""
    s0 = model.init_scale
    if model.init == "aligned":
        return ("aligned", "aligned start z0",
                "aligned, balanced start W = Q diag(a) R^T, A = R diag(a) P^T with a^2 d = z0 (no overlaps between "
                "modes)")
    if model.init == "given":
        return ("run", "this run's start (W0, A0)",
                "the given start W0, A0: exact linear phase, then the flow of its growing part with the overlaps "
                "between modes kept (core model)")
    return ("gaussian_wide_limit", f"Gaussian start {s0:g}, wide limit (isotropic)",
            f"Gaussian start of std {s0:g} in the wide limit d -> inf: the isotropic start W0 W0^T = d s^2 I_K, "
            f"A0^T A0 = d s^2 I_p, W0 A0 = 0 (s = {s0:g}; ufm.bridge.fitting.isotropic_init(problem, s sqrt(d)) "
            "follows it exactly). A run of finite width d differs: see meta['spread'] (spread=n).")


def _level_time(fn, lo, hi, level):
    """The root of fn(t) = level in [lo, hi] (Brent, in log t when lo > 0)."""
    from scipy.optimize import brentq

    if lo > 0:
        return float(math.exp(brentq(lambda s: fn(math.exp(s)) - level, math.log(lo), math.log(hi), xtol=1e-10)))
    return float(brentq(lambda s: fn(s) - level, lo, hi, xtol=1e-12 * hi))


def _transient_search(model, gap, E, t_extra, horizon, far):
    """Peak, rise times and transition of one model's gap curve (see :func:`semantic_curve`, Notes)."""
    t_lo = min(1e-3 / float(model.rate.max()), horizon * 1e-6)
    out = _peak_search(model, gap, t_extra, horizon, t_lo)
    out["transition_time"] = None
    if E is None:
        return out
    out["transition_time"], out["transition"] = _transition_search(model, E, out["peak_gram"], out["peak_time"],
                                                                    t_lo, far)
    return out


def _peak_search(model, gap, t_extra, horizon, t_lo) -> dict:
    """The gap's maximum (on a log grid up to ``horizon``, refined by a bounded scalar search in log t), its
    value at 0 and the rise times (first crossings of ``gap(0) + f (peak - gap(0))``, refined by Brent)."""
    from scipy.optimize import minimize_scalar

    grid = np.unique(np.concatenate([[0.0], np.geomspace(t_lo, horizon, 600), t_extra[(t_extra > 0)
                                                                                      & (t_extra <= horizon)]]))

    def gap_at(tt):
        return float(gap(model.gram([tt])[0]))

    gg = model.map_grams(grid, gap)
    j = int(np.argmax(gg))
    peak_t, peak_v = float(grid[j]), float(gg[j])
    if 0 < j < grid.size - 1:
        lo, hi = math.log(max(grid[j - 1], t_lo)), math.log(grid[j + 1])
        res = minimize_scalar(lambda s: -gap_at(math.exp(s)), bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-7})
        if -res.fun >= peak_v:
            peak_t, peak_v = float(math.exp(res.x)), float(-res.fun)
    out = {"gap_at_0": float(gg[0]), "peak_time": peak_t, "peak_value": peak_v,
           "peak": "interior maximum" if 0 < j < grid.size - 1 else
           ("at t = 0: the gap never rises above its initial value" if j == 0 else
            "at the horizon: the gap is still rising; raise horizon")}
    for f in RISE_FRACTIONS:
        key = f"t{round(100 * f)}"
        out[key] = math.nan
        if j > 0 and peak_v > gg[0]:
            level = gg[0] + f * (peak_v - gg[0])
            hits = np.flatnonzero(gg >= level)          # non-empty below the refined peak unless f is ~1
            if hits.size:
                k = int(hits[0])
                out[key] = float(grid[k]) if k == 0 else _level_time(gap_at, float(grid[k - 1]), float(grid[k]),
                                                                    level)
    out["peak_gram"] = _unit(model.gram([peak_t])[0])
    return out


def _transition_search(model, E, peak_gram, peak_t, t_lo, far) -> tuple:
    """``(time, description)`` of the first time after the peak, up to ``far``, when the centred unit Gram is
    closer to the end state ``E`` than to the peak's (a sign change of ``||G^ - E|| - ||G^ - G^_peak||``,
    refined by Brent); the time is ``None`` when it is not reached."""
    def D(tt):
        def one(G):
            Gh = _unit(G)
            return np.linalg.norm(Gh - E) - np.linalg.norm(Gh - peak_gram)
        return model.map_grams(tt, one)

    after = np.geomspace(max(peak_t, t_lo), far, 2000) if far > peak_t else np.array([])
    last = None
    for chunk in np.array_split(after, 20) if after.size else []:   # in chunks: stop integrating once found
        neg = np.flatnonzero(D(chunk) < 0)
        if neg.size:
            k = int(neg[0])
            lo = chunk[k - 1] if k > 0 else last
            time = float(chunk[k]) if lo is None else _level_time(lambda tt: float(D([tt])[0]), float(lo),
                                                                  float(chunk[k]), 0.0)
            return time, "first time after the peak when the Gram is closer to the end state"
        last = chunk[-1]
    return None, f"not reached by t = {far:g}: the Gram stays closer to its peak than to the end state"


def transient_times(times, gap, grams=None, end_gram=None) -> dict:
    """Peak, rise times (t50, t90) and transition time of a recorded gap curve, as :func:`semantic_curve` defines them.

    The helper to compare a simulation with a theory curve like with like
    (e.g. ``transient_times(tr.times, tr.semantic_gap, tr.gram_H, curve.end_gram)``).

    Definitions (the same as :func:`semantic_curve`, which refines them on its
    own dense grid; here they are read off the samples):

    * ``peak_time``, ``peak_value``: the largest sample of ``gap``, its time
      refined by a parabola in ``log t`` through the three samples around it.
    * ``t50``, ``t90`` (rise times, :data:`RISE_FRACTIONS`): the first time at
      which the gap reaches ``gap[0] + f (peak_value - gap[0])``, ``f = 0.5,
      0.9``, interpolated linearly in ``log t`` between the bracketing samples.
      They are well defined when the gap rises to a plateau, where the peak
      time is not (THEORY §8.2: at small sigma the gap stays near its maximum
      for decades).
    * ``transition_time`` (needs ``grams`` and ``end_gram``): the first time
      after the peak sample at which the centred, unit-Frobenius-norm Gram is
      closer to the end state than to the Gram at the peak sample
      (``||G^ - E^|| < ||G^ - G^_peak||``, centring with ``P_N``, THEORY §7.4),
      interpolated linearly in ``log t``.

    Parameters
    ----------
    times : (T,) array
        Non-decreasing times, ``times[0]`` the start (e.g. ``trajectory.times``).
    gap : (T,) or (S, T) array
        The semantic gap (one row per seed).
    grams : (T, N, N) or (S, T, N, N) array, optional
        The Grams at the same times (not necessarily centred).
    end_gram : (N, N) array, optional
        The end state (e.g. ``curve.end_gram``).

    Returns
    -------
    dict
        ``"peak_time"``, ``"peak_value"``, ``"t50"``, ``"t90"``,
        ``"transition_time"``: floats, or ``(S,)`` arrays for an ``(S, T)``
        gap; NaN where undefined (no rise; transition not reached within
        ``times`` or not asked for).
    """
    t = _check_times(times)
    g = np.asarray(gap, dtype=np.float64)
    if g.shape[-1] != t.size or g.ndim not in (1, 2):
        raise ValueError(f"gap must have shape (T,) or (seeds, T) with T = len(times) = {t.size}, got {g.shape}.")
    if (grams is None) != (end_gram is None):
        raise ValueError("give both grams and end_gram for the transition time, or neither.")
    if grams is not None:
        grams = np.asarray(grams, dtype=np.float64)
        if grams.shape[:-2] != g.shape or grams.shape[-1] != grams.shape[-2]:
            raise ValueError(f"grams must have shape gap.shape + (N, N) = {g.shape} + (N, N), got {grams.shape}.")
        E = _unit(double_centre(np.asarray(end_gram, dtype=np.float64)))
        if E.shape != grams.shape[-2:]:
            raise ValueError(f"end_gram must be N x N = {grams.shape[-2:]}, got {E.shape}.")
    if g.ndim == 2:
        rows = [transient_times(t, g[i], None if grams is None else grams[i], end_gram) for i in range(g.shape[0])]
        return {key: np.array([r[key] for r in rows]) for key in rows[0]}
    if not np.all(np.isfinite(g)):
        raise ValueError("gap contains NaN or inf.")
    ls = np.log(np.where(t > 0, t, np.nan))

    def cross(k, y0, y1, level):     # time where the samples k-1 -> k cross level (linear in log t)
        x = (level - y0) / (y1 - y0) if y1 != y0 else 1.0
        if t[k - 1] > 0:
            return float(math.exp(ls[k - 1] + x * (ls[k] - ls[k - 1])))
        return float(t[k - 1] + x * (t[k] - t[k - 1]))

    j = int(np.argmax(g))
    peak_t, peak_v = float(t[j]), float(g[j])
    if 0 < j < t.size - 1 and t[j - 1] > 0:
        y0, y1, y2 = g[j - 1:j + 2]
        x0, x1, x2 = ls[j - 1:j + 2]
        den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
        if den != 0:
            peak_t = float(math.exp(x1 - 0.5 * ((x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)) / den))
    out = {"peak_time": peak_t, "peak_value": peak_v}
    for f in RISE_FRACTIONS:
        key = f"t{round(100 * f)}"
        out[key] = math.nan
        if j > 0 and peak_v > g[0]:
            level = g[0] + f * (peak_v - g[0])
            k = int(np.flatnonzero(g[:j + 1] >= level)[0])
            out[key] = float(t[k]) if k == 0 else cross(k, g[k - 1], g[k], level)
    out["transition_time"] = math.nan
    if grams is not None:
        Gh = _unit(double_centre(grams))
        D = np.linalg.norm(Gh - E, axis=(1, 2)) - np.linalg.norm(Gh - Gh[j], axis=(1, 2))
        neg = np.flatnonzero(D[j:] < 0)
        if neg.size:
            k = j + int(neg[0])
            out["transition_time"] = cross(k, D[k - 1], D[k], 0.0)
    return out


@_failure_as_result("semantic")
def semantic_curve(problem, times, attributes=None, *, z0=None, init_scale=None, W0=None, A0=None,
                   end_gram="auto", horizon: float | None = None, keep_gram: bool = True,
                   spread: int = 0, spread_seed: int = 0, rtol: float = 1e-9, throw: bool = False) -> TheoryCurve:
    """Predicted semantic transient of the input-coupled UFM: Gram, gap, ETF distance, peak, rise and transition.

    Parameters
    ----------
    problem : InputCoupledUFM
        Distinct one-hot labels (``InputCoupledUFM.from_setting``).
    times : array
        Gradient-flow times (``trajectory.times``).
    attributes : (N, F) int array, optional
        Item attributes for the semantic gap (THEORY §7.4); default
        ``problem.attributes``.
    z0, init_scale, W0, A0 :
        The start the curve assumes (``meta["start"]``), as in
        :func:`mode_curves`. Default: a Gaussian start of std ``1e-3`` in the
        wide limit (the isotropic start, ``"gaussian_wide_limit"``). ``W0, A0``:
        one run's start, followed by the core model that keeps the overlaps
        of its growing vectors (``"run"``): the prediction for that run.
    end_gram : "auto", "solve", array or None
        The end state for the transition time. ``"auto"``: the model's own
        limit -- the closed form for MSE (``z_a -> max(1 - lam N/d_a, 0)``),
        for CE the minimizer of the convex objective restricted to the mode
        family (with weight decay) or its max-margin point (without).
        ``"solve"``: the exact global end state ``ufm.solve(problem)`` (convex
        program or max-margin SVM, THEORY §8.2). An N x N Gram: used as given.
        ``None``: no transition time.
    horizon : float, optional
        How far in time to look for the peak and the rise. Default: the larger
        of ``times[-1]`` and a time by which every mode has left its linear
        phase. For CE the transition is searched up to ``1e6`` times that:
        without weight decay the approach to the max-margin direction is
        logarithmically slow, and with a small decay the end state is reached
        on the slow time scale of the decay (for one run's start with weight
        decay, up to ``1e3/(lam_W + lam_A)``, by when the decay has long
        reached its end state).
    keep_gram : bool
        Record the Gram at every time (``T x N x N`` floats; refused with a
        ValueError when that exceeds the free memory). ``False`` keeps the
        scalar records only.
    spread : int
        Gaussian start only: also follow ``spread`` sampled starts of width
        ``problem.d`` through the core model and report the scatter of their
        peak, rise and transition times (constants ``"spread_*"``,
        ``meta["spread"]``). The samples are the starts that
        ``ufm.simulate(problem, init_scale=..., seeds=spread, seed=spread_seed)``
        draws, so sample ``i`` predicts run ``i``. Costs about one simulation
        per sample (0.5-1 s at N = 27); ``0`` (default) skips it.
    spread_seed : int
        Seed of the sampled starts.
    rtol : float
        Tolerance of the mode ODE.
    throw : bool
        Raise :class:`ufm.results.NotConverged` (with the curve in ``err.result``) instead
        of returning a curve whose ODE or linear program failed.

    Returns
    -------
    TheoryCurve
        ``kind="semantic"``. Records (T, ...): ``"z"``, ``"gram_H"`` (the item
        Gram ``H^T H`` centred with ``P_N``, N x N), ``"semantic_gap"``,
        ``"etf_distance"`` (of the centred item Gram, THEORY §7.2). Fields
        ``peak_time``, ``peak_value`` (maximum of the gap), ``transition_time``
        (``None`` if the end state is not approached within the search or
        ``end_gram=None``). Constants: ``"singular_values"``, ``"Q"``, ``"z0"``, ``"t50"``,
        ``"t90"`` (rise times, 0-d, NaN when the gap does not rise),
        ``"peak_gram"``, ``"end_gram"`` (both centred, unit Frobenius norm);
        with ``spread=n``: ``"spread_peak_time"``, ``"spread_t50"``,
        ``"spread_t90"``, ``"spread_transition_time"`` (n values each, NaN
        where undefined). ``meta``: ``"start"`` (``"aligned"``, ``"run"`` or
        ``"gaussian_wide_limit"``), ``"start_label"`` (for legends),
        ``"start_description"``, how the end state was obtained, the gap at
        ``t = 0``, and with ``spread=n`` ``meta["spread"]``: the
        :data:`SPREAD_QUANTILES` (10%, 50%, 90%, linear interpolation) of each
        time over the samples that reach it, and how many do.
        When the ODE (or linear program) behind the curve fails, the curve has
        ``status`` ``solver_failed``, ``success=False``, no records and the
        solver's message.

    Notes
    -----
    *Peak*: the maximum over a dense log-spaced grid, refined by a bounded
    scalar search in ``log t``; on a plateau (e.g. factorial(3, 3, 3) at
    ``sigma = 1.5``, where the gap stays within 0.1% of its maximum for two
    decades) its time is not meaningful: read the rise times. *Rise times*
    ``t50``, ``t90``: the first time at which the gap reaches
    ``gap(0) + f (peak_value - gap(0))``, ``f = 0.5, 0.9``, refined by Brent's
    method. *Transition*: the first sign change after the peak of
    ``||G^ - E^|| - ||G^ - G^_peak||`` (``^``: centred, unit Frobenius norm),
    refined by Brent's method. :func:`transient_times` reads the same
    quantities off a recorded curve.

    *Which start* (THEORY §6.3; module docstring). The default curve is the
    wide limit of a Gaussian start (the isotropic start of scale
    ``init_scale sqrt(d)``). A Gaussian start of finite width ``d`` spreads
    the modes' initial strengths (Wishart, not ``d init_scale^2 I``): peak and
    rise times move by a few percent, the transition by tens of percent
    (factorial(3, 3, 3), CE, ``lam = 1e-3``, 8 seeds: the wide-limit curve is
    -58% to +50% off a run's transition at ``d = 27``, -37% to +23% at
    ``d = 64``). ``W0, A0`` predict one run (the core model; same-grid
    transition times agree to 1e-4), ``spread=n`` the distribution over runs.
    """
    t = _check_times(times)
    model = _make_model(problem, z0, init_scale, W0, A0, rtol)
    if attributes is None:
        attributes = problem.attributes
    if attributes is None:
        raise ValueError("semantic_curve needs attributes=(N x F table) or a problem built with attributes "
                         "(InputCoupledUFM.from_setting).")
    n_spread = int(spread)
    if n_spread != spread or n_spread < 0:
        raise ValueError(f"spread must be an integer >= 0 (number of sampled starts), got {spread!r}.")
    if n_spread and model.init != "random":
        raise ValueError("spread samples Gaussian starts; it needs the default start (init_scale=...), not z0 or "
                         "W0/A0. For one run's start the curve itself is that run's prediction.")
    attributes = np.asarray(attributes)
    gap = _gap_fn(attributes)
    records = {"z": model.z(t),
               "semantic_gap": model.map_grams(t, gap),
               "etf_distance": model.map_grams(t, lambda g: etf_distance(g, center=True))}
    if keep_gram:
        what = "the recorded Grams (keep_gram=False records the scalars only)"
        _memory.check({what: 8 * t.size * model.N**2}, what, "Use a setting with fewer items.")
        records["gram_H"] = model.gram(t)

    horizon, core_far = _search_range(model, t, horizon)
    E = None
    meta = _model_meta(model, problem)
    s0 = model.init_scale
    constants = {"singular_values": model.sv, "Q": model.Q, "z0": model.z0}
    if end_gram is not None:
        E, how = _end_state(model, problem, end_gram)
        constants["end_gram"] = E
        meta["end_state"] = how
        meta["end_state_semantic_gap"] = float(gap(E))
        meta["end_state_etf_distance"] = float(etf_distance(E, center=True))
    found = _transient_search(model, gap, E, t, horizon, core_far(model))
    constants["peak_gram"] = found["peak_gram"]
    for f in RISE_FRACTIONS:
        constants[f"t{round(100 * f)}"] = np.float64(found[f"t{round(100 * f)}"])
    meta.update({"gap_at_0": found["gap_at_0"], "horizon": horizon, "peak": found["peak"],
                 "rise": "t50, t90: first time the gap reaches gap(0) + f (peak - gap(0)), f = 0.5, 0.9"})
    if "transition" in found:
        meta["transition"] = found["transition"]

    if n_spread:
        meta["spread"] = _spread(problem, n_spread, int(spread_seed), s0, gap, E, horizon, core_far, rtol, constants)
    transition = found["transition_time"]
    return TheoryCurve(times=t, records=records, kind="semantic", constants=constants, meta=meta,
                       citation=_CITATION_MODES + "; THEORY §7.2, §7.4 (metrics)", peak_time=found["peak_time"],
                       peak_value=found["peak_value"], transition_time=transition)


def _search_range(model, t, horizon):
    """The horizon of the peak search and ``core_far(model)``, how far to look for the transition.

    Without ``horizon``: past the times asked and twice the saturation time, and for CE the transition
    is looked for up to ``1e6`` saturation times (a non-quadratic loss grows slowly); a given horizon bounds
    both. A core model with weight decay looks no further than ``max(horizon, 1e3 / lam)``.
    """
    t_sat = model.saturation_time()
    if horizon is None:
        horizon = max(float(t[-1]), 2.0 * t_sat)
        far = horizon if model.loss.quadratic else max(horizon, 1e6 * t_sat)   # CE saturates slowly
    else:
        horizon = float(horizon)
        if not (math.isfinite(horizon) and horizon > 0):
            raise ValueError(f"horizon must be a finite time > 0, got {horizon}.")
        far = horizon

    def core_far(m):
        lam = m.lam_W + m.lam_A
        return min(far, max(horizon, 1e3 / lam)) if isinstance(m, _CoreModel) and lam > 0 else far

    return horizon, core_far


def _spread(problem, n_spread, spread_seed, s0, gap, E, horizon, core_far, rtol, constants) -> dict:
    """Peak, rise and transition times over ``n_spread`` Gaussian starts (the core model from each), their
    quantiles; the samples go into ``constants`` as ``spread_<name>``."""
    starts = initial_states(problem, n_spread, spread_seed, s0, {}, np.float64)
    names = ("peak_time", "t50", "t90", "transition_time")
    samples = {name: np.full(n_spread, np.nan) for name in names}
    for i in range(n_spread):
        mi = _CoreModel(problem, starts["W"][i], starts["A"][i], rtol)
        fi = _transient_search(mi, gap, E, np.array([]), max(horizon, 2.0 * mi.saturation_time()), core_far(mi))
        for name in names:
            if fi.get(name) is not None:
                samples[name][i] = fi[name]
    summary = {"n": n_spread, "seed": spread_seed, "quantiles": list(SPREAD_QUANTILES),
               "starts": f"the Gaussian starts (std {s0:g}, width d = {problem.d}) of ufm.simulate(problem, "
                         f"init_scale={s0:g}, seeds={n_spread}, seed={spread_seed}), each followed by the "
                         "core model (exact linear phase, then the flow of its growing part with the overlaps "
                         "between modes kept)"}
    for name in names:
        constants[f"spread_{name}"] = samples[name]
        ok = np.isfinite(samples[name])
        summary[name] = np.quantile(samples[name][ok], SPREAD_QUANTILES).tolist() if ok.any() else None
        summary[f"{name}_reached"] = int(ok.sum())
    return summary


def _end_state(model, problem, end_gram):
    if isinstance(end_gram, str):
        if end_gram == "auto":
            w, how = model.end_weights()
            E = double_centre((model.Q * w) @ model.Q.T)
        elif end_gram == "solve":
            sol = solve(problem)
            E = double_centre(sol.H.T @ sol.H)
            how = f"ufm.solve(problem) (method {sol.method!r}): the exact global end state"
        else:
            raise ValueError(f"end_gram must be 'auto', 'solve', an N x N Gram or None, got {end_gram!r}.")
    else:
        E = np.asarray(end_gram, dtype=np.float64)
        if E.shape != (model.N, model.N) or not np.all(np.isfinite(E)):
            raise ValueError(f"end_gram must be a finite N x N = {model.N} x {model.N} Gram, got shape {E.shape}.")
        E = double_centre(E)
        how = "given"
    if not np.linalg.norm(E) > 0:
        raise ValueError("the end-state Gram is zero after centring (e.g. weight decay too strong): no transition.")
    return _unit(E), how


# =====================================================================================
# public: symmetric-subspace flows of the standard UFM
# =====================================================================================
@_failure_as_result("symmetric_flow")
def symmetric_flow(problem, times, p0: float | None = None, *, a0: float | None = None,
                   beta0: float | None = None, b0: float = 0.0, rtol: float = 1e-11,
                   throw: bool = False) -> TheoryCurve:
    """Symmetric-subspace gradient flow of the balanced standard UFM (THEORY §6.4 MSE, §6.5 CE).

    Ansatz ``W = a U`` (``U U^T = P_K``, needs ``d >= K - 1``),
    ``H = beta (U^T kron 1_n^T)``, bias ``b = c 1_K``; the margin (logit gap)
    is ``p = a beta``. In the time of :func:`ufm.simulate` (mean losses, halved
    decays) the flow is

    * MSE: ``da/dt = beta (1 - p)/K - lam_W a``, ``dbeta/dt = a (1 - p)/N - lam_H beta``,
      ``dc/dt = -(c - 1/K) - lam_b c`` (the bias decouples). Without decay the
      balanced manifold ``a = sqrt(n) beta`` is invariant and
      ``p(t) = 1/(1 + (1/p0 - 1) exp(-2 sqrt(n) t/N))``: THEORY's
      ``dp/dtau = 2 sqrt(n) p (1 - p)`` is for the unnormalized loss
      ``1/2||.||^2``, whose time is ``tau = t/N``. The part ``J/K`` of ``Y`` not
      fitted by the bias is orthogonal to the ansatz, so it is not learned on
      it; but for the full flow it is an unstable direction (a perturbation
      along ``1_K`` grows with the same rate), so without a bias a full
      simulation leaves the subspace once round-off has grown.
    * CE: ``da/dt = phi(p) beta/(K-1) - lam_W a``, ``dbeta/dt = phi(p) a/(n(K-1)) - lam_H beta``,
      ``phi(p) = (K-1) e^{-p}/(1 + (K-1) e^{-p})``; without decay and balanced,
      ``dp/dt = 2/(sqrt(n)(K-1)) p phi(p)`` (THEORY §6.5; same time as ours).
      The bias gets no gradient on this family (softmax ignores ``c 1``) and
      only decays with ``lam_b``.

    Parameters
    ----------
    problem : UFMProblem
        Balanced hard labels, class-major (the default labels), ``d >= K - 1``.
    times : array
        Gradient-flow times.
    p0 : float, optional
        Initial margin on the balanced manifold: ``a0 = (sqrt(n) p0)^{1/2}``,
        ``beta0 = p0/a0``. Or give ``a0`` and ``beta0``.
    a0, beta0 : float, optional
        Initial ``a`` and ``beta`` (instead of ``p0``; any start on the ansatz).
    b0 : float
        Initial bias level ``c`` (bias problems only).
    rtol : float
        Integrator tolerance (DOP853) where no closed form applies.
    throw : bool
        Raise :class:`ufm.results.NotConverged` (with the curve in ``err.result``) instead
        of returning a curve whose ODE or linear program failed.

    Returns
    -------
    TheoryCurve
        ``kind="symmetric_flow"``; records ``"p"``, ``"a"``, ``"beta"``,
        ``"gram_W"`` (``a^2 P_K``), ``"objective"`` (the full objective, halved
        decays) and ``"b"`` (``c 1_K``) for bias problems.
        When the ODE behind the curve fails, the curve has ``status``
        ``solver_failed``, ``success=False``, no records and the solver's message.
    """
    from scipy.integrate import solve_ivp

    if type(problem) is not UFMProblem:
        raise ValueError(f"symmetric_flow needs a standard UFMProblem, got {type(problem).__name__}.")
    if problem.soft or not problem.balanced:
        raise ValueError("symmetric_flow needs balanced hard labels (n per class).")
    if not np.array_equal(problem.y, np.repeat(np.arange(problem.K), problem.n)):
        raise ValueError("symmetric_flow needs class-major labels (the default UFMProblem(K=..., n=...)).")
    K, n, N = problem.K, problem.n, problem.N
    if problem.d < K - 1:
        raise ValueError(f"the symmetric ansatz needs d >= K - 1 = {K - 1} (U U^T = P_K), got d={problem.d}.")
    t = _check_times(times)
    if p0 is not None:
        if a0 is not None or beta0 is not None:
            raise ValueError("give p0 (balanced start) or a0 and beta0, not both.")
        p0 = float(p0)
        if not (math.isfinite(p0) and p0 > 0):
            raise ValueError(f"p0 must be finite and > 0, got {p0}.")
        a0 = math.sqrt(math.sqrt(n) * p0)
        beta0 = p0 / a0
    elif a0 is None or beta0 is None:
        raise ValueError("give p0 (initial margin, balanced a = sqrt(n) beta) or both a0 and beta0.")
    a0, beta0 = float(a0), float(beta0)
    lW, lH, lb = problem.lam_W, problem.lam_H, problem.lam_b
    c0 = float(b0)
    if not problem.bias and c0 != 0.0:
        raise ValueError("b0 given but the problem has no bias; pass bias=True or drop b0.")
    _require_dynamics_theory(problem.loss)
    mse = problem.loss.quadratic

    balanced = abs(a0 - math.sqrt(n) * beta0) <= 1e-14 * max(a0, 1.0)
    if mse and lW == 0 and lH == 0 and balanced:
        pp = 1.0 / (1.0 + (1.0 / (a0 * beta0) - 1.0) * np.exp(-2.0 * math.sqrt(n) * t / N))
        a = np.sqrt(math.sqrt(n) * pp)
        bt = pp / a
        how = "closed form (logistic, THEORY §6.4)"
    else:
        def rhs(_t, y):
            a_, b_ = y
            p = a_ * b_
            if mse:
                g = 1.0 - p
                return [b_ * g / K - lW * a_, a_ * g / N - lH * b_]
            e = (K - 1) * math.exp(-p) if p > -700 else math.inf
            phi = e / (1.0 + e) if math.isfinite(e) else 1.0
            return [phi * b_ / (K - 1) - lW * a_, phi * a_ / (n * (K - 1)) - lH * b_]

        sol = solve_ivp(rhs, (0.0, max(float(t[-1]), 1e-12)), [a0, beta0], t_eval=t, method="DOP853",
                        rtol=rtol, atol=1e-14 * max(a0, beta0, 1e-300))
        if not sol.success:
            raise NotConverged(f"the symmetric flow ODE failed: {sol.message}")
        a, bt = sol.y
        pp = a * bt
        how = "numerical (DOP853)"
    if mse:
        c = (c0 - 1.0 / (K * (1.0 + lb))) * np.exp(-(1.0 + lb) * t) + 1.0 / (K * (1.0 + lb)) if problem.bias \
            else np.zeros_like(t)
        loss = ((1 - pp) ** 2 * (K - 1) + (1 - K * c) ** 2) / (2 * K)
    else:
        c = c0 * np.exp(-lb * t) if problem.bias else np.zeros_like(t)
        loss = np.log1p((K - 1) * np.exp(-pp))
    loss = loss + lW / 2 * a**2 * (K - 1) + lH / 2 * bt**2 * n * (K - 1) + lb / 2 * K * c**2
    PK = centering_matrix(K)
    records = {"p": pp, "a": a, "beta": bt, "gram_W": a[:, None, None] ** 2 * PK, "objective": loss}
    if problem.bias:
        records["b"] = c[:, None] * np.ones(K)
    meta = {"problem": problem.as_dict(), "a0": a0, "beta0": beta0, "b0": c0, "solution": how,
            "time": "gradient-flow time t = steps * lr of ufm.simulate (mean losses)", "start": "symmetric",
            "start_label": f"symmetric start a0={a0:.3g}, beta0={beta0:.3g}",
            "start_description": "W = a0 U, H = beta0 (U^T kron 1_n^T) with U U^T = P_K (THEORY §6.4-6.5)"}
    return TheoryCurve(times=t, records=records, kind="symmetric_flow", meta=meta, citation=_CITATION_SYMMETRIC)



# =====================================================================================
# public: M3, the function-space kernel flow (THEORY §8.3)
# =====================================================================================
def _attributes_of(setting_or_attributes):
    att = getattr(setting_or_attributes, "attributes", setting_or_attributes)
    att = np.asarray(att)
    if att.ndim != 2 or not np.issubdtype(att.dtype, np.integer):
        raise ValueError(f"attributes must be an integer N x F table (or a Setting), got {att.dtype} array of shape "
                         f"{att.shape}.")
    return att


def block_kernel(setting_or_attributes, same: float = 1.0, shared: float = 0.5, none: float = 0.0, *,
                 graded: bool = True) -> np.ndarray:
    """The block kernel of THEORY §8.3 for items with attributes: same item / shared attributes / none.

    ``Theta_ii = same``; for ``i != j``: with ``graded=False`` the three levels
    literally, ``shared`` if the items share at least one attribute, else
    ``none``; with ``graded=True`` (default) ``none + (shared - none) s_ij / F``,
    where ``s_ij`` is the number of shared attributes (so items sharing every
    attribute get ``shared``; for ``F = 1`` both coincide).

    Parameters
    ----------
    setting_or_attributes : Setting or (N, F) int array
        The items and their attributes.
    same, shared, none : float
        Kernel values for the same item, for items sharing attributes, and for none.
    graded : bool
        Grade the shared level by the number of shared attributes (see above).

    Returns
    -------
    ndarray (N, N)
        The kernel ``Theta``.

    Raises
    ------
    ValueError
        If the result is not positive semidefinite (e.g. ``shared`` too large
        against ``same``), since a tangent kernel must be.
    """
    att = _attributes_of(setting_or_attributes)
    N, F = att.shape
    for name, v in (("same", same), ("shared", shared), ("none", none)):
        if not math.isfinite(float(v)):
            raise ValueError(f"{name} must be finite, got {v}.")
    S = (att[:, None, :] == att[None, :, :]).sum(-1).astype(float) if F else np.zeros((N, N))
    if graded:
        T = none + (shared - none) * (S / max(F, 1))
    else:
        T = np.where(S > 0, float(shared), float(none))
    T = np.array(T, dtype=np.float64)
    T[np.diag_indices(N)] = same
    lo = np.linalg.eigvalsh(T).min()
    if lo < -1e-10 * max(abs(same), 1.0):
        raise ValueError(f"the block kernel is not positive semidefinite (smallest eigenvalue {lo:.3g}); raise "
                         f"'same' or lower 'shared'/'none' (same={same}, shared={shared}, none={none}).")
    return T


@_failure_as_result("kernel_flow")
def kernel_flow(setting_or_attributes, theta, times, *, loss: str = "ce", Z0=None, init_scale: float = 0.0,
                seed: int = 0, rtol: float = 1e-9, atol: float = 1e-12, throw: bool = False) -> TheoryCurve:
    """M3: the function-space kernel flow ``dZ/dt = -grad_Z g(Z) Theta`` with distinct one-hot labels (THEORY §8.3).

    ``Z`` (N x N logits, column ``i`` = item ``i``, label ``i``: ``Y = I_N``);
    ``g`` is the mean loss of :mod:`ufm.problems` (mean CE or
    ``1/(2N)||Z - Y||^2``), so the time is that of :func:`ufm.simulate`. A
    constant kernel ``Theta`` is the lazy (NTK) regime; the neural-tangent
    kernel of a UFM itself is ``H^T H`` on the sample side, so ``Theta = I``
    is the flow of free logits (no shared features), and ``Theta = K_x`` is
    exactly the flow of the linear model ``Z = M Phi`` trained on ``M``.

    *Which Gram.* There are no features in function space, so the semantic
    gap and ETF distance are those of the **logit Gram** ``Z^T Z`` (N x N,
    centred with ``P_N``), the natural stand-in for the feature Gram: for a
    UFM at the ETF both are multiples of ``P_N``. Record ``"gram_H"`` holds it
    under the name used by the other curves, so plots and metrics take either.

    Parameters
    ----------
    setting_or_attributes : Setting or (N, F) int array
        Items and their attributes (for the semantic gap).
    theta : (N, N) array
        The kernel, symmetric PSD (e.g. :func:`block_kernel`).
    times : array
        Times (non-decreasing, >= 0).
    loss : str or Loss
        Any loss of :data:`ufm.loss_registry.LOSSES` (a quadratic loss is integrated exactly).
    Z0 : (N, N) array, optional
        Initial logits; default ``init_scale`` times a standard Gaussian draw
        (``init_scale = 0``: start at ``Z = 0``).
    init_scale : float
        Scale of the Gaussian start when ``Z0`` is not given.
    seed : int
        Seed of that draw.
    rtol, atol : float
        Integrator tolerances.
    throw : bool
        Raise :class:`ufm.results.NotConverged` (with the curve in ``err.result``) instead
        of returning a curve whose ODE failed.

    Returns
    -------
    TheoryCurve
        ``kind="kernel_flow"``; records ``"Z"``, ``"gram_H"`` (the logit Gram),
        ``"semantic_gap"``, ``"etf_distance"``, ``"objective"`` (the loss of the
        logits: the flow has no decay); ``peak_time``,
        ``peak_value``: the maximum of the gap over ``times`` (``peak_time`` is
        ``times[0]`` when the gap never rises: the kernel flow *starts* semantic
        and only loses structure, unlike M2). ``transition_time`` is ``None``
        (no end state is computed: without decay CE logits diverge).
        When the ODE behind the curve fails, the curve has ``status``
        ``solver_failed``, ``success=False``, no records and the solver's message.
    """
    from scipy.integrate import solve_ivp

    att = _attributes_of(setting_or_attributes)
    N = att.shape[0]
    T = np.asarray(theta, dtype=np.float64)
    if T.shape != (N, N) or not np.all(np.isfinite(T)):
        raise ValueError(f"theta must be a finite N x N = {N} x {N} kernel, got shape {T.shape}.")
    if not np.allclose(T, T.T, atol=1e-12 * max(1.0, np.abs(T).max())):
        raise ValueError("theta must be symmetric (a kernel).")
    if np.linalg.eigvalsh(T).min() < -1e-10 * max(1.0, np.abs(T).max()):
        raise ValueError("theta must be positive semidefinite (a kernel).")
    loss = get_loss(loss)
    t = _check_times(times)
    if Z0 is None:
        s0 = check_nonneg("init_scale", init_scale, "the init std of the logits")
        Z0 = s0 * np.random.default_rng(seed).standard_normal((N, N))
        start_label = f"Gaussian logits Z0, std {s0:g}, seed {seed}" if s0 > 0 else "Z0 = 0"
    else:
        start_label = "given logits Z0"
    Z0 = np.asarray(Z0, dtype=np.float64)
    if Z0.shape != (N, N) or not np.all(np.isfinite(Z0)):
        raise ValueError(f"Z0 must be a finite N x N = {N} x {N} logit matrix, got shape {Z0.shape}.")
    Y = np.eye(N)

    if loss.quadratic:      # linear: Z(t) = Y + (Z0 - Y) exp(-t Theta / N), exactly
        Yt = loss.targets(Y)
        w, V = np.linalg.eigh(T)
        Zt = np.stack([Yt + ((Z0 - Yt) @ V) * np.exp(-tt * w / N) @ V.T for tt in t])
        how = "closed form (matrix exponential of Theta)"
    else:
        sol = solve_ivp(lambda _s, z: -(loss.grad(z.reshape(N, N), Y) @ T).ravel(), (0.0, max(float(t[-1]), 1e-12)),
                        Z0.ravel(), t_eval=t, method="DOP853", rtol=rtol, atol=atol)
        if not sol.success:
            raise NotConverged(f"the kernel flow ODE failed: {sol.message}")
        Zt = sol.y.T.reshape(-1, N, N)
        how = "numerical (DOP853)"
    grams = np.einsum("tki,tkj->tij", Zt, Zt)
    gaps, etfs = [], []
    for G in grams:
        ok = np.linalg.norm(G) > 1e-300 and np.linalg.norm(double_centre(G)) > 1e-14
        gaps.append(semantic_gap(G, att, center=True) if ok else np.nan)
        etfs.append(etf_distance(G, center=True) if ok else np.nan)
    gaps, etfs = np.array(gaps), np.array(etfs)
    j = int(np.nanargmax(gaps)) if np.any(np.isfinite(gaps)) else 0
    records = {"Z": Zt, "gram_H": grams, "semantic_gap": gaps, "etf_distance": etfs,
               "objective": np.array([loss.value(Z, Y) for Z in Zt])}
    meta = {"model": "M3 kernel flow", "loss": str(loss), "N": N, "solution": how,
            "gram": "logit Gram Z^T Z (no features in function space), centred with P_N",
            "start": "logits", "start_label": start_label,
            "peak": "maximum over the given times" + (" (at the first time: the gap never rises)" if j == 0 else "")}
    return TheoryCurve(times=t, records=records, kind="kernel_flow", constants={"theta": T, "Z0": Z0},
                       peak_time=float(t[j]), peak_value=float(gaps[j]), meta=meta, citation=_CITATION_KERNEL)
