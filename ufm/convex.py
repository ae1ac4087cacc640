"""Exact global solvers: convex nuclear-norm programs, a proximal solver, certificates, max-margin limits.

Every regularized UFM is a convex problem in the logits (THEORY §4, (4.1))::

    min_{W,H,b} g(W H + b 1^T) + lam_W/2 ||W||^2 + lam_H/2 ||H||^2 + lam_b/2 ||b||^2
      = min_{Z,b} g(Z + b 1^T) + mu ||Z||_* + lam_b/2 ||b||^2,      mu = sqrt(lam_W lam_H),

valid when ``d >= rank(Z*)`` (halved regularizers; ``2 mu`` for un-halved ones).
The input-coupled UFM ``H = A Phi`` (THEORY §8.2 (b)) is ``min_M g(M Phi) + sqrt(lam_W lam_A) ||M||_*``;
with the feature penalty ``lam_H/2 ||A Phi||^2`` (THEORY §8.2b) it is ``min_M g(M Phi_c) + sqrt(lam_W) ||M||_*``
on the reduced encoding ``Phi_c`` of :meth:`~ufm.problems.InputCoupledUFM.convex_encoding`.

Both are written here as one *form*: a variable ``X``, a linear map ``fwd`` to
the distinct logit columns, column weights ``omega`` (summing to 1: the mean
over examples) and targets ``T``:

* standard UFM, hard labels: the class-collapsed reduction of THEORY §4: an
  optimal ``Z`` has identical columns within a class, so ``Z = Zbar E`` and
  ``||Z||_* = ||Zbar diag(sqrt n_k)||_*``; the variable is ``X = Zbar diag(sqrt n_k)``
  (K x K), ``fwd(X) = X diag(1/sqrt n_k)``, ``omega_k = n_k/N``.
* standard UFM, soft labels (NTP, THEORY §5): ``X = Z`` (K x N), ``omega_j = 1/N``.
* input-coupled: ``X = M`` (K x p), ``fwd(M) = M Phi``, ``omega_j = 1/N`` (``Phi_c`` in place of
  ``Phi`` with a feature penalty; the model's ``convex_state`` recovers ``W, A``).

Solvers: :func:`convex` (cvxpy, Clarabel by default or SCS with explicit
tolerances; the solver and its status are recorded), :func:`prox` (accelerated
proximal gradient with singular-value soft-thresholding, for sizes where
interior-point programs are slow), :func:`svm` (the max-margin limits of the
unregularized problems: SELI, NTP-SVM, input-coupled). Every solution carries a
certificate: the duality gap of :func:`certificate` and the stationarity
residuals of THEORY §4 at the recovered ``W, H`` (balanced split).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from . import losses
from ._progress import Progress, check_progress
from ._util import numerical_rank
from .closed_form import NotApplicable, balanced_split
from .metrics import centering_matrix
from .results import NotConverged, Solution
from ._checks import check_bool, check_int, check_positive

__all__ = ["convex", "prox", "svm", "certificate", "Form", "form_of", "applies_convex", "applies_prox",
           "applies_svm", "SOLVERS"]

#: cvxpy solvers that handle the exponential and semidefinite cones of these programs.
SOLVERS = ("CLARABEL", "SCS")

_CITE = "THEORY §4 (DER; TV1, TV3, TV8, TV11); Srebro et al. (variational identity); ufm.convex"


# -- the convex form ----------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Form:
    """A regularized UFM as ``min_X sum_j omega_j l(fwd(X)_j + b, T_j) + mu ||X||_* (+ bias term)``.

    Built by :func:`form_of`; the solvers (:func:`convex`, :func:`prox`, :func:`svm`) and
    :func:`certificate` work on it.

    Parameters
    ----------
    problem : UFMProblem or InputCoupledUFM
        The problem this form was built from.
    kind : {"collapsed", "full", "input_coupled"}
        ``"collapsed"``: hard labels reduced to one column per class (THEORY §4,
        size reduction); ``"full"``: one column per example; ``"input_coupled"``:
        ``X = M`` with logits ``M Phi`` (THEORY §8.2 (b)).
    T : ndarray (K, m)
        Targets, one per distinct column.
    omega : ndarray (m,)
        Column weights of the data term (they sum to 1).
    mu : float
        Nuclear-norm weight ``sqrt(lam_W lam_H)`` (or ``sqrt(lam_W lam_A)``).
    loss : Loss
        The loss ``l`` (:mod:`ufm.losses`); ``T`` holds its targets (``loss.targets`` of the labels).
    bias : {"none", "free", "regularized"}
        How the bias enters.
    lam_b : float
        Bias decay (halved) when ``bias="regularized"``.
    scale : ndarray (m,) or None
        Collapsed form: ``1/sqrt(n_k)`` per column (``fwd`` rescales by it).
    Phi : ndarray (p, N) or None
        Input encodings of the input-coupled form (the reduced ``Phi_c`` of THEORY §8.2b with a
        feature penalty).
    """

    problem: object
    kind: str                 # "collapsed", "full" or "input_coupled"
    T: np.ndarray             # K x m targets (distinct columns)
    omega: np.ndarray         # m weights, sum 1
    mu: float
    loss: losses.Loss
    bias: str                 # "none", "free" or "regularized"
    lam_b: float
    scale: np.ndarray | None  # collapsed: 1/sqrt(n_k) per column
    Phi: np.ndarray | None    # input-coupled encodings

    @property
    def shape(self):
        K = self.T.shape[0]
        return (K, self.Phi.shape[0]) if self.kind == "input_coupled" else (K, self.T.shape[1])

    def fwd(self, X):
        if self.kind == "input_coupled":
            return X @ self.Phi
        return X * self.scale[None, :] if self.scale is not None else X

    def adj(self, G):
        if self.kind == "input_coupled":
            return G @ self.Phi.T
        return G * self.scale[None, :] if self.scale is not None else G

    # data term, per column
    def data(self, L):
        return float(np.sum(self.omega * self.loss.columns(L, self.T)))

    def data_grad(self, L):
        P = self.loss.column_grads(L, self.T)
        P *= self.omega[None, :]
        return P

    def logits(self, X, b):
        L = self.fwd(X)
        return L if b is None else L + b[:, None]

    def bias_reg(self, b):
        return 0.0 if (b is None or self.bias != "regularized") else 0.5 * self.lam_b * float(b @ b)

    def primal(self, X, b) -> float:
        return self.data(self.logits(X, b)) + self.mu * _nuclear(X) + self.bias_reg(b)


def _nuclear(X):
    return float(np.linalg.svd(X, compute_uv=False).sum()) if X.size else 0.0


def _opnorm(X):
    return float(np.linalg.norm(X, 2)) if X.size else 0.0


def form_of(problem, reduce: str | bool = "auto") -> Form:
    """The convex form of ``problem`` (see the module docstring).

    Parameters
    ----------
    problem : UFMProblem or InputCoupledUFM
        A regularized problem.
    reduce : "auto", True or False
        ``"auto"`` class-collapses hard labels; ``True`` insists on it, ``False``
        keeps one column per example.

    Returns
    -------
    Form
        The data, weights and nuclear-norm weight of (4.1) or (8.2b).

    Raises
    ------
    NotApplicable
        For models without a convex form (the anchored UFM), or when the
        regularization is such that no minimizer exists (CE without weight decay:
        use :func:`svm`).
    """
    if not callable(getattr(problem, "convex_form", None)):          # input validation: not a UFM model
        raise NotApplicable(f"needs a UFMProblem or InputCoupledUFM, got {type(problem).__name__}")
    return problem.convex_form(reduce)


def require_attained(loss, mu: float, names: str) -> None:
    """Refuse the convex form without weight decay when the loss says it has no (unique) minimizer there.

    Parameters
    ----------
    loss : Loss
        The problem's loss.
    mu : float
        The nuclear-norm weight.
    names : str
        The weight decays, for the message.

    Returns
    -------
    None
        Returns when the form applies.

    Raises
    ------
    NotApplicable
        With the loss's reason and the method that applies instead.
    """
    why = loss.why_not_without_decay(names) if mu == 0 else None
    if why:
        raise NotApplicable(why)


# -- certificate ----------------------------------------------------------------------
def _polish_bias(form: Form, X, b):
    """The optimal bias for fixed X (the loss's ``best_bias``: a K-dimensional strictly convex problem)."""
    if b is None:
        return None
    L0 = form.fwd(X)
    lam = form.lam_b if form.bias == "regularized" else 0.0
    return form.loss.best_bias(L0, form.T, form.omega, lam, form.bias == "free", b, form.data)


def certificate(form: Form, X, b=None, *, nuclear: float | None = None) -> dict:
    """Primal value, a dual lower bound and their gap at ``(X, b)``.

    The dual of ``min g(fwd(X) + b 1^T) + mu ||X||_* + r(b)`` is
    ``max_V -g*(V) - r*(V 1)`` over ``||adj(V)||_op <= mu`` (Fenchel duality;
    with a free bias ``V 1 = 0``). The candidate is ``V = s grad g`` at the
    (bias-polished) iterate, scaled by the largest ``s <= 1`` that keeps it
    feasible (the loss's ``dual_step_limit`` keeps it in the conjugate's domain);
    ``s = 1`` at the optimum, where the gap is 0. ``-g*(V) = sum_j omega_j (-l*)(V_j/omega_j; T_j)``
    with the loss's ``neg_conjugate``: for CE (and label-smoothed CE) ``Entropy(T_j + v)``,
    for MSE ``-(||v||^2/2 + v^T T_j)``.

    Parameters
    ----------
    form : Form
        The convex form (:func:`form_of`).
    X : ndarray
        The point, of shape ``form.shape``.
    b : ndarray (K,), optional
        The bias, for forms with one.
    nuclear : float, optional
        ``||X||_*`` when it is already known (saves an SVD).

    Returns
    -------
    dict
        ``{"primal", "dual", "gap", "rel_gap" = gap / primal, "b"}`` (``b`` polished).
    """
    return _certify(form, X, b, nuclear, _opnorm)


def _certify(form: Form, X, b, nuclear, opnorm) -> dict:
    """:func:`certificate` with the operator norm ``opnorm`` (exact, an upper bound, or an estimate).

    With an exact norm or an upper bound the dual point is feasible and the gap is certified;
    :func:`_fista` checks with the exact norm before it stops on an estimate.
    """
    b = _polish_bias(form, X, b)
    L = form.logits(X, b)
    primal = form.data(L) + form.mu * (_nuclear(X) if nuclear is None else nuclear) + form.bias_reg(b)
    G = form.data_grad(L)
    if form.bias == "free":
        G = G - np.outer(G.sum(axis=1), form.omega) / form.omega.sum()
    op = opnorm(form.adj(G))
    s = 1.0 if op <= form.mu else form.mu / op
    U = G / form.omega[None, :]                          # per-example gradient (p - t for CE)
    s = min(s, form.loss.dual_step_limit(U, form.T))     # inside the conjugate's domain
    dual = float(form.omega @ form.loss.neg_conjugate(s * U, form.T))
    if form.bias == "regularized":
        w = (s * G).sum(axis=1)
        dual -= float(w @ w) / (2 * form.lam_b)
    gap = max(primal - dual, 0.0)
    return {"primal": primal, "dual": dual, "gap": gap, "rel_gap": gap / max(abs(primal), 1e-300), "b": b}


# -- recovery ---------------------------------------------------------------------------
def _split(U, S, Vt, d, lam_W, lam_H):
    """The balanced split of :func:`ufm.closed_form.balanced_split` from an SVD already at hand
    (same rank test, same factors, same error when ``d`` is below the rank)."""
    r = numerical_rank(S, floor=1.0)
    if r > d:
        raise NotApplicable(
            f"d={d} is below rank(Z*)={r}: the optimum needs d >= {r}. "
            f"Increase d, or use a rank-constrained solver (the convex value is then only a lower bound).")
    q = (lam_H / lam_W) ** 0.25 if (lam_W > 0 and lam_H > 0) else 1.0
    root = np.sqrt(S[:r])
    W = np.zeros((U.shape[0], d))
    H = np.zeros((d, Vt.shape[1]))
    W[:, :r] = q * U[:, :r] * root
    H[:r, :] = (root[:, None] * Vt[:r]) / q
    return W, H


def _recover(form: Form, X, b, method, status, message, nit, meta, cert=None, spec=None, regime="") -> Solution:
    p = form.problem
    cert = certificate(form, X, b) if cert is None else cert
    b = cert["b"]
    if form.kind == "input_coupled":
        state = p.convex_state(X)               # balanced split of M (and the lift to A, THEORY §8.2b)
        W, A = state["W"], state["A"]
        H = A @ p.Phi
        Z = W @ H
        g = losses.state_gradients(p, state)
        reg_A = p.lam_A * A + (p.lam_H * (H @ p.Phi.T) if p.lam_H else 0.0)
        stat = {"W": _rel(g["W"], p.lam_W * W), "A": _rel(g["A"], reg_A)}
    elif form.kind == "collapsed":
        # Z = X Q with Q = diag(scale) E (E the K x N one-hot rows): Q's rows are orthonormal, so
        # the balanced split of the K x K matrix X carried through Q is that of Z (one K x K SVD)
        if spec is not None and spec.classes is not None:
            W, Hx = _split(*spec.classes.svd(X), p.d, p.lam_W, p.lam_H)
        else:
            W, Hx = balanced_split(X, p.d, p.lam_W, p.lam_H)
        H = Hx[:, p.y] * form.scale[p.y]
        A = None
        stat = losses.stationarity_residuals(p, W, H, b)
        Z = losses.logits(W, H, b)
    else:
        W, H = balanced_split(form.fwd(X), p.d, p.lam_W, p.lam_H)
        A = None
        stat = losses.stationarity_residuals(p, W, H, b)
        Z = losses.logits(W, H, b)
    meta = {"problem": p.as_dict(), "form": form.kind, "objective": "regularized objective (0.1) = convex form (4.1)",
            "duality_gap": cert["gap"], "rel_duality_gap": cert["rel_gap"], "dual": cert["dual"],
            "stationarity": stat, **meta}
    return Solution(W=W, H=H, b=b, Z=Z, objective=cert["primal"], status=status, regime=regime,
                    message=message + f" Certified relative duality gap {cert['rel_gap']:.2e}.", method=method,
                    nit=nit, meta=meta, citation=_CITE, A=A)


def _rel(grad, reg):
    scale = max(np.linalg.norm(reg), np.linalg.norm(grad - reg), 1e-300)
    return float(np.linalg.norm(grad) / scale)


def _zero_solution(form: Form, method: str, spec=None) -> Solution | None:
    """The exact zero test of THEORY §4: ``X = 0`` is optimal iff ``||adj(grad g(b0))||_op <= mu``.

    With ``spec`` (a :class:`_Spectral`) the norm is first estimated cheaply; the exact norm is
    taken only when the estimate cannot decide (an upper bound above ``mu``, or an estimate near it).
    """
    b0 = _polish_bias(form, np.zeros(form.shape), None if form.bias == "none" else np.zeros(form.T.shape[0]))
    L = form.logits(np.zeros(form.shape), b0)
    G = form.adj(form.data_grad(L))
    if spec is not None:
        est = spec.opnorm(G)
        if (est > form.mu) if spec.rigorous else (est > form.mu * (1 + 1e-6)):
            return None
    if _opnorm(G) <= form.mu:
        return _recover(form, np.zeros(form.shape), b0, method, "optimal",
                        "Zero optimum: ||grad g(0)||_op <= sqrt(lam_W lam_H) (THEORY §4 exact test).", 0,
                        {"zero_test": True}, regime="zero")
    return None


# -- cvxpy ---------------------------------------------------------------------------------
def _cvx_program(form: Form):
    import cvxpy as cp

    K = form.T.shape[0]
    m = form.T.shape[1]
    X = cp.Variable(form.shape)
    if form.kind == "input_coupled":
        L = X @ form.Phi
    elif form.scale is not None:
        L = X @ np.diag(form.scale)
    else:
        L = X
    b = cp.Variable(K) if form.bias != "none" else None
    if b is not None:
        L = L + cp.reshape(b, (K, 1), order="C") @ np.ones((1, m))
    data = cp.sum(cp.multiply(form.omega, form.loss.cvx_columns(L, form.T)))
    obj = data + form.mu * cp.normNuc(X)
    if form.bias == "regularized":
        obj = obj + 0.5 * form.lam_b * cp.sum_squares(b)
    return cp.Problem(cp.Minimize(obj)), X, b


def convex(problem, *, solver: str = "CLARABEL", reduce="auto", tol: float = 1e-9, max_iter: int = 100_000,
           polish: float | None = 1e-7, verbose: bool = False, throw: bool = False) -> Solution:
    """Global optimum from the convex program (4.1) (or (8.2b)), solved by cvxpy.

    Parameters
    ----------
    problem : UFMProblem or InputCoupledUFM
        Regularized (``mu = sqrt(lam_W lam_H) > 0``); any labels, counts and bias.
    solver : {"CLARABEL", "SCS"}
        Interior point (Clarabel, default: accurate for small and medium sizes)
        or first-order conic (SCS, run with ``eps_abs = eps_rel = tol``).
    reduce : "auto", True or False
        Use the class-collapsed K x K form for hard labels (THEORY §4).
    tol : float
        Solver tolerance (Clarabel's gap and feasibility tolerances, SCS's ``eps_abs`` and
        ``eps_rel``); the stopping tolerance is called ``tol`` in every ``ufm`` solver.
    max_iter : int
        Iteration limit passed to the solver (Clarabel's ``max_iter``, at most 500 here: an
        interior-point method that needs more is not converging; SCS's ``max_iters``).
    polish : float or None
        Interior-point and conic solutions stop at about ``tol`` in the objective,
        which can leave the certified gap near 1e-5 (the certificate is linear in
        the distance to the optimum, the objective quadratic); by default proximal
        iterations from the solver's point bring the certified relative gap below
        ``polish`` (``None`` skips this). ``meta["polish_iterations"]`` says how many.
    verbose : bool
        Print the solver's log.
    throw : bool
        Raise :class:`~ufm.results.NoMethodApplies` or :class:`~ufm.results.NotConverged`
        (with the result) instead of returning a result with ``success=False``.

    Returns
    -------
    Solution
        ``W, H`` (and ``A`` for the input-coupled model) by the balanced split;
        ``meta`` records the solver, its status and time, the duality gap and the
        stationarity residuals. ``success`` (status ``optimal``) needs an optimal
        solver status and a relative duality gap below 1e-6; else ``inaccurate``,
        or ``solver_failed`` when cvxpy gives no solution, or ``no_method`` when
        the problem has no convex form.
    """
    import cvxpy as cp

    solver = _check_solver(solver)
    tol = check_positive("tol", tol, "the solver tolerance, e.g. 1e-9")
    max_iter = check_int("max_iter", max_iter, 1)
    if polish is not None:
        polish = check_positive("polish", polish, "the certified gap to polish to, e.g. 1e-7; None skips it")
    throw = check_bool("throw", throw)
    try:
        form = form_of(problem, reduce)
    except NotApplicable as err:
        return _finish(Solution.unsolved(problem, "convex", "no_method", str(err)), throw)
    zero = _zero_solution(form, "convex")
    if zero is not None:
        return zero
    prob, X, b = _cvx_program(form)
    opts = ({"eps_abs": tol, "eps_rel": tol, "max_iters": max_iter} if solver == "SCS" else
            {"tol_gap_abs": tol, "tol_gap_rel": tol, "tol_feas": tol, "max_iter": min(max_iter, 500)})
    t0 = time.perf_counter()
    try:
        prob.solve(solver=solver, verbose=verbose, **opts)
    except cp.error.SolverError as err:
        return _finish(Solution.unsolved(problem, "convex", "solver_failed", f"cvxpy solver {solver} failed: {err}. "
                                         "Try solver='SCS' or method='prox'.", solver=solver), throw)
    elapsed = time.perf_counter() - t0
    if X.value is None:
        return _finish(Solution.unsolved(problem, "convex", "solver_failed",
                                         f"{solver} returned status {prob.status!r} and no solution; try "
                                         f"solver='SCS' with a looser tol, or method='prox'.",
                                         solver=solver, solver_status=prob.status), throw)
    Xv = np.asarray(X.value)
    bv = None if b is None else np.asarray(b.value)
    info = {"solver": solver, "solver_status": prob.status, "solve_time": elapsed, "solver_value": float(prob.value),
            "solver_rel_gap": certificate(form, Xv, bv)["rel_gap"], "polish_iterations": 0}
    if polish is not None and prob.status == cp.OPTIMAL:
        Xv, bv, info["polish_iterations"], _ = _fista(form, Xv, bv, polish, 2000, 5, False)
    try:
        sol = _recover(form, Xv, bv, "convex", "optimal", f"cvxpy/{solver} status {prob.status}.",
                       int(prob.solver_stats.num_iters or 0), info)
    except NotApplicable as err:        # d below the rank of the optimum: no factorization exists
        return _finish(Solution.unsolved(problem, "convex", "no_method", str(err)), throw)
    ok = prob.status == cp.OPTIMAL and sol.meta["rel_duality_gap"] < 1e-6
    if ok:
        return sol
    return _finish(sol.replace(status="inaccurate", message=sol.message + " Not certified optimal: tighten tol or "
                               "use method='prox'."), throw)


def _check_solver(solver) -> str:
    """``solver`` upper-cased, one of :data:`SOLVERS`."""
    if not isinstance(solver, str) or solver.upper() not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}.")
    return solver.upper()


def _finish(sol: Solution, throw: bool) -> Solution:
    """``sol``, or its exception when ``throw`` and it did not succeed."""
    return sol.raise_on_failure() if throw else sol


# -- singular-value thresholding and operator norms ------------------------------------------
#: ``prox(svd=...)`` choices (see :class:`_Spectral`).
SVD_MODES = ("auto", "classes", "partial", "full")

_PARTIAL_MIN = 64          # below this min(m, n) a full SVD is as cheap as anything else
_PARTIAL_FRACTION = 0.25   # the partial path gives up (full SVD) beyond this share of min(m, n)
_LANCZOS_MIN = 400         # below this min(m, n) the exact operator norm is cheaper than Lanczos
_PARTIAL_RES = 1e-11       # Ritz residuals (relative to s_1) accepted as converged singular triplets


class _Classes:
    """Exchangeable classes of a collapsed form: the algebra its optimum lies in (THEORY §4).

    In the collapsed form the data term depends on a class only through its count, so
    permuting classes of equal count (rows and columns of ``X`` together) maps the problem
    to itself. Averaging a minimizer over these permutations gives one that is invariant
    (convexity), and the prox of ``mu ||.||_*`` commutes with them; so FISTA can run on the
    invariant matrices. With groups ``g`` of ``m_g`` classes, an invariant ``X`` is
    ``sum_g a_g (I_g - J_g/m_g) + E Q E^T`` with ``E`` the normalised group indicators
    (``e_g = 1_g / sqrt(m_g)``, K x G) and ``Q`` a G x G matrix: its singular values are
    ``|a_g|`` (multiplicity ``m_g - 1``, on the vectors of group ``g`` that sum to 0) and
    those of ``Q``. A thresholding then costs a G x G SVD plus O(K^2) reading and writing.
    """

    def __init__(self, counts):
        _, self.grp, self.m = np.unique(np.asarray(counts), return_inverse=True, return_counts=True)
        self.G = len(self.m)
        self.order = np.argsort(self.grp, kind="stable")
        self.starts = np.concatenate([[0], np.cumsum(self.m)[:-1]])
        self.sq = np.sqrt(self.m.astype(float))
        self.multi = self.m > 1

    def split(self, A):
        """``(a, Q)`` of the invariant part of the K x K matrix ``A`` (its orthogonal projection)."""
        S = np.add.reduceat(np.add.reduceat(A[self.order], self.starts, axis=0)[:, self.order], self.starts,
                            axis=1)                                 # block sums
        tr = np.bincount(self.grp, weights=np.diagonal(A), minlength=self.G)
        m = self.m.astype(float)
        off = np.where(self.multi, (np.diagonal(S) - tr) / np.maximum(m * (m - 1), 1.0), 0.0)
        a = np.where(self.multi, tr / m - off, 0.0)
        return a, S / np.outer(self.sq, self.sq)

    def join(self, a, Q):
        """The K x K matrix with parts ``(a, Q)``."""
        M = Q / np.outer(self.sq, self.sq) - np.diag(a / self.m)
        out = M[self.grp][:, self.grp]
        out[np.diag_indices_from(out)] += a[self.grp]
        return out

    def opnorm_bound(self, A):
        """An upper bound of ``||A||_2``: that of the invariant part plus the Frobenius norm of the rest."""
        a, Q = self.split(A)
        inv = max(float(np.abs(a[self.multi]).max(initial=0.0)), _opnorm(Q))
        return inv + float(np.linalg.norm(A - self.join(a, Q)))

    def svd(self, X):
        """``U, S, Vt`` (K x K, S decreasing) of the invariant part of ``X``, built in O(K^2).

        On group ``g`` the zero-sum vectors are columns 2..m of the Householder reflection that
        swaps ``1/sqrt(m)`` and ``e_1`` (orthonormal, orthogonal to ``1``); the group part comes
        from the G x G SVD of ``Q`` carried by the normalised indicators.
        """
        a, Q = self.split(X)
        K = len(self.grp)
        U, V = np.zeros((K, K)), np.zeros((K, K))
        S = np.empty(K)
        col = 0
        for g in np.flatnonzero(self.multi):
            idx = np.flatnonzero(self.grp == g)
            m = len(idx)
            w = np.full(m, 1.0 / math.sqrt(m))
            w[0] -= 1.0
            basis = (np.eye(m) - 2.0 * np.outer(w, w) / (w @ w))[:, 1:]
            V[idx, col:col + m - 1] = basis
            U[idx, col:col + m - 1] = basis * (1.0 if a[g] >= 0 else -1.0)
            S[col:col + m - 1] = abs(a[g])
            col += m - 1
        Uq, Sq, Vqt = np.linalg.svd(Q)
        U[:, col:] = Uq[self.grp] / self.sq[self.grp, None]
        V[:, col:] = Vqt.T[self.grp] / self.sq[self.grp, None]
        S[col:] = Sq
        order = np.argsort(-S, kind="stable")
        return U[:, order], S[order], V[:, order].T

    def svt(self, X, tau):
        """Thresholding of the invariant part of ``X`` and its nuclear norm."""
        a, Q = self.split(X)
        a = np.sign(a) * np.maximum(np.abs(a) - tau, 0.0)
        U, S, Vt = np.linalg.svd(Q)
        S = np.maximum(S - tau, 0.0)
        nuc = float(((self.m - 1) * np.abs(a)).sum() + S.sum())
        return self.join(a, (U * S) @ Vt), nuc


class _Spectral:
    """How :func:`prox` thresholds singular values and bounds operator norms on one form.

    ``mode``:

    * ``"classes"``: the invariant algebra of exchangeable classes (:class:`_Classes`;
      collapsed forms where some classes share a count);
    * ``"partial"``: the leading singular triplets only, by subspace iteration warm-started
      from the previous call's right singular vectors, with a rank that adapts: the basis
      holds the singular values above the threshold plus a buffer; when the buffer fills
      up the rank doubles, and beyond ``_PARTIAL_FRACTION`` of ``min(m, n)`` (or when the
      triplets do not converge) it falls back to a full SVD. Triplets count as converged
      when ``||X v_i - s_i u_i|| <= _PARTIAL_RES s_1``; the result is then the exact
      thresholding to that accuracy, and whatever it is, the certificate is evaluated at
      the iterate actually produced (its nuclear norm is exact by construction);
    * ``"full"``: LAPACK's SVD at every call (the reference).

    ``stats`` counts the calls per path (``"full"`` counts fallbacks too) and the largest
    rank kept.
    """

    def __init__(self, form, svd="auto"):
        if svd not in SVD_MODES:
            raise ValueError(f"svd must be one of {SVD_MODES}, got {svd!r}.")
        self.classes = None
        if form.kind == "collapsed" and svd in ("auto", "classes"):
            cl = _Classes(1.0 / form.scale ** 2)
            if cl.G < len(cl.grp) or svd == "classes":
                self.classes = cl
        if svd == "classes" and self.classes is None:
            raise ValueError("svd='classes' needs a class-collapsed form (hard labels); use 'auto'.")
        self.mode = "classes" if self.classes is not None else ("full" if svd == "full" else "partial")
        self.small = min(form.shape) < _PARTIAL_MIN
        self.rank = None          # singular values above the threshold at the last call
        self.V = None             # right singular vectors kept for the next warm start
        self.rng = np.random.default_rng(0)
        self.wait, self.backoff = 0, 1   # full SVDs to do before the next partial attempt
        self.stats = {"classes": 0, "partial": 0, "full": 0, "grown": 0, "max_rank": 0}

    # the operator norm used inside the loop, and whether it is an upper bound
    @property
    def rigorous(self):
        return self.mode == "full" or self.small or self.mode == "classes"

    def opnorm(self, A):
        """``||A||_2`` (an upper bound in ``"classes"`` mode, a Lanczos estimate in ``"partial"``)."""
        if self.mode == "classes":
            return self.classes.opnorm_bound(A)
        if self.rigorous or min(A.shape) < _LANCZOS_MIN:
            return _opnorm(A)
        from scipy.sparse.linalg import ArpackNoConvergence, svds

        v0 = np.ones(min(A.shape)) / math.sqrt(min(A.shape))
        try:   # svds hands tol**2 to the eigensolver of A^T A (1e-10); near the optimum s_1 sits in a
            # cluster (the dual certificate's singular values gather at mu), where any Ritz value is close
            return float(svds(A, k=1, tol=1e-5, v0=v0, maxiter=200, return_singular_vectors=False)[0])
        except ArpackNoConvergence:
            return _opnorm(A)

    def nuclear(self, X):
        """``||X||_*`` (from the invariant parts in ``"classes"`` mode, where iterates are invariant)."""
        if not np.any(X):
            return 0.0
        if self.mode == "classes":
            a, Q = self.classes.split(X)
            return float(((self.classes.m - 1) * np.abs(a)).sum() + np.linalg.svd(Q, compute_uv=False).sum())
        return _nuclear(X)

    def project(self, X, b):
        """The start of the iteration moved into the invariant algebra (``"classes"`` mode).

        The average of ``(X, b)`` over the class permutations; its objective is no larger.
        """
        if self.classes is None:
            return X, b
        X = self.classes.join(*self.classes.split(X))
        if b is not None:
            cl = self.classes
            b = (np.bincount(cl.grp, weights=b, minlength=cl.G) / cl.m)[cl.grp]
        return X, b

    def svt(self, X, tau):
        """The prox of ``tau ||.||_*`` at ``X`` and the nuclear norm of the result."""
        if self.mode == "classes":
            self.stats["classes"] += 1
            return self.classes.svt(X, tau)
        lim = int(_PARTIAL_FRACTION * min(X.shape))
        if self.mode == "partial" and not self.small and self.rank is not None and self.wait == 0:
            k = self.rank + max(8, self.rank // 4)
            while k <= lim:
                out = self._partial(X, tau, k)
                if out is not None:
                    self.stats["partial"] += 1
                    self.backoff = 1
                    return out
                if out is None and self.V is None:     # did not converge: a larger basis will not help
                    break
                self.stats["grown"] += 1
                k *= 2
            # failed: full SVDs for the next calls, twice as many after every failure in a row
            self.wait, self.backoff = self.backoff, min(2 * self.backoff, 64)
        elif self.wait:
            self.wait -= 1
        return self._full(X, tau)

    def _full(self, X, tau):
        self.stats["full"] += 1
        U, S, Vt = np.linalg.svd(X, full_matrices=False)
        S = np.maximum(S - tau, 0.0)
        r = int(np.count_nonzero(S))
        self._keep(r, Vt[:r + 8])
        return (U[:, :r] * S[:r]) @ Vt[:r], float(S.sum())

    def _keep(self, r, Vt):
        self.rank = r
        self.V = Vt.T
        self.stats["max_rank"] = max(self.stats["max_rank"], r)

    def _partial(self, X, tau, k):
        """Thresholding from a ``k``-dimensional leading subspace, or None when ``k`` is too small.

        If the basis ``Q`` contains the left singular vectors of every singular value above
        ``tau``, then ``Q^T X`` is their block plus a compressed tail whose singular values stay
        at or below ``tau``, orthogonal to it on both sides, and ``Q svt(Q^T X)`` is exactly
        ``svt(X)``: only the kept triplets must converge, not the tail of the basis.
        """
        n = X.shape[1]
        Om = np.empty((n, k))
        w = 0 if self.V is None else min(k, self.V.shape[1])
        Om[:, :w] = self.V[:, :w]
        Om[:, w:] = self.rng.standard_normal((n, k - w))
        Q = np.linalg.qr(X @ Om)[0]
        for it in range(8):
            if it:  # one more power step on the basis
                Q = np.linalg.qr(X @ np.linalg.qr(X.T @ Q)[0])[0]
            Ub, S, Vt = np.linalg.svd(Q.T @ X, full_matrices=False)
            r = int(np.count_nonzero(S > tau))
            if r > k - max(4, k // 5):
                self.V = Vt.T           # no room left below the threshold: ask for a larger basis
                return None
            U = Q @ Ub[:, :r]
            res = np.linalg.norm(X @ Vt[:r].T - U * S[:r], axis=0).max(initial=0.0) / max(S[0], 1e-300)
            if res <= _PARTIAL_RES:
                self._keep(r, Vt)
                Sr = S[:r] - tau
                return (U * Sr) @ Vt[:r], float(Sr.sum())
            if it >= 2 and res > 1e-4:
                break                   # singular values crowd at the threshold: subspace iteration stalls
        self.V = None
        return None


# -- accelerated proximal gradient -----------------------------------------------------------

def _fista(form: Form, X, b, tol: float, max_iter: int, check_every: int, progress: bool, spec=None,
           start_optimal: bool = True):
    """FISTA with backtracking and adaptive restart from (X, b); returns (X, b, iterations, certificate).

    ``spec`` (a :class:`_Spectral`, full SVDs by default) does the thresholding and the operator
    norms of the certificates; when its norm is only an estimate, a gap at or below ``tol`` is
    confirmed with the exact norm before the iteration stops. ``start_optimal=False`` skips
    the certificate of the start (known not to be optimal, e.g. by the zero test).
    """
    spec = _Spectral(form, "full") if spec is None else spec
    X, b = spec.project(X, b)
    lam_b = form.lam_b if form.bias == "regularized" else 0.0
    # initial Lipschitz guess: the data Hessian is <= omega_j * (1/2 for CE, 1 for MSE) per column
    curv = form.loss.curvature
    if form.kind == "input_coupled":
        Lip = curv * float(np.max(form.omega)) * _opnorm(form.Phi) ** 2
    else:
        Lip = curv * float(np.max(form.omega * (form.scale ** 2 if form.scale is not None else 1.0)))
    if b is not None:
        Lip = max(Lip, curv * float(form.omega.sum()) + lam_b)
    Lip = max(Lip, 1e-12)

    def grad(Xv, bv):
        """Gradient of the smooth part (data term and bias decay) in X and b."""
        G = form.data_grad(form.logits(Xv, bv))
        return form.adj(G), (None if bv is None else G.sum(axis=1) + lam_b * bv)

    def check(X, b, nuc):
        c = _certify(form, X, b, nuc, spec.opnorm)
        if c["rel_gap"] <= tol and not spec.rigorous:
            c = _certify(form, X, b, nuc, _opnorm)
        return c

    Yx, Yb = X.copy(), None if b is None else b.copy()
    t = 1.0
    cert = check(X, b, spec.nuclear(X)) if start_optimal or max_iter < 1 else {"rel_gap": math.inf}
    nuc, it = None, 0
    bar = Progress(progress, None, "ufm.solve (prox)")
    while cert["rel_gap"] > tol and it < max_iter:
        it += 1
        gX, gb = grad(Yx, Yb)
        while True:                       # backtracking on the Lipschitz estimate
            Xn, nuc_n = spec.svt(Yx - gX / Lip, form.mu / Lip)
            bn = None if Yb is None else Yb - gb / Lip
            # accept when the gradient changed by at most Lip * step (the Lipschitz condition itself:
            # unlike the function-value test it does not drown in rounding near the optimum)
            gXn, gbn = grad(Xn, bn)
            dg = float(np.sum((gXn - gX) ** 2))
            dx = float(np.sum((Xn - Yx) ** 2))
            if bn is not None:
                dg += float(np.sum((gbn - gb) ** 2))
                dx += float(np.sum((bn - Yb) ** 2))
            if dg <= Lip * Lip * dx * (1 + 1e-12):
                break
            Lip *= 2.0
        # gradient-based adaptive restart (O'Donoghue & Candes 2015): drop the momentum when the
        # step goes against the previous direction; robust where objective changes are below rounding
        back = float(np.sum((Yx - Xn) * (Xn - X)))
        if bn is not None:
            back += float((Yb - bn) @ (bn - b))
        t_next = 1.0 if back > 0 else 0.5 * (1 + math.sqrt(1 + 4 * t * t))
        mom = 0.0 if back > 0 else (t - 1) / t_next
        Yx = Xn + mom * (Xn - X)
        Yb = None if bn is None else bn + mom * (bn - b)
        X, b, t, nuc = Xn, bn, t_next, nuc_n
        Lip *= 0.95                      # let the step grow again
        if it % check_every == 0 or it == max_iter:
            cert = check(X, b, nuc)
            bar.note(f"iteration {it}, relative gap {cert['rel_gap']:.2e}")
    bar.close()
    return X, cert["b"], it, cert


def prox(problem, *, tol: float = 1e-6, max_iter: int = 20_000, reduce="auto", check_every: int = 10,
         progress="auto", svd: str = "auto", throw: bool = False) -> Solution:
    """Global optimum by accelerated proximal gradient (FISTA with restarts) on (4.1).

    Each iteration takes a gradient step on the smooth part (data term and bias
    decay, step from a backtracking estimate of the Lipschitz constant) and the
    proximal step of ``mu ||X||_*`` (singular-value soft-thresholding,
    ``U diag((s - tau)_+) V^T``). Momentum restarts when a step turns against the
    previous one (gradient restart, O'Donoghue & Candes 2015). It stops when the certified relative duality gap
    of :func:`certificate` is at most ``tol`` (checked every ``check_every`` iterations).

    The thresholding needs only the singular values above ``tau``. With hard
    labels, classes of equal count are exchangeable: an optimum is invariant under
    permuting them, and so is every iterate, whose singular values then take one
    value per group of equal counts on the vectors that sum to zero within the group
    plus those of a G x G matrix (G distinct counts); a thresholding costs a G x G
    SVD and O(K^2) work. Otherwise the leading singular triplets are computed by
    subspace iteration with a rank that grows until the basis holds every singular
    value above the threshold, and a full SVD is used when that rank exceeds a
    quarter of the matrix's smaller side. The certificate is evaluated at the
    iterate produced, so the certified gap does not depend on this choice; where
    its operator norm is estimated (Lanczos), the final gap is checked with the
    exact norm.

    The certificate bounds the objective; the iterate itself (and the Grams of
    ``W, H``) is then accurate to about ``sqrt(tol)`` relative, so ask for a tight
    ``tol`` (1e-10 costs a few times the iterations of 1e-6) when comparing geometry.

    Parameters
    ----------
    problem : UFMProblem or InputCoupledUFM
        Regularized (``mu > 0``); any labels, counts and bias.
    tol : float
        Target relative duality gap.
    max_iter : int
        Iteration limit.
    reduce : "auto", True or False
        Class-collapsed form for hard labels (see :func:`form_of`).
    check_every : int
        Iterations between two certificates.
    progress : {"auto", True, False}
        A progress display (tqdm when installed, else lines on stderr; never stdout):
        ``"auto"`` (default) once the work has run 2 s, ``True`` from the start,
        ``False`` never. Every ``ufm`` entry point takes the same values.
    svd : {"auto", "classes", "partial", "full"}
        How singular values are thresholded: ``"auto"`` uses ``"classes"`` for
        hard labels with repeated counts and ``"partial"`` otherwise;
        ``"classes"``: the exchangeable-class algebra (hard labels only);
        ``"partial"``: leading triplets with a growing rank and a full-SVD
        fallback; ``"full"``: LAPACK's SVD at every step (the reference).
    throw : bool
        Raise :class:`~ufm.results.NoMethodApplies` or :class:`~ufm.results.NotConverged`
        (with the result) instead of returning a result with ``success=False``.

    Returns
    -------
    Solution
        ``method="prox"``; ``status`` ``optimal``, or ``max_iter`` (with the gap
        reached) when ``max_iter`` runs out, or ``no_method`` when the problem
        has no convex form. ``meta`` holds the duality gap, the
        stationarity residuals and ``meta["svd"]``: the mode used and how many
        thresholdings took each path (``"full"`` includes the fallbacks).
    """
    check_progress(progress)
    tol = check_positive("tol", tol, "the target relative duality gap, e.g. 1e-6")
    max_iter = check_int("max_iter", max_iter, 1)
    check_every = check_int("check_every", check_every, 1)
    throw = check_bool("throw", throw)
    try:
        form = form_of(problem, reduce)
    except NotApplicable as err:
        return _finish(Solution.unsolved(problem, "prox", "no_method", str(err)), throw)
    spec = _Spectral(form, svd)
    zero = _zero_solution(form, "prox", spec)
    if zero is not None:
        return zero
    t0 = time.perf_counter()
    b0 = None if form.bias == "none" else np.zeros(form.T.shape[0])
    X, b, it, cert = _fista(form, np.zeros(form.shape), b0, tol, max_iter, check_every, progress, spec, False)
    elapsed = time.perf_counter() - t0
    ok = cert["rel_gap"] <= tol
    msg = (f"FISTA converged in {it} iterations ({elapsed:.3g} s)." if ok else
           f"FISTA stopped at max_iter={max_iter} with relative gap {cert['rel_gap']:.2e} > tol={tol:g}; "
           f"raise max_iter or loosen tol.")
    try:
        sol = _recover(form, X, b, "prox", "optimal" if ok else "max_iter", msg, it,
                       {"tol": tol, "solve_time": elapsed, "svd": {"mode": spec.mode, **spec.stats}},
                       cert if spec.rigorous or ok else None, spec)
    except NotApplicable as err:        # d below the rank of the optimum: no factorization exists
        sol = Solution.unsolved(problem, "prox", "no_method", str(err))
    return _finish(sol, throw)


# -- max-margin limits ---------------------------------------------------------------------
def svm(problem, *, solver: str = "CLARABEL", throw: bool = False) -> Solution:
    """The max-margin limit of an unregularized CE problem (the direction gradient descent converges to).

    * Standard UFM, hard labels, any counts: the nuclear-norm SVM (3.2),
      ``min ||Z||_* s.t. Z_{y_i,i} - Z_{c,i} >= 1``, solved in class-collapsed form;
      its solution is SELI, ``P_K Y`` (THEORY §3.2).
    * Soft labels (NTP, THEORY §5.2): the in-support logits ``L_in`` (explicit), the
      NTP-SVM (5.2) ``L_mm`` (depends only on the supports), and the centred
      support-matrix proxy ``S~ = P_V S``; ``Z`` is ``L_mm``.
    * Input-coupled UFM: ``min ||M||_* s.t. margins(M Phi) >= 1`` (THEORY §8.2).

    Parameters
    ----------
    problem : UFMProblem or InputCoupledUFM
        CE loss, no weight decay, no bias.
    solver : {"CLARABEL", "SCS"}
        The cvxpy solver.
    throw : bool
        Raise :class:`~ufm.results.NoMethodApplies` or :class:`~ufm.results.NotConverged`
        (with the result) instead of returning a result with ``success=False``.

    Returns
    -------
    Solution
        ``W, H`` are the balanced split with ratio 1 (``A`` too for the input-coupled
        model); ``objective`` is the max-margin value ``||.||_*``; ``regime`` is
        ``"max_margin"``, ``"seli"`` or ``"ntp_svm"``. ``status`` is ``optimal``
        (``inaccurate`` when the solver is not sure), ``solver_failed`` when the
        margins cannot be met or the solver fails, ``no_method`` when the problem
        is not an unregularized CE problem. For soft labels ``meta``
        holds ``L_in``, ``support_proxy`` (``S~``), ``cos_to_proxy`` and ``nuclear_proxy``.
    """
    solver = _check_solver(solver)
    throw = check_bool("throw", throw)
    ok, why = applies_svm(problem)
    if not ok:
        return _finish(Solution.unsolved(problem, "svm", "no_method", why), throw)
    meta = {"problem": problem.as_dict(), "solver": solver, "objective": "max-margin value (nuclear norm)"}
    try:
        sol = _SVM_PROGRAMS[problem.model](problem, solver, meta)
    except NotConverged as err:         # infeasible margins, or the solver failed
        sol = Solution.unsolved(problem, "svm", "solver_failed", str(err), solver=solver)
    return _finish(sol, throw)


def _svm_input_coupled(p, solver, meta):
    """``min ||M||_* s.t. margins(M Phi) >= 1`` (THEORY §8.2)."""
    import cvxpy as cp

    M = cp.Variable((p.K, p.p))
    Z = M @ p.Phi
    cons = _margin_constraints(Z, p.y, p.K)
    prob = cp.Problem(cp.Minimize(cp.normNuc(M)), cons)
    _solve(prob, solver)
    Mv = np.asarray(M.value)
    W, A = balanced_split(Mv, p.d, 0.0, 0.0, rank_tol=1e-8, floor=1e-300, name="M")
    H = A @ p.Phi
    meta.update(solver_status=prob.status, nuclear=float(prob.value))
    return Solution(W=W, H=H, b=None, Z=W @ H, A=A, objective=float(prob.value), status=_svm_status(prob),
                    regime="max_margin", message="Max-margin end state of the input-coupled UFM (no weight "
                    "decay): the direction of W A Phi under gradient descent.", method="svm", meta=meta,
                    citation="THEORY §8.2; Lyu & Li 2020; Ji & Telgarsky 2020")


def _svm_ufm(p, solver, meta):
    """The nuclear-norm SVM (3.2) for hard labels (class-collapsed), the NTP-SVM for soft ones."""
    import cvxpy as cp

    if not p.soft:
        counts = np.asarray(p.counts, dtype=float)
        Zb = cp.Variable((p.K, p.K))
        cons = _margin_constraints(Zb, np.arange(p.K), p.K)
        prob = cp.Problem(cp.Minimize(cp.normNuc(Zb @ np.diag(np.sqrt(counts)))), cons)
        _solve(prob, solver)
        Z = np.asarray(Zb.value)[:, p.y]
        W, H = balanced_split(Z, p.d, 0.0, 0.0)
        sel = centering_matrix(p.K) @ p.Y
        meta.update(solver_status=prob.status, nuclear=float(prob.value),
                    distance_to_seli=float(np.abs(Z - sel).max()))
        return Solution(W=W, H=H, b=None, Z=W @ H, objective=float(prob.value), status=_svm_status(prob),
                        regime="seli", message="Nuclear-norm SVM (3.2) of the unregularized CE UFM; SELI predicts "
                        f"P_K Y (max deviation {meta['distance_to_seli']:.1e}).", method="svm", meta=meta,
                        citation="THEORY §3.2; Thrampoulidis et al. 2022, arXiv 2208.05512")
    return _ntp_svm(p, solver, meta)


#: The max-margin program of each model (by ``problem.model``; :meth:`svm_applies` says whether it holds).
_SVM_PROGRAMS = {"ufm": _svm_ufm, "input_coupled": _svm_input_coupled}


def _solve(prob, solver):
    import cvxpy as cp

    try:
        prob.solve(solver=solver, **({"eps_abs": 1e-10, "eps_rel": 1e-10, "max_iters": 200_000}
                                    if solver == "SCS" else {}))
    except cp.error.SolverError as err:
        raise NotConverged(f"cvxpy solver {solver} failed: {err}") from err
    if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise NotConverged(f"the max-margin program is {prob.status} with {solver}; the margins cannot be met "
                           "(check the labels: every class needs an example) or the solver failed.")


def _svm_status(prob) -> str:
    import cvxpy as cp

    return "optimal" if prob.status == cp.OPTIMAL else "inaccurate"


def _margin_constraints(Z, y, K):
    """Z[y_i, i] - Z[c, i] >= 1 for every column i and every c != y_i (vectorized)."""
    import cvxpy as cp

    y = np.asarray(y)
    m = len(y)
    Yh = np.zeros((K, m))
    Yh[y, np.arange(m)] = 1.0

    picked = cp.sum(cp.multiply(Yh, Z), axis=0)                       # Z[y_i, i]
    gaps = cp.reshape(picked, (1, m), order="C") - Z                  # row c: Z[y_i,i] - Z[c,i]
    mask = 1.0 - Yh
    return [cp.multiply(mask, gaps) >= mask]


def _ntp_svm(p, solver, meta):
    import cvxpy as cp

    Y = p.Y
    V, m = Y.shape
    S = (Y > 0).astype(float)
    Lin = np.zeros((V, m))
    for j in range(m):
        sup = np.flatnonzero(S[:, j])
        lp = np.log(Y[sup, j])
        Lin[sup, j] = lp - lp.mean()
    L = cp.Variable((V, m))
    cons = []
    for j in range(m):
        sup = np.flatnonzero(S[:, j])
        out = np.flatnonzero(S[:, j] == 0)
        if sup.size > 1:
            cons.append(L[sup[1:], j] == L[sup[0], j])
        if out.size:
            cons.append(L[sup[0], j] - L[out, j] >= 1)
    prob = cp.Problem(cp.Minimize(cp.normNuc(L)), cons)
    _solve(prob, solver)
    Lmm = np.asarray(L.value)
    St = centering_matrix(V) @ S
    cos = float(np.sum(Lmm * St) / (np.linalg.norm(Lmm) * np.linalg.norm(St)))
    W, H = balanced_split(Lmm, p.d, 0.0, 0.0)
    meta.update(solver_status=prob.status, nuclear=float(prob.value), L_in=Lin.tolist(),
                support_proxy=St.tolist(), cos_to_proxy=cos, nuclear_proxy=_nuclear(St))
    return Solution(W=W, H=H, b=None, Z=W @ H, objective=float(prob.value), status=_svm_status(prob),
                    regime="ntp_svm", message=f"NTP-SVM (5.2): the out-of-support logits L_mm; cos(L_mm, S~) = "
                    f"{cos:.5f}. meta holds L_in and the centred support proxy S~.", method="svm", meta=meta,
                    citation="THEORY §5.2; Thrampoulidis 2024, arXiv 2402.18551; Zhao et al. 2024, arXiv 2408.15417")


# -- applicability (for ufm.solve) -------------------------------------------------------------
def applies_convex(problem) -> tuple[bool, str]:
    """Whether :func:`convex` (and :func:`prox`) can solve ``problem``, and why.

    Parameters
    ----------
    problem : object
        Any model of :mod:`ufm.problems`.

    Returns
    -------
    tuple of (bool, str)
        ``(applies, reason)``.
    """
    try:
        form_of(problem)
    except NotApplicable as err:
        return False, str(err)
    return True, "convex form (4.1)"


applies_prox = applies_convex


def applies_svm(problem) -> tuple[bool, str]:
    """Whether :func:`svm` covers ``problem`` (CE without weight decay or bias), and why.

    Parameters
    ----------
    problem : object
        Any model of :mod:`ufm.problems`.

    Returns
    -------
    tuple of (bool, str)
        ``(applies, reason)``.
    """
    if not callable(getattr(problem, "svm_applies", None)):          # input validation: not a UFM model
        return False, f"needs a UFMProblem, got {type(problem).__name__}"
    return problem.svm_applies()
