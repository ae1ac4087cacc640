"""The anchored UFM (M1, THEORY §8.1) along a path of anchor strengths ``beta``: its minimizers.

Objective (Tirer, Huang, Niles-Weed, arXiv 2210.16658, Eq. 2; ``n`` examples per class)::

    1/(2Kn) ||W H - Y||^2 + lam_W/(2K) ||W||^2 + lam_H/(2Kn) ||H||^2 + beta/(2Kn) ||H - H0||^2

Two solvers:

:func:`anchored_path`
    Exact block-coordinate descent on ``(W, H)`` for any anchor and balanced
    labels, warm-started along the ``beta`` grid. Each point is a stationary
    point (a local minimizer in practice); convergence is linear and slow at
    small ``beta``.
:func:`anchored_path_patterns`
    With one example per class (``Y = I``) and an anchor Gram ``H0^T H0`` in
    the algebra of the attribute patterns (:class:`~ufm.bridge.patterns.PatternAlgebra`),
    the best minimizer whose Gram lies in the algebra, in closed form per
    idempotent. Eliminating ``W`` (ridge identity:
    ``min_W ||W H - I||^2 + lam_W ||W||^2 = lam_W tr (S + lam_W I)^-1`` with
    ``S = H^T H``) and maximizing ``tr(H0^T H) = ||H0 S^{1/2}||_*`` over the
    rotations of ``H``, the objective separates over the idempotents ``E_j``
    (multiplicity ``m_j``, eigenvalues ``sigma_j`` of ``S`` and ``s0_j`` of
    ``H0^T H0``)::

        sum_j m_j [ lam_W / (sigma_j + lam_W) + (lam_H + beta) sigma_j - 2 beta sqrt(s0_j sigma_j) ] / (2K) + const,

    one scalar minimization per mode (a dense grid in ``sqrt sigma``, then
    Newton steps). Measured against :func:`anchored_path` on factorial and
    hierarchy settings: objective never higher (up to 1e-12) and often lower
    (the descent stops in worse stationary points), Grams within 2e-3.

References
----------
Tirer, Huang, Niles-Weed, arXiv 2210.16658; THEORY.md §8.1, TV9.
"""

from __future__ import annotations

import numpy as np

__all__ = ["anchored_path", "anchored_path_patterns"]


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
    tol : float
        Stop when the relative change of ``H`` is below this.
    max_iter : int
        Block-coordinate steps per ``beta``.
    seed : int
        Seed of the ``1e-3`` perturbation of the first start.

    Returns
    -------
    W : ndarray (len(betas), K, d)
        Classifiers, in the order of ``betas``.
    H : ndarray (len(betas), d, N)
        Features, in the order of ``betas``.
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


def anchored_path_patterns(s0, betas, *, lam_W: float = 1e-2, lam_H: float = 1e-2) -> np.ndarray:
    """Eigenvalues ``sigma_j(beta)`` of the M1 minimizer's Gram ``H^T H`` in the pattern algebra (module docstring).

    Parameters
    ----------
    s0 : array (R,)
        Eigenvalues of the anchor Gram ``H0^T H0`` on the algebra's idempotents.
    betas : array (B,)
        Anchor strengths ``> 0``.
    lam_W, lam_H : float
        Weight decays (Tirer normalization, one example per class).

    Returns
    -------
    ndarray (B, R)
        One row per ``beta``: the eigenvalues ``sigma_j`` of ``H^T H``.
    """
    r0 = np.sqrt(np.clip(np.asarray(s0, dtype=np.float64), 0.0, None))
    u = np.concatenate([[0.0], np.geomspace(1e-6, 1e3, 1500) * max(1.0, float(r0.max()))])
    out = np.empty((len(betas), len(r0)))
    for i, b in enumerate(np.asarray(betas, dtype=np.float64)):
        g = lam_W / (u ** 2 + lam_W) + (lam_H + b) * u ** 2 - 2 * b * np.outer(r0, u)
        uu = u[np.argmin(g, axis=1)]
        for _ in range(60):                      # Newton on g'(u) = 0 from the grid minimum
            d1 = -2 * lam_W * uu / (uu ** 2 + lam_W) ** 2 + 2 * (lam_H + b) * uu - 2 * b * r0
            d2 = -2 * lam_W * (lam_W - 3 * uu ** 2) / (uu ** 2 + lam_W) ** 3 + 2 * (lam_H + b)
            step = np.where((d2 > 0) & (uu > 0), d1 / np.where(d2 > 0, d2, 1.0), 0.0)
            uu = np.maximum(uu - step, 0.0)
            if np.max(np.abs(step)) <= 1e-13 * max(1.0, float(uu.max())):
                break
        out[i] = uu ** 2
    return out
