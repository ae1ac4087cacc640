"""ufm.phase_diagram and the plotting helpers for it, drawn under Agg and checked for content.

Pinned here:
1. On a tiny grid the phase diagram has one record per point with the theory peak, the exact end state and
   the parameters; the end state's ETF distance (ufm.solve) falls monotonically as the capacity sigma grows,
   for the three settings, while the peak semantic gap stays well above the end state's.
2. A long gradient flow (ufm.simulate) lands on the exact end state of the convex solver (simulate=True).
3. plot_trajectory and plot_phase_lines draw what they say (lines, labels, log axis, limits).
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ufm  # noqa: E402
from ufm import dynamics  # noqa: E402
from ufm.phase import phase_point  # noqa: E402
from ufm.results import Status  # noqa: E402
from ufm.plotting import plot_phase_diagram, plot_phase_lines, plot_trajectory  # noqa: E402

SIGMAS = (1.5, 3.0, 6.0)


@pytest.fixture(scope="module")
def phase():
    return ufm.phase_diagram(sigmas=SIGMAS, strengths=(1.0,), lams=(1e-3,))


@pytest.mark.slow
def test_phase_diagram_records(phase):
    assert phase.status is Status.completed and phase.n_failed == 0
    assert len(phase.records) == 3 * len(SIGMAS)
    for r in phase.records:
        assert r["end_method"] == "prox"
        assert 0 < r["peak_time"] < r["transition_time"]
        assert r["peak_gap"] > r["gap_init"]


@pytest.mark.parametrize("setting", ["factorial", "hierarchy", "ntp_contexts"])
def test_end_state_approaches_etf_as_sigma_grows(phase, setting):
    rows = sorted((r for r in phase.records if r["setting"] == setting), key=lambda r: r["sigma"])
    etf = np.array([r["end_etf_distance"] for r in rows])
    assert np.all(np.diff(etf) < 0), etf                      # monotone in sigma
    assert etf[-1] < 0.06                                      # sigma = 6: close to the ETF
    for r in rows:                                             # ... while the early peak stays
        if r["sigma"] >= 3:                                    # (sigma^2 well above the number of factors)
            assert r["rises"] and r["peak_gap"] > 4 * r["end_gap"], r


@pytest.mark.slow
def test_end_state_etf_distance_monotone_fine_grid():
    rows = [phase_point("factorial", s) for s in (1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 8.0)]
    etf = [r.end_etf_distance for r in rows]
    assert np.all(np.diff(etf) < 0), etf


def test_long_simulation_lands_on_the_exact_end_state():
    r = phase_point("factorial", sigma=3.0, simulate=True)
    assert r.success and r.status is Status.completed
    assert r.sim_end_gap == pytest.approx(r.end_gap, abs=1e-5)
    assert r.sim_end_etf_distance == pytest.approx(r.end_etf_distance, abs=1e-5)
    assert r.sim_peak_gap > 3 * r.sim_end_gap             # the simulated transient rises and falls
    assert r.sim_peak_time == pytest.approx(r.peak_time, rel=0.25)


def test_phase_diagram_rejects_bad_input():
    with pytest.raises(ValueError, match="setting must be one of"):
        ufm.phase_diagram(settings=("nope",))
    with pytest.raises(ValueError, match="sigmas"):
        ufm.phase_diagram(sigmas=(0.0,))
    with pytest.raises(ValueError, match="empty"):
        ufm.phase_diagram(lams=())


def test_plot_phase_lines_and_diagram(phase):
    ax = plot_phase_lines(phase, "sigma", ("peak_gap", "end_etf_distance"), where={"lam": 1e-3}, logy=True,
                          title="phase")
    lines = ax.get_lines()
    assert len(lines) == 6 and ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = [ln.get_label() for ln in lines]
    assert "factorial: peak semantic gap" in labels and "ntp_contexts: end-state ETF distance" in labels
    fact = lines[labels.index("factorial: end-state ETF distance")]
    np.testing.assert_allclose(fact.get_xdata(), SIGMAS)
    expect = [r["end_etf_distance"] for r in phase.records if r["setting"] == "factorial"]
    np.testing.assert_allclose(fact.get_ydata(), expect)
    assert ax.get_title() == "phase" and ax.get_legend() is not None
    plt.close(ax.figure)
    ax = plot_phase_diagram(phase, "sigma", "setting", "end_etf_distance", annotate=True)
    M = ax.get_images()[0].get_array()
    assert M.shape == (3, len(SIGMAS)) and np.all(np.diff(M, axis=1) < 0)
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="vary in"):
        plot_phase_lines(phase, "sigma", "peak_gap", hue=None)


def test_plot_trajectory_content():
    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=2.0, d=6, loss="mse")
    tr = ufm.simulate(m, steps=200, lr=0.5, mode="flow", seeds=2, record=("semantic_gap", "objective"), n_records=30,
                      time_variable="t")
    th = dynamics.semantic_curve(m, tr.times, init_scale=1e-3)
    fig, ax = plt.subplots()
    assert plot_trajectory(tr, "semantic_gap", ax=ax, theory=th, end_value=0.1, title="gap") is ax
    labels = [ln.get_label() for ln in ax.get_lines()]
    for want in ("simulation (mean of 2 seeds)", "theory (semantic)", "end state (exact)", "peak (theory)"):
        assert want in labels, labels
    assert ax.get_xscale() == "log" and ax.get_xlabel().startswith("gradient-flow time")
    assert "semantic gap" in ax.get_ylabel() and ax.get_title() == "gap"
    mean = ax.get_lines()[labels.index("simulation (mean of 2 seeds)")]
    np.testing.assert_allclose(mean.get_ydata(), tr.semantic_gap.mean(0)[tr.times > 0])
    assert ax.get_xlim()[0] > 0
    plt.close(fig)
    ax = plot_trajectory(None, "semantic_gap", theory=th, logx=False, legend=False)
    assert ax.get_xscale() == "linear" and ax.get_legend() is None
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="not recorded"):
        plot_trajectory(tr, "etf_distance")
    with pytest.raises(ValueError, match="give a trajectory"):
        plot_trajectory(None)


# =====================================================================================
# M3 kernel flow (THEORY §8.3) and the M1/M2/M3 comparison
# =====================================================================================
def test_block_kernel_levels_and_psd():
    st = ufm.factorial((2, 2))
    T = dynamics.block_kernel(st, 1.0, 0.5, 0.1, graded=False)
    S = st.share
    off = ~np.eye(st.N, dtype=bool)
    assert np.all(np.diag(T) == 1.0)
    assert np.all(T[off & (S > 0)] == 0.5) and np.all(T[off & (S == 0)] == 0.1)
    G = dynamics.block_kernel(st, 1.0, 0.5, 0.0)                 # graded: shared * (#shared)/F
    np.testing.assert_allclose(G[off], 0.5 * S[off] / 2)
    with pytest.raises(ValueError, match="positive semidefinite"):
        dynamics.block_kernel(st, 1.0, 2.0, 0.0)


def test_kernel_flow_identity_is_the_free_logit_flow():
    """Theta = I: MSE has Z(t) = Y + (Z0 - Y) e^{-t/N}; CE from Z = 0 stays symmetric, so the gap is 0 (ETF)."""
    st = ufm.factorial((2, 2, 2))
    N = st.N
    t = np.array([0.0, 1.0, 10.0, 100.0])
    Z0 = 0.1 * np.random.default_rng(0).standard_normal((N, N))
    c = dynamics.kernel_flow(st, np.eye(N), t, loss="mse", Z0=Z0)
    for k, tt in enumerate(t):
        np.testing.assert_allclose(c.Z[k], np.eye(N) + (Z0 - np.eye(N)) * np.exp(-tt / N), atol=1e-12)
    ce = dynamics.kernel_flow(st, np.eye(N), t[1:], loss="ce")
    np.testing.assert_allclose(ce.semantic_gap, 0.0, atol=1e-9)
    np.testing.assert_allclose(ce.etf_distance, 0.0, atol=1e-9)
    assert np.all(np.diff(ce.objective) < 0)


def test_kernel_flow_with_input_kernel_is_the_linear_model():
    """Theta = K_x: the kernel flow is exactly gradient flow of Z = M Phi on M (THEORY §8.3, M2 link)."""
    from scipy.integrate import solve_ivp

    st = ufm.factorial((2, 2))
    Phi = st.encoding(1.0)
    N, p = st.N, Phi.shape[0]
    t = np.array([0.0, 2.0, 20.0])
    c = dynamics.kernel_flow(st, Phi.T @ Phi, t, loss="ce")

    def rhs(_s, m):
        Z = m.reshape(N, p) @ Phi
        E = np.exp(Z - Z.max(0))
        G = (E / E.sum(0) - np.eye(N)) / N
        return -(G @ Phi.T).ravel()

    sol = solve_ivp(rhs, (0, 20.0), np.zeros(N * p), t_eval=t, rtol=1e-10, atol=1e-12)
    for k in range(t.size):
        np.testing.assert_allclose(c.Z[k], sol.y[:, k].reshape(N, p) @ Phi, atol=1e-7)


def test_kernel_flow_block_kernel_starts_structured():
    st = ufm.factorial((2, 2, 2))
    t = np.geomspace(0.1, 1e4, 40)
    c = dynamics.kernel_flow(st, dynamics.block_kernel(st, 1.0, 0.6), t, loss="ce")
    assert c.semantic_gap[0] > 0.3 and c.semantic_gap[-1] < c.semantic_gap[0]   # inherits Theta's blocks, decays
    assert c.peak_time < 10 and c.kind == "kernel_flow"
    with pytest.raises(ValueError, match="symmetric"):
        dynamics.kernel_flow(st, np.triu(np.ones((8, 8))), t)


def test_transient_models_m1_m2_rise_then_fall():
    from ufm.phase import transient_models

    out = transient_models("factorial", horizon=2e4, n_records=60)
    assert out.success and out.models == ("M1 anchored", "M2 input-coupled", "M3 kernel flow")
    for name in ("M1 anchored", "M2 input-coupled"):
        t, g = out.times[name], out.semantic_gap[name]
        j = int(np.argmax(g))
        assert g[j] > g[0] + 0.2 and g[j] > g[-1] + 0.2 and 0 < j < t.size - 1, (name, g[0], g[j], g[-1])
    g = out.semantic_gap["M3 kernel flow"]
    assert g[-1] > 0.15                       # M3 keeps its structure much longer (no decay, log-slow CE)
