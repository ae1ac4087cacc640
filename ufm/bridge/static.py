"""The static decomposition of a Gram: ETF part plus one attribute kernel per factor (THEORY §8.6 step 2).

Descriptive, per record: it says how much of each centred, unit-norm Gram is
the simplex-ETF direction ``P_K`` and how much each factor's kernel
``P_K S_f P_K``, with ordinary least-squares intervals. It has ``1 + F``
numbers per record, so it describes a trajectory but never explains one.

References
----------
THEORY.md §7.4, §8.6; Zhao, Papadimitriou, Thrampoulidis, "Structure Before Collapse", arXiv 2606.26749.
"""

from __future__ import annotations

import math

import numpy as np

from .._util import numerical_rank
from ..metrics import centering_matrix
from .observed import unit_centred

__all__ = ["static_decomposition"]


def _regressors(attributes):
    """Basis ``[P_K, P_K S_f P_K ...]`` over the factors that split the classes; names of the kept factors."""
    A = np.asarray(attributes)
    K = A.shape[0]
    P = centering_matrix(K)
    basis, kept = [P], []
    for f in range(A.shape[1]):
        S = (A[:, None, f] == A[None, :, f]).astype(float)
        B = P @ S @ P
        X = np.stack([b.ravel() for b in basis + [B]], axis=1)
        sv = np.linalg.svd(X, compute_uv=False)
        if numerical_rank(sv, 1e-10) == sv.size:
            basis.append(B)
            kept.append(f)
    return basis, kept


def static_decomposition(grams, attributes, *, level: float = 0.95) -> dict:
    """Least squares ``G_c = a P_K + sum_f b_f P_K S_f P_K + E`` per Gram, with confidence intervals.

    ``G_c`` is the centred, unit-norm Gram (THEORY §8.6 steps 1-2). Factors
    that do not split the classes or repeat earlier ones (their ``P S_f P`` is
    linearly dependent on the basis) are dropped and listed in ``"dropped"``.

    The regression runs over the ``K(K+1)/2`` distinct entries (off-diagonal
    entries weighted by sqrt 2, so the fit is the Frobenius projection); the
    centred symmetric matrices span ``K(K-1)/2`` dimensions, which gives
    ``df = K(K-1)/2 - (1 + F_kept)`` residual degrees of freedom. Intervals are
    the t-intervals of ordinary least squares, which treat the residual
    entries as independent with equal variance: residuals of real Grams are
    correlated, so read them as a lower bound on the uncertainty.

    Parameters
    ----------
    grams : array (K, K) or (T, K, K)
        Observed Grams (centred and normalized here).
    attributes : array of int (K, F)
        Factor levels, one row per class.
    level : float
        Confidence level of the intervals.

    Returns
    -------
    dict
        ``a`` (T,), ``b`` (T, F_kept), ``a_ci`` (T, 2), ``b_ci`` (T, F_kept, 2),
        ``r2`` (T,), ``fitted`` (T, K, K, unit-centred model Grams), ``factors``
        (kept factor indices), ``dropped``, ``df``.
    """
    from scipy import stats

    G = unit_centred(grams)
    single = G.ndim == 2
    G = G[None] if single else G
    T, K, _ = G.shape
    basis, kept = _regressors(attributes)
    iu = np.triu_indices(K)
    w = np.where(iu[0] == iu[1], 1.0, math.sqrt(2.0))
    X = np.stack([b[iu] * w for b in basis], axis=1)
    y = G[:, iu[0], iu[1]] * w
    XtX_inv = np.linalg.inv(X.T @ X)
    coef = y @ X @ XtX_inv.T                                  # (T, p)
    resid = y - coef @ X.T
    rss = np.sum(resid ** 2, axis=1)
    df = K * (K - 1) // 2 - X.shape[1]
    if df > 0:
        se = np.sqrt(np.outer(rss / df, np.diag(XtX_inv)))
        q = stats.t.ppf(0.5 + level / 2, df)
        ci = np.stack([coef - q * se, coef + q * se], axis=-1)
    else:
        ci = np.full(coef.shape + (2,), np.nan)
    fitted = np.einsum("tp,pkl->tkl", coef, np.stack(basis))
    return {"a": coef[:, 0], "b": coef[:, 1:], "a_ci": ci[:, 0], "b_ci": ci[:, 1:], "r2": 1.0 - rss,
            "fitted": fitted, "factors": kept,
            "dropped": [f for f in range(np.asarray(attributes).shape[1]) if f not in kept], "df": df,
            "level": level}
