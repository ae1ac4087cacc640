"""Attribute patterns of a class set: the pattern projection and, when it exists, its association scheme.

Two classes ``k, l`` share a *pattern* when they agree on the same set of
latent factors (``attributes[k, f] == attributes[l, f]`` for exactly the same
``f``); the diagonal is a pattern of its own. Every kernel built from the
attribute table (the encodings of THEORY §8.2, the shared-attribute kernels of
§7.4) depends on a pair only through its pattern, so

* :func:`project_patterns` (averaging a Gram over each pattern) is the
  orthogonal projection onto everything the attribute models can express, and
  :func:`outside_fraction` measures what lies outside it;
* when the pattern relations form a *commutative association scheme* (the
  product of factors in :func:`~ufm.settings.factorial`, the levels of a
  regular :func:`~ufm.settings.hierarchy`), the matrices that are constant on
  each pattern form a commutative algebra (the Bose-Mesner algebra), closed
  under products, and the softmax of a logit matrix in it stays in it
  (every column holds the same values). The input-coupled UFM started in the
  algebra then stays in it for all time, and its gradient flow reduces
  exactly to ``3 R`` numbers (``R`` = number of patterns) instead of
  ``O(K^2)``: :class:`PatternAlgebra` holds what that reduction needs.

Conventions. ``ids[k, l]`` numbers the patterns ``0..R-1``; pattern ``0`` is the
diagonal. A matrix in the algebra is ``X = sum_r x_r A_r`` (``A_r`` the 0/1
matrix of pattern ``r``: *pattern values* ``x``) or ``X = sum_j xi_j E_j``
(``E_j`` the primitive idempotents: *eigenvalues* ``xi``); ``xi = P x`` with
the eigenvalue table ``P[j, r]`` (the eigenvalue of ``A_r`` on ``E_j``).
``||X||_F^2 = sum_j m_j xi_j^2 = sum_r K n_r x_r^2`` (``m_j = rank E_j``,
``n_r`` = the valency, the number of classes in pattern ``r`` with a given
class). Idempotent ``0`` is ``J / K``: centring with ``P_K`` sets ``xi_0 = 0``.

References
----------
Bannai & Ito, *Algebraic Combinatorics I: Association Schemes* (1984), §2.2-2.3
(Bose-Mesner algebra, intersection numbers, eigenvalue table, multiplicities);
THEORY.md §7.4, §8.2, §8.6.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PatternAlgebra", "outside_fraction", "pattern_ids", "pattern_values", "project_patterns", "psd_root"]


def pattern_ids(attributes) -> np.ndarray:
    """K x K integer map: pairs ``(k, l)`` get the same id iff they agree on the same set of factors.

    The diagonal has id 0; the other ids follow the sorted agreement codes.
    Averaging a Gram over each id is the orthogonal projection onto the
    matrices that depend on a pair only through the attributes it shares
    (:func:`project_patterns`).

    Parameters
    ----------
    attributes : array of int (K, F)
        Factor levels, one row per class.

    Returns
    -------
    ndarray of int (K, K)
        The pattern id of each pair.
    """
    A = np.asarray(attributes)
    if A.ndim != 2 or A.shape[0] < 2:
        raise ValueError(f"attributes must be a (K, F) table with K >= 2 classes, got shape {A.shape}.")
    K, F = A.shape
    if F > 62:
        raise ValueError(f"attributes has F = {F} factors; patterns are coded in 62 bits. Merge factors.")
    code = np.zeros((K, K), dtype=np.int64)
    for f in range(F):
        code |= (A[:, None, f] == A[None, :, f]).astype(np.int64) << f
    code += 1
    code[np.diag_indices(K)] = 0
    _, ids = np.unique(code, return_inverse=True)
    return ids.reshape(K, K)


def pattern_values(grams, ids) -> np.ndarray:
    """Mean of each Gram of a stack over each pattern.

    Parameters
    ----------
    grams : array (T, K, K) or (K, K)
        Gram matrices.
    ids : int array (K, K)
        Pattern of each pair (:func:`pattern_ids`).

    Returns
    -------
    ndarray (T, R) or (R,)
        The pattern values (pattern means).
    """
    G = np.asarray(grams, dtype=np.float64)
    single = G.ndim == 2
    G = G[None] if single else G
    flat = ids.ravel()
    n = np.bincount(flat).astype(np.float64)
    out = np.stack([np.bincount(flat, weights=g.ravel(), minlength=len(n)) for g in G.reshape(len(G), -1)]) / n
    return out[0] if single else out


def project_patterns(grams, ids, *, normalize: bool = True) -> np.ndarray:
    """Average each Gram of a stack (T x K x K) over the pairs of equal ``ids``.

    Parameters
    ----------
    grams : array (T, K, K)
        Grams.
    ids : array of int (K, K)
        Pattern ids (:func:`pattern_ids`).
    normalize : bool
        Rescale each result to unit Frobenius norm.

    Returns
    -------
    ndarray (T, K, K)
        The projected Grams.
    """
    G = np.asarray(grams, dtype=np.float64)
    out = pattern_values(G, ids)[..., ids]
    if normalize:
        norm = np.linalg.norm(out, axis=(-2, -1), keepdims=True)
        out = out / np.where(norm > 0, norm, 1.0)
    return out


def outside_fraction(grams, ids) -> np.ndarray:
    """Fraction of each Gram's squared Frobenius norm outside the pattern matrices, in [0, 1].

    ``||G - Pi G||_F^2 / ||G||_F^2`` with ``Pi`` the pattern projection: 0 when
    the Gram depends on a pair only through its shared attributes; the part an
    attribute model cannot produce otherwise. Apply it to centred Grams to leave
    out the common offset.

    Parameters
    ----------
    grams : array (T, K, K) or (K, K)
        Grams.
    ids : int array (K, K)
        Pattern of each pair (:func:`pattern_ids`).

    Returns
    -------
    ndarray (T,) or float
        The fractions (0 for a zero Gram).
    """
    G = np.asarray(grams, dtype=np.float64)
    P = project_patterns(G, ids, normalize=False)
    num = np.sum((G - P) ** 2, axis=(-2, -1))
    den = np.sum(G ** 2, axis=(-2, -1))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def psd_root(K):
    """A square root ``R`` (r x n) with ``R^T R = K`` of a symmetric PSD matrix.

    Parameters
    ----------
    K : array (n, n)
        Symmetric positive semidefinite.

    Returns
    -------
    ndarray (r, n)
        ``sqrt(w_i) v_i^T`` over the eigenpairs with ``w_i`` above ``1e-12`` of the largest.
    """
    w, V = np.linalg.eigh(K)
    w = np.clip(w, 0.0, None)
    keep = w > 1e-12 * max(w.max(), 1e-300)
    return (V[:, keep] * np.sqrt(w[keep])).T


class PatternAlgebra:
    """The Bose-Mesner algebra of the attribute patterns, when they form a commutative association scheme.

    Built by :meth:`from_attributes`, which checks the scheme axioms (every
    pattern has the same number of partners for every class, and the number
    of classes ``m`` with ``(k, m)`` in pattern ``r`` and ``(m, l)`` in pattern
    ``s`` depends only on the pattern of ``(k, l)``) and raises ``ValueError``
    naming the failure otherwise. Costs ``O(K R)`` for the intersection
    numbers plus a check on up to ``check_pairs`` pairs, never a K x K
    eigen-decomposition, so it scales to thousands of classes.

    Attributes
    ----------
    ids : int array (K, K)
        Pattern of each pair (:func:`pattern_ids`).
    K, R : int
        Classes and patterns.
    valency : float array (R,)
        ``n_r``: partners of a class in pattern ``r`` (``n_0 = 1``).
    P : array (R, R)
        Eigenvalue table: ``P[j, r]`` = eigenvalue of ``A_r`` on ``E_j``.
        Row 0 is the trivial idempotent ``J / K`` (``P[0] = valency``).
    P_inv : array (R, R)
        ``inv(P)``: eigenvalues to pattern values.
    mult : float array (R,)
        ``m_j = rank E_j`` (``m_0 = 1``; they sum to K).
    """

    def __init__(self, ids, valency, P, mult):
        self.ids = ids
        self.K = int(ids.shape[0])
        self.R = int(len(valency))
        self.valency = valency
        self.P = P
        self.P_inv = np.linalg.inv(P)
        self.mult = mult

    @classmethod
    def from_attributes(cls, attributes, *, check_pairs: int = 4000, seed: int = 0) -> "PatternAlgebra":
        """The algebra of ``pattern_ids(attributes)``.

        Up to 128 patterns the eigenvalue table comes from the intersection
        numbers (``O(K R + R^4)``, no K x K eigen-decomposition: thousands of
        classes with few patterns are cheap); beyond, from one symmetric K x K
        eigen-decomposition (``K <= 4096``).

        Parameters
        ----------
        attributes : int array (K, F)
            The attribute table.
        check_pairs : int
            Pairs of classes on which the intersection numbers are checked
            (every pair when ``K^2`` is at most this).
        seed : int
            Seed of the pair sample and of the random element used to separate the eigenspaces.

        Returns
        -------
        PatternAlgebra
            The algebra.

        Raises
        ------
        ValueError
            The patterns are not a commutative association scheme (the message says which axiom fails).
        """
        ids = pattern_ids(attributes)
        K = ids.shape[0]
        R = int(ids.max()) + 1
        valency = np.bincount(ids[0], minlength=R).astype(np.float64)
        for k in range(1, K):
            if not np.array_equal(np.bincount(ids[k], minlength=R), valency):
                raise ValueError(f"the attribute patterns are not an association scheme: class {k} has another "
                                 f"number of partners per pattern than class 0 (an unbalanced attribute table).")
        rng = np.random.default_rng(seed)
        if R <= 128:
            P = cls._table_from_intersections(ids, R, K, rng, check_pairs)
        elif K <= 4096:
            P = cls._table_from_eigenvectors(ids, R, K, rng)
        else:
            raise ValueError(f"the attribute table has {R} patterns over K = {K} classes; the pattern reduction "
                             f"supports up to 128 patterns, or K <= 4096 classes.")
        j0 = int(np.argmin(np.sum(np.abs(P - valency), axis=1)))
        if not np.allclose(P[j0], valency):
            raise ValueError("the attribute patterns have no trivial idempotent; not an association scheme.")
        P = P[[j0] + [j for j in range(R) if j != j0]]
        mult = K / np.sum(P ** 2 / valency, axis=1)
        if not np.allclose(mult, np.round(mult), atol=1e-6) or abs(mult.sum() - K) > 1e-6:
            raise ValueError("the multiplicities of the attribute patterns are not integers summing to K; "
                             "not a symmetric association scheme.")
        return cls(ids, valency, P, np.round(mult))

    @staticmethod
    def _table_from_intersections(ids, R, K, rng, check_pairs):
        """``P`` from the intersection numbers ``p[t, r, s]`` (one pair per pattern ``t``, checked on others)."""
        _, where = np.unique(ids.ravel(), return_index=True)
        first = {t: divmod(int(w), K) for t, w in enumerate(where)}
        p = np.zeros((R, R, R))
        for t, (i, j) in first.items():
            p[t] = np.bincount(ids[i] * R + ids[:, j], minlength=R * R).reshape(R, R)
        pairs = np.argwhere(np.ones((K, K), dtype=bool)) if K * K <= check_pairs else \
            rng.integers(0, K, size=(check_pairs, 2))
        for i, j in pairs:
            c = np.bincount(ids[i] * R + ids[:, j], minlength=R * R).reshape(R, R)
            if not np.array_equal(c, p[ids[i, j]]):
                raise ValueError(f"the attribute patterns are not an association scheme: the class pairs "
                                 f"({i}, {j}) and {first[int(ids[i, j])]} share a pattern but not their "
                                 f"intersection numbers.")
        if not np.array_equal(p, p.transpose(0, 2, 1)):
            raise ValueError("the attribute patterns form a non-commutative scheme; no pattern reduction.")
        B = np.ascontiguousarray(np.transpose(p, (1, 0, 2)))     # B[r][t, s] = p[t, r, s]: the regular representation
        for _ in range(5):
            w, V = np.linalg.eig(np.tensordot(rng.standard_normal(R), B, axes=1))
            if np.max(np.abs(w.imag)) > 1e-8 * max(1.0, np.max(np.abs(w))):
                continue
            V = V.real
            try:
                D = np.matmul(np.linalg.inv(V), np.matmul(B, V))  # V^-1 B_r V: diagonal for every r
            except np.linalg.LinAlgError:
                continue
            diag = np.einsum("rjj->rj", D)
            if np.max(np.abs(D - diag[:, :, None] * np.eye(R))) <= 1e-8 * max(1.0, np.max(np.abs(D))):
                return diag.T
        raise ValueError("the eigenvalue table of the attribute patterns could not be separated numerically.")

    @staticmethod
    def _table_from_eigenvectors(ids, R, K, rng):
        """``P`` from the eigenvectors of a random element of the algebra (grouped by eigenvalue)."""
        w, V = np.linalg.eigh(rng.standard_normal(R)[ids])        # ids is symmetric: so is this element
        gaps = np.flatnonzero(np.diff(w) > 1e-8 * max(1.0, np.max(np.abs(w)))) + 1
        groups = np.split(np.arange(K), gaps)
        if len(groups) != R:
            raise ValueError(f"the attribute patterns give {len(groups)} eigenspaces for {R} patterns; not a "
                             f"commutative association scheme.")
        flat = ids.ravel()
        P = np.empty((R, R))
        for j, g in enumerate(groups):
            v = V[:, g[0]]
            P[j] = np.bincount(flat, weights=np.outer(v, v).ravel(), minlength=R)
        return P

    # -- conversions ------------------------------------------------------------------------
    def values(self, grams) -> np.ndarray:
        """Pattern values (pattern means) of a Gram or a stack.

        Parameters
        ----------
        grams : array (..., K, K)
            Matrices (need not lie in the algebra: this is the projection).

        Returns
        -------
        ndarray (..., R)
            One value per pattern.
        """
        return pattern_values(grams, self.ids)

    def eigen(self, x) -> np.ndarray:
        """Eigenvalues ``xi = P x`` of the matrices with pattern values ``x``.

        Parameters
        ----------
        x : array (..., R)
            Pattern values.

        Returns
        -------
        ndarray (..., R)
            Eigenvalues, one per idempotent.
        """
        return np.asarray(x, dtype=np.float64) @ self.P.T

    def pattern(self, xi) -> np.ndarray:
        """Pattern values ``x = P^-1 xi`` of the matrices with eigenvalues ``xi``.

        Parameters
        ----------
        xi : array (..., R)
            Eigenvalues.

        Returns
        -------
        ndarray (..., R)
            Pattern values.
        """
        return np.asarray(xi, dtype=np.float64) @ self.P_inv.T

    def dense(self, xi) -> np.ndarray:
        """The K x K matrices with eigenvalues ``xi``.

        Parameters
        ----------
        xi : array (..., R)
            Eigenvalues.

        Returns
        -------
        ndarray (..., K, K)
            The matrices.
        """
        return self.pattern(xi)[..., self.ids]

    def unit_centred(self, xi) -> np.ndarray:
        """Eigenvalues of ``P_K X P_K / ||P_K X P_K||_F``: idempotent 0 dropped, unit Frobenius norm.

        Parameters
        ----------
        xi : array (..., R)
            Eigenvalues of ``X``.

        Returns
        -------
        ndarray (..., R)
            Eigenvalues of the centred, unit-norm matrices (zero stays zero).
        """
        xi = np.array(xi, dtype=np.float64)
        xi[..., 0] = 0.0
        norm = np.sqrt(np.sum(self.mult * xi ** 2, axis=-1, keepdims=True))
        return xi / np.where(norm > 0, norm, 1.0)

    def inner(self, xi, eta) -> np.ndarray:
        """Frobenius inner products ``<X_a, Y_b> = sum_j m_j xi_aj eta_bj`` of two stacks.

        Parameters
        ----------
        xi : array (A, R) or (R,)
            Eigenvalues of the ``X_a``.
        eta : array (B, R) or (R,)
            Eigenvalues of the ``Y_b``.

        Returns
        -------
        ndarray (A, B)
            The inner products.
        """
        return (np.atleast_2d(xi) * self.mult) @ np.atleast_2d(eta).T

    def agree(self, attributes) -> np.ndarray:
        """Whether the pairs of each pattern agree on each factor.

        Parameters
        ----------
        attributes : int array (K, F)
            The attribute table the algebra was built from.

        Returns
        -------
        bool ndarray (R, F)
            ``[r, f]``: the pairs of pattern ``r`` share factor ``f`` (pattern 0, the diagonal: every factor).
        """
        A = np.asarray(attributes)
        _, where = np.unique(self.ids.ravel(), return_index=True)
        i, j = np.divmod(where, self.K)
        return A[i] == A[j]

    def semantic_gap(self, xi, attributes) -> np.ndarray:
        """:func:`ufm.metrics.semantic_gap` (centred) of matrices given by their eigenvalues, in O(R F).

        Exact for matrices in the algebra: their diagonal is constant, so the
        cosines are the pattern values over the diagonal value.

        Parameters
        ----------
        xi : array (..., R)
            Eigenvalues.
        attributes : int array (K, F)
            The attribute table the algebra was built from.

        Returns
        -------
        ndarray (...)
            The semantic gaps; NaN where the centred diagonal is zero.
        """
        x = self.pattern(self.unit_centred(xi))
        agree = self.agree(attributes)
        n = self.valency
        gaps = []
        for f in range(agree.shape[1]):
            same = agree[:, f].copy()
            same[0] = False
            diff = ~agree[:, f]
            if n[same].sum() == 0 or n[diff].sum() == 0:
                continue
            within = x[..., same] @ n[same] / n[same].sum()
            across = x[..., diff] @ n[diff] / n[diff].sum()
            gaps.append(within - across)
        if not gaps:
            raise ValueError("attributes: no factor splits the classes, so the semantic gap is undefined.")
        diag = x[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(diag > 0, np.mean(gaps, axis=0) / np.where(diag > 0, diag, 1.0), np.nan)

    def etf_distance(self, xi) -> np.ndarray:
        """:func:`ufm.metrics.etf_distance` (centred) of matrices given by their eigenvalues.

        Parameters
        ----------
        xi : array (..., R)
            Eigenvalues.

        Returns
        -------
        ndarray (...)
            Distances in ``[0, 2]``.
        """
        u = self.unit_centred(xi)
        cross = np.sum(self.mult[1:] * u[..., 1:], axis=-1) / np.sqrt(self.K - 1)
        return np.sqrt(np.maximum(2.0 - 2.0 * cross, 0.0))

    def contains(self, X, *, rtol: float = 1e-9) -> bool:
        """Whether a K x K matrix is constant on every pattern (lies in the algebra).

        Parameters
        ----------
        X : array (K, K)
            The matrix.
        rtol : float
            Tolerance on ``||X - Pi X||_F / ||X||_F``.

        Returns
        -------
        bool
            True when the projection changes ``X`` by at most ``rtol``.
        """
        X = np.asarray(X, dtype=np.float64)
        return bool(np.linalg.norm(X - project_patterns(X, self.ids, normalize=False))
                    <= rtol * max(np.linalg.norm(X), 1e-300))
