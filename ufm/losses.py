"""Plain-numpy losses, objectives and gradients: the reference for every solver.

A loss is an object (:class:`Loss`) that knows everything the rest of ``ufm`` asks
of it: its value and gradient in the logits ``Z`` (K x N) against the labels ``Y``
(one-hot or column-stochastic), both *means over the N examples* (THEORY (0.1)), the
targets it compares with, its per-column form, convex conjugate and cvxpy expression
(the convex solvers of :mod:`ufm.convex`), the compiled kernel that evaluates it
(:func:`ufm.simulate`), and which closed forms and theory curves hold for it.
:data:`ufm.loss_registry.LOSSES` registers them by name (the ``loss=`` of a problem):

* ``"ce"`` (:class:`CrossEntropy`): ``(1/N) sum_j [logsumexp(z_j) - y_j^T z_j]``, with a
  stable log-sum-exp; for one-hot ``y_j`` the usual cross-entropy, for soft labels the
  NTP cross-entropy of THEORY §5.2.
* ``"mse"`` (:class:`SquaredError`): ``1/(2N) ||Z - Y||_F^2`` (THEORY §2.2).
* ``"ls_ce"`` (:class:`~ufm.label_smoothing.LabelSmoothedCE`, parameter ``eps``): the
  cross-entropy against ``(1 - eps) y + eps/K`` (THEORY §1.5).

To add a loss, write its class in a file of its own (subclass :class:`Loss`, or a loss
it generalizes) and add one entry to :data:`ufm.loss_registry.LOSSES`;
``docs/guide/adding_a_loss.md`` walks through it with the label-smoothed cross-entropy.

The regularized UFM objective uses halved weight decays (THEORY §0.1)::

    f(W, H, b) = g(W H + b 1^T) + lam_W/2 ||W||^2 + lam_H/2 ||H||^2 + lam_b/2 ||b||^2

plus ``beta/2 ||H - H_anchor||^2`` for the anchored UFM (THEORY §8.1). The
input-coupled UFM (THEORY §8.2, with the feature penalty of §8.2b) has its own pair
:func:`input_coupled_objective` and :func:`input_coupled_gradients` in ``(W, A)`` with
``H = A Phi``.

Models as states
----------------
Simulators hold a model's trainable blocks in a dict (a *state*):
``{"W", "H"}`` (+ ``"b"`` with a bias) for :class:`~ufm.problems.UFMProblem` and
:class:`~ufm.problems.AnchoredUFM`, ``{"W", "A"}`` for
:class:`~ufm.problems.InputCoupledUFM`. Each model answers for its own blocks,
features, objective and gradients (methods of :mod:`ufm.problems`);
:func:`blocks`, :func:`state_objective`, :func:`state_gradients` and :func:`features`
ask it, so a simulator or solver is written once. :func:`gd_reference` is the plain-numpy gradient
descent every compiled kernel is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass

import numpy as np
from scipy.special import logsumexp, softmax

__all__ = ["Loss", "CrossEntropy", "SquaredError", "ce", "ce_grad", "mse", "mse_grad", "logits",
           "data_loss", "data_grad", "objective", "gradients", "stationarity_residuals",
           "input_coupled_objective", "input_coupled_gradients",
           "blocks", "features", "state_logits", "state_objective", "state_gradients", "gd_reference"]


def ce(Z: np.ndarray, Y: np.ndarray) -> float:
    """Mean cross-entropy ``(1/N) sum_j [logsumexp(z_j) - y_j^T z_j]`` (THEORY (0.1), §5.2).

    Stable for any logit scale (log-sum-exp with the column maximum removed).

    Parameters
    ----------
    Z : ndarray (K, N)
        Logits, one column per example.
    Y : ndarray (K, N)
        Labels: one-hot or column-stochastic (soft labels).

    Returns
    -------
    float
        The mean over the N columns.
    """
    N = Z.shape[1]
    return float((logsumexp(Z, axis=0).sum() - np.sum(Y * Z)) / N)


def ce_grad(Z: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Gradient of :func:`ce` in the logits: ``(softmax(Z) - Y) / N`` (column softmax).

    Parameters
    ----------
    Z : ndarray (K, N)
        Logits, one column per example.
    Y : ndarray (K, N)
        Labels: one-hot or column-stochastic (soft labels).

    Returns
    -------
    ndarray (K, N)
        ``d ce / d Z``.
    """
    return (softmax(Z, axis=0) - Y) / Z.shape[1]


def mse(Z: np.ndarray, Y: np.ndarray) -> float:
    """Mean squared error ``1/(2N) ||Z - Y||_F^2`` (THEORY §2.2).

    Parameters
    ----------
    Z : ndarray (K, N)
        Logits, one column per example.
    Y : ndarray (K, N)
        Labels: one-hot or column-stochastic (soft labels).

    Returns
    -------
    float
        The loss value.
    """
    R = Z - Y
    return float(np.sum(R * R) / (2 * Z.shape[1]))


def mse_grad(Z: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Gradient of :func:`mse` in the logits: ``(Z - Y) / N``.

    Parameters
    ----------
    Z : ndarray (K, N)
        Logits, one column per example.
    Y : ndarray (K, N)
        Labels: one-hot or column-stochastic (soft labels).

    Returns
    -------
    ndarray (K, N)
        ``d mse / d Z``.
    """
    return (Z - Y) / Z.shape[1]


# -- loss objects ------------------------------------------------------------------------
class Loss:
    """A loss of the logits: everything the solvers, simulators and theory ask of it.

    A loss compares logit columns ``z_j`` with *targets* ``t_j`` (K x m matrices, one
    column each). :meth:`targets` turns a model's labels ``Y`` into them (the identity for
    ``"ce"`` and ``"mse"``); every other method works on targets. Subclasses are frozen
    dataclasses whose fields are the loss's parameters (equal parameters, equal losses)
    and set the class attributes below.

    Attributes
    ----------
    name : str
        Registry name (:data:`ufm.loss_registry.LOSSES`).
    kernel_id : int or None
        The compiled loss that evaluates this loss on :meth:`targets` in :func:`ufm.simulate`
        (``ufm._kernels.LOSS_IDS``: 0 the mean cross-entropy against any column-stochastic
        target matrix, 1 the squared error); ``None``: no compiled kernel (``simulate``
        runs GD in NumPy from :meth:`grad`, much slower, and says so in ``meta["loss_kernel"]``;
        the flow needs a kernel).
    shift_invariant : bool
        ``l(z + c 1, t) = l(z, t)`` (cross-entropies): a bias along ``1`` is a no-op and
        the theory centres the inputs.
    quadratic : bool
        ``l`` is quadratic in ``z`` (the squared error): the flows of :mod:`ufm.dynamics`
        are linear.
    curvature : float
        A bound on the Hessian's operator norm of one column (1/2 for softmax losses,
        1 for the squared error): the proximal solver's first step size.
    closed_forms : frozenset of str
        The exact results that hold for this loss: keys of ``ufm.closed_form.CASES``
        (``"ce_balanced"``, ``"seli"``, ``"mse"``, ``"layer_peeled"``), ``"svm"`` (the
        max-margin limit of :func:`ufm.convex.svm`) and ``"dynamics"`` (the theory curves of
        :mod:`ufm.dynamics`: mode curves, symmetric flows; derived for CE and MSE).
    """

    name: str = ""
    kernel_id: int | None = None
    shift_invariant: bool = False
    quadratic: bool = False
    curvature: float = 1.0
    closed_forms: frozenset = frozenset()

    def __init_subclass__(cls, **kwargs):
        """A method a loss overrides keeps the protocol's documentation unless it writes its own."""
        super().__init_subclass__(**kwargs)
        for name, member in vars(cls).items():
            base = getattr(Loss, name, None)
            if callable(member) and not name.startswith("_") and not member.__doc__ and base is not None:
                member.__doc__ = base.__doc__

    def __str__(self) -> str:
        """The spec that :func:`ufm.loss_registry.get_loss` reads back: the name, then the parameters if any."""
        params = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)) if is_dataclass(self) else ""
        return f"{self.name}({params})" if params else self.name

    # -- the labels a model has, as the targets the loss compares with ----------------------
    def targets(self, Y: np.ndarray) -> np.ndarray:
        """The targets (K x m) of the labels ``Y`` (one-hot or column-stochastic): ``Y`` itself here.

        Parameters
        ----------
        Y : ndarray (K, m)
            Label columns.

        Returns
        -------
        ndarray (K, m)
            Target columns.
        """
        return Y

    # -- values and gradients on the labels, means over the N examples (THEORY (0.1)) -------
    def value(self, Z: np.ndarray, Y: np.ndarray) -> float:
        """The mean loss ``(1/N) sum_j l(z_j, t_j)`` with ``T = targets(Y)``.

        Parameters
        ----------
        Z : ndarray (K, N)
            Logits.
        Y : ndarray (K, N)
            Labels (one-hot or column-stochastic).

        Returns
        -------
        float
            The mean over the N columns.
        """
        return float(np.mean(self.columns(Z, self.targets(Y))))

    def grad(self, Z: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Gradient of :meth:`value` in ``Z`` (K x N).

        Parameters
        ----------
        Z : ndarray (K, N)
            Logits.
        Y : ndarray (K, N)
            Labels (one-hot or column-stochastic).

        Returns
        -------
        ndarray (K, N)
            ``d value / d Z``.
        """
        return self.column_grads(Z, self.targets(Y)) / Z.shape[1]

    # -- per column, on targets: what the convex form (THEORY (4.1)) is made of --------------
    def columns(self, L: np.ndarray, T: np.ndarray) -> np.ndarray:
        """``l(l_j, t_j)`` for every column (length m).

        Parameters
        ----------
        L : ndarray (K, m)
            Logit columns.
        T : ndarray (K, m)
            Target columns.

        Returns
        -------
        ndarray (m,)
            One loss per column.
        """
        raise NotImplementedError

    def column_grads(self, L: np.ndarray, T: np.ndarray) -> np.ndarray:
        """``grad l(l_j, t_j)`` for every column (K x m, a new array).

        Parameters
        ----------
        L : ndarray (K, m)
            Logit columns.
        T : ndarray (K, m)
            Target columns.

        Returns
        -------
        ndarray (K, m)
            One gradient per column.
        """
        raise NotImplementedError

    def neg_conjugate(self, V: np.ndarray, T: np.ndarray) -> np.ndarray:
        """``-l*(v_j; t_j)`` per column: minus the convex conjugate in the logits (the dual objective).

        ``V`` is a scaled gradient ``s grad l`` inside the conjugate's domain (see
        :meth:`dual_step_limit`); :func:`ufm.convex.certificate` sums these with the form's weights.

        Parameters
        ----------
        V : ndarray (K, m)
            Dual columns.
        T : ndarray (K, m)
            Target columns.

        Returns
        -------
        ndarray (m,)
            ``-l*`` per column.
        """
        raise NotImplementedError

    def dual_step_limit(self, U: np.ndarray, T: np.ndarray) -> float:
        """The largest ``s`` for which ``s U`` stays in the conjugate's domain (``inf``: all of it).

        Parameters
        ----------
        U : ndarray (K, m)
            Column gradients.
        T : ndarray (K, m)
            Target columns.

        Returns
        -------
        float
            The bound on the dual scaling.
        """
        return math.inf

    def cvx_columns(self, L, T: np.ndarray):
        """The per-column loss as a cvxpy expression (length m) of the logit expression ``L``.

        Parameters
        ----------
        L : cvxpy expression (K, m)
            Logit columns.
        T : ndarray (K, m)
            Target columns.

        Returns
        -------
        cvxpy expression (m,)
            Convex in ``L``.
        """
        raise NotImplementedError

    def best_bias(self, L0: np.ndarray, T: np.ndarray, omega: np.ndarray, lam: float, free: bool,
                  b: np.ndarray, data) -> np.ndarray:
        """The bias minimizing ``sum_j omega_j l(l0_j + b, t_j) + lam/2 ||b||^2`` from the start ``b``.

        Parameters
        ----------
        L0 : ndarray (K, m)
            Logit columns without the bias.
        T : ndarray (K, m)
            Target columns.
        omega : ndarray (m,)
            Column weights.
        lam : float
            Bias decay (halved); 0 for a free bias.
        free : bool
            Whether the bias is unregularized.
        b : ndarray (K,)
            Start.
        data : callable
            ``data(L) -> float``, the weighted data term (for the line search).

        Returns
        -------
        ndarray (K,)
            The bias.
        """
        raise NotImplementedError

    def bias_at_zero(self, pi: np.ndarray, lam_b: float, free: bool) -> np.ndarray | None:
        """The optimal bias of the zero logits when it is explicit, else ``None``.

        Parameters
        ----------
        pi : ndarray (K,)
            Mean target column.
        lam_b : float
            Bias decay (halved).
        free : bool
            Whether the bias is unregularized.

        Returns
        -------
        ndarray (K,) or None
            The bias.
        """
        return None

    def why_not_without_decay(self, names: str) -> str | None:
        """Why the convex form without weight decay is not solved for this loss (``None``: it is).

        Parameters
        ----------
        names : str
            The weight decays, for the message (``"lam_W and lam_H"``).

        Returns
        -------
        str or None
            The reason, naming the method that applies instead.
        """
        return None


@dataclass(frozen=True)
class CrossEntropy(Loss):
    """Mean cross-entropy ``(1/N) sum_j [logsumexp(z_j) - t_j^T z_j]`` (THEORY (0.1), §5.2).

    Hard labels give the usual cross-entropy, soft labels the NTP cross-entropy. Its
    conjugate is the negative entropy on the simplex: ``-l*(v; t) = Entropy(t + v)`` for
    ``t + v`` a probability vector (THEORY §4).
    """

    name = "ce"
    kernel_id = 0
    shift_invariant = True
    curvature = 0.5
    closed_forms = frozenset({"ce_balanced", "seli", "layer_peeled", "svm", "dynamics"})

    def value(self, Z, Y):
        return ce(Z, self.targets(Y))

    def grad(self, Z, Y):
        return ce_grad(Z, self.targets(Y))

    def columns(self, L, T):
        m = L.max(axis=0)                     # stable log-sum-exp
        lse = m + np.log(np.exp(L - m).sum(axis=0))
        return lse - np.sum(T * L, axis=0)

    def column_grads(self, L, T):
        P = L - L.max(axis=0)                 # column softmax in place: one K x m buffer
        np.exp(P, out=P)
        P *= 1.0 / P.sum(axis=0)
        P -= T
        return P

    def neg_conjugate(self, V, T):
        Q = np.clip(T + V, 0.0, None)
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.sum(np.where(Q > 0, Q * np.log(Q), 0.0), axis=0)

    def dual_step_limit(self, U, T):
        neg = U < 0
        if not np.any(neg):
            return math.inf
        with np.errstate(divide="ignore"):
            return float(np.min(np.where(neg, T / -np.where(neg, U, -1.0), np.inf)))

    def cvx_columns(self, L, T):
        import cvxpy as cp

        return cp.log_sum_exp(L, axis=0) - cp.sum(cp.multiply(T, L), axis=0)

    def best_bias(self, L0, T, omega, lam, free, b, data):
        bias_reg = (lambda v: 0.0) if free else (lambda v: 0.5 * lam * float(v @ v))
        b = np.array(b, dtype=float)
        for _ in range(60):             # damped Newton converges in a handful of steps
            L = L0 + b[:, None]
            P = softmax(L, axis=0)
            g = (P - T) @ omega + lam * b
            if free:       # CE is invariant along 1: solve on its complement
                g = g - g.mean()
            if np.abs(g).max() <= 1e-15:
                break
            Hm = (P * omega[None, :]) @ P.T
            Hm = np.diag(P @ omega) - Hm + lam * np.eye(len(b))
            if free:
                Hm = Hm + np.ones_like(Hm) / len(b)
            step = np.linalg.solve(Hm, g)
            f0 = data(L) + bias_reg(b)
            t = 1.0
            while t > 1e-6:             # damped Newton; near the optimum the full step is taken
                bn = b - t * step
                if data(L0 + bn[:, None]) + bias_reg(bn) <= f0 - 0.25 * t * float(g @ step) + 1e-15 * abs(f0):
                    break
                t *= 0.5
            b = bn
        return b - b.mean() if free else b

    def bias_at_zero(self, pi, lam_b, free):
        if free and np.all(pi > 0):
            return np.log(pi)
        if np.allclose(pi, 1.0 / len(pi)):
            return np.zeros(len(pi))
        return None

    def why_not_without_decay(self, names):
        return (f"CE without weight decay ({names} not both > 0) has no minimizer: the logits grow "
                "without bound; method='svm' gives the max-margin direction they converge to")


@dataclass(frozen=True)
class SquaredError(Loss):
    """Mean squared error ``1/(2N) ||Z - T||_F^2`` (THEORY §2.2).

    ``-l*(v; t) = -(||v||^2/2 + v^T t)``.
    """

    name = "mse"
    kernel_id = 1
    quadratic = True
    curvature = 1.0
    closed_forms = frozenset({"mse", "dynamics"})

    def value(self, Z, Y):
        return mse(Z, self.targets(Y))

    def grad(self, Z, Y):
        return mse_grad(Z, self.targets(Y))

    def columns(self, L, T):
        R = L - T
        return 0.5 * np.sum(R * R, axis=0)

    def column_grads(self, L, T):
        return L - T

    def neg_conjugate(self, V, T):
        return -(0.5 * np.sum(V * V, axis=0) + np.sum(V * T, axis=0))

    def cvx_columns(self, L, T):
        import cvxpy as cp

        return 0.5 * cp.sum(cp.square(L - T), axis=0)

    def best_bias(self, L0, T, omega, lam, free, b, data):
        return (T - L0) @ omega / (omega.sum() + lam)

    def bias_at_zero(self, pi, lam_b, free):
        return pi / (1.0 + lam_b)

    def why_not_without_decay(self, names):
        return "MSE without weight decay interpolates; method='closed_form' gives the minimum-norm solution"


def _loss(problem) -> Loss:
    return problem.loss


def logits(W: np.ndarray, H: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``Z = W H + b 1^T`` (K x N); ``b=None`` means no bias.

    Parameters
    ----------
    W : ndarray (K, d)
        Classifier.
    H : ndarray (d, N)
        Features, one column per example.
    b : ndarray (K,), optional
        Bias.

    Returns
    -------
    ndarray (K, N)
        The logits.
    """
    Z = W @ H
    return Z if b is None else Z + np.asarray(b)[:, None]


def _check_shapes(problem, W, H, b):
    K, N, d = problem.K, problem.N, problem.d
    if W.shape != (K, d):
        raise ValueError(f"W must be K x d = {K} x {d}, got {W.shape}.")
    if H.shape != (d, N):
        raise ValueError(f"H must be d x N = {d} x {N}, got {H.shape}.")
    if problem.bias and (b is None or np.shape(b) != (K,)):
        raise ValueError(f"this problem has a bias: b must have shape ({K},), got {None if b is None else np.shape(b)}.")


def data_loss(problem, Z: np.ndarray) -> float:
    """The data term ``g(Z)`` of ``problem`` at logits ``Z`` (bias already added).

    Parameters
    ----------
    problem : UFMProblem, AnchoredUFM or InputCoupledUFM
        Gives the loss and the labels ``problem.Y``.
    Z : ndarray (K, N)
        Logits.

    Returns
    -------
    float
        ``g(Z)``, a mean over the N examples.
    """
    return _loss(problem).value(Z, problem.Y)


def data_grad(problem, Z: np.ndarray) -> np.ndarray:
    """``G = grad_Z g(Z)`` for ``problem`` (K x N).

    Parameters
    ----------
    problem : UFMProblem, AnchoredUFM or InputCoupledUFM
        Gives the loss and the labels ``problem.Y``.
    Z : ndarray (K, N)
        Logits.

    Returns
    -------
    ndarray (K, N)
        The gradient of the data term.
    """
    return _loss(problem).grad(Z, problem.Y)


def objective(problem, W, H, b=None) -> float:
    """The full regularized objective of ``problem`` (halved weight decays, THEORY (0.1)).

    Includes ``beta/2 ||H - H_anchor||^2`` for the anchored UFM (THEORY §8.1).

    Parameters
    ----------
    problem : UFMProblem or AnchoredUFM
        The model and its weight decays.
    W : array (K, d)
        Classifier.
    H : array (d, N)
        Features, one column per example.
    b : array (K,), optional
        Bias; ignored (and may be ``None``) when the problem has no bias.

    Returns
    -------
    float
        ``g(W H + b 1^T) + lam_W/2 ||W||^2 + lam_H/2 ||H||^2 + lam_b/2 ||b||^2``.
    """
    W, H = np.asarray(W, float), np.asarray(H, float)
    b = np.asarray(b, float) if (problem.bias and b is not None) else None
    _check_shapes(problem, W, H, b)
    f = data_loss(problem, logits(W, H, b))
    f += 0.5 * problem.lam_W * np.sum(W * W) + 0.5 * problem.lam_H * np.sum(H * H)
    if b is not None:
        f += 0.5 * problem.lam_b * np.sum(b * b)
    beta = getattr(problem, "beta", 0.0)
    if beta:
        D = H - problem.H_anchor
        f += 0.5 * beta * np.sum(D * D)
    return float(f)


def gradients(problem, W, H, b=None):
    """Gradients ``(dW, dH, db)`` of :func:`objective` (``db`` is ``None`` without a bias).

    ``dW = G H^T + lam_W W``, ``dH = W^T G + lam_H H (+ beta (H - H_anchor))``,
    ``db = G 1 + lam_b b`` with ``G = grad_Z g(Z)`` (THEORY §4, §8.1).

    Parameters
    ----------
    problem : UFMProblem or AnchoredUFM
        The model and its weight decays.
    W : array (K, d)
        Classifier.
    H : array (d, N)
        Features, one column per example.
    b : array (K,), optional
        Bias; ignored (and may be ``None``) when the problem has no bias.

    Returns
    -------
    tuple of ndarray
        ``(dW, dH, db)``; ``db`` is ``None`` when the problem has no bias.
    """
    W, H = np.asarray(W, float), np.asarray(H, float)
    b = np.asarray(b, float) if (problem.bias and b is not None) else None
    _check_shapes(problem, W, H, b)
    G = data_grad(problem, logits(W, H, b))
    dW = G @ H.T + problem.lam_W * W
    dH = W.T @ G + problem.lam_H * H
    beta = getattr(problem, "beta", 0.0)
    if beta:
        dH += beta * (H - problem.H_anchor)
    db = None if b is None else G.sum(axis=1) + problem.lam_b * b
    return dW, dH, db


def stationarity_residuals(problem, W, H, b=None) -> dict:
    """Relative residuals of the first-order conditions of THEORY §4.

    Parameters
    ----------
    problem : UFMProblem or AnchoredUFM
        The model and its weight decays.
    W : array (K, d)
        Classifier.
    H : array (d, N)
        Features, one column per example.
    b : array (K,), optional
        Bias; ignored (and may be ``None``) when the problem has no bias.

    Returns
    -------
    dict
        ``{"W": ||lam_W W + G H^T|| / scale_W, "H": ..., "b": ...}`` with
        ``G = grad_Z g(Z)`` and each scale the larger of the regularizer term and a
        bound on the data term (``||G|| ||H||``, ``||W|| ||G||``, ``||G|| sqrt(N)``),
        so each entry is a relative error, 0 at a critical point. A block without weight
        decay measures ``||G||`` against its size at zero logits as well (the bound uses
        ``max(||G||, ||grad g(0)||)``): where the loss attains its minimum (label-smoothed CE,
        MSE) ``G`` itself vanishes at the optimum, and the ratio would be 0/0.
    """
    W, H = np.asarray(W, float), np.asarray(H, float)
    b = np.asarray(b, float) if (problem.bias and b is not None) else None
    _check_shapes(problem, W, H, b)
    G = data_grad(problem, logits(W, H, b))
    g = np.linalg.norm(G)
    g_free = max(g, np.linalg.norm(data_grad(problem, np.zeros_like(G))))     # for blocks without decay

    def rel(lam, X, data, other):
        reg = lam * X
        scale = max(np.linalg.norm(reg), (g if lam > 0 else g_free) * other)
        return float(np.linalg.norm(reg + data) / scale) if scale > 0 else 0.0

    out = {"W": rel(problem.lam_W, W, G @ H.T, np.linalg.norm(H)),
           "H": rel(problem.lam_H, H, W.T @ G, np.linalg.norm(W))}
    if b is not None:
        out["b"] = rel(problem.lam_b, b, G.sum(axis=1), np.sqrt(problem.N))
    return out


# -- input-coupled UFM (THEORY §8.2) ------------------------------------------------
def _check_icm(problem, W, A):
    if W.shape != (problem.K, problem.d):
        raise ValueError(f"W must be K x d = {problem.K} x {problem.d}, got {W.shape}.")
    if A.shape != (problem.d, problem.p):
        raise ValueError(f"A must be d x p = {problem.d} x {problem.p}, got {A.shape}.")


def input_coupled_objective(problem, W, A) -> float:
    """``g(W A Phi) + lam_W/2 ||W||^2 + lam_H/2 ||A Phi||^2 + lam_A/2 ||A||^2`` (THEORY (8.2), §8.2b).

    Halved decays, ``g`` the mean loss over the N examples; ``lam_H = 0`` is (8.2).

    Parameters
    ----------
    problem : InputCoupledUFM
        The model (``Phi``, ``lam_W``, ``lam_A``, ``lam_H``).
    W : array (K, d)
        Classifier.
    A : array (d, p)
        Input map; the features are ``H = A Phi``.

    Returns
    -------
    float
        The objective value.
    """
    W, A = np.asarray(W, float), np.asarray(A, float)
    _check_icm(problem, W, A)
    H = A @ problem.Phi
    return float(data_loss(problem, W @ H) + 0.5 * problem.lam_W * np.sum(W * W) + 0.5 * problem.lam_H * np.sum(H * H)
                 + 0.5 * problem.lam_A * np.sum(A * A))


def input_coupled_gradients(problem, W, A):
    """``(dW, dA) = (G H^T + lam_W W, (W^T G + lam_H H) Phi^T + lam_A A)``, ``H = A Phi``, ``G = grad_Z g``.

    The induced feature flow is ``dH/dt = -(W^T G + lam_H H) K_x - lam_A H`` with
    ``K_x = Phi^T Phi`` (THEORY §8.2 (c), §8.2b).

    Parameters
    ----------
    problem : InputCoupledUFM
        The model (``Phi``, ``lam_W``, ``lam_A``, ``lam_H``).
    W : array (K, d)
        Classifier.
    A : array (d, p)
        Input map; the features are ``H = A Phi``.

    Returns
    -------
    tuple of ndarray
        ``(dW, dA)``.
    """
    W, A = np.asarray(W, float), np.asarray(A, float)
    _check_icm(problem, W, A)
    H = A @ problem.Phi
    G = data_grad(problem, W @ H)
    T = W.T @ G
    if problem.lam_H:
        T += problem.lam_H * H
    return G @ H.T + problem.lam_W * W, T @ problem.Phi.T + problem.lam_A * A


# -- models as states ------------------------------------------------------------------
def blocks(problem) -> dict:
    """Names and shapes of a model's trainable blocks, in a fixed order.

    Parameters
    ----------
    problem : UFMProblem, AnchoredUFM or InputCoupledUFM
        The model.

    Returns
    -------
    dict
        ``{"W": (K, d), "H": (d, N)}`` (+ ``"b": (K,)`` with a bias), or
        ``{"W": (K, d), "A": (d, p)}`` for the input-coupled UFM.
    """
    return problem.blocks()


def features(problem, state: dict) -> np.ndarray:
    """The features ``H`` (d x N) of a state: ``state["H"]`` or ``A Phi``.

    Parameters
    ----------
    problem : UFMProblem, LayerPeeledProblem, AnchoredUFM or InputCoupledUFM
        The model (any of :mod:`ufm.problems`).
    state : dict of ndarray
        The trainable blocks named by :func:`blocks`.

    Returns
    -------
    ndarray (d, N)
        The features.
    """
    return problem.features(state)


def state_logits(problem, state: dict) -> np.ndarray:
    """Logits ``Z`` (K x N) of a state (bias included).

    Parameters
    ----------
    problem : UFMProblem, LayerPeeledProblem, AnchoredUFM or InputCoupledUFM
        The model (any of :mod:`ufm.problems`).
    state : dict of ndarray
        The trainable blocks named by :func:`blocks`.

    Returns
    -------
    ndarray (K, N)
        The logits.
    """
    return logits(state["W"], features(problem, state), state.get("b"))


def state_objective(problem, state: dict) -> float:
    """The objective of any model at ``state`` (see :func:`blocks`).

    Parameters
    ----------
    problem : UFMProblem, LayerPeeledProblem, AnchoredUFM or InputCoupledUFM
        The model (any of :mod:`ufm.problems`).
    state : dict of ndarray
        The trainable blocks named by :func:`blocks`.

    Returns
    -------
    float
        :func:`objective` or :func:`input_coupled_objective`.
    """
    return problem.objective(state)


def state_gradients(problem, state: dict) -> dict:
    """Gradients of :func:`state_objective`, one entry per block.

    Parameters
    ----------
    problem : UFMProblem, LayerPeeledProblem, AnchoredUFM or InputCoupledUFM
        The model (any of :mod:`ufm.problems`).
    state : dict of ndarray
        The trainable blocks named by :func:`blocks`.

    Returns
    -------
    dict of ndarray
        Same keys as ``state``.
    """
    return problem.gradients(state)


def gd_reference(problem, state: dict, lr: float, steps: int, record=()) -> tuple[dict, dict]:
    """Plain-numpy gradient descent ``x <- x - lr grad f(x)`` for ``steps`` steps.

    The reference twin of the compiled kernels of :func:`ufm.simulate`.

    Parameters
    ----------
    problem : UFMProblem, LayerPeeledProblem, AnchoredUFM or InputCoupledUFM
        The model (any of :mod:`ufm.problems`).
    state : dict of ndarray
        The trainable blocks named by :func:`blocks`.
    lr : float
        Step size.
    steps : int
        Number of steps.
    record : sequence of int
        Steps (0..steps) at which to keep a copy of the state.

    Returns
    -------
    tuple
        ``(final_state, {step: state})``.
    """
    state = {k: np.array(v, dtype=float) for k, v in state.items()}
    kept = {}
    want = set(int(s) for s in record)
    for k in range(steps + 1):
        if k in want:
            kept[k] = {name: v.copy() for name, v in state.items()}
        if k == steps:
            break
        grads = state_gradients(problem, state)
        for name in state:
            state[name] = state[name] - lr * grads[name]
    return state, kept
