"""ufm.fit: round trips from known parameters, the static decomposition, the M1 path (TV9), alignment, errors."""

import itertools
import math

import numpy as np
import pytest

import ufm
from conftest import tv9_data
from ufm.bridge.fitting import (ACCEPT, align_monotone, anchored_path, fit, isotropic_init, observed_transition, pattern_ids,
                                static_decomposition, unit_centred)
from ufm.metrics import etf_distance, semantic_gap
from ufm.results import FitResult, Run, Status

SETTING = ufm.factorial((2, 2, 2))
TRUE = {"sigma": 2.0, "strengths": [1.25, 1.0, 0.8]}   # geometric mean 1: the fit's normalization


def _simulated(d=None, lam=0.0, seed=3, n_records=40):
    """Gram trajectory of M2 simulated from TRUE: the exact isotropic start, or Gaussian in width d."""
    if d is None:
        prob = ufm.InputCoupledUFM.from_setting(SETTING, TRUE["sigma"], d=6 + 8 + 8, loss="ce",
                                                strengths=TRUE["strengths"], lam_W=lam, lam_A=lam)
        init = isotropic_init(prob, 1e-2)
    else:
        prob = ufm.InputCoupledUFM.from_setting(SETTING, TRUE["sigma"], d=d, loss="ce",
                                                strengths=TRUE["strengths"], lam_W=lam, lam_A=lam)
        init = {"init_scale": 1e-2 / math.sqrt(d), "seed": seed}
    horizon = 1e6 if lam == 0 else 50.0 / lam
    return ufm.simulate(prob, steps=10**6, lr=horizon / 10**6, mode="flow", record=("gram_H",),
                        n_records=n_records, **init)


@pytest.fixture(scope="module")
def exact_fit():
    return fit(_simulated(), setting=SETTING, lam=0.0, models=("static", "input_coupled", "anchored"), bootstrap=10)


def _close(value, truth, rtol):
    assert np.allclose(value, truth, rtol=rtol), (value, truth)


def _inside(interval, truth):
    lo, hi = interval
    assert lo <= truth <= hi, (interval, truth)


@pytest.mark.slow
def test_round_trip_exact_start_recovers_parameters_on_the_runs_own_clock(exact_fit):
    """A flow Trajectory: its time is model time (nothing fitted), the exact start gives the parameters to 1%."""
    r = exact_fit
    assert r.params["model"] == "input_coupled" and r.best_model == "input_coupled"
    _close(r.params["sigma"], TRUE["sigma"], 0.01)
    _close(r.params["strengths"], TRUE["strengths"], 0.01)
    e = r.estimates["input_coupled"]
    assert e["clock"].startswith("known") and "time_scale" not in r.params and "gram_scale" not in r.params
    np.testing.assert_array_equal(r.curves["input_coupled_time_map"], r.steps)
    assert r.gof["input_coupled"]["gram_r2"] > 0.999 and r.gof["input_coupled"]["gap_r2"] > 0.999
    assert set(r.intervals) == {"sigma", "strengths", "init_scale"} and r.identifiable["sigma"]


@pytest.mark.slow
def test_round_trip_with_lam_fitted_although_zero_reports_lam_as_not_identifiable():
    """lam = 0 cannot be told from a small lam: the fit says so and gives the flat range down to the box's edge."""
    r = fit(_simulated(d=256, n_records=30), setting=SETTING, models=("input_coupled",), bootstrap=12)
    _close(r.params["sigma"], TRUE["sigma"], 0.05)
    assert r.identifiable["sigma"] and r.identifiable["lam"] is False
    lo, hi = r.intervals["lam"]
    assert lo < 1e-8 and hi < 1e-4                                       # down to the edge of the box (1e-10)
    assert "lam" in r.message and "not identifiable" in r.message


@pytest.mark.slow
def test_round_trip_gaussian_wide_start_within_five_percent_and_inside_its_interval():
    """A Gaussian start in width 512 (another seed, not the fit's start): parameters to 5%, truth in the intervals."""
    r = fit(_simulated(d=512), setting=SETTING, models=("input_coupled",), lam=0.0, bootstrap=20)
    _close(r.params["sigma"], TRUE["sigma"], 0.05)
    _close(r.params["strengths"], TRUE["strengths"], 0.05)
    _inside(r.intervals["sigma"], TRUE["sigma"])
    assert "width 512 (the run's own width)" in r.estimates["input_coupled"]["interval_method"]
    assert r.gof["input_coupled"]["gap_r2"] > 0.95


@pytest.mark.slow
def test_round_trip_with_weight_decay_fits_lam():
    lam = 1e-3
    r = fit(_simulated(lam=lam, n_records=30, d=128), setting=SETTING, models=("input_coupled",), bootstrap=12)
    _close(r.params["sigma"], TRUE["sigma"], 0.05)
    _close(r.params["strengths"], TRUE["strengths"], 0.1)      # coverage of every interval: tests/test_fit_calibration
    _close(r.params["lam"], lam, 0.2)
    _inside(r.intervals["lam"], lam)
    assert r.identifiable["lam"]
    assert r.gof["input_coupled"]["gram_r2"] > 0.9        # the pattern part of a width-128 random start


@pytest.mark.slow
def test_fit_result_round_trips_through_npz(exact_fit, tmp_path):
    path = exact_fit.save(tmp_path / "fit.npz")
    back = ufm.load(path)
    assert isinstance(back, FitResult)
    assert back.params == exact_fit.params and back.gof == exact_fit.gof
    assert back.intervals == exact_fit.intervals and back.identifiable == exact_fit.identifiable
    assert back.estimates == exact_fit.estimates and back.forecast == exact_fit.forecast
    assert np.array_equal(back.curves["input_coupled_time_map"], exact_fit.curves["input_coupled_time_map"])
    assert back.best_model == exact_fit.best_model
    with pytest.raises(TypeError):
        back.params["sigma"] = 1.0
    with pytest.raises(TypeError):
        back.intervals["sigma"] = [0, 1]


def test_fit_accepts_run_file_and_arrays(exact_fit, tmp_path):
    traj = _simulated()
    G = np.asarray(traj.records["gram_H"][0])
    run = Run(steps=np.round(traj.times).astype(int), grams=G, labels=np.arange(8), counts=np.ones(8, int),
              attributes=SETTING.attributes, name="sim")
    path = run.save(tmp_path / "run.npz")
    r = fit(path, models=("static",))
    assert r.meta["source"].startswith("Run")
    r2 = fit(G, attributes=SETTING.attributes, models=("static",))
    np.testing.assert_allclose(r.curves["static_a"], r2.curves["static_a"])


# -- static decomposition ----------------------------------------------------------------
def _basis(attrs):
    K = len(attrs)
    P = np.eye(K) - 1 / K
    return P, [P @ (attrs[:, None, f] == attrs[None, :, f]).astype(float) @ P for f in range(attrs.shape[1])]


def test_static_decomposition_is_exact_on_a_model_gram():
    attrs = SETTING.attributes
    P, Ss = _basis(attrs)
    b = np.array([0.7, 0.3, 0.1])
    G = P + sum(bf * S for bf, S in zip(b, Ss))
    st = static_decomposition(G, attrs)
    scale = np.linalg.norm(G)
    np.testing.assert_allclose(st["a"][0] * scale, 1.0, atol=1e-12)
    np.testing.assert_allclose(st["b"][0] * scale, b, atol=1e-12)
    np.testing.assert_allclose(st["r2"][0], 1.0, atol=1e-12)
    # agrees with ufm.metrics.semantic_regression(per_factor=True)
    ref = ufm.metrics.semantic_regression(G, attrs, per_factor=True)
    np.testing.assert_allclose(st["b"][0], ref.b, atol=1e-12)


@pytest.mark.slow
def test_static_intervals_cover_at_the_nominal_rate_for_independent_noise():
    attrs = ufm.factorial((2, 2, 2, 2)).attributes
    P, Ss = _basis(attrs)
    K = len(attrs)
    rng = np.random.default_rng(0)
    b = np.array([0.5, 0.3, 0.2, 0.1])
    G0 = P + sum(bf * S for bf, S in zip(b, Ss))
    # noise that is i.i.d. on an orthonormal basis of centred symmetric matrices: the OLS assumption
    basis = []
    for i, j in itertools.combinations_with_replacement(range(K), 2):
        E = np.zeros((K, K))
        E[i, j] = E[j, i] = 1.0 if i == j else 1 / math.sqrt(2)
        basis.append((P @ E @ P).ravel())
    Q, _ = np.linalg.qr(np.array(basis).T)
    Q = Q[:, : K * (K - 1) // 2]
    hits, trials = 0, 300
    for _ in range(trials):
        G = G0 + 0.03 * (Q @ rng.standard_normal(Q.shape[1])).reshape(K, K)
        st = static_decomposition(G, attrs)
        scale = np.linalg.norm(P @ G @ P)
        lo, hi = st["b_ci"][0, :, 0] * scale, st["b_ci"][0, :, 1] * scale
        hits += np.all((lo <= b) & (b <= hi))
    # joint coverage of 4 intervals at 95% each: about 0.95^4 = 0.81 for independent estimates
    assert 0.7 < hits / trials < 0.95


def test_static_drops_factors_that_do_not_split_classes():
    attrs = np.column_stack([SETTING.attributes, np.zeros(8, int), np.arange(8)])
    st = static_decomposition(SETTING.encoding(1.0).T @ SETTING.encoding(1.0), attrs)
    assert st["factors"] == [0, 1, 2] and st["dropped"] == [3, 4]


# -- M1 path: THEORY TV9 -------------------------------------------------------------------
@pytest.mark.slow
def test_anchored_path_reproduces_tv9():
    K, n, d, attrs, H0 = tv9_data()
    y = np.repeat(np.arange(K), n)
    betas = np.array([100.0, 10.0, 1.0, 0.1, 0.01, 0.001, 1e-4])
    _, H = anchored_path(H0, betas, labels=y)
    expected_gap = [0.4895, 0.4816, 0.4544, 0.3690, 0.1464, 0.0205]
    expected_etf = [0.5995, 0.5923, 0.5666, 0.4798, 0.2054, 0.0291]
    for i in range(6):
        M = H[i].reshape(d, K, n).mean(axis=2)
        Mc = M - M.mean(axis=1, keepdims=True)
        G = Mc.T @ Mc
        assert abs(semantic_gap(G, attrs) - expected_gap[i]) < 1e-4
        assert abs(etf_distance(G) - expected_etf[i]) < 1e-4
    M = H[-1].reshape(d, K, n).mean(axis=2)
    np.testing.assert_allclose((M ** 2).sum(axis=0), [0.9911, 0.9917, 0.9913, 0.9909], atol=1e-4)


def test_anchored_fit_recovers_a_beta_path():
    """Grams made by the M1 path itself are fitted back with the same non-increasing beta path."""
    H0 = SETTING.encoding(1.0)
    grid = np.logspace(3, -5, 81)
    truth = grid[[10, 30, 45, 60, 70]]
    _, H = anchored_path(H0, truth)
    G = np.einsum("bdk,bdl->bkl", H, H)
    r = fit(G, setting=SETTING, models=("anchored",), anchor=H0, betas=grid)
    np.testing.assert_allclose(r.curves["beta_path"], truth, rtol=1e-9)
    assert r.gof["anchored"]["gram_r2"] > 0.999


# -- alignment -----------------------------------------------------------------------------
def test_align_monotone_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(30):
        T, J = rng.integers(1, 5), rng.integers(1, 6)
        D = rng.random((T, J))
        path, cost = align_monotone(D)
        assert np.all(np.diff(path) >= 0)
        best = min(sum(D[i, j] for i, j in enumerate(p))
                   for p in itertools.product(range(J), repeat=T) if all(a <= b for a, b in zip(p, p[1:])))
        assert abs(cost * T - best) < 1e-12
        assert abs(sum(D[i, j] for i, j in enumerate(path)) - best) < 1e-12


def test_unit_centred_is_centred_and_unit():
    G = SETTING.input_kernel(1.0)
    U = unit_centred(G)
    np.testing.assert_allclose(U.sum(axis=0), 0, atol=1e-12)
    assert abs(np.linalg.norm(U) - 1) < 1e-12


# -- errors --------------------------------------------------------------------------------
def test_bad_inputs_are_named():
    G = SETTING.input_kernel(1.0)
    with pytest.raises(ValueError, match="attribute"):
        fit(G, models=("static",))
    with pytest.raises(ValueError, match="models"):
        fit(G, setting=SETTING, models=("magic",))
    with pytest.raises(ValueError, match="steps"):
        fit(np.stack([G, G]), setting=SETTING, steps=[1, 1], models=("static",))
    with pytest.raises(ValueError, match="not symmetric"):
        bad = G.copy()
        bad[0, 1] += 1
        fit(bad, setting=SETTING, models=("static",))
    with pytest.raises(ValueError, match="N = 8 items"):
        fit(np.eye(4)[None], setting=SETTING, models=("static",))
    with pytest.raises(ValueError, match="zero after centring"):
        fit(np.ones((8, 8)), setting=SETTING, models=("static",))
    with pytest.raises(ValueError, match="lam"):
        fit(G, setting=SETTING, lam=-1.0)
    with pytest.raises(ValueError, match="Trajectory recorded"):
        traj = ufm.simulate(ufm.InputCoupledUFM.from_setting(SETTING, 1.0), steps=5, lr=0.1, record=("objective",))
        fit(traj, setting=SETTING)


@pytest.mark.slow
def test_cli_fit_prints_the_table_and_writes_fit_and_figure(tmp_path, capsys):
    from ufm.cli import main

    traj = _simulated(n_records=25)
    run = Run(steps=np.round(traj.times).astype(int), grams=np.asarray(traj.records["gram_H"][0]),
              labels=np.arange(8), counts=np.ones(8, int), attributes=SETTING.attributes, name="sim")
    path = run.save(tmp_path / "run.npz")
    out = tmp_path / "out"
    assert main(["fit", str(path), "--lam", "0", "--models", "static,input_coupled", "--out", str(out),
                 "--clock", "linear", "--bootstrap", "8", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "input_coupled" in text and "sigma 2" in text and "Gram R^2" in text and "90% intervals" in text
    back = ufm.load(out / "fit.npz")
    assert abs(back.params["sigma"] - TRUE["sigma"]) < 0.05 * TRUE["sigma"]
    assert back.params["time_exponent"] == 1.0 and abs(back.params["time_scale"] - 1.0) < 0.05
    assert (out / "fit_overlay.png").stat().st_size > 10_000
    # bad input: exit status 2 and a message naming the problem
    assert main(["fit", str(tmp_path / "missing.npz"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["fit", str(path), "--lam", "abc", "--quiet"]) == 2
    assert main(["fit", str(path), "--until", "soon", "--quiet"]) == 2
    assert "--until must be a number" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_of_a_real_network_trained_with_a_feature_penalty_accepts_the_model_that_ends_at_the_etf():
    """A factorial MLP trained as the UFM (feature and classifier decays): M2-H, whose end state is the ETF,
    is accepted and ends where the network ends; M2 (decay on A) does not end there."""
    from ufm.bridge.networks import train_network

    s = ufm.factorial((2, 2, 2, 2))
    run = train_network(s, steps=3000, n_records=40, seed=0)                  # MLP, Adam, the UFM's penalties
    gap = np.array([semantic_gap(G, s.attributes) for G in run.grams])
    assert gap.max() > gap[0] + 0.05 and gap[-1] < 0.8 * gap.max()        # the network shows the transient
    r = fit(run, models=("static", "input_coupled", "feature_penalty"), bootstrap=10)
    assert r.best_model == "feature_penalty" and r.params["model"] == "feature_penalty"
    g = r.gof["feature_penalty"]
    assert g["gap_r2"] >= ACCEPT["gap_r2"] and g["explains"]["end"] and abs(g["end_etf"]) <= ACCEPT["end_etf"]
    assert not r.gof["input_coupled"]["explains"]["end"]
    assert r.estimates["feature_penalty"]["clock"].startswith("declared")
    maps = r.estimates["feature_penalty"]["time_maps"]
    assert set(maps) == {"broken", "linear", "free"} and maps["free"]["gram_r2"] >= maps["linear"]["gram_r2"] - 1e-9
    assert set(r.intervals) >= {"sigma", "lam", "init_scale", "time_scale", "time_exponent"}


@pytest.mark.slow
def test_ctrl_c_during_the_m2_search_keeps_the_best_point(monkeypatch):
    """An interrupt inside the least-squares search ends the search, not the fit: the best point so far is
    reported, marked interrupted."""
    from ufm.bridge.m2 import M2Model

    calls = {"n": 0}
    run_model = M2Model.run

    def interrupting(self, x, points):
        calls["n"] += 1
        if calls["n"] == 120:          # after the starting grid, inside a search
            raise KeyboardInterrupt
        return run_model(self, x, points)

    monkeypatch.setattr(M2Model, "run", interrupting)
    r = fit(_simulated(n_records=25), setting=SETTING, models=("input_coupled",), lam=0.0, on_interrupt="return")
    assert calls["n"] >= 120
    assert any("interrupted" in n for n in r.meta["notes"]) and r.meta["interrupted"]
    assert r.status is Status.interrupted and not r.success and r.message.startswith(Status.interrupted.message)
    assert r.params["sigma"] > 0 and r.gof["input_coupled"]["gram_r2"] > 0.5
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt) as err:     # the default, as ufm.simulate: the interrupt reaches the caller
        fit(_simulated(n_records=25), setting=SETTING, models=("input_coupled",), lam=0.0)
    assert err.value.result.meta["interrupted"] and err.value.result.params["sigma"] == r.params["sigma"]


def test_ufm_load_names_the_file_when_it_is_truncated_or_missing(tmp_path):
    path = _simulated(n_records=5).save(tmp_path / "t.npz")
    raw = open(path, "rb").read()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cut.npz is not a readable ufm result file"):
        ufm.load(tmp_path / "cut.npz")
    with pytest.raises(ValueError, match="does not exist"):
        ufm.load(tmp_path / "missing.npz")


# -- honest reporting ---------------------------------------------------------------------------
def _m2_grams(setting, sigma, n_records=40, lam=0.0):
    prob = ufm.InputCoupledUFM.from_setting(setting, sigma, d=setting.N + setting.encoding(0).shape[0], loss="ce",
                                            lam_W=lam, lam_A=lam)
    horizon = 1e6 if lam == 0 else 50.0 / lam
    tr = ufm.simulate(prob, steps=10**6, lr=horizon / 10**6, mode="flow", record=("gram_H",), n_records=n_records,
                      **isotropic_init(prob, 1e-2))
    return np.asarray(tr.times), np.asarray(tr.records["gram_H"][0])


@pytest.mark.slow
def test_a_run_that_leaves_the_etf_while_its_pattern_gap_rises_and_falls_is_not_explained():
    """The residual-MLP failure: attribute-pattern Grams rise and fall like M2 while the full Grams go low-rank."""
    s = ufm.factorial((2, 2, 2, 2))
    t, G = _m2_grams(s, 4.0, lam=3e-3)
    U = unit_centred(G)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((16, 2))
    L = unit_centred(v @ v.T)                                           # a rank-2 direction with no attribute meaning
    gap = [semantic_gap(g, s.attributes) for g in U]
    alpha = 3.0 * t ** 2 / (t ** 2 + (3 * t[int(np.argmax(gap))]) ** 2)  # grows after the gap's peak
    grams = U + alpha[:, None, None] * L + 1e-9 * np.eye(16)
    obs_pat_gap = [semantic_gap(g, s.attributes) for g in ufm.bridge.patterns.project_patterns(grams, pattern_ids(
        s.attributes))]
    etf = [etf_distance(g) for g in grams]
    assert max(obs_pat_gap) > obs_pat_gap[0] + 0.1 and obs_pat_gap[-1] < 0.8 * max(obs_pat_gap)   # rises and falls
    assert etf[-1] > etf[len(etf) // 3] + 0.3                           # while the network leaves the ETF
    r = fit(grams, setting=s, steps=t, models=("static", "input_coupled", "anchored"))
    assert r.best_model is None
    for m in ("input_coupled", "anchored"):
        assert not r.gof[m]["explains"]["etf"] and not r.gof[m]["accepted"]
        assert r.gof[m]["etf_r2"] < ACCEPT["etf_r2"]
    assert "nothing here explains" in r.verdict and "ETF distance" in r.verdict
    assert r.params["outside_patterns_change"] > 0.5
    assert "best_model = None" in r.message


def test_observed_transition_needs_a_clear_rise_and_fall():
    steps = np.arange(8.0)
    G = np.stack([np.eye(3)] * 8)
    falling = np.linspace(0.5, 0.1, 8)
    r = observed_transition(steps, falling, G)
    assert r["step"] is None and "no rise" in r["reason"]
    rising = np.linspace(0.1, 0.5, 8)
    assert observed_transition(steps, rising, G)["step"] is None
    flat_after = np.array([0.1, 0.3, 0.5, 0.5, 0.49, 0.49, 0.49, 0.49])
    r = observed_transition(steps, flat_after, G)
    assert r["step"] is None and "no clear fall" in r["reason"]
    # a clear transient: the first record after the peak closer to the end state
    A, B = np.diag([1.0, 0, 0]), np.diag([0, 0, 1.0])
    grams = np.stack([A] * 3 + [A, 0.6 * A + 0.4 * B, 0.3 * A + 0.7 * B, B, B])
    gap = np.array([0.1, 0.3, 0.4, 0.5, 0.4, 0.3, 0.2, 0.15])
    r = observed_transition(steps, gap, grams)
    assert r["step"] == 5.0 and r["peak_step"] == 3.0


def test_static_is_flagged_saturated_when_it_has_as_many_numbers_as_the_patterns():
    s = ufm.hierarchy(2, depth=3)                                       # 4 patterns: 2 free numbers per record
    t, G = _m2_grams(s, 1.5, n_records=12)
    r = fit(G, setting=s, steps=t, models=("static",))
    assert r.gof["static"]["saturated"] and "saturated" in r.message
    assert r.best_model is None and "saturated" in r.verdict and "R^2 = 1 says nothing" in r.verdict


def test_within_class_metrics_from_a_run_match_ufm_metrics():
    from ufm.bridge.fitting import within_class
    from ufm.bridge.io import Exporter

    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(4), [3, 5, 4, 6])
    ex = Exporter(labels=np.arange(4))
    feats = []
    for step in range(3):
        X = rng.standard_normal((18, 5)) * 0.3 + rng.standard_normal((4, 5))[y] * (step + 1)
        feats.append(X)
        ex.record(step, X, y)
    run = ex.run()
    wc = within_class(run.grams, run.within, run.counts)
    for t, X in enumerate(feats):
        assert abs(wc["nc1_trace_ratio"][t] - ufm.metrics.nc1(X.T, y, variant="trace_ratio")) < 1e-10
        assert abs(wc["cdnv_mean"][t] - ufm.metrics.cdnv_mean(X.T, y)) < 1e-10
    r = fit(run, attributes=np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), models=("static",))
    np.testing.assert_allclose(r.curves["observed_nc1_trace_ratio"], wc["nc1_trace_ratio"])
    assert "NC1 trace ratio" in r.message


@pytest.mark.slow
def test_a_kernel_given_by_the_user_is_used_as_given():
    """M2 with the true input kernel: sigma and strengths are not fitted; the trajectory is explained."""
    s = SETTING
    t, G = _m2_grams(s, 2.0, n_records=30)
    r = fit(G, setting=s, steps=t, models=("input_coupled",), kernel=s.input_kernel(2.0), lam=0.0, clock="linear",
            bootstrap=0)
    assert "sigma" not in r.params and r.params["kernel"] == "kernel"
    assert r.params["engine"] == "patterns"                              # the kernel is constant on patterns
    assert r.gof["input_coupled"]["gram_r2_full"] > 0.999 and r.best_model == "input_coupled"
    assert abs(r.params["init_scale"] - 1e-2) < 1e-3 and abs(r.params["time_scale"] - 1) < 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("d, seed", [(16, 0), (32, 1)])
def test_random_start_round_trip_from_the_runs_own_first_record(d, seed):
    """An M2 run from an ordinary Gaussian start in a narrow layer, fitted from its own first record (class
    means and classifier rows) on the dense engine: sigma within 2%, and M2 accepted on its own data."""
    true_strengths = np.exp([0.2, 0.0, -0.2])
    prob = ufm.InputCoupledUFM.from_setting(SETTING, 2.0, d=d, loss="ce", strengths=true_strengths)
    tr = ufm.simulate(prob, steps=10**6, lr=1.0, mode="flow", record=("gram_H", "H", "W"), n_records=40,
                      init_scale=1e-2 / math.sqrt(d), seed=seed)
    r = fit(tr, setting=SETTING, models=("input_coupled",), lam=0.0, start="observed", bootstrap=0)
    assert r.params["engine"] == "dense"
    assert abs(r.params["sigma"] / 2.0 - 1) < 0.02
    _close(r.params["strengths"], true_strengths, 0.02)
    assert r.gof["input_coupled"]["gram_r2_full"] > 0.99 and r.best_model == "input_coupled"


def test_fit_arguments_are_checked_before_any_simulation():
    G = np.stack([SETTING.input_kernel(s) for s in (1.0, 2.0, 3.0)])
    for kw, match in [(dict(models="static"), "sequence of model names"), (dict(sigma_grid=()), "sigma_grid"),
                      (dict(horizon=-1), "horizon"), (dict(init_scale=0), "init_scale"),
                      (dict(start="random"), "start"), (dict(engine="gpu"), "engine"),
                      (dict(accept={"gap": 1}), "accept"), (dict(inputs=np.ones((3, 5))), r"inputs must be \(p, K"),
                      (dict(kernel=np.ones((8, 7))), "kernel must be"),
                      (dict(inputs=np.ones((3, 8)), kernel=np.eye(8)), "not both"),
                      (dict(clock="adam"), "clock must be one of"), (dict(clock="gd"), "needs a ufm Trajectory of a GD"),
                      (dict(bootstrap=3), "bootstrap must be 0"), (dict(bootstrap=-1), "bootstrap"),
                      (dict(width=0), "width"), (dict(level=1.5), "level must be in"),
                      (dict(collapse=0), "collapse"), (dict(until=-3), "until"), (dict(until=0.5), "keeps 1 record"),
                      (dict(throw="yes"), "throw must be True or False")]:
        with pytest.raises(ValueError, match=match):
            fit(G, setting=SETTING, **kw)
    with pytest.raises(ValueError, match="needs at least 3"):
        fit(G[:2], setting=SETTING, models=("input_coupled",))
    run = Run(steps=[0, 1, 2], grams=G, labels=np.arange(8), counts=np.ones(8, int), attributes=SETTING.attributes)
    other = ufm.factorial((2, 4))
    with pytest.raises(ValueError, match="another attribute table"):
        fit(run, setting=other, models=("static",))
