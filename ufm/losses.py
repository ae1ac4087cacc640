"""Plain-numpy losses, objectives and gradients: the reference for every solver.

A loss is a pair of functions of the logits ``Z`` (K x N) and the label matrix
``Y`` (K x N, one-hot or column-stochastic): ``value(Z, Y) -> float`` and
``grad(Z, Y) -> dZ``. Both are *means over the N examples* (THEORY (0.1)):

* ``"ce"``: ``(1/N) sum_j [logsumexp(z_j) - y_j^T z_j]``, with a stable
  log-sum-exp; for one-hot ``y_j`` this is the usual cross-entropy, for soft
  labels the NTP cross-entropy of THEORY §5.2.
* ``"mse"``: ``1/(2N) ||Z - Y||_F^2`` (THEORY §2.2).

To add a loss, write its ``value`` and ``grad`` here and register them in
:data:`LOSSES`; everything else (objectives, stationarity checks, solvers
that call these functions) picks it up.

The regularized UFM objective uses halved weight decays (THEORY §0.1)::

    f(W, H, b) = g(W H + b 1^T) + lam_W/2 ||W||^2 + lam_H/2 ||H||^2 + lam_b/2 ||b||^2

plus ``beta/2 ||H - H_anchor||^2`` for the anchored UFM (THEORY §8.1). The
input-coupled UFM (THEORY §8.2) has its own pair :func:`input_coupled_objective`
and :func:`input_coupled_gradients` in ``(W, A)`` with ``H = A Phi``.

Models as states
----------------
Simulators hold a model's trainable blocks in a dict (a *state*):
``{"W", "H"}`` (+ ``"b"`` with a bias) for :class:`~ufm.problems.UFMProblem` and
:class:`~ufm.problems.AnchoredUFM`, ``{"W", "A"}`` for
:class:`~ufm.problems.InputCoupledUFM`. :func:`blocks`, :func:`state_objective`,
:func:`state_gradients` and :func:`features` work on any model, so a simulator
or solver is written once. :func:`gd_reference` is the plain-numpy gradient
descent every compiled kernel is tested against.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from scipy.special import logsumexp, softmax

__all__ = ["LOSSES", "Loss", "ce", "ce_grad", "mse", "mse_grad", "logits",
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


class Loss(NamedTuple):
    """A loss as a pair of functions of the logits and the labels (see :data:`LOSSES`).

    Parameters
    ----------
    value : callable
        ``value(Z, Y) -> float``: the mean loss over the N examples.
    grad : callable
        ``grad(Z, Y) -> ndarray``: its gradient in ``Z`` (K x N).
    """
    value: Callable[[np.ndarray, np.ndarray], float]
    grad: Callable[[np.ndarray, np.ndarray], np.ndarray]


#: Registered losses by name (the ``loss=`` of a problem).
LOSSES: dict[str, Loss] = {"ce": Loss(ce, ce_grad), "mse": Loss(mse, mse_grad)}


def _loss(problem) -> Loss:
    try:
        return LOSSES[problem.loss]
    except KeyError:
        raise ValueError(f"loss {problem.loss!r} has no implementation; known: {sorted(LOSSES)}.") from None


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
        so each entry is a relative error, 0 at a critical point.
    """
    W, H = np.asarray(W, float), np.asarray(H, float)
    b = np.asarray(b, float) if (problem.bias and b is not None) else None
    _check_shapes(problem, W, H, b)
    G = data_grad(problem, logits(W, H, b))
    g = np.linalg.norm(G)

    def rel(reg, data, bound):
        scale = max(np.linalg.norm(reg), bound)
        return float(np.linalg.norm(reg + data) / scale) if scale > 0 else 0.0

    out = {"W": rel(problem.lam_W * W, G @ H.T, g * np.linalg.norm(H)),
           "H": rel(problem.lam_H * H, W.T @ G, g * np.linalg.norm(W))}
    if b is not None:
        out["b"] = rel(problem.lam_b * b, G.sum(axis=1), g * np.sqrt(problem.N))
    return out


# -- input-coupled UFM (THEORY §8.2) ------------------------------------------------
def _check_icm(problem, W, A):
    if W.shape != (problem.K, problem.d):
        raise ValueError(f"W must be K x d = {problem.K} x {problem.d}, got {W.shape}.")
    if A.shape != (problem.d, problem.p):
        raise ValueError(f"A must be d x p = {problem.d} x {problem.p}, got {A.shape}.")


def input_coupled_objective(problem, W, A) -> float:
    """``g(W A Phi) + lam_W/2 ||W||^2 + lam_A/2 ||A||^2`` (THEORY (8.2), halved decays).

    Parameters
    ----------
    problem : InputCoupledUFM
        The model (``Phi``, ``lam_W``, ``lam_A``).
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
    Z = W @ (A @ problem.Phi)
    return float(data_loss(problem, Z) + 0.5 * problem.lam_W * np.sum(W * W) + 0.5 * problem.lam_A * np.sum(A * A))


def input_coupled_gradients(problem, W, A):
    """``(dW, dA) = (G H^T + lam_W W, W^T G Phi^T + lam_A A)`` with ``H = A Phi``, ``G = grad_Z g``.

    The induced feature flow is ``dH/dt = -W^T G K_x - lam_A H`` with ``K_x = Phi^T Phi``
    (THEORY §8.2 (c)).

    Parameters
    ----------
    problem : InputCoupledUFM
        The model (``Phi``, ``lam_W``, ``lam_A``).
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
    return G @ H.T + problem.lam_W * W, (W.T @ G) @ problem.Phi.T + problem.lam_A * A


# -- models as states ------------------------------------------------------------------
def _is_input_coupled(problem) -> bool:
    return hasattr(problem, "Phi")


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
    if _is_input_coupled(problem):
        return {"W": (problem.K, problem.d), "A": (problem.d, problem.p)}
    out = {"W": (problem.K, problem.d), "H": (problem.d, problem.N)}
    if problem.bias:
        out["b"] = (problem.K,)
    return out


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
    return state["A"] @ problem.Phi if _is_input_coupled(problem) else state["H"]


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
    if _is_input_coupled(problem):
        return input_coupled_objective(problem, state["W"], state["A"])
    return objective(problem, state["W"], state["H"], state.get("b"))


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
    if _is_input_coupled(problem):
        dW, dA = input_coupled_gradients(problem, state["W"], state["A"])
        return {"W": dW, "A": dA}
    dW, dH, db = gradients(problem, state["W"], state["H"], state.get("b"))
    out = {"W": dW, "H": dH}
    if db is not None:
        out["b"] = db
    return out


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
