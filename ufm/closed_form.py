"""Closed-form global optima of the UFM (THEORY §1-§4).

Every case here takes a problem from :mod:`ufm.problems` and returns a
frozen :class:`ufm.results.Solution`, or raises :class:`NotApplicable` (the
name the cases give :class:`ufm.results.NoMethodApplies`) with the reason it
does not apply. :func:`solve` tries them in turn and returns a result either
way (status ``no_method`` when none applies); users normally call
``ufm.solve(problem, method="closed_form")``.

Method, shared by all cases: the optimal logits ``Z*`` (and bias ``b*``) are
known in closed form; ``W, H`` are then the balanced split of THEORY §4::

    Z* = U S V^T,   W = (lam_H/lam_W)^{1/4} U S^{1/2} R^T,   H = (lam_W/lam_H)^{1/4} R S^{1/2} V^T,

with ``R`` the first ``rank(Z*)`` coordinate axes of R^d (any partial isometry
gives another global minimizer). This needs ``d >= rank(Z*)``; when the
regularizers vanish the split uses ratio 1 (the minimum-norm factorization).

Conventions: halved regularizers and means over the N examples (THEORY §0.1);
``gamma = sqrt(n lam_W lam_H)``, ``mu = sqrt(lam_W lam_H)``. The scalar formulas
are the expressions of :mod:`ufm.symbolic`, evaluated with ``sympy.lambdify``.

Cases
-----
* :func:`ce_balanced`: balanced CE with weight decay: zero regime (K gamma >= 1) or
  simplex ETF with margin s* = log(1/gamma - (K-1)) (THEORY §1.2).
* :func:`seli`: unregularized CE, any class counts: the max-margin limit
  Z = P_K Y (SELI, THEORY §3.2); a simplex ETF when balanced.
* :func:`mse`: MSE without bias, with a free bias (any labels, singular-value
  soft-thresholding, THEORY §2.2) or with a regularized bias
  (balanced, the ETF -> orthogonal-frame regime change at lam_b*).
* :func:`layer_peeled`: the norm-constrained layer-peeled model, balanced (THEORY §1.3).
* :func:`input_coupled`: the input-coupled UFM with a feature penalty ``lam_H`` and
  ``lam_A = 0``, ``Phi`` of full column rank: the standard UFM optimum of the cases above
  with ``lam_W``, ``lam_H``, whatever ``Phi`` is (THEORY §8.2b).

Minority collapse (THEORY §3.1) has no closed-form threshold at finite
imbalance in THEORY: only the R -> infinity statement of Fang et al. and the
numerical table TV11. It is therefore left to the convex solvers.
"""

from __future__ import annotations

import math

import numpy as np

from . import losses
from ._checks import check_bool
from ._util import RANK_RTOL, numerical_rank
from .metrics import centering_matrix
from .problems import InputCoupledUFM, LayerPeeledProblem, UFMProblem
from .results import NoMethodApplies, Solution

__all__ = ["NotApplicable", "solve", "applies", "ce_balanced", "seli", "mse", "layer_peeled", "input_coupled",
           "thresholds", "balanced_split", "CASES"]

NotApplicable = NoMethodApplies   # what a case raises when it does not cover a problem; solve() returns a result


# -- shared pieces ------------------------------------------------------------
def balanced_split(Z: np.ndarray, d: int, lam_W: float, lam_H: float, *, rank_tol: float = RANK_RTOL,
                   floor: float = 1.0, name: str = "Z*"):
    """Factor ``Z = W H`` with the balanced split of THEORY §4.

    ``W W^T = sqrt(lam_H/lam_W) (Z Z^T)^{1/2}`` and ``H^T H = sqrt(lam_W/lam_H) (Z^T Z)^{1/2}``,
    so ``lam_W/2 ||W||^2 + lam_H/2 ||H||^2 = sqrt(lam_W lam_H) ||Z||_*``. With
    ``lam_W = lam_H = 0`` the ratio is 1 (the minimum of ``(||W||^2 + ||H||^2)/2``).
    The same split of ``M = W A`` gives the input-coupled factors (THEORY §8.2 (b)).

    Parameters
    ----------
    Z : ndarray (K, N)
        The matrix to factor (optimal logits, or ``M`` of the input-coupled model).
    d : int
        Inner dimension (feature dimension).
    lam_W, lam_H : float
        Weight decays (halved); they set the ratio of the two factors.
    rank_tol : float
        Singular values at most ``rank_tol * max(s_1, floor)`` count as zero.
    floor : float
        Lower bound of the scale in that test.
    name : str
        Names the matrix in the error message.

    Returns
    -------
    W : ndarray (K, d)
        Left factor.
    H : ndarray (d, N)
        Right factor.

    Raises
    ------
    NotApplicable
        If ``d < rank(Z)``: the split does not exist and the convex value is
        only a lower bound (THEORY §4).
    """
    U, S, Vt = np.linalg.svd(Z, full_matrices=False)
    r = numerical_rank(S, rank_tol, floor)
    if r > d:
        raise NotApplicable(
            f"d={d} is below rank({name})={r}: the optimum needs d >= {r}. "
            f"Increase d, or use a rank-constrained solver (the convex value is then only a lower bound)."
        )
    q = (lam_H / lam_W) ** 0.25 if (lam_W > 0 and lam_H > 0) else 1.0
    root = np.sqrt(S[:r])
    W = np.zeros((Z.shape[0], d))
    H = np.zeros((d, Z.shape[1]))
    W[:, :r] = q * U[:, :r] * root
    H[:r, :] = (root[:, None] * Vt[:r]) / q
    return W, H


def _sym(name):
    from . import symbolic

    return getattr(symbolic, name)


def _num(expr, **values) -> float:
    from . import symbolic

    return symbolic.numeric(expr, **values)


def _svt(Y: np.ndarray, tau: float) -> np.ndarray:
    """Singular-value soft-thresholding: the prox of tau ||.||_* at Y."""
    U, S, Vt = np.linalg.svd(Y, full_matrices=False)
    return (U * np.maximum(S - tau, 0.0)) @ Vt


def _solution(problem, Z, b, loss, geometry, message, citation, **meta) -> Solution:
    lam_W = getattr(problem, "lam_W", 0.0)
    lam_H = getattr(problem, "lam_H", 0.0)
    W, H = balanced_split(Z, problem.d, lam_W, lam_H)
    Zfull = losses.logits(W, H, b)
    meta = {"problem": problem.as_dict(), "objective": meta.pop("objective", "regularized UFM objective (0.1)"),
            **meta}
    return Solution(W=W, H=H, b=b, Z=Zfull, objective=float(loss), status="exact", regime=geometry,
                    message=message, method="closed_form", nit=0, meta=meta, citation=citation)


def _require(cond: bool, reason: str):
    if not cond:
        raise NotApplicable(reason)


def _require_ufm(problem):
    # input validation: the closed forms are derived for the standard model only (not its subclasses)
    _require(type(problem) is UFMProblem,
             f"closed forms cover the standard UFMProblem, not {type(problem).__name__} "
             "(its optimum needs a numerical solver)")


def _require_case(problem, case: str):
    """The loss says which closed forms hold for it (``Loss.closed_forms``)."""
    _require(case in problem.loss.closed_forms, f"the loss {problem.loss} has no closed form {case!r}")


# -- balanced cross-entropy ---------------------------------------------------
def ce_balanced(problem: UFMProblem) -> Solution:
    """Balanced CE UFM with weight decay (THEORY §1.2; Zhu et al. 2021, arXiv 2105.02375).

    Applies to hard, balanced labels, ``loss="ce"``, ``lam_W, lam_H > 0``, no
    bias or a bias (with ``lam_b > 0`` the optimal bias is 0; with ``lam_b = 0``
    any ``b 1_K`` is optimal and 0 is returned). Halved regularizers.

    * Zero regime, ``K gamma >= 1``: ``W = H = 0``, objective ``log K``.
    * Collapse regime, ``K gamma < 1``: simplex ETF with margin
      ``s* = log(1/gamma - (K-1))``, logits ``Z* = s* P_K Y``, ``||w_k||^2 =
      t* sqrt(n lam_H/lam_W)``, ``h_{k,i} = sqrt(lam_W/(n lam_H)) w_k``,
      objective ``-log(1-(K-1)gamma) + (K-1) gamma s*``. Needs ``d >= K-1``.

    Parameters
    ----------
    problem : UFMProblem
        Balanced hard labels, CE, positive weight decays.

    Returns
    -------
    Solution
        ``regime`` ``"zero"`` or ``"etf"``; ``meta`` holds gamma, K*gamma and every
        closed-form quantity of :func:`ufm.symbolic.ce_optimum` (``s``, ``t``, ``w_sq``,
        ``h_sq``, ...).
    """
    _require_ufm(problem)
    _require_case(problem, "ce_balanced")
    _require(not problem.soft, "soft labels have no closed form (use a convex solver)")
    _require(problem.balanced, f"classes are imbalanced (counts {list(problem.counts)}); "
                               "no closed form with weight decay (minority collapse, THEORY §3.1)")
    _require(problem.lam_W > 0 and problem.lam_H > 0,
             "needs lam_W > 0 and lam_H > 0 (with both 0 see the 'seli' max-margin limit; "
             "with one 0 the infimum is not attained)")
    K, n = problem.K, problem.n
    params = dict(K=K, n=n, lam_W=problem.lam_W, lam_H=problem.lam_H)
    gamma = _num(_sym("ce_optimum")()["gamma"], **params)
    b = np.zeros(K) if problem.bias else None
    bias_note = ""
    if problem.free_bias:
        bias_note = " The bias is free (lam_b = 0): any b = c 1_K is optimal too; b = 0 is returned."
    citation = "THEORY §1.2 (DER, TV1); Zhu et al. 2021, arXiv 2105.02375"
    if K * gamma >= 1:
        Z = np.zeros((K, problem.N))
        return _solution(problem, Z, b, math.log(K), "zero",
                         f"Zero regime: K*gamma = {K * gamma:.6g} >= 1, so W = H = 0 is the unique global "
                         f"minimizer with objective log K.{bias_note}",
                         citation, gamma=gamma, K_gamma=K * gamma, regime="zero")
    q = {k: _num(e, **params) for k, e in _sym("ce_optimum")().items()}
    Z = q["s"] * centering_matrix(K) @ problem.Y
    if problem.d < K - 1:
        raise NotApplicable(f"the ETF optimum needs d >= K-1 = {K - 1}, got d={problem.d}")
    return _solution(problem, Z, b, q["f"], "etf",
                     f"Collapse regime: K*gamma = {K * gamma:.6g} < 1; simplex ETF with margin "
                     f"s* = {q['s']:.10g} and ||w_k||^2 = {q['w_sq']:.10g}.{bias_note}",
                     citation, K_gamma=K * gamma, regime="etf", **q)


# -- unregularized CE: SELI ---------------------------------------------------
def seli(problem: UFMProblem) -> Solution:
    """Max-margin limit of the unregularized CE UFM: SELI (THEORY §3.2, (3.1)-(3.2)).

    Applies to ``loss="ce"``, hard labels with any class counts,
    ``lam_W = lam_H = 0``, no bias. The CE objective then has no minimizer;
    gradient descent diverges in the direction of the UFM-SVM solution (3.1),
    whose logits are the simplex-encoded label matrix ``Z = P_K Y``
    (Thrampoulidis et al. 2022, arXiv 2208.05512). Balanced classes give the
    simplex ETF with ``W W^T = sqrt(n) P_K``. Needs ``d >= K-1``.

    Parameters
    ----------
    problem : UFMProblem
        CE, hard labels, no weight decay, no bias.

    Returns
    -------
    Solution
        ``W, H`` with ``W H = P_K Y``, ``W W^T = (Z Z^T)^{1/2}``, ``H^T H = (Z^T Z)^{1/2}``;
        ``objective`` is the max-margin value ``(||W||^2 + ||H||^2)/2 = ||P_K Y||_*``.
    """
    _require_ufm(problem)
    _require_case(problem, "seli")
    _require(not problem.soft, "soft labels lead to the NTP-SVM, which has no closed form (THEORY §5.2)")
    _require(problem.lam_W == 0 and problem.lam_H == 0, "applies only without weight decay on W and H")
    _require(not problem.bias, "applies only without a bias")
    Z = centering_matrix(problem.K) @ problem.Y
    nuclear = float(np.linalg.svd(Z, compute_uv=False).sum())
    geometry = "the simplex ETF (balanced classes)" if problem.balanced else "SELI (not an ETF: classes are imbalanced)"
    return _solution(problem, Z, None, nuclear, "seli",
                     f"Unregularized CE: no finite minimizer; the max-margin direction is {geometry}. "
                     f"loss is the UFM-SVM value ||P_K Y||_* = {nuclear:.10g}.",
                     "THEORY §3.2 (LIT, TV3); Thrampoulidis, Kini, Vakilian, Behnia 2022, arXiv 2208.05512; "
                     "Ji et al. 2021, arXiv 2110.02796",
                     objective="max-margin value of the UFM-SVM (3.1), = ||Z||_*", nuclear=nuclear)


# -- MSE -------------------------------------------------------------------------
def mse(problem: UFMProblem) -> Solution:
    """MSE UFM, ``1/(2N)||W H + b 1^T - Y||^2`` + halved weight decays (THEORY §2.1-2.2).

    * No bias, any labels (balanced, imbalanced or soft):
      ``Z* = SVT(Y, N mu)``, singular-value soft-thresholding with ``mu = sqrt(lam_W lam_H)``.
      Balanced: ``Z* = (1 - K gamma)_+ Y``, an orthogonal frame (Tirer & Bruna 2022).
    * Free bias (``lam_b = 0``), any labels: ``Z* = SVT(Y P_N, N mu)`` with
      ``P_N`` the centring of columns, ``b* = (Y - Z*) 1 / N``. Balanced: simplex
      ETF ``Z* = (1 - K gamma)_+ P_K Y`` and ``b* = 1_K / K``.
    * Regularized bias (``lam_b > 0``), balanced only: ``Z* = [alpha P_K + beta J_K/K] (x) 1_n^T``,
      ``b* = c 1_K`` with ``alpha = (1 - K gamma)_+``; an ETF (``beta = 0``,
      ``c = 1/(K(1+lam_b))``) for ``lam_b <= lam_b* = K gamma/(1 - K gamma)``, and
      ``beta = 1 - K gamma (1 + 1/lam_b)``, ``c = gamma/lam_b`` above it.

    Needs ``lam_W, lam_H`` both positive or both 0 (one alone is an infimum
    that is not attained), and ``d >= rank(Z*)`` (K without a bias, K-1 with a free one).

    Parameters
    ----------
    problem : UFMProblem
        MSE loss.

    Returns
    -------
    Solution
        ``regime`` names the geometry; ``meta`` holds the closed-form quantities.
    """
    _require_ufm(problem)
    _require_case(problem, "mse")
    _require((problem.lam_W > 0) == (problem.lam_H > 0),
             "lam_W and lam_H must be both positive or both 0 (with one of them 0 the infimum is "
             "approached by rescaling W and H but never attained)")
    K, N, mu, Y = problem.K, problem.N, problem.mu, problem.Y
    citation = ("THEORY §2.2 (DER, TV2); Tirer & Bruna 2022, arXiv 2202.08087; "
                "Zhou et al. 2022, arXiv 2203.01238")
    if problem.bias and problem.lam_b > 0:
        return _mse_regularized_bias(problem, citation)
    if problem.bias:
        Z = _svt(Y - Y.mean(axis=1, keepdims=True), N * mu)
        b = (Y - Z).mean(axis=1)
    else:
        Z, b = _svt(Y, N * mu), None
    Zb = Z if b is None else Z + b[:, None]
    loss = losses.data_loss(problem, Zb) + mu * np.linalg.svd(Z, compute_uv=False).sum()
    meta = {"mu": mu, "threshold": N * mu}
    if problem.balanced:
        gamma = problem.gamma
        case = "free" if problem.bias else "none"
        q = {k: _num(e, K=K, gamma=gamma) for k, e in _sym("mse_optimum")(case).items()}
        if K * gamma >= 1:
            q.update(alpha=0.0, beta=0.0, f=_num(_sym("mse_scalar_objective")(case), K=K, gamma=gamma,
                                                alpha=0.0, beta=0.0, c=q["c"]))
        meta.update(gamma=gamma, K_gamma=K * gamma, **q)
        loss = q["f"]
    zero = not np.any(Z)
    if zero:
        status = "zero"
    elif problem.bias:
        status = "etf" if problem.balanced else "svt"
    else:
        status = "orthogonal_frame" if problem.balanced else "svt"
    what = {"zero": "zero logits (every singular value of the label matrix is below N*mu)",
            "etf": "simplex ETF (free bias)", "orthogonal_frame": "orthogonal frame (no bias)",
            "svt": "singular-value soft-thresholding of the label matrix"}[status]
    return _solution(problem, Z, b, loss, status,
                     f"MSE optimum: {what}; threshold N*mu = {N * mu:.6g}.", citation, **meta)


def _mse_regularized_bias(problem: UFMProblem, citation: str) -> Solution:
    _require(problem.balanced and not problem.soft,
             "a regularized bias (lam_b > 0) has a closed form for balanced hard labels only")
    K, n, gamma, lam_b = problem.K, problem.n, problem.gamma, problem.lam_b
    if K * gamma < 1:
        lam_b_star = _num(_sym("mse_bias_threshold")(), K=K, gamma=gamma)
        regime = "low" if lam_b <= lam_b_star else "high"
        q = {k: _num(e, K=K, gamma=gamma, lam_b=lam_b) for k, e in _sym("mse_optimum")("regularized", regime).items()}
    else:  # zero regime: alpha = beta = 0, only the bias fits the label mean
        lam_b_star, regime = math.inf, "zero"
        q = {"alpha": 0.0, "beta": 0.0, "c": 1.0 / (K * (1.0 + lam_b))}
        q["f"] = _num(_sym("mse_scalar_objective")("regularized"), K=K, gamma=gamma, lam_b=lam_b, **q)
    Zbar = q["alpha"] * centering_matrix(K) + q["beta"] * np.ones((K, K)) / K
    Z = np.kron(Zbar, np.ones((1, n)))
    b = np.full(K, q["c"])
    status = {"low": "etf", "high": "etf_to_orthogonal_frame", "zero": "zero"}[regime]
    msg = {"low": f"lam_b = {lam_b:g} <= lam_b* = {lam_b_star:.6g}: simplex ETF with b = {q['c']:.6g} 1_K.",
           "high": f"lam_b = {lam_b:g} > lam_b* = {lam_b_star:.6g}: beta = {q['beta']:.6g} > 0, the geometry "
                   f"moves from the ETF toward an orthogonal frame as lam_b grows.",
           "zero": f"Zero regime K*gamma = {K * gamma:.6g} >= 1: W = H = 0, b = {q['c']:.6g} 1_K."}[regime]
    return _solution(problem, Z, b, q["f"], status, "MSE optimum with regularized bias: " + msg, citation,
                     gamma=gamma, K_gamma=K * gamma, lam_b_star=lam_b_star, regime=regime, **q)


# -- layer-peeled --------------------------------------------------------------
def layer_peeled(problem: LayerPeeledProblem) -> Solution:
    """Balanced layer-peeled model with energy constraints (THEORY §1.3; Fang et al. 2021, arXiv 2101.12699).

    The minimizer is a simplex ETF with ``||w_k||^2 = E_W``, ``h_{k,i} =
    sqrt(E_H/E_W) w_k``, margin ``s = K sqrt(E_H E_W)/(K-1)`` and loss
    ``log(1 + (K-1) exp(-s))``. Needs balanced classes and ``d >= K-1``.
    Imbalanced classes lead to minority collapse (THEORY §3.1), which has no closed form.

    Parameters
    ----------
    problem : LayerPeeledProblem
        Balanced classes.

    Returns
    -------
    Solution
        ``regime`` names the geometry; ``meta`` holds the closed-form quantities.
    """
    _require(isinstance(problem, LayerPeeledProblem), "needs a LayerPeeledProblem")     # input validation
    _require(problem.balanced, "imbalanced classes have no closed form (minority collapse, "
                               "THEORY §3.1)")
    K = problem.K
    _require(problem.d >= K - 1, f"the ETF needs d >= K-1 = {K - 1}, got d={problem.d}")
    q = {k: _num(e, K=K, E_W=problem.E_W, E_H=problem.E_H) for k, e in _sym("layer_peeled_optimum")().items()}
    P = centering_matrix(K)
    evals, evecs = np.linalg.eigh(P)
    E = evecs[:, evals > 0.5]                      # orthonormal basis of range(P_K), K x (K-1)
    W = np.zeros((K, problem.d))
    W[:, :K - 1] = math.sqrt(problem.E_W * K / (K - 1)) * E
    H = q["h_over_w"] * W.T @ problem.Y
    Z = W @ H
    return Solution(W=W, H=H, b=None, Z=Z, objective=q["loss"], status="exact", regime="etf",
                    message=f"Layer-peeled optimum: simplex ETF with ||w_k||^2 = E_W = {problem.E_W:g} and "
                            f"margin s = {q['s']:.10g}.",
                    method="closed_form", nit=0,
                    meta={"problem": problem.as_dict(), "objective": "mean CE under the energy constraints", **q},
                    citation="THEORY §1.3 (LIT); Fang, He, Long, Su 2021, arXiv 2101.12699")


# -- input-coupled UFM with a feature penalty ----------------------------------------
def input_coupled(problem: InputCoupledUFM) -> Solution:
    """Input-coupled UFM with a feature penalty and no decay on ``A``: the standard UFM optimum (THEORY §8.2b).

    The objective is ``g(W A Phi) + lam_W/2 ||W||^2 + lam_H/2 ||A Phi||^2`` (halved decays, ``g``
    the mean loss over the N examples). When ``Phi`` (p x N) has full column rank N, ``H = A Phi``
    ranges over every d x N matrix, so this is the standard UFM objective (0.1) in ``(W, H)``
    with ``lam_W``, ``lam_H`` and no bias: its optimum is that of :func:`ce_balanced` or
    :func:`mse` for the same labels, whatever ``Phi`` is (the input kernel shapes only the
    path). For balanced CE with distinct labels (n = 1) it is the simplex ETF with margin
    ``s* = log(1/gamma - (K-1))``, ``gamma = sqrt(lam_W lam_H)``, and zero when ``K gamma >= 1``
    (THEORY §1.2). ``A = H Phi^+``, the least-norm map with ``A Phi = H`` (every such map has
    the same objective).

    Parameters
    ----------
    problem : InputCoupledUFM
        ``lam_H > 0``, ``lam_A = 0``, ``Phi`` of rank N, and labels and loss with a closed form
        of the standard UFM (balanced hard labels for CE; any labels for MSE).

    Returns
    -------
    Solution
        ``W``, ``A`` and ``H = A Phi``; ``objective`` and ``regime`` are those of the standard
        UFM's closed form, whose quantities ``meta`` holds (``meta["standard_ufm"]`` its parameters).
    """
    _require(isinstance(problem, InputCoupledUFM), "needs an InputCoupledUFM")       # input validation
    _require(problem.lam_H > 0 and problem.lam_A == 0,
             "the input-coupled closed form needs a feature penalty lam_H > 0 and lam_A = 0 (THEORY §8.2b); "
             "otherwise the end state depends on Phi: use method='prox' or 'convex'")
    sv = np.linalg.svd(problem.Phi, compute_uv=False)
    r = numerical_rank(sv, 1e-10)
    _require(r == problem.N, f"Phi has rank {r} < N = {problem.N}, so H = A Phi cannot be every d x N matrix; "
                             "use method='prox' or 'convex'")
    labels = problem.Y if problem.soft else np.asarray(problem.y)
    std = UFMProblem(labels=labels, d=problem.d, loss=problem.loss, lam_W=problem.lam_W, lam_H=problem.lam_H)
    reasons = []
    for case in (ce_balanced, mse):
        try:
            sol = case(std)
            break
        except NotApplicable as err:
            reasons.append(f"{case.__name__}: {err}")
    else:
        raise NotApplicable("the standard UFM it reduces to has no closed form (" + "; ".join(reasons) + ")")
    A = sol.H @ np.linalg.pinv(problem.Phi)
    H = A @ problem.Phi
    meta = {**sol.meta, "problem": problem.as_dict(), "standard_ufm": std.as_dict(),
            "objective": "objective of the input-coupled UFM with feature penalty (THEORY §8.2b) = "
                         "standard UFM objective (0.1) with lam_W, lam_H"}
    return Solution(W=sol.W, H=H, b=None, Z=sol.W @ H, A=A, objective=sol.objective, status="exact",
                    regime=sol.regime, message=f"Feature penalty, lam_A = 0, Phi of full column rank: the standard "
                    f"UFM optimum with lam_W, lam_H, whatever Phi is. {sol.message}", method="closed_form",
                    nit=0, meta=meta, citation="THEORY §8.2b (DER); " + sol.citation)


# -- thresholds --------------------------------------------------------------------
def thresholds(problem: UFMProblem) -> dict:
    """Regime thresholds of a UFM problem that THEORY gives in closed form.

    Parameters
    ----------
    problem : UFMProblem
        The problem.

    Returns
    -------
    dict
        The thresholds that apply:

        * ``mu``: ``sqrt(lam_W lam_H)``, the nuclear-norm weight of (4.1);
        * ``mu_zero``: ``||grad_Z g(b0 1^T)||_op`` at the optimal bias ``b0`` of the
          zero logits; the optimum is ``W = H = 0`` iff ``mu >= mu_zero`` (THEORY §4,
          exact test). Given when ``b0`` is explicit: no bias, a free bias, MSE, or balanced CE;
        * ``zero``: whether the optimum is zero;
        * for balanced classes ``gamma`` and ``K_gamma`` (zero iff ``K gamma >= 1``, THEORY §1.2, §2.1);
        * for balanced MSE with a bias, ``lam_b_star = K gamma/(1 - K gamma)`` (THEORY §2.2).
    """
    _require_ufm(problem)
    K, N, Y = problem.K, problem.N, problem.Y
    pi = problem.loss.targets(Y).mean(axis=1)
    out: dict = {"mu": problem.mu}
    b0 = np.zeros(K) if not problem.bias else problem.loss.bias_at_zero(pi, problem.lam_b, problem.free_bias)
    if b0 is not None:
        G = losses.data_grad(problem, np.repeat(b0[:, None], N, axis=1))
        out["mu_zero"] = float(np.linalg.norm(G, 2))
        out["zero"] = bool(problem.mu >= out["mu_zero"] * (1 - 1e-12))
    if problem.balanced:
        out["gamma"] = problem.gamma
        out["K_gamma"] = K * problem.gamma
        if "mse" in problem.loss.closed_forms and problem.bias:
            kg = K * problem.gamma
            out["lam_b_star"] = kg / (1 - kg) if kg < 1 else math.inf
    return out


# -- dispatch ----------------------------------------------------------------------
#: The closed forms, tried in this order by :func:`solve`.
CASES = {"ce_balanced": ce_balanced, "seli": seli, "mse": mse, "layer_peeled": layer_peeled,
         "input_coupled": input_coupled}


def solve(problem, *, throw: bool = False) -> Solution:
    """The closed-form optimum of ``problem``, from the first case in :data:`CASES` that applies.

    Parameters
    ----------
    problem : UFMProblem, LayerPeeledProblem or InputCoupledUFM
        The problem.
    throw : bool
        Raise :class:`~ufm.results.NoMethodApplies` (with the result) instead of
        returning a result with ``success=False`` when no case applies.

    Returns
    -------
    Solution
        ``status`` is ``exact`` and ``regime`` names the geometry; ``meta`` holds
        the closed-form quantities. When no case applies: ``status`` ``no_method``,
        the message gives every case's reason, and ``W, H, Z`` are NaN.
    """
    throw = check_bool("throw", throw)
    reasons = []
    for name, case in CASES.items():
        try:
            return case(problem)
        except NotApplicable as err:
            reasons.append(f"  - {name}: {err}")
    sol = Solution.unsolved(problem, "closed_form", "no_method",
                            "no closed form applies to " + repr(problem) + ":\n" + "\n".join(reasons))
    return sol.raise_on_failure() if throw else sol


def applies(problem) -> tuple[bool, str]:
    """Whether a closed form covers ``problem``.

    Parameters
    ----------
    problem : object
        Any model of :mod:`ufm.problems`.

    Returns
    -------
    tuple of (bool, str)
        ``(True, case)`` if a closed form covers ``problem``, else ``(False, reasons)``.
    """
    sol = solve(problem)
    return (True, sol.regime) if sol.success else (False, sol.message[len(sol.status.message):].strip())
