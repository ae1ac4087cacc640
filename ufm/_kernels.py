"""Every numba kernel of ``ufm``, in one file (numba's cache tracks one file per function).

Kernels are compiled lazily on first call (``@njit(cache=True)``, no
signatures), cached on disk, and specialise on the dtype of their arrays
(float64 by default, float32 on request). Each has a plain-numpy twin in
:mod:`ufm.losses` (``state_gradients`` / ``gd_reference``) that tests compare
against to 1e-10.

Layout: a batch of seeds is stacked on axis 0 (``Ws`` is S x K x d, ``Hs`` is
S x d x N, ...). ``prange`` runs seeds in parallel; each seed's arithmetic is
sequential and does not depend on the thread count, so results are identical
whatever ``numba.set_num_threads`` says. Small products use the explicit loops
below (no library call overhead, bitwise reproducible); products with more than
``SMALL`` multiply-adds go to BLAS through ``np.dot`` (single-threaded BLAS is
set by :func:`ufm.simulate`).

Loss ids: 0 = mean cross-entropy (stable log-sum-exp), 1 = ``1/(2N)||Z - Y||^2``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Products with at most this many multiply-adds use the explicit loops.
SMALL = 40_000

LOSS_IDS = {"ce": 0, "mse": 1}


# -- small dense products ----------------------------------------------------------
@njit(cache=True, inline="always")
def _mm_nn(A, B, C):
    """C = A @ B."""
    m, k = A.shape
    n = B.shape[1]
    if m * k * n > SMALL:
        np.dot(A, B, C)
        return
    for i in range(m):
        for j in range(n):
            C[i, j] = 0.0
        for q in range(k):
            a = A[i, q]
            for j in range(n):
                C[i, j] += a * B[q, j]


@njit(cache=True, inline="always")
def _mm_nt(A, B, C):
    """C = A @ B.T."""
    m, k = A.shape
    n = B.shape[0]
    if m * k * n > SMALL:
        np.dot(A, B.T, C)
        return
    for i in range(m):
        for j in range(n):
            s = 0.0
            for q in range(k):
                s += A[i, q] * B[j, q]
            C[i, j] = s


@njit(cache=True, inline="always")
def _mm_tn(A, B, C):
    """C = A.T @ B."""
    k, m = A.shape
    n = B.shape[1]
    if m * k * n > SMALL:
        np.dot(A.T, B, C)
        return
    for i in range(m):
        for j in range(n):
            C[i, j] = 0.0
    for q in range(k):
        for i in range(m):
            a = A[q, i]
            for j in range(n):
                C[i, j] += a * B[q, j]


@njit(cache=True, inline="always")
def _logit_grad(Z, Y, loss_id, G):
    """G = grad_Z g(Z) (mean over the N columns); returns g(Z). Z is overwritten for CE."""
    K, N = Z.shape
    total = 0.0
    if loss_id == 0:
        for j in range(N):
            zmax = Z[0, j]
            for c in range(1, K):
                if Z[c, j] > zmax:
                    zmax = Z[c, j]
            s = 0.0
            for c in range(K):
                e = np.exp(Z[c, j] - zmax)
                G[c, j] = e
                s += e
            lse = zmax + np.log(s)
            for c in range(K):
                total += Y[c, j] * (lse - Z[c, j])
                G[c, j] = (G[c, j] / s - Y[c, j]) / N
    else:
        for j in range(N):
            for c in range(K):
                r = Z[c, j] - Y[c, j]
                total += 0.5 * r * r
                G[c, j] = r / N
    return total / N


# -- standard and anchored UFM -------------------------------------------------------
@njit(cache=True)
def ufm_grad(W, H, b, Y, Hanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias, Z, G, dW, dH, db):
    """Gradients of the (anchored) UFM objective into dW, dH, db; returns the objective.

    Twin: :func:`ufm.losses.gradients` / :func:`ufm.losses.objective`.
    """
    K, N = Z.shape
    _mm_nn(W, H, Z)
    if use_bias:
        for c in range(K):
            for j in range(N):
                Z[c, j] += b[c]
    f = _logit_grad(Z, Y, loss_id, G)
    _mm_nt(G, H, dW)
    _mm_tn(W, G, dH)
    reg = 0.0
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            dW[i, j] += lam_W * W[i, j]
            reg += 0.5 * lam_W * W[i, j] * W[i, j]
    for i in range(H.shape[0]):
        for j in range(H.shape[1]):
            dH[i, j] += lam_H * H[i, j]
            reg += 0.5 * lam_H * H[i, j] * H[i, j]
            if beta != 0.0:
                dd = H[i, j] - Hanc[i, j]
                dH[i, j] += beta * dd
                reg += 0.5 * beta * dd * dd
    if use_bias:
        for c in range(K):
            s = 0.0
            for j in range(N):
                s += G[c, j]
            db[c] = s + lam_b * b[c]
            reg += 0.5 * lam_b * b[c] * b[c]
    return f + reg


@njit(cache=True, parallel=True)
def ufm_gd(Ws, Hs, bs, Y, Hanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias, lr, n_steps):
    """``n_steps`` of plain GD for every seed (in place); returns each seed's objective at
    its final state, NaN or inf when the state or objective became non-finite (the seed then stops)."""
    S = Ws.shape[0]
    K, d = Ws.shape[1], Ws.shape[2]
    N = Hs.shape[2]
    last = np.empty(S, dtype=np.float64)
    for s in prange(S):
        W, H, b = Ws[s], Hs[s], bs[s]
        Z = np.empty((K, N), dtype=Ws.dtype)
        G = np.empty((K, N), dtype=Ws.dtype)
        dW = np.empty((K, d), dtype=Ws.dtype)
        dH = np.empty((d, N), dtype=Ws.dtype)
        db = np.zeros(K, dtype=Ws.dtype)
        f = np.nan
        for _ in range(n_steps):
            f = ufm_grad(W, H, b, Y, Hanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias, Z, G, dW, dH, db)
            if not np.isfinite(f):
                break
            for i in range(K):
                for j in range(d):
                    W[i, j] -= lr * dW[i, j]
            for i in range(d):
                for j in range(N):
                    H[i, j] -= lr * dH[i, j]
            if use_bias:
                for c in range(K):
                    b[c] -= lr * db[c]
        if np.isfinite(f):  # the objective where the seed stands now
            f = ufm_grad(W, H, b, Y, Hanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias, Z, G, dW, dH, db)
        last[s] = f
    return last


@njit(cache=True)
def ufm_flow_rhs(y, data, out):
    """Gradient-flow velocity ``-grad f`` of the (anchored) UFM for a flat state ``y = [W, H, b]``."""
    K, d, N, Y, Hanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias = data
    W = y[:K * d].reshape((K, d))
    H = y[K * d:K * d + d * N].reshape((d, N))
    dW = out[:K * d].reshape((K, d))
    dH = out[K * d:K * d + d * N].reshape((d, N))
    if use_bias:
        b = y[K * d + d * N:]
        db = out[K * d + d * N:]
    else:
        b = np.zeros(K)
        db = np.zeros(K)
    Z = np.empty((K, N))
    G = np.empty((K, N))
    ufm_grad(W, H, b, Y, Hanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias, Z, G, dW, dH, db)
    for i in range(out.shape[0]):
        out[i] = -out[i]


# -- input-coupled UFM ---------------------------------------------------------------
@njit(cache=True)
def icm_grad(W, A, Phi, Y, lam_W, lam_A, loss_id, H, Z, G, T, dW, dA):
    """Gradients of ``g(W A Phi) + lam_W/2||W||^2 + lam_A/2||A||^2`` into dW, dA; returns the objective.

    ``T`` (d x N) is workspace for ``W^T G``. Twin: :func:`ufm.losses.input_coupled_gradients`.
    """
    _mm_nn(A, Phi, H)
    _mm_nn(W, H, Z)
    f = _logit_grad(Z, Y, loss_id, G)
    _mm_nt(G, H, dW)
    _mm_tn(W, G, T)
    _mm_nt(T, Phi, dA)
    reg = 0.0
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            dW[i, j] += lam_W * W[i, j]
            reg += 0.5 * lam_W * W[i, j] * W[i, j]
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            dA[i, j] += lam_A * A[i, j]
            reg += 0.5 * lam_A * A[i, j] * A[i, j]
    return f + reg


@njit(cache=True, parallel=True)
def icm_gd(Ws, As, Phi, Y, lam_W, lam_A, loss_id, lr, n_steps):
    """``n_steps`` of plain GD on (W, A) for every seed, in place (see :func:`ufm_gd`)."""
    S = Ws.shape[0]
    K, d = Ws.shape[1], Ws.shape[2]
    p, N = Phi.shape
    last = np.empty(S, dtype=np.float64)
    for s in prange(S):
        W, A = Ws[s], As[s]
        H = np.empty((d, N), dtype=Ws.dtype)
        Z = np.empty((K, N), dtype=Ws.dtype)
        G = np.empty((K, N), dtype=Ws.dtype)
        T = np.empty((d, N), dtype=Ws.dtype)
        dW = np.empty((K, d), dtype=Ws.dtype)
        dA = np.empty((d, p), dtype=Ws.dtype)
        f = np.nan
        for _ in range(n_steps):
            f = icm_grad(W, A, Phi, Y, lam_W, lam_A, loss_id, H, Z, G, T, dW, dA)
            if not np.isfinite(f):
                break
            for i in range(K):
                for j in range(d):
                    W[i, j] -= lr * dW[i, j]
            for i in range(d):
                for j in range(p):
                    A[i, j] -= lr * dA[i, j]
        if np.isfinite(f):  # the objective where the seed stands now
            f = icm_grad(W, A, Phi, Y, lam_W, lam_A, loss_id, H, Z, G, T, dW, dA)
        last[s] = f
    return last


@njit(cache=True)
def icm_flow_rhs(y, data, out):
    """Gradient-flow velocity ``-grad f`` of the input-coupled UFM for a flat state ``y = [W, A]``."""
    K, d, p, Phi, Y, lam_W, lam_A, loss_id = data
    N = Phi.shape[1]
    W = y[:K * d].reshape((K, d))
    A = y[K * d:].reshape((d, p))
    dW = out[:K * d].reshape((K, d))
    dA = out[K * d:].reshape((d, p))
    H = np.empty((d, N))
    Z = np.empty((K, N))
    G = np.empty((K, N))
    T = np.empty((d, N))
    icm_grad(W, A, Phi, Y, lam_W, lam_A, loss_id, H, Z, G, T, dW, dA)
    for i in range(out.shape[0]):
        out[i] = -out[i]
