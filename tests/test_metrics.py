"""Tests for ufm.metrics (THEORY §7; test vectors TV6 of Appendix A.6).

Closed forms and published numbers are asserted; invariances are hypothesis
properties; every Gram twin is checked against its feature route.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ufm import metrics as m

PROP = settings(max_examples=25, deadline=None)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def P_K(K):
    return np.eye(K) - np.ones((K, K)) / K


def orthogonal(rng, d):
    Q, R = np.linalg.qr(rng.normal(size=(d, d)))
    return Q * np.sign(np.diag(R))


def etf_means(rng, K, d, scale=1.0):
    """d x K simplex-ETF class means (centred, unit-norm columns) in a random orientation."""
    ev, V = np.linalg.eigh(P_K(K))
    U = V[:, ev > 0.5]                                 # K x (K-1), U U^T = P_K
    M = np.vstack([U.T, np.zeros((d - K + 1, K))]) * np.sqrt(K / (K - 1))
    return scale * orthogonal(rng, d) @ M


def random_problem(seed, K=None, d=None, balanced=False, sep=3.0, offset=2.0):
    """Features with class structure (well conditioned), shuffled labels, optional imbalance."""
    rng = np.random.default_rng(seed)
    K = int(rng.integers(2, 7)) if K is None else K
    d = int(rng.integers(K - 1, K + 4)) if d is None else d
    counts = np.full(K, 4) if balanced else rng.integers(2, 8, size=K)
    y = np.repeat(np.arange(K), counts)
    rng.shuffle(y)
    M = sep * rng.normal(size=(d, K))
    H = M[:, y] + rng.normal(size=(d, y.size)) + offset * rng.normal(size=(d, 1))
    W = M.T + 0.5 * rng.normal(size=(K, d))
    return rng, H, y, W


def tv6():
    """THEORY A.6: K=4, n=3, d=5, exact ETF means of squared norm 3, offsets +-0.3 e_1."""
    K, n, d = 4, 3, 5
    P = P_K(K)
    ev, V = np.linalg.eigh(P)
    U = V[:, ev > 0.5]
    M = np.vstack([U.T, np.zeros((d - K + 1, K))]) * 2.0
    offs = np.array([[1, 0, 0, 0, 0], [-1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], float).T * 0.3
    H = np.hstack([M[:, [k]] + offs for k in range(K)])
    y = np.repeat(np.arange(K), n)
    return H, y, M.T.copy(), M


TV6_ATTRS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])


def permute_problem(rng, H, y, W, attrs=None):
    """Relabel classes by a random permutation pi (and shuffle the example order)."""
    K = W.shape[0]
    pi = rng.permutation(K)                            # old class k -> new class pi[k]
    order = rng.permutation(y.size)
    y2 = pi[y][order]
    H2 = H[:, order]
    W2 = np.empty_like(W)
    W2[pi] = W
    out = [H2, y2, W2]
    if attrs is not None:
        A2 = np.empty_like(attrs)
        A2[pi] = attrs
        out.append(A2)
    return out, pi


# ---------------------------------------------------------------------------
# TV6 published test vectors (THEORY Appendix A.6)
# ---------------------------------------------------------------------------
class TestTV6:
    def test_nc1_values(self):
        H, y, W, _ = tv6()
        G = H.T @ H
        assert m.nc1(H, y, "pinv") == pytest.approx(0.015, abs=1e-12)
        assert m.nc1(H, y, "svd") == pytest.approx(0.015, abs=1e-12)
        assert m.nc1(H, y, "trace_ratio") == pytest.approx(0.02, abs=1e-12)
        assert m.nc1_from_gram(G, y, "pinv") == pytest.approx(0.015, abs=1e-12)
        assert m.nc1_from_gram(G, y, "svd") == pytest.approx(0.015, abs=1e-12)
        assert m.nc1_from_gram(G, y, "trace_ratio") == pytest.approx(0.02, abs=1e-12)

    def test_collapse_metrics_zero(self):
        H, y, W, _ = tv6()
        G = H.T @ H
        assert m.nc2(H, y) < 1e-12
        assert m.nc2_from_gram(G, y) < 1e-12
        assert m.nc2_classifier(W) < 1e-12
        for v in m.nc2_papyan(H, y).values():
            assert abs(v) < 1e-12
        for v in m.nc2_papyan(W=W).values():
            assert abs(v) < 1e-12
        assert m.nc3(W, H, y, "zhu") < 1e-12
        assert m.nc3(W, H, y, "papyan") < 1e-12
        assert m.nc4(W, H, y) == 0.0
        assert m.nc4(W, H, y, b=np.zeros(4)) == 0.0
        assert abs(m.unc3(W, H, y)) < 1e-12
        g = m.gnc2(H, y)
        assert g["var"] < 1e-12
        assert g["mean"] == pytest.approx(-0.5 * np.log(8 / 3), abs=1e-12)   # -log ||e_k - e_l|| at the ETF

    def test_shared_factor_matrix(self):
        S = m.attribute_kernel(TV6_ATTRS)
        np.testing.assert_array_equal(S, [[2, 1, 1, 0], [1, 2, 0, 1], [1, 0, 2, 1], [0, 1, 1, 2]])

    @pytest.mark.parametrize(
        "beta, dist, gap, off, xcka, erank, pr",
        [
            (0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 3.0),
            (0.2, 0.147645, 0.105263, 1.0, 0.076111, 2.990952, 2.934959),
            (1.0, 0.381647, 0.285714, 1.0, 0.156832, 2.914830, 2.578947),
        ],
    )
    def test_beta_table(self, beta, dist, gap, off, xcka, erank, pr):
        P = P_K(4)
        S = m.attribute_kernel(TV6_ATTRS)
        G = P + beta * P @ S @ P
        assert m.etf_distance(G) == pytest.approx(dist, abs=1e-6)
        assert m.etf_distance(G, center=False) == pytest.approx(dist, abs=1e-6)
        assert m.semantic_gap(G, TV6_ATTRS) == pytest.approx(gap, abs=1e-6)
        assert m.offdiag_alignment(G, TV6_ATTRS) == pytest.approx(off, abs=1e-6)
        assert m.excess_cka(G, TV6_ATTRS) == pytest.approx(xcka, abs=1e-6)
        assert m.effective_rank(gram=G) == pytest.approx(erank, abs=1e-6)
        assert m.participation_ratio(G) == pytest.approx(pr, abs=1e-6)
        fit = m.semantic_regression(G, TV6_ATTRS)
        assert fit.ratio == pytest.approx(beta, abs=1e-12)
        assert fit.r2 == pytest.approx(1.0, abs=1e-12)
        assert fit.residual < 1e-12
        assert fit.a == pytest.approx(1 / np.linalg.norm(G), rel=1e-12)


# ---------------------------------------------------------------------------
# closed forms and definitions
# ---------------------------------------------------------------------------
class TestDefinitions:
    def test_class_stats_sample_mean_imbalanced(self):
        _, H, y, _ = random_problem(1, K=3, d=4)
        M, mu_G, Sw, Sb = m.class_stats(H, y)
        np.testing.assert_allclose(mu_G, H.mean(1), rtol=1e-13)      # sample mean, not mean of class means
        assert np.linalg.norm(mu_G - M.mean(1)) > 1e-3
        for k in range(3):
            np.testing.assert_allclose(M[:, k], H[:, y == k].mean(1), rtol=1e-13)
        D = H - M[:, y]
        np.testing.assert_allclose(Sw, D @ D.T / H.shape[1], rtol=1e-12)
        Mc = M - mu_G[:, None]
        np.testing.assert_allclose(Sb, Mc @ Mc.T / 3, rtol=1e-12)
        np.testing.assert_allclose(Mc @ np.bincount(y), 0, atol=1e-10)  # rank <= K-1 via the counts
        M2, mu2 = m.class_means(H, y)
        np.testing.assert_array_equal(M2, M)
        np.testing.assert_array_equal(mu2, mu_G)

    def test_nc1_formulas(self):
        _, H, y, _ = random_problem(2, K=4, d=6)
        M, mu_G, Sw, Sb = m.class_stats(H, y)
        assert m.nc1(H, y, "pinv") == pytest.approx(np.trace(Sw @ np.linalg.pinv(Sb)) / 4, rel=1e-12)
        assert m.nc1(H, y, "trace_ratio") == pytest.approx(np.trace(Sw) / np.trace(Sb), rel=1e-12)
        lam, U = np.linalg.eigh(Sb)
        lam, U = lam[::-1], U[:, ::-1]
        for r in (1, 2, 3):
            ref = np.trace(Sw @ (U[:, :r] / lam[:r]) @ U[:, :r].T) / 4
            assert m.nc1(H, y, "svd", rank=r) == pytest.approx(ref, rel=1e-9)
            assert m.nc1_from_gram(H.T @ H, y, "svd", rank=r) == pytest.approx(ref, rel=1e-9)
        assert m.nc1(H, y, "svd") == pytest.approx(m.nc1(H, y, "pinv"), rel=1e-10)

    def test_nc1_zero_at_collapse_and_K_keyword(self):
        rng = np.random.default_rng(0)
        M = etf_means(rng, 3, 5)
        y = np.array([0, 0, 1, 1, 1, 2])
        H = M[:, y]
        for v in m.NC1_VARIANTS:
            assert m.nc1(H, y, v, K=3) == pytest.approx(0.0, abs=1e-15)

    def test_cdnv_definition(self):
        _, H, y, _ = random_problem(3, K=4, d=3)
        V = m.cdnv(H, y)
        M, _ = m.class_means(H, y)
        sig2 = [np.mean(np.sum((H[:, y == k] - M[:, [k]]) ** 2, 0)) for k in range(4)]
        for k in range(4):
            assert np.isnan(V[k, k])
            for l in range(4):
                if k != l:
                    ref = (sig2[k] + sig2[l]) / (2 * np.sum((M[:, k] - M[:, l]) ** 2))
                    assert V[k, l] == pytest.approx(ref, rel=1e-12)
        off = ~np.eye(4, dtype=bool)
        assert m.cdnv_mean(H, y) == pytest.approx(V[off].mean(), rel=1e-14)

    def test_cdnv_coincident_means_inf(self):
        H = np.array([[0.0, 2.0, 1.0, 1.0, 5.0, 6.0]])
        y = np.array([0, 0, 1, 1, 2, 2])
        V = m.cdnv(H, y)
        assert V[0, 1] == np.inf and np.isfinite(V[0, 2])

    def test_etf_distance_centering(self):
        G = np.diag([1.0, 0.0])
        assert m.etf_distance(G, center=False) == pytest.approx(1.0, abs=1e-14)
        assert m.etf_distance(G, center=True) == pytest.approx(0.0, abs=1e-14)   # P diag(1,0) P ∝ P_2
        # a global mean is removed by centring, kept otherwise
        rng = np.random.default_rng(5)
        X = etf_means(rng, 5, 6) + 3.0 * rng.normal(size=(6, 1))
        assert m.etf_distance(X.T @ X) < 1e-12
        assert m.etf_distance(X.T @ X, center=False) > 0.1
        # J/||J|| is orthogonal to P_K, so the uncentred distance of a constant Gram is sqrt(2)
        assert m.etf_distance(np.ones((3, 3)), center=False) == pytest.approx(np.sqrt(2), rel=1e-14)

    def test_nc2_classifier_not_centred_by_default(self):
        rng = np.random.default_rng(6)
        W = etf_means(rng, 4, 5).T
        assert m.nc2_classifier(W) < 1e-12
        Wshift = W + rng.normal(size=(1, 5))
        assert m.nc2_classifier(Wshift) > 1e-3
        assert m.nc2_classifier(Wshift, center=True) < 1e-12

    def test_nc3_closed_forms(self):
        H, y, W, M = tv6()
        Mc = M - H.mean(1)[:, None]
        assert m.nc3(-Mc.T, H, y, "papyan") == pytest.approx(4.0, abs=1e-12)
        assert m.nc3(-Mc.T, H, y, "zhu") == pytest.approx(2.0, abs=1e-12)
        assert m.nc3(5.0 * W, 0.1 * H, y, "zhu") < 1e-12
        # a generic pair against the defining formulas
        _, H2, y2, W2 = random_problem(7, K=4, d=5)
        M2, mu = m.class_means(H2, y2)
        Mc2 = M2 - mu[:, None]
        Z = W2 @ Mc2
        assert m.nc3(W2, H2, y2) == pytest.approx(
            np.linalg.norm(Z / np.linalg.norm(Z) - P_K(4) / np.sqrt(3)), rel=1e-12)
        assert m.nc3(W2, H2, y2, "papyan") == pytest.approx(
            np.linalg.norm(W2.T / np.linalg.norm(W2) - Mc2 / np.linalg.norm(Mc2)) ** 2, rel=1e-12)

    def test_unc3(self):
        H, y, W, M = tv6()
        assert abs(m.unc3(np.diag([1.0, 2.0, 3.0, 4.0]) @ W, H, y)) < 1e-12   # row scales do not matter
        _, H2, y2, W2 = random_problem(8, K=5, d=6)
        M2, mu = m.class_means(H2, y2)
        Mc = M2 - mu[:, None]
        c = np.array([W2[k] @ Mc[:, k] / np.linalg.norm(W2[k]) / np.linalg.norm(Mc[:, k]) for k in range(5)])
        assert m.unc3(W2, H2, y2) == pytest.approx(c.std() / c.mean(), rel=1e-12)

    def test_nc4_counts_disagreements(self):
        H, y, W, _ = tv6()
        assert m.nc4(np.roll(W, 1, axis=0), H, y) == 1.0                   # every prediction shifted
        W2 = W.copy()
        W2[[0, 1]] = W2[[1, 0]]                                              # classes 0 and 1 swapped
        assert m.nc4(W2, H, y) == pytest.approx(0.5)
        b = np.array([100.0, 0, 0, 0])                                       # bias forces class 0
        assert m.nc4(W, H, y, b=b) == pytest.approx(0.75)

    def test_gnc2_and_papyan_definitions(self):
        _, H, y, W = random_problem(9, K=5, d=6)
        M, mu = m.class_means(H, y)
        Mc = M - mu[:, None]
        nrm = np.linalg.norm(Mc, axis=0)
        Mh = Mc / nrm
        off = ~np.eye(5, dtype=bool)
        C = (Mh.T @ Mh)[off]
        pap = m.nc2_papyan(H, y)
        assert pap["equinorm"] == pytest.approx(nrm.std() / nrm.mean(), rel=1e-12)
        assert pap["equiangular"] == pytest.approx(C.std(), rel=1e-12)
        assert pap["maxangle"] == pytest.approx(np.abs(C + 0.25).mean(), rel=1e-12)
        dist = np.linalg.norm(Mh[:, :, None] - Mh[:, None, :], axis=0)[off]
        g = m.gnc2(H, y)
        assert g["mean"] == pytest.approx(np.mean(-np.log(dist)), rel=1e-12)
        assert g["var"] == pytest.approx(np.var(-np.log(dist)), rel=1e-10)
        wn = np.linalg.norm(W, axis=1)
        assert m.nc2_papyan(W=W)["equinorm"] == pytest.approx(wn.std() / wn.mean(), rel=1e-12)

    def test_cosine_center_and_cka(self):
        rng = np.random.default_rng(10)
        X = rng.normal(size=(3, 5))
        G = X.T @ X
        Gc = m.center_gram(G)
        np.testing.assert_allclose(Gc, P_K(5) @ G @ P_K(5), atol=1e-12)
        C = m.cosine_matrix(G)
        n = np.linalg.norm(X, axis=0)
        np.testing.assert_allclose(C, G / np.outer(n, n), rtol=1e-12)
        assert m.cka(G, G) == pytest.approx(1.0, rel=1e-12)
        assert m.cka(G, 7.0 * G + 3.0) == pytest.approx(1.0, rel=1e-12)   # centring kills the constant

    def test_semantic_regression_per_factor_and_noise(self):
        P = P_K(4)
        S1 = (TV6_ATTRS[:, None, 0] == TV6_ATTRS[None, :, 0]).astype(float)
        S2 = (TV6_ATTRS[:, None, 1] == TV6_ATTRS[None, :, 1]).astype(float)
        G = 2.0 * P + 0.6 * P @ S1 @ P + 0.2 * P @ S2 @ P
        fit = m.semantic_regression(G, TV6_ATTRS, per_factor=True)
        np.testing.assert_allclose(fit.ratio, [0.3, 0.1], atol=1e-12)
        assert fit.r2 == pytest.approx(1.0, abs=1e-12)
        assert fit.as_dict()["per_factor"] is True
        rng = np.random.default_rng(11)
        X = rng.normal(size=(4, 4))
        Gn = G + 0.3 * X @ X.T
        fit = m.semantic_regression(Gn, TV6_ATTRS)
        Gc = P @ Gn @ P
        Gc /= np.linalg.norm(Gc)
        res = Gc - fit.a * P - fit.b * P @ m.attribute_kernel(TV6_ATTRS) @ P
        assert fit.residual == pytest.approx(np.linalg.norm(res), rel=1e-10)
        assert fit.r2 == pytest.approx(1 - fit.residual ** 2, rel=1e-12)
        assert 0 < fit.r2 < 1
        with pytest.raises(Exception):
            fit.a = 1.0                                                      # frozen

    def test_effective_rank_routes(self):
        rng = np.random.default_rng(12)
        X = rng.normal(size=(4, 9)) * np.array([[3.0], [1.0], [0.5], [0.1]])
        e = m.effective_rank(X=X)
        assert m.effective_rank(gram=X.T @ X) == pytest.approx(e, rel=1e-10)
        assert m.effective_rank(gram=X @ X.T) == pytest.approx(e, rel=1e-10)
        s = np.linalg.svd(X, compute_uv=False)
        p = s / s.sum()
        assert e == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-12)
        lam = s ** 2
        assert m.participation_ratio(X.T @ X) == pytest.approx(lam.sum() ** 2 / (lam ** 2).sum(), rel=1e-10)
        assert m.participation_ratio(X=X) == pytest.approx(lam.sum() ** 2 / (lam ** 2).sum(), rel=1e-12)
        assert m.effective_rank(gram=np.eye(6)) == pytest.approx(6.0, rel=1e-14)


# ---------------------------------------------------------------------------
# ETF: semantic scores vanish, ranks are K-1
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("K", [3, 4, 5, 7, 10])
def test_etf_semantic_scores_vanish(K):
    rng = np.random.default_rng(100 + K)
    d = K + 2
    X = etf_means(rng, K, d, scale=2.5) + rng.normal(size=(d, 1))     # ETF plus a global mean
    G = X.T @ X
    for _ in range(5):
        F = int(rng.integers(1, 4))
        while True:
            A = rng.integers(0, 3, size=(K, F))
            splits = [len(set(A[:, f])) not in (1, K) for f in range(F)]
            if any(splits):
                break
        assert abs(m.semantic_gap(G, A)) < 1e-12
        assert abs(m.semantic_gap(2.5 ** 2 * P_K(K), A, center=False)) < 1e-12
        assert m.offdiag_alignment(G, A) == 0.0
        if m.attribute_kernel(A).std() > 0:
            assert abs(m.excess_cka(G, A)) < 1e-12
    assert m.etf_distance(G) < 1e-12
    assert m.effective_rank(gram=m.center_gram(G)) == pytest.approx(K - 1, abs=1e-10)
    assert m.participation_ratio(m.center_gram(G)) == pytest.approx(K - 1, abs=1e-10)
    assert m.effective_rank(gram=P_K(K)) == pytest.approx(K - 1, abs=1e-12)
    assert m.participation_ratio(P_K(K)) == pytest.approx(K - 1, abs=1e-12)


# ---------------------------------------------------------------------------
# feature route == Gram route
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("balanced", [True, False])
def test_feature_and_gram_routes_agree(seed, balanced):
    _, H, y, _ = random_problem(seed, balanced=balanced)
    d, K = H.shape[0], int(y.max()) + 1
    G = H.T @ H
    for v in m.NC1_VARIANTS:
        rank = min(d, K - 1) if v == "svd" else None
        assert m.nc1_from_gram(G, y, v, rank=rank) == pytest.approx(m.nc1(H, y, v), rel=1e-10), v
    np.testing.assert_allclose(m.cdnv_from_gram(G, y), m.cdnv(H, y), rtol=1e-10, equal_nan=True)
    assert m.cdnv_mean_from_gram(G, y) == pytest.approx(m.cdnv_mean(H, y), rel=1e-10)
    assert m.nc2_from_gram(G, y) == pytest.approx(m.nc2(H, y), rel=1e-9, abs=1e-12)
    for key, val in m.nc2_papyan(H, y).items():
        assert m.nc2_papyan_from_gram(G, y)[key] == pytest.approx(val, rel=1e-9, abs=1e-12)
    for key, val in m.gnc2(H, y).items():
        assert m.gnc2_from_gram(G, y)[key] == pytest.approx(val, rel=1e-9, abs=1e-12)
    M, mu = m.class_means(H, y)
    Mc = M - mu[:, None]
    np.testing.assert_allclose(m.class_mean_gram(G, y), Mc.T @ Mc, rtol=1e-9, atol=1e-10 * np.abs(G).max())


@pytest.mark.parametrize("seed", range(8))
def test_gram_route_when_d_below_K_minus_1(seed):
    """The Gram does not know d; 'pinv' ignores rounding-level eigenvalues, 'svd' needs rank=d.

    A global offset makes the rounding noise of G large enough that numpy's
    relative pinv cutoff alone would invert it (about half of these seeds).
    """
    _, H, y, _ = random_problem(seed, K=6, d=2, offset=30.0)
    G = H.T @ H
    assert m.nc1_from_gram(G, y, "pinv") == pytest.approx(m.nc1(H, y, "pinv"), rel=1e-10)
    assert m.nc1_from_gram(G, y, "svd", rank=2) == pytest.approx(m.nc1(H, y, "svd"), rel=1e-10)
    with pytest.raises(ValueError, match="rank"):
        m.nc1_from_gram(G, y, "svd")


# ---------------------------------------------------------------------------
# hypothesis invariance properties
# ---------------------------------------------------------------------------
seeds = st.integers(0, 2**32 - 1)


@PROP
@given(seed=seeds, balanced=st.booleans())
def test_invariance_nc1_nc2(seed, balanced):
    rng, H, y, W = random_problem(seed, balanced=balanced)
    d = H.shape[0]
    Q = orthogonal(rng, d)
    c = float(np.exp(rng.uniform(-3, 3)))
    t = rng.normal(size=(d, 1))
    (H2, y2, W2), _ = permute_problem(rng, H, y, W)
    for v in m.NC1_VARIANTS:
        base = m.nc1(H, y, v)
        assert m.nc1(Q @ H, y, v) == pytest.approx(base, rel=1e-9)
        assert m.nc1(c * H, y, v) == pytest.approx(base, rel=1e-9)
        assert m.nc1(H + t, y, v) == pytest.approx(base, rel=1e-9)
        assert m.nc1(H2, y2, v) == pytest.approx(base, rel=1e-9)
    base = m.nc2(H, y)
    for Hx, yx in ((Q @ H, y), (c * H, y), (H + t, y), (H2, y2)):
        assert m.nc2(Hx, yx) == pytest.approx(base, rel=1e-9, abs=1e-12)
    base = m.cdnv_mean(H, y)
    assert m.cdnv_mean(Q @ H, y) == pytest.approx(base, rel=1e-9)
    assert m.cdnv_mean(H2, y2) == pytest.approx(base, rel=1e-9)


@PROP
@given(seed=seeds)
def test_invariance_nc3_nc4(seed):
    rng, H, y, W = random_problem(seed)
    d, K = H.shape[0], W.shape[0]
    Q = orthogonal(rng, d)
    cH, cW = np.exp(rng.uniform(-3, 3, size=2))
    b = rng.normal(size=K)
    (H2, y2, W2), pi = permute_problem(rng, H, y, W)
    b2 = np.empty_like(b)
    b2[pi] = b
    for v in m.NC3_VARIANTS:
        base = m.nc3(W, H, y, v)
        assert m.nc3(W @ Q.T, Q @ H, y, v) == pytest.approx(base, rel=1e-9, abs=1e-12)
        assert m.nc3(cW * W, cH * H, y, v) == pytest.approx(base, rel=1e-9, abs=1e-12)
        assert m.nc3(W2, H2, y2, v) == pytest.approx(base, rel=1e-9, abs=1e-12)
    base = m.nc4(W, H, y, b)
    assert m.nc4(W @ Q.T, Q @ H, y, b) == base
    assert m.nc4(cW * W, cH * H, y, cW * cH * b) == base
    assert m.nc4(W2, H2, y2, b2) == base
    base = m.unc3(W, H, y)
    assert m.unc3(W @ Q.T, Q @ H, y) == pytest.approx(base, rel=1e-9, abs=1e-12)
    assert m.unc3(W2, H2, y2) == pytest.approx(base, rel=1e-9, abs=1e-12)


@PROP
@given(seed=seeds, K=st.integers(3, 7), F=st.integers(1, 3))
def test_invariance_gram_metrics(seed, K, F):
    rng = np.random.default_rng(seed)
    d = int(rng.integers(2, K + 3))
    X = rng.normal(size=(d, K)) + rng.normal(size=(d, 1))
    A = rng.integers(0, 3, size=(K, F))
    A[:2, 0] = [0, 1]                                   # factor 0 splits the classes ...
    A[2, 0] = 0                                          # ... with a shared level
    G = X.T @ X
    Q = orthogonal(rng, d)
    c = float(np.exp(rng.uniform(-3, 3)))
    pi = rng.permutation(K)
    Pm = np.eye(K)[pi]                                   # (Pm G Pm^T)[i, j] = G[pi[i], pi[j]]
    Gp, Ap = Pm @ G @ Pm.T, A[pi]
    XQ = Q @ X
    for center in (True, False):
        base = m.etf_distance(G, center=center)
        assert m.etf_distance(XQ.T @ XQ, center=center) == pytest.approx(base, rel=1e-9, abs=1e-12)
        assert m.etf_distance(c * G, center=center) == pytest.approx(base, rel=1e-9, abs=1e-12)
        assert m.etf_distance(Gp, center=center) == pytest.approx(base, rel=1e-9, abs=1e-12)
    base = m.semantic_gap(G, A)
    assert m.semantic_gap(XQ.T @ XQ, A) == pytest.approx(base, rel=1e-9, abs=1e-12)
    assert m.semantic_gap(c * G, A) == pytest.approx(base, rel=1e-9, abs=1e-12)
    assert m.semantic_gap(Gp, Ap) == pytest.approx(base, rel=1e-9, abs=1e-12)
    assert m.semantic_gap(G, 7 - 2 * A) == pytest.approx(base, rel=1e-12, abs=1e-14)   # level names
    base = m.offdiag_alignment(G, A)
    assert m.offdiag_alignment(Gp, Ap) == pytest.approx(base, rel=1e-9, abs=1e-12)
    base = m.excess_cka(G, A)
    assert m.excess_cka(Gp, Ap) == pytest.approx(base, rel=1e-9, abs=1e-12)
    assert m.excess_cka(c * G, A) == pytest.approx(base, rel=1e-9, abs=1e-12)
    base = m.effective_rank(X=X)
    assert m.effective_rank(X=XQ) == pytest.approx(base, rel=1e-9)
    assert m.effective_rank(X=c * X) == pytest.approx(base, rel=1e-9)
    assert m.effective_rank(X=X[:, pi]) == pytest.approx(base, rel=1e-9)
    base = m.effective_rank(gram=G)
    assert m.effective_rank(gram=Gp) == pytest.approx(base, rel=1e-9)
    assert m.effective_rank(gram=c * G) == pytest.approx(base, rel=1e-9)
    assert m.participation_ratio(Gp) == pytest.approx(m.participation_ratio(G), rel=1e-9)


@PROP
@given(seed=seeds, K=st.integers(2, 6))
def test_etf_distance_bounds_and_zero_set(seed, K):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(int(rng.integers(1, 8)), K))
    G = X.T @ X
    for center in (True, False):
        assert 0.0 <= m.etf_distance(G, center=center) <= 2.0 + 1e-12
    assert m.etf_distance(float(np.exp(rng.normal())) * P_K(K)) < 1e-12


# ---------------------------------------------------------------------------
# bad input: clear ValueErrors naming the argument
# ---------------------------------------------------------------------------
class TestBadInput:
    H, y, W, _ = tv6()

    @pytest.mark.parametrize("call, word", [
        (lambda H, y, W: m.nc1(H, y[:-1]), "labels"),
        (lambda H, y, W: m.nc1(H, y, "frobenius"), "variant"),
        (lambda H, y, W: m.nc1_from_gram(H.T @ H, y, "nope"), "variant"),
        (lambda H, y, W: m.nc3(W, H, y, "nope"), "variant"),
        (lambda H, y, W: m.nc1(np.where(np.eye(*H.shape, dtype=bool), np.nan, H), y), "H"),
        (lambda H, y, W: m.nc1(H[0], y), "H"),
        (lambda H, y, W: m.nc1(H, y - 1), "labels"),
        (lambda H, y, W: m.nc1(H, y + 0.5), "labels"),
        (lambda H, y, W: m.nc1(H, np.where(y == 1, 3, y)), "labels"),       # class 1 empty
        (lambda H, y, W: m.nc1(H, y, K=3), "K"),
        (lambda H, y, W: m.nc1(H, y, K=6), "labels"),
        (lambda H, y, W: m.nc1(H, np.zeros_like(y)), "labels"),            # one class
        (lambda H, y, W: m.nc1(H, y.reshape(3, 4)), "labels"),
        (lambda H, y, W: m.nc1(np.ones_like(H), y), "H"),                   # coincident means
        (lambda H, y, W: m.nc1(H, y, "svd", rank=5), "rank"),
        (lambda H, y, W: m.nc2(np.ones_like(H), y), "H"),
        (lambda H, y, W: m.nc1_from_gram(H @ H.T, y), "G"),                # d x d, not N x N
        (lambda H, y, W: m.nc1_from_gram(H.T @ H - 5 * np.eye(12), y), "G"),
        (lambda H, y, W: m.nc2_from_gram(H.T @ H + np.triu(np.ones((12, 12)), 1), y), "G"),
        (lambda H, y, W: m.cdnv(H, y[:5]), "labels"),
        (lambda H, y, W: m.nc3(W[:, :3], H, y), "W"),
        (lambda H, y, W: m.nc3(W[:3], H, y), "labels"),                     # class 3 has no row
        (lambda H, y, W: m.nc3(W, H, y, K=3), "K"),
        (lambda H, y, W: m.nc3(0 * W, H, y, "papyan"), "W"),
        (lambda H, y, W: m.nc4(W, H, y, b=np.zeros(3)), "b"),
        (lambda H, y, W: m.nc4(W, H, y, b=np.array([0, np.inf, 0, 0])), "b"),
        (lambda H, y, W: m.unc3(np.vstack([W[:3], 0 * W[3]]), H, y), "W"),
        (lambda H, y, W: m.nc2_papyan(H, y, W=W), "W"),
        (lambda H, y, W: m.nc2_classifier(W[:1]), "W"),
    ])
    def test_feature_metrics(self, call, word):
        with pytest.raises(ValueError, match=word):
            call(self.H, self.y, self.W)

    @pytest.mark.parametrize("G, word", [
        (np.ones((3, 4)), "square"),
        (np.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive semidefinite"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
        (np.zeros((3, 3)), "zero"),
        (np.ones((3, 3)), "zero after centring"),
        (np.ones((1, 1)), "at least 2"),
        (np.ones(3), "2-D"),
    ])
    def test_etf_distance_gram(self, G, word):
        with pytest.raises(ValueError, match="gram") as e:
            m.etf_distance(G)
        assert word in str(e.value)

    def test_semantic_inputs(self):
        P = P_K(4)
        with pytest.raises(ValueError, match="attributes"):
            m.semantic_gap(P, TV6_ATTRS[:3])
        with pytest.raises(ValueError, match="attributes"):
            m.semantic_gap(P, TV6_ATTRS[:, 0])
        with pytest.raises(ValueError, match="attributes"):
            m.semantic_gap(P, TV6_ATTRS + 0.5)
        with pytest.raises(ValueError, match="attributes"):
            m.semantic_gap(P, np.zeros((4, 2), int))                     # no factor splits classes
        with pytest.raises(ValueError, match="attributes"):
            m.semantic_regression(P, np.c_[TV6_ATTRS, np.arange(4)], per_factor=True)  # P S_f P = P_K
        with pytest.raises(ValueError, match="attributes"):
            m.semantic_regression(P, np.arange(4)[:, None])              # S = I: P S P = P_K, collinear
        with pytest.raises(ValueError, match="attributes"):
            m.semantic_regression(P, np.c_[TV6_ATTRS, np.zeros(4, int)], per_factor=True)
        with pytest.raises(ValueError, match="attributes"):
            m.excess_cka(P, np.zeros((4, 1), int))
        with pytest.raises(ValueError, match="gram"):
            m.offdiag_alignment(P_K(2), np.array([[0], [1]]))
        with pytest.raises(ValueError, match="gram"):
            m.semantic_gap(-P, TV6_ATTRS)
        with pytest.raises(ValueError, match="G"):
            m.cosine_matrix(P_K(3) * np.array([1.0, 1.0, 0.0]) * np.array([[1.0], [1.0], [0.0]]))
        X = np.array([[1.0, -1.0, 0.0]])                                  # item 2 sits at the mean
        with pytest.raises(ValueError, match="gram"):
            m.semantic_gap(X.T @ X, np.array([[0], [0], [1]]))
        with pytest.raises(ValueError, match="G2"):
            m.cka(P, P_K(3))

    def test_rank_inputs(self):
        with pytest.raises(ValueError, match="exactly one"):
            m.effective_rank()
        with pytest.raises(ValueError, match="exactly one"):
            m.effective_rank(X=np.eye(3), gram=np.eye(3))
        with pytest.raises(ValueError, match="gram"):
            m.effective_rank(gram=np.zeros((3, 3)))
        with pytest.raises(ValueError, match="gram"):
            m.participation_ratio(np.array([[1.0, 2.0], [2.0, 1.0]]))
        with pytest.raises(ValueError, match="X"):
            m.effective_rank(X=np.array([[1.0, np.inf]]))
