"""Neural-collapse and semantic-structure metrics (THEORY §7).

Every metric here names its variant and says whether, and how, it centres.
Formulas and their sources are in THEORY.md §7 (reference code in Appendix A.0,
published test vectors TV6 in Appendix A.6).

Conventions (THEORY §0.1, §7.1)
-------------------------------
* Features ``H`` are d x N, one column per example; ``labels`` is a 1-D integer
  vector of length N with classes ``0..K-1``. ``K`` defaults to
  ``labels.max() + 1``; pass ``K=`` to insist on a class count (a class with
  no example is then an error, never skipped). Functions that take a
  classifier read ``K`` from ``W`` (K x d). ``b`` has length K.
* Class means ``mu_k`` are plain averages over the class. The global mean
  ``mu_G`` is the **sample mean over all N examples** (Papyan et al. 2020);
  for imbalanced classes this differs from the mean of the class means, and
  every metric that "centres the class means" uses ``mu_G``. Centred means
  ``M~ = [mu_k - mu_G]`` satisfy ``M~ @ counts = 0``, so they have rank at most
  ``K-1`` (never K).
* Covariances: ``Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T``
  (pooled over examples) and ``Sigma_B = (1/K) sum_k (mu_k - mu_G)(mu_k - mu_G)^T``
  (unweighted over classes), as in THEORY §7.1.
* K x K Grams (class means, classifiers, items) are centred, when asked,
  with ``P_K = I - 11^T/K``, i.e. with the *mean of the K rows*; for a Gram of
  balanced class means this is the same as centring with ``mu_G``.
* ``*_from_gram`` twins take the N x N sample Gram ``G = H^T H`` and give the
  same number as the feature route (to rounding): every quantity here is a
  function of inner products. They first centre ``G`` with the sample mean
  (``G <- C G C``, ``C = I - 11^T/N``), which leaves every metric unchanged and
  reduces cancellation. The Gram route squares the condition number, so it
  resolves relative effects down to about ``1e-8`` (not ``1e-16``).
* Everything is computed in float64. Bad input (wrong shapes, NaN/inf,
  labels out of range or missing classes, a Gram that is not symmetric PSD,
  too few classes) raises ``ValueError`` naming the argument; nothing is
  clipped silently.

Numerical tolerances used throughout (module constants)
-------------------------------------------------------
``SYM_RTOL = 1e-10``: a Gram must satisfy ``max|G - G^T| <= SYM_RTOL * max|G|``.
``PSD_RTOL = 1e-10``: its smallest eigenvalue must be ``>= -PSD_RTOL * max|eig|``.
``ZERO_RTOL = 1e-12``: a quantity below this fraction of its natural scale is
treated as zero (degenerate input raises).
``EIG_DROP = 1e-12``: spectral metrics drop eigenvalues below
``EIG_DROP * lambda_max`` (THEORY §7.5).

References
----------
Papyan, Han, Donoho, arXiv 2008.08186 (PNAS 2020): NC1-NC4, Sigma_W, Sigma_B.
Zhu et al., arXiv 2105.02375 (NeurIPS 2021): Gram-to-ETF distances (NC2, NC3).
Tirer, Huang, Niles-Weed, arXiv 2210.16658 (ICML 2023): NC1~ = tr Sigma_W / tr Sigma_B.
Galanti, Gyorgy, Hutter, arXiv 2112.15121 (ICLR 2022): CDNV.
Liu et al., arXiv 2303.06484 (ICLR 2023): hyperspherical uniformity (GNC2).
Wu & Papyan, arXiv 2405.17767 (NeurIPS 2024): UNC3, GNC2 in language models.
Roy & Vetterli, EUSIPCO 2007: effective rank.
Kornblith et al., arXiv 1905.00414 (ICML 2019): CKA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._checks import check_attributes
from ._util import numerical_rank

__all__ = [
    # class statistics
    "ClassStats", "class_means", "class_stats", "class_mean_gram",
    # NC1
    "NC1_VARIANTS", "nc1", "nc1_from_gram", "cdnv", "cdnv_mean", "cdnv_from_gram", "cdnv_mean_from_gram",
    # NC2
    "etf_distance", "nc2", "nc2_from_gram", "nc2_classifier", "nc2_papyan", "nc2_papyan_from_gram",
    "gnc2", "gnc2_from_gram",
    # NC3 / NC4
    "NC3_VARIANTS", "nc3", "unc3", "nc4",
    # Gram utilities and semantic scores
    "center_gram", "centering_matrix", "double_centre", "cosine_matrix", "attribute_kernel", "semantic_gap", "offdiag_alignment",
    "cka", "excess_cka", "SemanticFit", "semantic_regression",
    # spectra
    "effective_rank", "participation_ratio",
]

SYM_RTOL = 1e-10
PSD_RTOL = 1e-10
ZERO_RTOL = 1e-12
EIG_DROP = 1e-12
# nc1_from_gram "pinv": eigenvalues of the class-mean Gram below _GRAM_PINV_FLOOR * K * eps * max|G|
# are rounding noise of the sample Gram (measured: <= 4 eps max|G| on random data) and are not inverted.
_GRAM_PINV_FLOOR = 32.0

#: Variants understood by :func:`nc1` and :func:`nc1_from_gram`.
NC1_VARIANTS = ("pinv", "svd", "trace_ratio")
#: Variants understood by :func:`nc3`.
NC3_VARIANTS = ("zhu", "papyan")


# ---------------------------------------------------------------------------
# input checking
# ---------------------------------------------------------------------------
def _float_matrix(x, name: str, what: str) -> np.ndarray:
    """A finite, non-empty 2-D float64 array, or a ValueError naming ``name``."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real {what}, got an object of type {type(x).__name__}.") from None
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array ({what}), got shape {a.shape}.")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}); it must be a non-empty {what}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf; pass finite values ({what}).")
    return a


def _check_features(H, name: str = "H") -> np.ndarray:
    return _float_matrix(H, name, "d x N feature matrix, one column per example")


def _check_K(K, minimum: int = 2) -> int | None:
    if K is None:
        return None
    if isinstance(K, (bool, np.bool_)) or not isinstance(K, (int, np.integer)):
        raise ValueError(f"K must be an integer number of classes >= {minimum}, got {K!r}.")
    if K < minimum:
        raise ValueError(f"K must be >= {minimum} for this metric, got K={K}.")
    return int(K)


def _check_labels(labels, N: int, K=None, *, n_from: str = "H", min_classes: int = 2):
    """Validate hard labels; return (y int64, K, counts)."""
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be a 1-D vector of integer class indices, got shape {lab.shape}.")
    if lab.dtype == np.bool_ or not (np.issubdtype(lab.dtype, np.integer) or np.issubdtype(lab.dtype, np.floating)):
        raise ValueError(f"labels must hold integer class indices 0..K-1, got dtype {lab.dtype}.")
    if np.issubdtype(lab.dtype, np.floating):
        if not (np.all(np.isfinite(lab)) and np.all(lab == np.round(lab))):
            raise ValueError("labels must hold integer class indices 0..K-1; found non-integer or non-finite values.")
    y = lab.astype(np.int64)
    if y.size != N:
        raise ValueError(
            f"labels must have one entry per example: {n_from} has N={N} examples but len(labels)={y.size}."
        )
    if y.size == 0:
        raise ValueError("labels is empty; give at least one example per class.")
    if y.min() < 0:
        raise ValueError(f"labels must be class indices >= 0, found {y.min()}.")
    Kc = _check_K(K, 1)
    if Kc is None:
        Kc = int(y.max()) + 1
    elif y.max() >= Kc:
        raise ValueError(f"labels contain class {y.max()} but K={Kc}; labels must lie in 0..K-1 (or pass a larger K).")
    if Kc < min_classes:
        raise ValueError(
            f"labels name {Kc} class(es) but this metric needs K >= {min_classes} classes; "
            "pass labels with more classes."
        )
    counts = np.bincount(y, minlength=Kc)
    if np.any(counts == 0):
        missing = np.flatnonzero(counts == 0).tolist()
        raise ValueError(
            f"classes {missing} have no example in labels (K={Kc}); every class needs at least one example. "
            "Relabel to 0..K-1 without gaps or pass the right K."
        )
    return y, Kc, counts


def _check_classifier(W, d: int | None = None, name: str = "W") -> np.ndarray:
    W = _float_matrix(W, name, "K x d classifier matrix, one row per class")
    if d is not None and W.shape[1] != d:
        raise ValueError(
            f"{name} must be K x d with d = {d} (rows of H), got shape {W.shape}; pass W with one row per class."
        )
    return W


def _check_gram(G, name: str = "gram", *, psd: bool = True, size: int | None = None,
                size_from: str = "", min_size: int = 1) -> np.ndarray:
    """Square, finite, symmetric (within SYM_RTOL) and, if ``psd``, PSD (within PSD_RTOL)."""
    G = _float_matrix(G, name, "square Gram matrix")
    if G.shape[0] != G.shape[1]:
        raise ValueError(f"{name} must be a square Gram matrix, got shape {G.shape}.")
    n = G.shape[0]
    if size is not None and n != size:
        raise ValueError(f"{name} must be {size} x {size} ({size_from}), got shape {G.shape}.")
    if n < min_size:
        raise ValueError(f"{name} is {n} x {n} but this metric needs at least {min_size} rows (classes/items).")
    scale = np.max(np.abs(G))
    asym = np.max(np.abs(G - G.T))
    if asym > SYM_RTOL * scale:
        raise ValueError(
            f"{name} is not symmetric: max|G - G^T| = {asym:.3g} exceeds {SYM_RTOL:g} * max|G| = "
            f"{SYM_RTOL * scale:.3g}; pass a Gram matrix X^T X (or symmetrize it with (G + G.T)/2)."
        )
    G = 0.5 * (G + G.T)
    if psd:
        lam = np.linalg.eigvalsh(G)
        lscale = np.max(np.abs(lam))
        if lam[0] < -PSD_RTOL * lscale:
            raise ValueError(
                f"{name} is not positive semidefinite: smallest eigenvalue {lam[0]:.3g} < -{PSD_RTOL:g} * "
                f"max|eig| = {-PSD_RTOL * lscale:.3g}; pass a Gram matrix X^T X."
            )
    return G


def _check_variant(variant, allowed, who: str) -> str:
    if variant not in allowed:
        raise ValueError(f"{who}: unknown variant {variant!r}; choose one of {allowed}.")
    return variant


def centering_matrix(K: int) -> np.ndarray:
    """The centring matrix ``P_K = I - 11^T/K`` (THEORY §0.1): ``P_K G P_K`` removes the mean of the K rows.

    Parameters
    ----------
    K : int
        Its size.

    Returns
    -------
    ndarray, K x K
        ``P_K``.
    """
    return np.eye(K) - np.full((K, K), 1.0 / K)


def _averaging(y: np.ndarray, K: int, counts: np.ndarray) -> np.ndarray:
    """N x K matrix A with A[i, k] = 1/n_k if y_i = k: class means are H @ A."""
    A = np.zeros((y.size, K))
    A[np.arange(y.size), y] = 1.0 / counts[y]
    return A


def _offdiag(K: int) -> np.ndarray:
    return ~np.eye(K, dtype=bool)


# ---------------------------------------------------------------------------
# class statistics
# ---------------------------------------------------------------------------
class ClassStats(NamedTuple):
    """Class statistics of THEORY §7.1 (a tuple: ``M, mu_G, Sigma_W, Sigma_B = class_stats(...)``).

    Attributes
    ----------
    M : ndarray, d x K
        Class means.
    mu_G : ndarray, length d
        Sample global mean.
    Sigma_W : ndarray, d x d
        Within-class covariance (pooled over examples, 1/N).
    Sigma_B : ndarray, d x d
        Between-class covariance (1/K, centred with the sample mean).
    """

    M: np.ndarray        #: d x K class means
    mu_G: np.ndarray     #: length-d sample global mean
    Sigma_W: np.ndarray  #: d x d within-class covariance (pooled, 1/N)
    Sigma_B: np.ndarray  #: d x d between-class covariance (1/K, sample-mean centred)


def class_means(H, labels, K=None):
    """Class means and the global mean of features (THEORY §7.1).

    Parameters
    ----------
    H : array, d x N
        Features, one column per example.
    labels : array of int, length N
        Class of each example, in ``0..K-1``; every class needs an example.
    K : int, optional
        Number of classes; default ``labels.max() + 1``.

    Returns
    -------
    M : ndarray, d x K
        Class means ``mu_k = (1/n_k) sum_{i: y_i = k} h_i`` (not centred).
    mu_G : ndarray, length d
        Global mean: the **sample mean over all N examples** (Papyan et al.
        2020). It equals the mean of the class means only for balanced classes.

    References
    ----------
    Papyan, Han, Donoho, arXiv 2008.08186; THEORY.md §7.1.
    """
    H = _check_features(H)
    y, K, counts = _check_labels(labels, H.shape[1], K, min_classes=1)
    M = H @ _averaging(y, K, counts)
    return M, H.mean(axis=1)


def class_stats(H, labels, K=None) -> ClassStats:
    """Class means, global mean and the covariances Sigma_W, Sigma_B (THEORY §7.1).

    ``Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T`` (pooled over the
    N examples) and ``Sigma_B = (1/K) sum_k (mu_k - mu_G)(mu_k - mu_G)^T``
    (unweighted over classes), centred with the sample global mean ``mu_G``
    (Papyan's choice, also for imbalanced classes).

    Parameters
    ----------
    H : array, d x N
        Features, one column per example.
    labels : array of int, length N
        Class of each example in ``0..K-1``.
    K : int, optional
        Number of classes; default ``labels.max() + 1``.

    Returns
    -------
    ClassStats
        Named tuple ``(M, mu_G, Sigma_W, Sigma_B)``.

    References
    ----------
    Papyan, Han, Donoho, arXiv 2008.08186; Tirer et al. arXiv 2210.16658 §3;
    THEORY.md §7.1.
    """
    H = _check_features(H)
    y, K, counts = _check_labels(labels, H.shape[1], K, min_classes=1)
    N = H.shape[1]
    M = H @ _averaging(y, K, counts)
    mu_G = H.mean(axis=1)
    D = H - M[:, y]
    Mc = M - mu_G[:, None]
    return ClassStats(M, mu_G, D @ D.T / N, Mc @ Mc.T / K)


def _centred_means(H, y, K, counts):
    """(M~ d x K, D d x N): centred class means (sample global mean) and within-class deviations."""
    M = H @ _averaging(y, K, counts)
    return M - H.mean(axis=1)[:, None], H - M[:, y]


class _GramParts(NamedTuple):
    Gc: np.ndarray    # N x N Gram of features centred at mu_G
    GcA: np.ndarray   # N x K: (h_i - mu_G)^T mu~_k
    Gmu: np.ndarray   # K x K: M~^T M~ (centred class means, sample mean)
    within: np.ndarray  # length N: ||h_i - mu_{y_i}||^2
    scale: float      # max_i ||h_i - mu_G||^2
    gmax: float       # max|G| of the input (uncentred) Gram: its rounding level is ~eps * gmax


def _sample_gram(G, labels, K, check_psd: bool, min_classes: int = 2):
    G = _check_gram(G, "G", psd=check_psd)
    N = G.shape[0]
    y, K, counts = _check_labels(labels, N, K, n_from="G (rows)", min_classes=min_classes)
    Gc = double_centre(G)
    Gc = 0.5 * (Gc + Gc.T)
    A = _averaging(y, K, counts)
    GcA = Gc @ A
    Gmu = A.T @ GcA
    Gmu = 0.5 * (Gmu + Gmu.T)
    idx = np.arange(N)
    within = np.diag(Gc) - 2.0 * GcA[idx, y] + Gmu[y, y]
    return _GramParts(Gc, GcA, Gmu, within, float(np.max(np.diag(Gc))), float(np.max(np.abs(G)))), y, K, counts


def class_mean_gram(G, labels, K=None, *, check_psd: bool = True) -> np.ndarray:
    """Gram ``M~^T M~`` of the centred class means, from the sample Gram alone (THEORY §7.1-7.2).

    With ``A`` the N x K class-averaging matrix (``M = H A``) and ``G`` centred
    with the sample mean (``G_c = C G C``), ``M~^T M~ = A^T G_c A``.

    Parameters
    ----------
    G : array, N x N
        Sample Gram ``H^T H`` (symmetric PSD).
    labels : array of int, length N
        Class of each example.
    K : int, optional
        Number of classes; default ``labels.max() + 1``.
    check_psd : bool
        Check that ``G`` is PSD (an ``O(N^3)`` eigenvalue computation); pass
        False for very large N once you trust the input.

    Returns
    -------
    ndarray, K x K
        Gram of ``mu_k - mu_G`` with ``mu_G`` the **sample mean** (Papyan); for
        imbalanced classes ``(M~^T M~) @ counts = 0`` rather than ``@ 1 = 0``.

    References
    ----------
    Papyan, Han, Donoho, arXiv 2008.08186; THEORY.md §7.1.
    """
    parts, _, _, _ = _sample_gram(G, labels, K, check_psd, min_classes=1)
    return parts.Gmu


def _require_separated(trace_Gmu: float, scale: float, name: str):
    if not trace_Gmu > ZERO_RTOL * scale:
        raise ValueError(
            f"{name}: the class means coincide (||M~||_F^2 = {trace_Gmu:.3g} <= {ZERO_RTOL:g} * "
            f"max_i ||h_i - mu_G||^2 = {ZERO_RTOL * scale:.3g}), so the between-class scatter is zero and the "
            "metric is undefined; check the features and labels."
        )


# ---------------------------------------------------------------------------
# NC1
# ---------------------------------------------------------------------------
def _default_rank(rank, r_max: int, who: str) -> int:
    if rank is None:
        return r_max
    if isinstance(rank, (bool, np.bool_)) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}.")
    if rank > r_max:
        raise ValueError(f"rank={rank} exceeds the rank bound {r_max} of the centred class means ({who}); "
                         f"pass rank <= {r_max}.")
    return int(rank)


def nc1(H, labels, variant: str = "pinv", *, K=None, rank=None) -> float:
    """Within-class variability collapse NC1 from features (THEORY §7.1).

    Variants:

    ``"pinv"`` (Papyan et al. 2020)
        ``(1/K) tr(Sigma_W Sigma_B^+)`` with ``numpy.linalg.pinv`` (its default
        cutoff ``d * eps * sigma_max``).
    ``"svd"``
        The same quantity, but ``Sigma_B^+`` is taken from the SVD truncated to
        rank ``r = min(d, K-1)``, the rank of centred class means (read from
        the thin SVD of ``M~``, since ``Sigma_B = M~ M~^T / K``). Robust when
        ``Sigma_B`` carries tiny spurious eigenvalues that ``pinv`` would invert.
    ``"trace_ratio"`` (NC1~, Tirer et al. 2023)
        ``tr Sigma_W / tr Sigma_B``.

    Centring: ``Sigma_B`` is built from class means centred at the **sample
    global mean** ``mu_G`` (Papyan's choice; for imbalanced classes this is
    not the mean of the class means). ``Sigma_W`` is pooled over examples
    (``1/N``), ``Sigma_B`` is unweighted over classes (``1/K``). The value is
    invariant to rotations, translations and positive scalings of ``H`` and to
    relabelling of the classes.

    Parameters
    ----------
    H : array, d x N
        Features, one column per example.
    labels : array of int, length N
        Class of each example in ``0..K-1``; at least two classes.
    variant : {"pinv", "svd", "trace_ratio"}
        See above.
    K : int, optional
        Number of classes; default ``labels.max() + 1``.
    rank : int, optional
        ``"svd"`` only: truncation rank, default ``min(d, K-1)``.

    Returns
    -------
    float
        0 at perfect collapse; larger means more within-class spread.

    Raises
    ------
    ValueError
        Unknown variant; bad shapes or labels; class means that coincide
        (``||M~||_F^2 <= 1e-12 max_i ||h_i - mu_G||^2``: the between-class
        scatter vanishes); for ``"svd"``, a rank-``r`` singular value of ``M~``
        below ``1e-12`` of the largest (pass a smaller ``rank``).

    References
    ----------
    Papyan, Han, Donoho, arXiv 2008.08186 (NC1); Tirer, Huang, Niles-Weed,
    arXiv 2210.16658 (NC1~); THEORY.md §7.1, TV6 (Appendix A.6).
    """
    _check_variant(variant, NC1_VARIANTS, "nc1")
    H = _check_features(H)
    d, N = H.shape
    y, K, counts = _check_labels(labels, N, K)
    Mc, D = _centred_means(H, y, K, counts)
    Hc = H - H.mean(axis=1)[:, None]
    _require_separated(float(np.sum(Mc * Mc)), float(np.max(np.sum(Hc * Hc, axis=0))), "H")
    if variant == "trace_ratio":
        return float((np.sum(D * D) / N) / (np.sum(Mc * Mc) / K))
    if variant == "pinv":
        Sw = D @ D.T / N
        Sb = Mc @ Mc.T / K
        return float(np.trace(Sw @ np.linalg.pinv(Sb)) / K)
    r = _default_rank(rank, min(d, K - 1), "min(d, K-1)")
    U, s, _ = np.linalg.svd(Mc, full_matrices=False)
    if numerical_rank(s, ZERO_RTOL) < r:
        raise ValueError(
            f"H: the centred class means have numerical rank < {r} (singular value {r} is {s[r - 1]:.3g}, "
            f"largest {s[0]:.3g}); pass rank=<smaller> or use variant='pinv'."
        )
    proj = D.T @ U[:, :r]                      # N x r: u_j^T (h_i - mu_{y_i})
    return float(np.sum(np.sum(proj * proj, axis=0) / N / s[:r] ** 2))


def nc1_from_gram(G, labels, variant: str = "pinv", *, K=None, rank=None, check_psd: bool = True) -> float:
    """NC1 (all three variants of :func:`nc1`) from the N x N sample Gram ``H^T H`` alone (THEORY §7.1).

    Derivation. Centre ``G`` with the sample mean. With ``A`` the class-averaging
    matrix, ``G_mu = A^T G_c A = M~^T M~`` (K x K) and
    ``Z[i, k] = (h_i - mu_{y_i})^T mu~_k = (G_c A)[i, k] - G_mu[y_i, k]``:

    * ``tr Sigma_W = (1/N) sum_i ||h_i - mu_{y_i}||^2`` (from ``G_c`` and ``G_mu``),
      ``tr Sigma_B = tr(G_mu) / K``;
    * ``Sigma_B^+ = K M~ (G_mu^+)^2 M~^T``, hence
      ``(1/K) tr(Sigma_W Sigma_B^+) = (1/N) tr((G_mu^+)^2 Z^T Z)``.

    ``G_mu`` has the exact null vector ``counts`` (``M~ @ counts = 0``); the
    pseudo-inverse is taken on its restriction to ``counts^perp`` so rounding in
    that direction is never inverted. ``"pinv"`` then inverts the eigenvalues
    of that (K-1) x (K-1) block above numpy's default pinv cutoff
    (``(K-1) eps lambda_max``) *and* above the rounding level of the sample Gram,
    ``32 K eps max|G|`` (eigenvalues below it are noise of ``G`` itself; this
    is what makes the Gram route agree with the feature route when
    ``d < K-1``, where the class-mean Gram is rank-deficient). ``"svd"`` keeps
    the top ``rank`` eigenpairs (default ``K-1``). The Gram does not know d: if
    ``d < K-1``, pass ``rank=d`` with ``"svd"``, otherwise it raises.

    Centring, variants and invariances are those of :func:`nc1` (sample global
    mean, Papyan). Agrees with :func:`nc1` to rounding; the Gram route resolves
    NC1 only down to about ``1e-16 * scale^2 / between^2``.

    Parameters
    ----------
    G : array, N x N
        Sample Gram ``H^T H`` (symmetric PSD).
    labels : array of int, length N
        Class of each example.
    variant : {"pinv", "svd", "trace_ratio"}
        As in :func:`nc1`.
    K : int, optional
        Number of classes; default ``labels.max() + 1``.
    rank : int, optional
        ``"svd"`` only: truncation rank, default ``K-1``.
    check_psd : bool
        Check that ``G`` is PSD (``O(N^3)``).

    Returns
    -------
    float
        The same number as :func:`nc1` on the features (to rounding).

    References
    ----------
    Papyan, Han, Donoho, arXiv 2008.08186; Tirer et al. arXiv 2210.16658;
    THEORY.md §7.1.
    """
    _check_variant(variant, NC1_VARIANTS, "nc1_from_gram")
    parts, y, K, counts = _sample_gram(G, labels, K, check_psd)
    N = y.size
    Gmu = parts.Gmu
    _require_separated(float(np.trace(Gmu)), parts.scale, "G")
    if variant == "trace_ratio":
        return float((np.sum(parts.within) / N) / (np.trace(Gmu) / K))
    # orthonormal basis of counts^perp (the range of M~^T)
    Qfull, _ = np.linalg.qr(counts.astype(np.float64)[:, None], mode="complete")
    Q = Qfull[:, 1:]
    Gr = Q.T @ Gmu @ Q
    Gr = 0.5 * (Gr + Gr.T)
    Z = parts.GcA - Gmu[y]                    # N x K
    ZQ = Z @ Q
    X = ZQ.T @ ZQ                             # (K-1) x (K-1)
    lam, V = np.linalg.eigh(Gr)
    lam, V = lam[::-1], V[:, ::-1]
    quad = np.einsum("ij,ik,kj->j", V, X, V)   # v_j^T X v_j
    if variant == "pinv":
        eps = np.finfo(np.float64).eps
        cut = max((K - 1) * eps * lam[0], _GRAM_PINV_FLOOR * K * eps * parts.gmax)
        keep = lam > cut
        return float(np.sum(quad[keep] / lam[keep] ** 2) / N)
    r = _default_rank(rank, K - 1, "K-1")
    if not lam[r - 1] > ZERO_RTOL * lam[0]:
        raise ValueError(
            f"G: the centred class-mean Gram has numerical rank < {r} (eigenvalue {r} is {lam[r - 1]:.3g}, "
            f"largest {lam[0]:.3g}); if the features have d < K-1 dimensions pass rank=d."
        )
    return float(np.sum(quad[:r] / lam[:r] ** 2) / N)


def _cdnv_matrix(sig2: np.ndarray, Gmu: np.ndarray) -> np.ndarray:
    dg = np.diag(Gmu)
    dist2 = dg[:, None] + dg[None, :] - 2.0 * Gmu
    num = 0.5 * (sig2[:, None] + sig2[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        V = num / dist2
    K = Gmu.shape[0]
    zero = (dist2 <= 0) & _offdiag(K)
    V[zero] = np.inf
    np.fill_diagonal(V, np.nan)
    return V


def cdnv(H, labels, *, K=None) -> np.ndarray:
    """Class-distance normalized variance matrix (Galanti et al. 2022; THEORY §7.1).

    ``V[k, l] = (sigma_k^2 + sigma_l^2) / (2 ||mu_k - mu_l||^2)`` with
    ``sigma_k^2 = (1/n_k) sum_{i in k} ||h_i - mu_k||^2`` (no centring needed:
    translation invariant; no global mean enters).

    Parameters
    ----------
    H : array, d x N
        Features, one column per example.
    labels : array of int, length N
        Class of each example, at least two classes.
    K : int, optional
        Number of classes; default ``labels.max() + 1``.

    Returns
    -------
    ndarray, K x K
        Symmetric; the **diagonal is NaN** (k = l is undefined), so an
        accidental ``V.mean()`` is loudly NaN: use :func:`cdnv_mean`. An entry
        is ``+inf`` when two class means coincide.

    References
    ----------
    Galanti, Gyorgy, Hutter, arXiv 2112.15121; THEORY.md §7.1.
    """
    H = _check_features(H)
    y, K, counts = _check_labels(labels, H.shape[1], K)
    Mc, D = _centred_means(H, y, K, counts)
    sig2 = np.bincount(y, weights=np.sum(D * D, axis=0), minlength=K) / counts
    return _cdnv_matrix(sig2, Mc.T @ Mc)


def cdnv_from_gram(G, labels, *, K=None, check_psd: bool = True) -> np.ndarray:
    """CDNV matrix of :func:`cdnv` from the N x N sample Gram ``H^T H`` (THEORY §7.1).

    ``sigma_k^2`` and ``||mu_k - mu_l||^2 = G_mu[k,k] + G_mu[l,l] - 2 G_mu[k,l]``
    are inner-product expressions (``G_mu`` the class-mean Gram). Same
    conventions (NaN diagonal, ``+inf`` for coincident means).

    Parameters
    ----------
    G : array, N x N
        Sample Gram (symmetric PSD).
    labels : array of int, length N
        Class of each example.
    K : int, optional
        Number of classes.
    check_psd : bool
        Check that ``G`` is PSD (``O(N^3)``).

    Returns
    -------
    ndarray, K x K
        The CDNV matrix, as :func:`cdnv` from the features (diagonal 0).

    References
    ----------
    Galanti, Gyorgy, Hutter, arXiv 2112.15121; THEORY.md §7.1.
    """
    parts, y, K, counts = _sample_gram(G, labels, K, check_psd)
    sig2 = np.bincount(y, weights=parts.within, minlength=K) / counts
    return _cdnv_matrix(sig2, parts.Gmu)


def _offdiag_mean(V: np.ndarray) -> float:
    return float(np.mean(V[_offdiag(V.shape[0])]))


def cdnv_mean(H, labels, *, K=None) -> float:
    """Mean of the CDNV over ordered pairs ``k != l`` (Galanti et al. 2022; THEORY §7.1).

    Uncentred (translation invariant). ``+inf`` if two class means coincide.
    See :func:`cdnv` for the matrix.

    Parameters
    ----------
    H : array, d x N
        Features, one column per example.
    labels : array of int, length N
        Class of each example, in ``0..K-1``; every class needs an example.
    K : int, optional
        Number of classes; default ``labels.max() + 1``.

    Returns
    -------
    float
        Mean CDNV over ordered class pairs.

    References
    ----------
    Galanti, Gyorgy, Hutter, arXiv 2112.15121; THEORY.md §7.1.
    """
    return _offdiag_mean(cdnv(H, labels, K=K))


def cdnv_mean_from_gram(G, labels, *, K=None, check_psd: bool = True) -> float:
    """:func:`cdnv_mean` from the N x N sample Gram (THEORY §7.1; Galanti et al. arXiv 2112.15121).

    Parameters
    ----------
    G : array, N x N
        Sample Gram ``H^T H`` (symmetric PSD).
    labels : array of int, length N
        Class of each example, in ``0..K-1``; every class needs an example.
    K : int, optional
        Number of classes; default ``labels.max() + 1``.
    check_psd : bool
        Check that ``G`` is positive semidefinite (an eigendecomposition; skip it for speed
        when ``G`` is known to be a Gram).

    Returns
    -------
    float
        Mean CDNV over ordered class pairs.
    """
    return _offdiag_mean(cdnv_from_gram(G, labels, K=K, check_psd=check_psd))


# ---------------------------------------------------------------------------
# NC2
# ---------------------------------------------------------------------------
def _etf_error(Z: np.ndarray, name: str) -> float:
    """|| Z/||Z||_F - P_K/sqrt(K-1) ||_F for any K x K matrix Z (no checks beyond nonzero)."""
    K = Z.shape[0]
    nz = np.linalg.norm(Z)
    if not nz > 0:
        raise ValueError(f"{name} is zero; the distance to the simplex ETF is undefined.")
    return float(np.linalg.norm(Z / nz - centering_matrix(K) / np.sqrt(K - 1)))


def etf_distance(gram, *, center: bool = True, check_psd: bool = True) -> float:
    """Distance of a K x K Gram to the simplex-ETF Gram (Zhu et al. 2021; THEORY §7.2).

    ``d_ETF(G) = || G/||G||_F - P_K/sqrt(K-1) ||_F``. It is 0 iff ``G`` is a
    positive multiple of ``P_K`` and at most 2; invariant to positive scaling
    of ``G`` and to simultaneous permutation of its rows and columns.

    Centring: with ``center=True`` (default) ``G <- P_K G P_K`` first, i.e. the
    *mean of the K rows* (mean of the class means) is removed. This is the
    default because a feature Gram may carry a global mean that is not part of
    the ETF geometry, and THEORY §7.2 prescribes centring when comparing such
    Grams; for an already-centred Gram (e.g. balanced centred class means) it
    changes nothing. Pass ``center=False`` for the paper's raw formula, e.g. for
    a classifier Gram ``W W^T`` (see :func:`nc2_classifier`) or for class means
    centred with the sample mean of imbalanced data (see :func:`nc2`).

    Parameters
    ----------
    gram : array, K x K
        Symmetric PSD Gram with ``K >= 2``.
    center : bool
        Apply ``P_K G P_K`` first (default True, see above).
    check_psd : bool
        Check that ``gram`` is PSD (an ``O(K^3)`` eigen-decomposition); pass
        False for Grams already checked (e.g. a validated bridge run).

    Returns
    -------
    float
        In ``[0, 2]``.

    Raises
    ------
    ValueError
        ``gram`` not square, not finite, not symmetric (``max|G - G^T| >
        1e-10 max|G|``), not PSD (eigenvalue ``< -1e-10 max|eig|``), smaller than
        2 x 2, or zero (after centring: ``||P G P||_F <= 1e-12 ||G||_F``, e.g. a
        constant Gram of identical items).

    References
    ----------
    Zhu et al., arXiv 2105.02375; rhubarbwu/neural-collapse ``simplex_etf_error``;
    THEORY.md §0.1 (E_K), §7.2, TV6.
    """
    G = _check_gram(gram, "gram", psd=check_psd, min_size=2)
    norm0 = np.linalg.norm(G)
    if center:
        G = double_centre(G)
    if not np.linalg.norm(G) > ZERO_RTOL * norm0:
        raise ValueError(
            "gram is zero" + (" after centring (all rows equal up to a common offset)" if center else "")
            + "; the distance to the simplex ETF is undefined. Pass a nonzero Gram."
        )
    return _etf_error(G, "gram")


def nc2(H, labels, *, K=None) -> float:
    """NC2 of the class means as a Gram-to-ETF distance (Zhu et al. 2021; THEORY §7.2).

    ``etf_distance(M~^T M~, center=False)`` where ``M~ = [mu_k - mu_G]`` is centred
    with the **sample global mean** ``mu_G`` (Papyan). For balanced classes this
    is the same as centring with ``P_K``; for imbalanced classes it keeps
    Papyan's convention (the Gram is not re-centred with ``P_K``).

    Parameters
    ----------
    H : array, d x N
        Features, one column per example.
    labels : array of int, length N
        Class of each example, at least two classes.
    K : int, optional
        Number of classes; default ``labels.max() + 1``.

    Returns
    -------
    float
        In ``[0, 2]``; 0 iff the centred means form a simplex ETF.

    References
    ----------
    Zhu et al., arXiv 2105.02375; Papyan et al., arXiv 2008.08186;
    THEORY.md §7.2, TV6.
    """
    H = _check_features(H)
    y, K, counts = _check_labels(labels, H.shape[1], K)
    Mc, _ = _centred_means(H, y, K, counts)
    Hc = H - H.mean(axis=1)[:, None]
    _require_separated(float(np.sum(Mc * Mc)), float(np.max(np.sum(Hc * Hc, axis=0))), "H")
    return _etf_error(Mc.T @ Mc, "H (centred class means)")


def nc2_from_gram(G, labels, *, K=None, check_psd: bool = True) -> float:
    """:func:`nc2` from the N x N sample Gram alone (THEORY §7.2).

    ``M~^T M~ = A^T G_c A`` (see :func:`class_mean_gram`), centred with the
    sample global mean; then the Zhu et al. ETF distance without re-centring.

    Parameters
    ----------
    G : array, N x N
        Sample Gram ``H^T H`` (symmetric PSD).
    labels : array of int, length N
        Class of each example, in ``0..K-1``; every class needs an example.
    K : int, optional
        Number of classes; default ``labels.max() + 1``.
    check_psd : bool
        Check that ``G`` is positive semidefinite (an eigendecomposition; skip it for speed
        when ``G`` is known to be a Gram).

    Returns
    -------
    float
        In ``[0, 2]``; 0 at a simplex ETF.

    References
    ----------
    Zhu et al., arXiv 2105.02375; THEORY.md §7.2.
    """
    parts, y, K, counts = _sample_gram(G, labels, K, check_psd)
    _require_separated(float(np.trace(parts.Gmu)), parts.scale, "G")
    return _etf_error(parts.Gmu, "G (centred class means)")


def nc2_classifier(W, *, center: bool = False) -> float:
    """NC2 of the classifier rows: ``etf_distance(W W^T)`` (Zhu et al. 2021; THEORY §7.2).

    Centring: **none by default** (the paper's definition): a component common
    to all rows ``w_k`` is itself a departure from the simplex ETF of
    classifiers. ``center=True`` applies ``P_K`` to ``W W^T`` first.

    Parameters
    ----------
    W : array, K x d
        Classifier, one row per class, ``K >= 2``.
    center : bool
        Centre the rows' Gram with ``P_K`` first (default False).

    Returns
    -------
    float
        In ``[0, 2]``; 0 when ``W W^T`` is proportional to ``P_K``.

    References
    ----------
    Zhu et al., arXiv 2105.02375; THEORY.md §7.2, TV6.
    """
    W = _check_classifier(W)
    if W.shape[0] < 2:
        raise ValueError(f"W has {W.shape[0]} row(s); the ETF distance needs K >= 2 classes (rows).")
    return etf_distance(W @ W.T, center=center)


def _papyan_from_gram(Gm: np.ndarray, name: str) -> dict:
    K = Gm.shape[0]
    nrm2 = np.diag(Gm)
    if not np.all(nrm2 > ZERO_RTOL * np.max(nrm2)):
        k = int(np.argmin(nrm2))
        raise ValueError(f"{name}: vector {k} has (numerically) zero norm, so its cosines are undefined.")
    nrm = np.sqrt(nrm2)
    C = Gm / np.outer(nrm, nrm)
    c = C[_offdiag(K)]
    return dict(equinorm=float(nrm.std() / nrm.mean()),
                equiangular=float(c.std()),
                maxangle=float(np.mean(np.abs(c + 1.0 / (K - 1)))))


def nc2_papyan(H=None, labels=None, *, W=None, K=None) -> dict:
    """Papyan's NC2 statistics of class means or classifier rows (THEORY §7.2).

    Pass ``H`` and ``labels`` (class means, centred with the **sample global
    mean** ``mu_G``) or ``W=`` (classifier rows ``w_k``, **not centred**, as in
    Papyan et al.), not both.

    Parameters
    ----------
    H : array, d x N, optional
        Features, one column per example (with ``labels``).
    labels : array of int, length N, optional
        Class of each example, in ``0..K-1``.
    W : array, K x d, optional
        Classifier rows (instead of ``H`` and ``labels``).
    K : int, optional
        Number of classes; default ``labels.max() + 1`` (or the rows of ``W``).

    Returns
    -------
    dict
        ``equinorm = std_k ||v_k|| / mean_k ||v_k||``;
        ``equiangular = std_{k != l} cos(v_k, v_l)``;
        ``maxangle = mean_{k != l} |cos(v_k, v_l) + 1/(K-1)|``,
        with ``v_k = mu_k - mu_G`` or ``w_k``; population standard deviations
        (``ddof=0``). All three are 0 at a simplex ETF.

    References
    ----------
    Papyan, Han, Donoho, arXiv 2008.08186 (Figs. 2-3); THEORY.md §7.2, TV6.
    """
    if W is not None:
        if H is not None or labels is not None:
            raise ValueError("nc2_papyan: pass either H and labels (class means) or W= (classifier), not both.")
        W = _check_classifier(W)
        if W.shape[0] < 2:
            raise ValueError(f"W has {W.shape[0]} row(s); NC2 needs K >= 2 classes (rows).")
        return _papyan_from_gram(W @ W.T, "W")
    if H is None or labels is None:
        raise ValueError("nc2_papyan: pass H and labels (class means) or W= (classifier rows).")
    H = _check_features(H)
    y, K, counts = _check_labels(labels, H.shape[1], K)
    Mc, _ = _centred_means(H, y, K, counts)
    return _papyan_from_gram(Mc.T @ Mc, "H (centred class means)")


def nc2_papyan_from_gram(G, labels, *, K=None, check_psd: bool = True) -> dict:
    """:func:`nc2_papyan` of the centred class means from the N x N sample Gram (THEORY §7.2; Papyan et al.).

    Parameters
    ----------
    G : array, N x N
        Sample Gram ``H^T H`` (symmetric PSD).
    labels : array of int, length N
        Class of each example, in ``0..K-1``; every class needs an example.
    K : int, optional
        Number of classes; default ``labels.max() + 1``.
    check_psd : bool
        Check that ``G`` is positive semidefinite (an eigendecomposition; skip it for speed
        when ``G`` is known to be a Gram).

    Returns
    -------
    dict
        ``equinorm``, ``equiangular``, ``maxangle`` as in :func:`nc2_papyan`.
    """
    parts, _, _, _ = _sample_gram(G, labels, K, check_psd)
    return _papyan_from_gram(parts.Gmu, "G (centred class means)")


def _gnc2_from_gram(Gm: np.ndarray, name: str) -> dict:
    K = Gm.shape[0]
    nrm2 = np.diag(Gm)
    if not np.all(nrm2 > ZERO_RTOL * np.max(nrm2)):
        raise ValueError(f"{name}: a centred class mean is (numerically) zero; it cannot be normalized.")
    nrm = np.sqrt(nrm2)
    C = Gm / np.outer(nrm, nrm)
    dist2 = 2.0 - 2.0 * C[_offdiag(K)]   # ||mu^_k - mu^_l||^2
    logk = np.full(dist2.shape, np.inf)   # coincident directions (dist2 <= 0 by rounding): +inf
    pos = dist2 > 0
    logk[pos] = -0.5 * np.log(dist2[pos])
    return dict(mean=float(np.mean(logk)), var=float(np.var(logk)))


def gnc2(H, labels, *, K=None) -> dict:
    """Hyperspherical uniformity GNC2 of the centred class means (Liu et al. 2023; THEORY §7.2).

    Centre the means with the **sample global mean**, normalize them to unit
    length ``mu^_k``, and take the log inverse-distance kernel
    ``log(1 / ||mu^_k - mu^_l||)`` over ordered pairs ``k != l``.

    Parameters
    ----------
    H : array, d x N
        Features, one column per example.
    labels : array of int, length N
        Class of each example, in ``0..K-1``; every class needs an example.
    K : int, optional
        Number of classes; default ``labels.max() + 1``.

    Returns
    -------
    dict
        ``mean`` and ``var`` (population variance) of the kernel over pairs.
        Lower variance means more uniform; at a simplex ETF ``var = 0``. Two
        coincident directions give ``+inf``.

    References
    ----------
    Liu et al., arXiv 2303.06484; Wu & Papyan, arXiv 2405.17767;
    rhubarbwu/neural-collapse ``log_kernel``/``kernel_stats``; THEORY.md §7.2.
    """
    H = _check_features(H)
    y, K, counts = _check_labels(labels, H.shape[1], K)
    Mc, _ = _centred_means(H, y, K, counts)
    return _gnc2_from_gram(Mc.T @ Mc, "H")


def gnc2_from_gram(G, labels, *, K=None, check_psd: bool = True) -> dict:
    """:func:`gnc2` from the N x N sample Gram (THEORY §7.2; Liu et al. arXiv 2303.06484).

    Parameters
    ----------
    G : array, N x N
        Sample Gram ``H^T H`` (symmetric PSD).
    labels : array of int, length N
        Class of each example, in ``0..K-1``; every class needs an example.
    K : int, optional
        Number of classes; default ``labels.max() + 1``.
    check_psd : bool
        Check that ``G`` is positive semidefinite (an eigendecomposition; skip it for speed
        when ``G`` is known to be a Gram).

    Returns
    -------
    dict
        ``mean`` and ``var`` of the log inverse-distance kernel, as in :func:`gnc2`.
    """
    parts, _, _, _ = _sample_gram(G, labels, K, check_psd)
    return _gnc2_from_gram(parts.Gmu, "G")


# ---------------------------------------------------------------------------
# NC3, NC4
# ---------------------------------------------------------------------------
def _classifier_and_features(W, H, labels, K):
    H = _check_features(H)
    W = _check_classifier(W, d=H.shape[0])
    if K is not None and _check_K(K) != W.shape[0]:
        raise ValueError(f"K={K} but W has {W.shape[0]} rows; W needs one row per class.")
    y, K, counts = _check_labels(labels, H.shape[1], W.shape[0])
    return W, H, y, K, counts


def nc3(W, H, labels, variant: str = "zhu", *, K=None) -> float:
    """Self-duality NC3 between classifier rows and centred class means (THEORY §7.3).

    Variants:

    ``"zhu"`` (Zhu et al. 2021)
        ``|| W M~ / ||W M~||_F - P_K/sqrt(K-1) ||_F``: the ETF distance of the
        K x K matrix ``W M~`` (not symmetrized, not re-centred; it need not be
        PSD, so no Gram checks). In ``[0, 2]``.
    ``"papyan"`` (Papyan et al. 2020)
        ``|| W^T/||W||_F - M~/||M~||_F ||_F^2``. In ``[0, 4]``.

    Centring: the class means are centred with the **sample global mean**
    ``mu_G``; ``W`` is used as is. Both are 0 at the collapsed ETF with
    ``W`` proportional to ``M~^T``; invariant to a common rotation of features
    and classifier (``H -> Q H``, ``W -> W Q^T``), positive scalings of ``W``
    and ``H`` separately, and relabelling classes (rows of ``W`` permuted
    accordingly).

    Parameters
    ----------
    W : array, K x d
        Classifier, one row per class; ``K`` is read from it.
    H : array, d x N
        Features.
    labels : array of int, length N
        Class of each example in ``0..K-1``; every class present.
    variant : {"zhu", "papyan"}
    K : int, optional
        If given, must equal ``W.shape[0]``.

    Returns
    -------
    float
        In ``[0, 2]`` (``"zhu"``) or ``[0, 4]`` (``"papyan"``); 0 at self-dual collapse.

    References
    ----------
    Zhu et al., arXiv 2105.02375; Papyan et al., arXiv 2008.08186;
    rhubarbwu/neural-collapse ``alignment_error``; THEORY.md §7.3, TV6.
    """
    _check_variant(variant, NC3_VARIANTS, "nc3")
    W, H, y, K, counts = _classifier_and_features(W, H, labels, K)
    Mc, _ = _centred_means(H, y, K, counts)
    if variant == "zhu":
        return _etf_error(W @ Mc, "W @ M~ (classifier times centred class means)")
    nW, nM = np.linalg.norm(W), np.linalg.norm(Mc)
    if not nW > 0:
        raise ValueError("W is zero; NC3 (Papyan) normalizes W and is undefined for W = 0.")
    if not nM > 0:
        raise ValueError("H: the centred class means are all zero; NC3 (Papyan) is undefined.")
    return float(np.sum((W.T / nW - Mc / nM) ** 2))


def unc3(W, H, labels, *, K=None) -> float:
    """Uniform duality UNC3: coefficient of variation of ``cos(w_k, mu~_k)`` (Wu & Papyan; THEORY §7.3).

    ``std_k c_k / mean_k c_k`` with ``c_k = cos(w_k, mu_k - mu_G)``, population
    std (``ddof=0``). Class means centred with the **sample global mean**;
    ``W`` not centred. 0 when every class has the same classifier-mean angle
    (e.g. self-dual collapse). A negative mean (anti-aligned classifier) gives
    a negative value; a zero mean gives ``inf``.

    Parameters
    ----------
    W : array, K x d
    H : array, d x N
    labels : array of int, length N
    K : int, optional
        If given, must equal ``W.shape[0]``.

    Returns
    -------
    float
        The coefficient of variation; 0 when every class has the same angle.

    References
    ----------
    Wu & Papyan, arXiv 2405.17767; THEORY.md §7.3.
    """
    W, H, y, K, counts = _classifier_and_features(W, H, labels, K)
    Mc, _ = _centred_means(H, y, K, counts)
    nw = np.linalg.norm(W, axis=1)
    nm = np.linalg.norm(Mc, axis=0)
    if not np.all(nw > ZERO_RTOL * np.max(nw)):
        raise ValueError(f"W: row {int(np.argmin(nw))} is (numerically) zero; its cosine is undefined.")
    if not np.all(nm > ZERO_RTOL * np.max(nm)):
        raise ValueError(f"H: centred class mean {int(np.argmin(nm))} is (numerically) zero; its cosine is undefined.")
    c = np.sum(W * Mc.T, axis=1) / (nw * nm)
    m = c.mean()
    return float(c.std() / m) if m != 0 else float("inf")


def nc4(W, H, labels, b=None, *, K=None) -> float:
    """NC4: fraction of examples where the classifier and the nearest class centre disagree (THEORY §7.3).

    ``mean_i [argmax_k (w_k^T h_i + b_k) != argmin_k ||h_i - mu_k||]``, with
    uncentred class means ``mu_k`` (centring would not change the nearest
    centre). Ties go to the lowest class index (``numpy.argmax``/``argmin``).

    Parameters
    ----------
    W : array, K x d
        Classifier; ``K`` is read from it.
    H : array, d x N
        Features.
    labels : array of int, length N
        Class of each example (used only for the class means).
    b : array, length K, optional
        Bias; default zero.
    K : int, optional
        If given, must equal ``W.shape[0]``.

    Returns
    -------
    float
        In ``[0, 1]``.

    References
    ----------
    Papyan, Han, Donoho, arXiv 2008.08186; THEORY.md §7.3, TV6.
    """
    W, H, y, K, counts = _classifier_and_features(W, H, labels, K)
    Z = W @ H
    if b is not None:
        b = np.asarray(b, dtype=np.float64)
        if b.shape != (K,):
            raise ValueError(f"b must be a length-K bias vector (K={K}), got shape {b.shape}.")
        if not np.all(np.isfinite(b)):
            raise ValueError("b contains NaN or inf; pass a finite bias.")
        Z = Z + b[:, None]
    M = H @ _averaging(y, K, counts)
    # ||h - mu_k||^2 = ||h||^2 - 2 mu_k^T h + ||mu_k||^2; drop the k-independent term
    dist = np.sum(M * M, axis=0)[:, None] - 2.0 * (M.T @ H)
    return float(np.mean(np.argmax(Z, axis=0) != np.argmin(dist, axis=0)))


# ---------------------------------------------------------------------------
# Gram utilities and semantic scores (THEORY §7.4)
# ---------------------------------------------------------------------------
def center_gram(G) -> np.ndarray:
    """Double-centre a K x K matrix: ``P_K G P_K`` with ``P_K = I - 11^T/K`` (THEORY §0.1, §7.4).

    Removes the mean of the K rows (for a class-mean Gram: the mean of the
    class means, which is the sample mean only for balanced classes). Checks
    only that ``G`` is square and finite.

    Parameters
    ----------
    G : array, K x K
        Square, finite matrix.

    Returns
    -------
    ndarray, K x K
        ``P_K G P_K``.

    References
    ----------
    THEORY.md §0.1 (P_K), §7.2, §7.4; Zhu et al., arXiv 2105.02375 (centred
    ETF Gram).
    """
    G = _float_matrix(G, "G", "square matrix")
    if G.shape[0] != G.shape[1]:
        raise ValueError(f"G must be square, got shape {G.shape}.")
    return double_centre(G)


def double_centre(G) -> np.ndarray:
    """``P_K G P_K`` over the last two axes, for one K x K matrix or a stack (no checks; see :func:`center_gram`).

    Parameters
    ----------
    G : ndarray, (..., K, K)
        One matrix or a stack.

    Returns
    -------
    ndarray
        ``P_K G P_K`` for each matrix, same shape.
    """
    return G - G.mean(axis=-1, keepdims=True) - G.mean(axis=-2, keepdims=True) + G.mean(axis=(-2, -1), keepdims=True)


def _cosines(G: np.ndarray, name: str) -> np.ndarray:
    dg = np.diag(G)
    if not np.max(dg) > 0 or not np.all(dg > ZERO_RTOL * np.max(dg)):
        k = int(np.argmin(dg))
        raise ValueError(
            f"{name} has a (numerically) zero or negative diagonal entry [{k},{k}] = {dg[k]:.3g}: item {k} has no "
            "direction, so its cosines are undefined (a centred Gram of an item equal to the mean has this)."
        )
    s = np.sqrt(dg)
    C = G / np.outer(s, s)
    np.fill_diagonal(C, 1.0)
    return C


def cosine_matrix(G) -> np.ndarray:
    """Cosine matrix ``C_kl = G_kl / sqrt(G_kk G_ll)`` of a symmetric Gram (THEORY §7.4).

    No centring (centre first with :func:`center_gram` if wanted). ``G`` must be
    square, finite and symmetric, with every diagonal entry
    ``> 1e-12 * max(diag)``: a zero-norm item has no cosine, and it is an error
    rather than clipped.

    Parameters
    ----------
    G : array, K x K
        Symmetric Gram with a positive diagonal.

    Returns
    -------
    ndarray, K x K
        Cosines, with ones on the diagonal.

    References
    ----------
    THEORY.md §7.4; Papyan et al., arXiv 2008.08186 (cosines of class means).
    """
    return _cosines(_check_gram(G, "G", psd=False), "G")


def attribute_kernel(attributes) -> np.ndarray:
    """Shared-factor kernel ``S[k, l] = #{f : A[k, f] = A[l, f]}`` (THEORY §7.4).

    Parameters
    ----------
    attributes : array of int, K x F
        One row per class/item, one column per categorical factor (its level).

    Returns
    -------
    ndarray, K x K
        Symmetric PSD (a sum of block indicators), diagonal ``F``; not
        centred (the scores that use it centre it themselves).

    References
    ----------
    THEORY.md §7.4 (derived), TV6; motivating setting: Zhao, Papadimitriou,
    Thrampoulidis, arXiv 2606.26749.
    """
    A = check_attributes(attributes)
    return np.sum(A[:, None, :] == A[None, :, :], axis=-1).astype(np.float64)


def _semantic_cosines(gram, attributes, center: bool, check_psd: bool = True):
    G = _check_gram(gram, "gram", psd=check_psd, min_size=2)
    K = G.shape[0]
    A = check_attributes(attributes, K)
    Gc = center_gram(G) if center else G
    return _cosines(Gc, "gram (centred)" if center else "gram"), A, K


def semantic_gap(gram, attributes, *, center: bool = True, check_psd: bool = True) -> float:
    """Semantic gap: within-level minus across-level mean cosine, averaged over factors (THEORY §7.4 item 1).

    ``Delta = mean_f [ mean_{k != l, A_kf = A_lf} C_kl - mean_{A_kf != A_lf} C_kl ]``
    with ``C`` the cosine matrix of the Gram. Exactly 0 at any simplex ETF
    (all off-diagonal cosines equal ``-1/(K-1)``), scale-invariant, bounded by
    ``1 + 1/(K-1)``; invariant to permuting classes (rows of ``attributes``
    permuted alike) and to renaming factor levels.

    Centring: ``center=True`` (default, THEORY §7.4 "always center first")
    uses ``P_K G P_K`` (mean of the K rows). Factors that do not split the
    classes (one level for all, or a distinct level per class) have no
    within/across contrast and are left out of the mean; if no factor is left
    a ValueError is raised.

    Parameters
    ----------
    gram : array, K x K
        Symmetric PSD Gram (class means, classifiers or items), ``K >= 2``.
    attributes : array of int, K x F
        Factor levels, one row per class.
    center : bool
        Centre with ``P_K`` first (default True).
    check_psd : bool
        Check that ``gram`` is PSD (an ``O(K^3)`` eigen-decomposition); pass
        False for Grams already checked (e.g. a validated bridge run).

    Returns
    -------
    float
        The gap ``Delta``; 0 at any ETF, positive when items sharing attributes are closer.

    References
    ----------
    THEORY.md §7.4 item 1 (derived; no external source), TV6; motivating
    paper: Zhao, Papadimitriou, Thrampoulidis, arXiv 2606.26749.
    """
    C, A, K = _semantic_cosines(gram, attributes, center, check_psd)
    off = _offdiag(K)
    gaps = []
    for f in range(A.shape[1]):
        eq = A[:, None, f] == A[None, :, f]
        same, diff = eq & off, ~eq
        if same.any() and diff.any():
            gaps.append(C[same].mean() - C[diff].mean())
    if not gaps:
        raise ValueError(
            "attributes: no factor splits the classes into groups (each factor is either constant or has a "
            "distinct level per class), so the semantic gap is undefined; pass factors with shared levels."
        )
    return float(np.mean(gaps))


def offdiag_alignment(gram, attributes, *, center: bool = True, tol: float = 1e-12) -> float:
    """Pearson correlation over pairs ``k < l`` of cosines ``C_kl`` and shared factors ``S_kl`` (THEORY §7.4 item 2).

    Scale- and shift-free. Defined as 0 when the cosines are constant (std
    ``< tol``, e.g. at an ETF) or when ``S_kl`` is constant. Centring:
    ``P_K G P_K`` by default (mean of the K rows). Needs ``K >= 3`` (at least
    two pairs); noisy for small K.

    Parameters
    ----------
    gram : array, K x K
        Symmetric PSD Gram.
    attributes : array of int, K x F
        Factor levels, one row per class.
    center : bool
        Apply ``P_K G P_K`` first.
    tol : float
        Standard deviation below which the cosines count as constant.

    Returns
    -------
    float
        In ``[-1, 1]``.

    References
    ----------
    THEORY.md §7.4 item 2 (derived), TV6; motivating paper: Zhao,
    Papadimitriou, Thrampoulidis, arXiv 2606.26749.
    """
    C, A, K = _semantic_cosines(gram, attributes, center)
    if K < 3:
        raise ValueError(f"gram is {K} x {K}; a correlation over pairs k < l needs K >= 3 classes.")
    S = attribute_kernel(A)
    iu = np.triu_indices(K, 1)
    c, s = C[iu], S[iu]
    if c.std() < tol or s.std() < tol:
        return 0.0
    return float(np.corrcoef(c, s)[0, 1])


def cka(G1, G2) -> float:
    """Centred kernel alignment ``<P G1 P, P G2 P> / (||P G1 P||_F ||P G2 P||_F)`` (THEORY §7.4 item 3).

    Always centres with ``P_K`` (mean of the K rows); both Grams must be
    symmetric PSD of the same size and nonzero after centring.

    Parameters
    ----------
    G1, G2 : array, K x K
        Symmetric PSD Grams of the same size.

    Returns
    -------
    float
        In ``[-1, 1]`` (``[0, 1]`` for PSD Grams).

    References
    ----------
    Kornblith et al., arXiv 1905.00414; THEORY.md §7.4.
    """
    A = _check_gram(G1, "G1", min_size=2)
    B = _check_gram(G2, "G2", size=A.shape[0], size_from="the size of G1")
    Ac, Bc = center_gram(A), center_gram(B)
    for name, Xc, X0 in (("G1", Ac, A), ("G2", Bc, B)):
        if not np.linalg.norm(Xc) > ZERO_RTOL * np.linalg.norm(X0):
            raise ValueError(f"{name} is zero after centring (all rows equal up to an offset); CKA is undefined.")
    return float(np.sum(Ac * Bc) / (np.linalg.norm(Ac) * np.linalg.norm(Bc)))


def excess_cka(gram, attributes) -> float:
    """Excess CKA ``CKA(G, S) - CKA(P_K, S)`` with ``S`` the shared-factor kernel (THEORY §7.4 item 3).

    Plain CKA with ``S`` is not 0 at the ETF, so the ETF baseline is
    subtracted: the excess CKA is 0 at any ETF. Always centred (CKA centres
    both kernels with ``P_K``).

    Parameters
    ----------
    gram : array, K x K
        Symmetric PSD Gram.
    attributes : array of int, K x F
        Factor levels, one row per class.

    Returns
    -------
    float
        0 at any ETF; positive when the Gram aligns with the shared-factor kernel.

    References
    ----------
    Kornblith et al., arXiv 1905.00414; THEORY.md §7.4, TV6.
    """
    G = _check_gram(gram, "gram", min_size=2)
    K = G.shape[0]
    S = attribute_kernel(check_attributes(attributes, K))
    if not np.linalg.norm(center_gram(S)) > 0:
        raise ValueError("attributes: every factor is constant, so the shared-factor kernel is constant after "
                         "centring and CKA with it is undefined.")
    return cka(G, S) - cka(centering_matrix(K), S)


@dataclass(frozen=True)
class SemanticFit:
    """Least-squares decomposition ``G_c ~ a P_K + sum_f b_f P_K S_f P_K`` (THEORY §7.4 item 4, §8.6).

    Attributes
    ----------
    a : float
        Coefficient of ``P_K`` (the "collapse" part).
    b : float or ndarray
        Coefficient of ``P_K S P_K`` (a float), or one per factor
        (``per_factor=True``: a read-only length-F array).
    ratio : float or ndarray
        ``b / a``, the semantic-to-collapse ratio.
    r2 : float
        ``1 - ||residual||_F^2 / ||G_c||_F^2`` (uncentred R^2; ``G_c`` has unit norm).
    residual : float
        Frobenius norm of the residual (the fit is of the unit-norm ``G_c``).
    per_factor : bool
        Whether ``b`` is per factor.
    """

    a: float
    b: float | np.ndarray
    ratio: float | np.ndarray
    r2: float
    residual: float
    per_factor: bool

    def as_dict(self) -> dict:
        """Fields as a JSON-friendly dict (arrays as lists)."""
        conv = lambda v: v.tolist() if isinstance(v, np.ndarray) else v  # noqa: E731
        return {k: conv(getattr(self, k)) for k in ("a", "b", "ratio", "r2", "residual", "per_factor")}


def semantic_regression(gram, attributes, *, per_factor: bool = False) -> SemanticFit:
    """Project the centred, unit-norm Gram onto span{P_K, P_K S P_K} (THEORY §7.4 item 4, §8.6 step 2).

    ``G_c = P_K G P_K / ||P_K G P_K||_F`` is fitted by least squares (Frobenius
    inner product) as ``a P_K + b P_K S P_K`` with ``S`` the shared-factor kernel,
    or, with ``per_factor=True``, ``a P_K + sum_f b_f P_K S_f P_K`` with
    ``S_f[k, l] = [A_kf = A_lf]``. For ``G = P_K + beta P_K S P_K`` the fit is
    exact with ``b/a = beta``; at an ETF ``b = 0``.

    Centring: always ``P_K`` (mean of the K rows); then unit Frobenius norm, so
    ``a``, ``b`` are scale-free (THEORY §8.6: compare centred, normalized
    Grams only).

    Parameters
    ----------
    gram : array, K x K
        Symmetric PSD Gram, nonzero after centring.
    attributes : array of int, K x F
        Factor levels, one row per class.
    per_factor : bool
        One coefficient per factor instead of one for ``S``.

    Returns
    -------
    SemanticFit
        Coefficients ``a``, ``b``, their ratio, the residual and the R^2 of the fit.

    Raises
    ------
    ValueError
        If a regressor is zero or collinear with the others (e.g. a constant
        factor, for which ``P_K S_f P_K = 0``, or a factor with a distinct level
        per class, for which ``P_K S_f P_K = P_K``): drop that factor.

    References
    ----------
    THEORY.md §7.4 item 4, §8.6 step 2 (derived), TV6; motivating paper:
    Zhao, Papadimitriou, Thrampoulidis, arXiv 2606.26749.
    """
    G = _check_gram(gram, "gram", min_size=2)
    K = G.shape[0]
    A = check_attributes(attributes, K)
    Gc = center_gram(G)
    nG = np.linalg.norm(Gc)
    if not nG > ZERO_RTOL * np.linalg.norm(G):
        raise ValueError("gram is zero after centring (all rows equal up to an offset); nothing to regress.")
    Gc = Gc / nG
    P = centering_matrix(K)
    if per_factor:
        Ss = [(A[:, None, f] == A[None, :, f]).astype(np.float64) for f in range(A.shape[1])]
    else:
        Ss = [attribute_kernel(A)]
    basis = [P] + [P @ S @ P for S in Ss]
    X = np.stack([B.ravel() for B in basis], axis=1)
    sv = np.linalg.svd(X, compute_uv=False)
    if numerical_rank(sv, 1e-10) < sv.size:
        raise ValueError(
            "attributes: the regressors {P_K, P_K S_f P_K} are linearly dependent (a factor is constant, has a "
            "distinct level per class, or duplicates another); drop such factors"
            + ("." if per_factor else " or use per_factor=True.")
        )
    coef, *_ = np.linalg.lstsq(X, Gc.ravel(), rcond=None)
    res = Gc.ravel() - X @ coef
    resid = float(np.linalg.norm(res))
    a = float(coef[0])
    with np.errstate(divide="ignore", invalid="ignore"):   # a = 0 gives +-inf (or nan if b = 0 too)
        ratio = coef[1:] / coef[0]
    if per_factor:
        b = np.array(coef[1:])
        b.setflags(write=False)
        ratio.setflags(write=False)
    else:
        b, ratio = float(coef[1]), float(ratio[0])
    return SemanticFit(a=a, b=b, ratio=ratio, r2=float(1.0 - resid ** 2), residual=resid, per_factor=per_factor)


# ---------------------------------------------------------------------------
# effective rank and participation ratio (THEORY §7.5)
# ---------------------------------------------------------------------------
def _spectrum(X, gram, who: str) -> np.ndarray:
    """Eigenvalues (Gram) or squared singular values (X), with those < EIG_DROP * max dropped."""
    if (X is None) == (gram is None):
        raise ValueError(f"{who}: pass exactly one of X= (a feature matrix) or gram= (a symmetric PSD Gram).")
    if X is not None:
        Xa = _float_matrix(X, "X", "feature matrix")
        lam = np.linalg.svd(Xa, compute_uv=False) ** 2
        name = "X"
    else:
        G = _check_gram(gram, "gram")
        lam = np.linalg.eigvalsh(G)
        name = "gram"
    lmax = np.max(lam)
    if not lmax > 0:
        raise ValueError(f"{name} is zero; its spectrum is empty and the rank measure is undefined.")
    return lam[lam >= EIG_DROP * lmax]


def effective_rank(X=None, gram=None) -> float:
    """Effective rank of Roy & Vetterli (2007): ``exp(-sum p_i log p_i)``, ``p_i = s_i / sum_j s_j`` (THEORY §7.5).

    ``s_i`` are the singular values of the feature matrix ``X`` or, for a PSD
    ``gram``, ``s_i = sqrt(lambda_i)``. Eigenvalues below ``1e-12 * lambda_max``
    (``lambda = s^2``) are dropped before taking logs. **No centring**: pass a
    centred Gram (:func:`center_gram`) or centred features if the global mean
    should not count. For a K-class simplex ETF Gram (``P_K``) it equals
    ``K - 1`` exactly; semantic structure lowers it. Invariant to rotations
    and positive scaling of ``X`` and to permutations of a Gram.

    Parameters
    ----------
    X : array, optional
        Feature matrix (any orientation).
    gram : array, optional
        Symmetric PSD Gram. Pass exactly one of ``X``, ``gram``.

    Returns
    -------
    float
        ``exp`` of the entropy of the normalized singular values; ``K - 1`` for a K-class ETF.

    References
    ----------
    Roy & Vetterli, "The effective rank", EUSIPCO 2007; THEORY.md §7.5, TV6.
    """
    lam = _spectrum(X, gram, "effective_rank")
    s = np.sqrt(lam)
    p = s / s.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


def participation_ratio(gram=None, X=None) -> float:
    """Participation ratio ``(sum lambda_i)^2 / sum lambda_i^2`` of a PSD Gram (THEORY §7.5).

    ``lambda_i`` are the eigenvalues of ``gram`` (or the squared singular
    values of ``X``, i.e. the eigenvalues of ``X^T X``); eigenvalues below
    ``1e-12 * lambda_max`` are dropped. **No centring** (see
    :func:`effective_rank`). Equals ``K - 1`` for the ETF Gram ``P_K``.

    Parameters
    ----------
    gram : array, optional
        Symmetric PSD Gram.
    X : array, optional
        Feature matrix. Pass exactly one of ``gram``, ``X``.

    Returns
    -------
    float
        ``(sum lambda)^2 / sum lambda^2``; ``K - 1`` for a K-class ETF.

    References
    ----------
    THEORY.md §7.5, TV6 (participation ratio as used for neural representations,
    e.g. Gao et al. 2017, bioRxiv 214262).
    """
    lam = _spectrum(X, gram, "participation_ratio")
    return float(lam.sum() ** 2 / np.sum(lam ** 2))
