"""The fit's models: the pattern algebra, M2's two engines and their twins, M1's closed form per pattern."""

import numpy as np
import pytest

import ufm
from ufm import _kernels as kern
from ufm.bridge.fitting import unit_centred
from ufm.bridge.m1 import anchored_path, anchored_path_patterns
from ufm.bridge.clock import Clock, powerlaw_init
from ufm.bridge.m2 import (M2Model, Points, align_monotone, align_refined, at_fraction, kernel_flow_rhs_numpy,
                           kernel_gd_numpy, pattern_flow_rhs_numpy, pattern_gd_numpy)
from ufm.bridge.patterns import PatternAlgebra, outside_fraction, pattern_ids, project_patterns
from ufm.metrics import etf_distance, semantic_gap

SETTINGS = [ufm.factorial((2, 2, 2)), ufm.factorial((3, 3, 3)), ufm.factorial((3, 2, 4)), ufm.hierarchy(2, depth=4)]


# -- the pattern algebra ------------------------------------------------------------------------
@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: s.name)
def test_pattern_algebra_diagonalizes_every_pattern_matrix(s):
    a = PatternAlgebra.from_attributes(s.attributes)
    assert a.mult.sum() == s.N and a.mult[0] == 1 and np.allclose(a.P[0], a.valency)
    rng = np.random.default_rng(0)
    X = a.dense(rng.standard_normal(a.R))
    Y = a.dense(rng.standard_normal(a.R))
    # the spectrum of an element is its eigenvalues repeated by multiplicity
    xi = a.eigen(a.values(X))
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(X)), np.sort(np.repeat(xi, a.mult.astype(int))),
                               atol=1e-10)
    # closed under products (eigenvalues multiply), under the column softmax, and Frobenius norms agree
    assert a.contains(X @ Y)
    np.testing.assert_allclose(a.eigen(a.values(X @ Y)), xi * a.eigen(a.values(Y)), atol=1e-10)
    E = np.exp(X - X.max(axis=0))
    assert a.contains(E / E.sum(axis=0))
    assert abs(a.inner(xi, xi)[0, 0] - np.sum(X * X)) < 1e-9 * np.sum(X * X)
    # the kernel of ufm's encoding lies in the algebra; the O(R) gap and ETF distance equal ufm.metrics'
    assert a.contains(s.input_kernel(1.7))
    G = a.dense(np.abs(rng.standard_normal(a.R)) + 0.1)
    gx = a.eigen(a.values(G))
    assert abs(a.semantic_gap(gx, s.attributes) - semantic_gap(G, s.attributes)) < 1e-12
    assert abs(a.etf_distance(gx) - etf_distance(G)) < 1e-12


def test_pattern_algebra_refuses_tables_that_are_not_association_schemes():
    unbalanced = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [0, 0]])    # item 4 repeats item 0's levels
    with pytest.raises(ValueError, match="not an association scheme"):
        PatternAlgebra.from_attributes(unbalanced)
    with pytest.raises(ValueError, match=r"\(K, F\) table"):
        pattern_ids(np.zeros(4))


def test_eigenvector_route_equals_the_intersection_route():
    s = ufm.factorial((2, 2, 2, 2))
    a = PatternAlgebra.from_attributes(s.attributes)
    rng = np.random.default_rng(0)
    P2 = PatternAlgebra._table_from_eigenvectors(a.ids, a.R, a.K, rng)
    # same rows up to order
    rows = {tuple(np.round(r, 8)) for r in a.P}
    assert rows == {tuple(np.round(r, 8)) for r in P2}


def test_projection_and_outside_fraction():
    s = ufm.factorial((2, 3))
    ids = pattern_ids(s.attributes)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 6))
    G = X @ X.T
    P = project_patterns(G, ids, normalize=False)
    np.testing.assert_allclose(project_patterns(P, ids, normalize=False), P, atol=1e-12)   # idempotent
    assert abs(np.sum((G - P) * P)) < 1e-9                                                   # orthogonal
    assert abs(outside_fraction(G, ids) - np.sum((G - P) ** 2) / np.sum(G ** 2)) < 1e-12
    assert outside_fraction(s.input_kernel(1.0), ids) < 1e-24


# -- M2: numba kernels equal their numpy twins; the two engines agree -----------------------------
@pytest.mark.slow
def test_m2_kernels_equal_their_numpy_twins():
    """The compiled flows and GD maps of M2 / M2-H (dense and in the pattern algebra) against their numpy twins."""
    rng = np.random.default_rng(2)
    K, d = 6, 9
    Kx = (lambda X: X.T @ X)(rng.standard_normal((8, K)))
    y = 0.3 * rng.standard_normal(K * d + d * K)
    rec = np.array([0, 1, 5, 12], dtype=np.int64)
    for loss_id in (0, 1):
        for lam_A, lam_H in ((3e-2, 0.0), (0.0, 2e-2), (1e-2, 2e-2)):
            data = (K, d, Kx, 1e-2, lam_A, lam_H, loss_id)
            a, b = np.empty_like(y), np.empty_like(y)
            kern.m2_kernel_flow_rhs(y, data, a)
            kernel_flow_rhs_numpy(y, data, b)
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
            G = np.empty((len(rec), K, K))
            assert kern.m2_kernel_gd(y, data, 0.05, rec, G) == len(rec)
            np.testing.assert_allclose(G, kernel_gd_numpy(y, data, 0.05, rec), rtol=1e-11, atol=1e-12)
    s = ufm.factorial((3, 2))
    alg = PatternAlgebra.from_attributes(s.attributes)
    k = alg.eigen(alg.values(s.input_kernel(1.3)))
    z = 0.3 * rng.standard_normal(3 * alg.R)
    z[alg.R:] = np.abs(z[alg.R:])
    for loss_id in (0, 1):
        for lam_A, lam_H in ((2e-2, 0.0), (0.0, 2e-2)):
            data = (alg.P, alg.P_inv, alg.valency, k, 1e-2, lam_A, lam_H, loss_id, float(alg.K))
            a, b = np.empty_like(z), np.empty_like(z)
            kern.m2_pattern_flow_rhs(z, data, a)
            pattern_flow_rhs_numpy(z, data, b)
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
            Y = np.empty((len(rec), 3 * alg.R))
            assert kern.m2_pattern_gd(z, data, 0.05, rec, Y) == len(rec)
            np.testing.assert_allclose(Y, pattern_gd_numpy(z, data, 0.05, rec), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("lam_A, lam_H", [(0.02, 0.0), (0.0, 0.03), (0.01, 0.03)])
def test_kernel_flow_is_the_input_coupled_gradient_flow_seen_through_H(lam_A, lam_H):
    """dH/dt of the kernel flow equals (dA/dt) Phi of ufm's own M2 / M2-H gradient (THEORY §8.2, §8.2b)."""
    s = ufm.factorial((2, 2))
    prob = ufm.InputCoupledUFM.from_setting(s, 1.5, d=7, lam_W=0.02, lam_A=lam_A, lam_H=lam_H)
    rng = np.random.default_rng(3)
    W, A = rng.standard_normal((4, 7)), rng.standard_normal((7, prob.p))
    g = ufm.losses.state_gradients(prob, {"W": W, "A": A})
    y = np.concatenate([W.ravel(), (A @ prob.Phi).ravel()])
    out = np.empty_like(y)
    kernel_flow_rhs_numpy(y, (4, 7, prob.Phi.T @ prob.Phi, 0.02, lam_A, lam_H, 0), out)
    np.testing.assert_allclose(out[:28].reshape(4, 7), -g["W"], atol=1e-12)
    np.testing.assert_allclose(out[28:].reshape(7, 4), -g["A"] @ prob.Phi, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("penalty, lam", [("A", 0.0), ("A", 1e-3), ("H", 2e-3)])
def test_pattern_engine_equals_dense_engine_and_ufm_simulate(penalty, lam):
    """Flow and GD: the exact pattern reduction, the dense engine and ufm.simulate of (W, A) agree."""
    s = ufm.factorial((3, 3))
    a = PatternAlgebra.from_attributes(s.attributes)
    kw = dict(setting=s, algebra=a, lam=lam, scale=1e-2, penalty=penalty)
    mp, md = M2Model(s.N, **kw), M2Model(s.N, engine="dense", **kw)
    assert mp.engine == "patterns" and md.engine == "dense"
    x = mp.pack(sigma=1.8, strengths=[1.3, 1 / 1.3])
    prob = mp.problem(x)
    assert (prob.lam_A, prob.lam_H) == ((lam, 0.0) if penalty == "A" else (0.0, lam))
    from ufm.bridge.fitting import isotropic_init

    horizon = 1e5 if lam == 0 else 20 / lam
    flow = ufm.simulate(prob, steps=10**6, lr=horizon / 10**6, mode="flow", n_records=30, record=("gram_H",),
                        rtol=1e-9, atol=1e-12, **isotropic_init(prob, 1e-2))
    gd = ufm.simulate(prob, steps=3000, lr=0.5, n_records=30, record=("gram_H",), **isotropic_init(prob, 1e-2))
    for tr, points in ((flow, Points(times=flow.times)), (gd, Points(gd_steps=gd.steps, lr=0.5))):
        Sp, Sd = mp.run(x, points), md.run(x, points)
        sim = unit_centred(np.asarray(tr.records["gram_H"][0]))
        assert np.max(np.abs(mp.dense(mp.centred_unit(Sp)) - md.centred_unit(Sd))) < 1e-6
        assert np.max(np.abs(sim - mp.dense(mp.centred_unit(Sp)))) < 1e-5
        np.testing.assert_allclose(mp.log_norm(Sp), np.log(np.linalg.norm(
            ufm.metrics.double_centre(np.asarray(tr.records["gram_H"][0])), axis=(1, 2))), atol=1e-5)


def test_random_starts_have_the_isotropic_start_as_their_mean():
    """The bootstrap's Gaussian start of width d: E W0 W0^T = s^2 I, E H0^T H0 = s^2 K_x, E W0 H0 = 0, and
    (Bartlett) any width costs a 2K-wide state."""
    s = ufm.factorial((2, 2))
    m = M2Model(s.N, setting=s, scale=0.1)
    x = m.pack(sigma=1.5, strengths=[1.0, 1.0], lam=1e-3)
    q = m.unpack(x)
    Kx = m.kernel(q)
    rng = np.random.default_rng(0)
    for d in (3.0, 40.0, 1e4):
        P, S, Z = np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4))
        n = 4000
        for _ in range(n):
            W0, H0 = m._gaussian_start(q, d, rng)
            assert W0.shape[1] == H0.shape[0] == min(int(d), 8)
            P += W0 @ W0.T / n
            S += H0.T @ H0 / n
            Z += W0 @ H0 / n
        np.testing.assert_allclose(P, 0.01 * np.eye(4), atol=0.01 * 0.15)
        np.testing.assert_allclose(S, 0.01 * Kx, atol=0.01 * 0.15 * np.abs(Kx).max())
        assert np.abs(Z).max() < 0.01 * 0.1


def test_clocks_map_steps_to_model_times_and_back():
    steps = np.array([0.0, 1.0, 10.0, 300.0, 5000.0])
    for kind, xc in (("linear", [-1.0]), ("power", [0.5, 1.7]), ("broken", [0.3, 1.6, 2.0, 0.6])):
        c = Clock(kind)
        tau = c.times(xc, steps)
        assert tau[0] == 0 and np.all(np.diff(tau) > 0)
        np.testing.assert_allclose(c.steps(xc, tau), steps, rtol=1e-9)
        assert len(c.names) == len(xc)
    np.testing.assert_allclose(Clock("gd", lr=0.5).times([], steps), steps * 0.5)
    np.testing.assert_array_equal(Clock("flow").times([], steps), steps)
    # starting values from aligned times: exact on a power law
    np.testing.assert_allclose(powerlaw_init("power", steps, 3.0 * steps ** 1.4), [np.log10(3.0), 1.4])
    with pytest.raises(ValueError, match="clock must be one of"):
        Clock("adam")
    with pytest.raises(ValueError, match="needs the run's step lr"):
        Clock("gd")


def test_model_refuses_the_patterns_engine_where_it_is_not_exact():
    s = ufm.factorial((2, 2))
    a = PatternAlgebra.from_attributes(s.attributes)
    with pytest.raises(ValueError, match="engine='patterns' needs"):
        M2Model(4, kernel=np.diag([1.0, 2.0, 3.0, 4.0]), algebra=a, engine="patterns")
    with pytest.raises(ValueError, match="engine='patterns' needs"):
        M2Model(4, setting=s, algebra=a, start="observed", observed_start=(None, np.eye(4)), engine="patterns")


# -- alignment --------------------------------------------------------------------------------------
def test_refined_alignment_finds_points_between_model_times():
    t = np.linspace(0, 1, 11)
    curve = np.stack([np.cos(t), np.sin(t)], axis=1)                   # unit points on an arc
    obs = np.stack([np.cos(t[:-1] + 0.05), np.sin(t[:-1] + 0.05)], axis=1)
    inner = obs @ curve.T
    path, coarse = align_monotone(np.maximum(2 - 2 * inner, 0))
    frac, fine = align_refined(inner, np.sum(curve[:-1] * curve[1:], axis=1))
    assert fine < 1e-3 * coarse
    np.testing.assert_allclose(frac, np.arange(10) + 0.5, atol=0.01)
    np.testing.assert_allclose(at_fraction(t, frac), t[:-1] + 0.05, atol=1e-3)


# -- M1 in closed form per pattern --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("s", [ufm.factorial((2, 2, 2)), ufm.hierarchy(2, depth=3)], ids=lambda s: s.name)
def test_m1_per_pattern_minimizer_is_never_worse_than_block_descent(s):
    K = s.N
    a = PatternAlgebra.from_attributes(s.attributes)
    H0 = np.vstack([s.attribute_encoding(), np.zeros((K, K))])
    betas = np.logspace(2, -4, 13)
    sig = anchored_path_patterns(a.eigen(a.values(H0.T @ H0)), betas)
    _, H = anchored_path(H0, betas)

    def objective(S, cross, b):           # 2K x objective (Tirer normalization, n = 1), W eliminated
        return (1e-2 * np.trace(np.linalg.inv(S + 1e-2 * np.eye(K))) + 1e-2 * np.trace(S)
                + b * (np.trace(S) - 2 * cross + np.sum(H0 ** 2)))

    s0 = a.eigen(a.values(H0.T @ H0))
    for i, b in enumerate(betas):
        S = a.dense(sig[i])
        cross = np.sum(a.mult * np.sqrt(np.clip(sig[i] * s0, 0, None)))
        bcd = objective(H[i].T @ H[i], np.sum(H[i] * H0), b)
        assert objective(S, cross, b) <= bcd + 1e-9
        # the value is attained: H = H0-aligned polar factor times S^(1/2) has Gram S and cross term `cross`
        w, V = np.linalg.eigh(S)
        root = (V * np.sqrt(np.clip(w, 0, None))) @ V.T
        U, _, Vt = np.linalg.svd(H0 @ root, full_matrices=False)
        Hs = U @ Vt @ root
        np.testing.assert_allclose(Hs.T @ Hs, S, atol=1e-8)
        assert abs(np.sum(Hs * H0) - cross) < 1e-8 * max(1.0, cross)
    # at the largest beta both sit at the anchor
    np.testing.assert_allclose(unit_centred(a.dense(sig))[0], unit_centred(H[0].T @ H[0]), atol=1e-3)
