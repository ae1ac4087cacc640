"""ufm.simulate: compiled kernels equal their numpy twins; recording, seeds, errors, partial results."""

import os
import subprocess
import sys

import numba
import numpy as np
import pytest

import ufm
from ufm.results import Status
from ufm import losses
from ufm.problems import AnchoredUFM, InputCoupledUFM, UFMProblem


def _problems():
    rng = np.random.default_rng(7)
    soft = rng.dirichlet(np.ones(4), size=5).T
    yield "ce", UFMProblem(K=4, n=3, d=5, loss="ce", lam_W=0.01, lam_H=0.02)
    yield "ce-bias-imbalanced", UFMProblem(K=3, counts=[3, 1, 2], d=4, loss="ce", bias=True,
                                           lam_W=0.05, lam_H=0.01, lam_b=0.1)
    yield "ce-free-bias-no-decay", UFMProblem(K=3, n=2, d=3, loss="ce", bias=True)
    yield "soft-ce", UFMProblem(labels=soft, d=3, loss="ce", lam_W=0.01, lam_H=0.01)
    yield "mse", UFMProblem(K=4, n=2, d=4, loss="mse", lam_W=0.01, lam_H=0.03)
    yield "mse-bias", UFMProblem(K=3, counts=[2, 3, 1], d=5, loss="mse", bias=True, lam_b=0.2)
    yield "anchored-mse", AnchoredUFM(H_anchor=rng.standard_normal((4, 8)), beta=0.3, K=4, n=2, loss="mse",
                                      lam_W=0.01, lam_H=0.01)
    yield "anchored-ce-bias", AnchoredUFM(H_anchor=rng.standard_normal((3, 6)), beta=0.1, K=3, n=2, loss="ce",
                                          bias=True, lam_b=0.05)
    s = ufm.factorial((2, 3))
    yield "input-coupled-ce", InputCoupledUFM.from_setting(s, sigma=0.7, d=5, lam_W=0.01, lam_A=0.02)
    yield "input-coupled-mse", InputCoupledUFM.from_setting(s, sigma=1.3, d=4, loss="mse")
    # the feature penalty lam_H/2 ||A Phi||^2 (THEORY §8.2b), with and without a decay on A
    yield "input-coupled-h-ce", InputCoupledUFM.from_setting(s, sigma=0.7, d=5, lam_W=0.01, lam_A=0.02, lam_H=0.05)
    yield "input-coupled-h-mse", InputCoupledUFM.from_setting(s, sigma=1.3, d=4, loss="mse", lam_W=0.02, lam_H=0.1)


PROBLEMS = list(_problems())


@pytest.mark.parametrize("name,problem", PROBLEMS, ids=[n for n, _ in PROBLEMS])
def test_gd_equals_numpy_twin(name, problem):
    steps, lr = 300, 0.3
    tr = ufm.simulate(problem, steps=steps, lr=lr, init_scale=0.3, seed=3, seeds=2,
                      record=tuple(losses.blocks(problem)) + ("objective",), n_records=12)
    assert tr.status is Status.completed and tr.steps[0] == 0 and tr.steps[-1] == steps
    for i in range(2):
        state0 = {name_: tr.records[name_][i, 0] for name_ in losses.blocks(problem)}
        _, kept = losses.gd_reference(problem, state0, lr, steps, record=tr.steps)
        for j, step in enumerate(tr.steps):
            for block in losses.blocks(problem):
                np.testing.assert_allclose(tr.records[block][i, j], kept[step][block], atol=1e-10, rtol=0)
            assert tr.objective[i, j] == pytest.approx(losses.state_objective(problem, kept[step]), abs=1e-10)


@pytest.mark.parametrize("name,problem", [PROBLEMS[6], PROBLEMS[8], PROBLEMS[10]],
                         ids=["anchored", "input-coupled", "input-coupled-h"])
def test_model_gradients_taylor_slope(name, problem):
    rng = np.random.default_rng(0)
    state = {k: rng.standard_normal(s) for k, s in losses.blocks(problem).items()}
    v = {k: rng.standard_normal(s) for k, s in losses.blocks(problem).items()}
    g = losses.state_gradients(problem, state)
    f0 = losses.state_objective(problem, state)
    slope = sum(np.sum(g[k] * v[k]) for k in state)
    ts = np.logspace(-1, -4, 7)
    rem = [abs(losses.state_objective(problem, {k: state[k] + t * v[k] for k in state}) - f0 - t * slope)
           for t in ts]
    slopes = np.diff(np.log(rem)) / np.diff(np.log(ts))
    assert np.all(np.abs(slopes - 2) < 0.1), slopes


def test_results_do_not_depend_on_thread_count_or_seed_count(monkeypatch):
    p = UFMProblem(K=5, n=2, d=6, loss="ce", lam_W=0.01, lam_H=0.01)
    kw = dict(steps=500, lr=0.5, init_scale=0.2, record=("W", "H"), n_records=5)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = ufm.simulate(p, seeds=4, **kw)
        numba.set_num_threads(max(2, before))
        monkeypatch.setenv("NUMBA_NUM_THREADS", "2")       # two threads even inside a pytest-xdist worker
        two = ufm.simulate(p, seeds=4, **kw)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one.W, two.W)
    np.testing.assert_array_equal(one.H, two.H)
    # seed i of a 4-seed run is the same run as seed i of a 2-seed run
    fewer = ufm.simulate(p, seeds=2, **kw)
    np.testing.assert_array_equal(fewer.W, one.W[:2])
    assert not np.array_equal(one.W[0], one.W[1])


def test_float32_on_request_tracks_float64():
    p = UFMProblem(K=4, n=2, d=4, loss="ce", lam_W=0.01, lam_H=0.01)
    a = ufm.simulate(p, steps=200, lr=0.5, init_scale=0.3, record=("objective",), dtype=np.float32)
    b = ufm.simulate(p, steps=200, lr=0.5, init_scale=0.3, record=("objective",))
    assert a.meta["dtype"] == "float32"
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-4)
    assert not np.array_equal(a.objective, b.objective)


def test_log_grid_and_user_initialization():
    p = UFMProblem(K=3, n=1, d=3, loss="mse")
    grid = ufm._simulate.record_grid(10**6, n_records=50)
    assert grid[0] == 0 and grid[-1] == 10**6 and np.all(np.diff(grid) > 0)
    assert np.all(np.diff(np.log(grid[10:])) < 0.35)            # geometric spacing
    W0 = np.ones((3, 3)) * 0.1
    tr = ufm.simulate(p, steps=10, lr=0.1, W0=W0, record=("W",), grid="linear", n_records=11)
    np.testing.assert_array_equal(tr.steps, np.arange(11))
    np.testing.assert_array_equal(tr.W[0, 0], W0)
    np.testing.assert_allclose(tr.times, tr.steps * 0.1)


def test_metrics_and_grams_are_recorded_consistently():
    p = UFMProblem(K=4, n=3, d=6, loss="ce", lam_W=0.01, lam_H=0.01)
    tr = ufm.simulate(p, steps=20000, lr=1.0, init_scale=0.1, seeds=2,
                      record=("H", "W", "gram_H", "gram_means", "gram_W", "nc1", "nc2", "etf_distance", "objective"))
    j = -1
    np.testing.assert_allclose(tr.gram_H[:, j], np.einsum("sdi,sdj->sij", tr.H[:, j], tr.H[:, j]), atol=1e-12)
    np.testing.assert_allclose(tr.gram_W[:, j], np.einsum("skd,sld->skl", tr.W[:, j], tr.W[:, j]), atol=1e-12)
    assert tr.gram_means.shape == (2, len(tr.steps), 4, 4)
    # the long run reaches the closed-form ETF: metrics near 0, loss at f*
    sol = ufm.solve(p)
    np.testing.assert_allclose(tr.objective[:, j], sol.objective, rtol=1e-9)
    assert np.all(tr.etf_distance[:, j] < 1e-6) and np.all(tr.nc1[:, j] < 1e-10)
    assert np.all(tr.etf_distance[:, 0] > 0.1)


def test_custom_recorder_and_semantic_gap_needs_attributes():
    p = UFMProblem(K=4, n=1, d=4, loss="ce")
    tr = ufm.simulate(p, steps=5, lr=0.1, record={"wnorm": lambda prob, st: np.linalg.norm(st["W"])})
    assert tr.wnorm.shape == (1, len(tr.steps))
    with pytest.raises(ValueError, match="needs attributes"):
        ufm.simulate(p, steps=5, lr=0.1, record=("semantic_gap",))
    tr = ufm.simulate(p, steps=5, lr=0.1, record=("semantic_gap",), attributes=ufm.factorial((2, 2)).attributes)
    assert np.all(np.isfinite(tr.semantic_gap))


def test_save_and_load_round_trip(tmp_path):
    p = UFMProblem(K=3, n=2, d=3, loss="mse", lam_W=0.1, lam_H=0.1)
    tr = ufm.simulate(p, steps=50, lr=0.2, seeds=2, record=("objective", "gram_H"))
    back = ufm.load(tr.save(tmp_path / "traj.npz"))
    assert isinstance(back, ufm.Trajectory) and back.meta["content_hash"] == tr.meta["content_hash"]
    np.testing.assert_array_equal(back.gram_H, tr.gram_H)
    np.testing.assert_array_equal(back.steps, tr.steps)
    assert back.steps.dtype == np.int64 and (back.status, back.mode) == (tr.status, tr.mode)
    with pytest.raises(TypeError):
        tr.records["objective"] = None


def test_nonfinite_run_stops_and_keeps_records():
    p = UFMProblem(K=3, n=2, d=3, loss="mse")
    tr = ufm.simulate(p, steps=10**5, lr=50.0, init_scale=1.0, record=("objective",))
    assert tr.status is Status.nonfinite and "lower lr" in tr.message
    assert 1 <= len(tr.steps) < 100 and np.all(np.isfinite(tr.objective))
    assert tr.steps[-1] < 10**5


def test_interrupt_returns_partial_trajectory():
    p = UFMProblem(K=3, n=2, d=3, loss="ce")
    calls = {"n": 0}

    def tripwire(problem, state):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return 0.0

    tr = ufm.simulate(p, steps=1000, lr=0.1, record={"trip": tripwire}, n_records=30, on_interrupt="return")
    assert tr.status is Status.interrupted
    assert len(tr.steps) == 4 and tr.trip.shape == (1, 4)   # 1 call probes the shape, 4 records kept
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt) as err:              # the default: the interrupt reaches the caller
        ufm.simulate(p, steps=1000, lr=0.1, record={"trip": tripwire}, n_records=30)
    assert type(err.value) is KeyboardInterrupt               # exactly: an uncaught one ends a script by SIGINT
    assert err.value.result.status is Status.interrupted and err.value.result.trip.shape == (1, 4)


def test_progress_lines_without_tqdm(capsys, no_tqdm):
    ufm.simulate(UFMProblem(K=3, n=1, d=3), steps=100, lr=0.1, progress=True)
    err = capsys.readouterr().err
    assert "ufm.simulate (gd): 100/100 steps (100%)" in err


@pytest.mark.parametrize("kw,fragment", [
    (dict(steps=0, lr=0.1), "steps must be an integer >= 1"),
    (dict(steps=10), "lr is required"),
    (dict(steps=10, lr=-1.0), "lr must be a finite number > 0"),
    (dict(steps=10, lr=0.1, mode="euler"), "mode must be"),
    (dict(steps=10, lr=0.1, record=("nc9",)), "cannot record 'nc9'"),
    (dict(steps=10, lr=0.1, record=("A",)), "no block 'A'"),
    (dict(steps=10, lr=0.1, A0=np.zeros((3, 3))), "A0 was given"),
    (dict(steps=10, lr=0.1, W0=np.zeros((2, 2))), "W0 must have shape (3, 3)"),
    (dict(steps=10, lr=0.1, dtype=np.float16), "dtype must be float64 or float32"),
    (dict(steps=10, lr=0.1, record=()), "record is empty"),
    (dict(steps=10, lr=0.1, grid="cubic"), "grid must be"),
])
def test_bad_arguments_are_explained(kw, fragment):
    with pytest.raises(ValueError) as err:
        ufm.simulate(UFMProblem(K=3, n=2, d=3), **kw)
    assert fragment in str(err.value)


def test_memory_estimate_refuses_huge_records(monkeypatch):
    monkeypatch.setattr(ufm._simulate, "_available_bytes", lambda: 10**6)
    with pytest.raises(ValueError, match="record Grams"):
        ufm.simulate(UFMProblem(K=10, n=10, d=50), steps=1000, lr=0.1, record=("H",), n_records=200)


@pytest.mark.slow
def test_kernels_match_twin_without_jit():
    """A fast subset under NUMBA_DISABLE_JIT=1: the kernel source itself, run as Python, equals the twin."""
    code = r"""
import numpy as np, ufm
from ufm import losses
p = ufm.UFMProblem(K=3, counts=[2, 1, 2], d=3, loss="ce", bias=True, lam_W=0.1, lam_H=0.1, lam_b=0.1)
tr = ufm.simulate(p, steps=20, lr=0.2, init_scale=0.5, record=("W", "H", "b"), n_records=4)
s0 = {k: tr.records[k][0, 0] for k in ("W", "H", "b")}
fin, _ = losses.gd_reference(p, s0, 0.2, 20)
assert max(np.abs(fin[k] - tr.records[k][0, -1]).max() for k in fin) < 1e-12
m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=1.0, d=3, loss="mse", lam_A=0.1)
tr = ufm.simulate(m, steps=20, lr=0.2, init_scale=0.5, record=("W", "A"), n_records=4)
fin, _ = losses.gd_reference(m, {k: tr.records[k][0, 0] for k in ("W", "A")}, 0.2, 20)
assert max(np.abs(fin[k] - tr.records[k][0, -1]).max() for k in fin) < 1e-12
m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=1.0, d=3, loss="ce", lam_W=0.05, lam_H=0.1)
tr = ufm.simulate(m, steps=20, lr=0.2, init_scale=0.5, record=("W", "A", "objective"), n_records=4)
fin, _ = losses.gd_reference(m, {k: tr.records[k][0, 0] for k in ("W", "A")}, 0.2, 20)
assert max(np.abs(fin[k] - tr.records[k][0, -1]).max() for k in fin) < 1e-12
assert abs(tr.objective[0, -1] - losses.state_objective(m, fin)) < 1e-12
fl = ufm.simulate(p, steps=10, lr=0.2, mode="flow", init_scale=0.5, record=("objective",), n_records=3)
assert fl.success and np.all(np.diff(fl.objective[0]) < 0)
print("ok")
"""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- flow mode ---------------------------------------------------------------------------
def test_flow_matches_scipy_on_the_full_system():
    from scipy.integrate import solve_ivp

    p = UFMProblem(K=3, counts=[2, 1, 2], d=3, loss="ce", bias=True, lam_W=0.02, lam_H=0.01, lam_b=0.05)
    tr = ufm.simulate(p, steps=400, lr=0.1, mode="flow", init_scale=0.3, record=("W", "H", "b"), n_records=8,
                      rtol=1e-10, atol=1e-12)
    assert tr.meta["time_variable"] == "t"           # weight decay: plain time
    names = ("W", "H", "b")
    shapes = losses.blocks(p)
    y0 = np.concatenate([tr.records[k][0, 0].ravel() for k in names])

    def f(t, y):
        st, i = {}, 0
        for k in names:
            size = int(np.prod(shapes[k]))
            st[k] = y[i:i + size].reshape(shapes[k])
            i += size
        g = losses.state_gradients(p, st)
        return -np.concatenate([g[k].ravel() for k in names])

    ref = solve_ivp(f, [0, tr.times[-1]], y0, t_eval=tr.times, method="DOP853", rtol=1e-12, atol=1e-14)
    got = np.stack([np.concatenate([tr.records[k][0, j].ravel() for k in names]) for j in range(len(tr.steps))])
    np.testing.assert_allclose(got, ref.y.T, rtol=1e-7, atol=1e-9)


def test_gd_approaches_the_flow_as_the_step_shrinks():
    p = UFMProblem(K=3, n=2, d=3, loss="mse", lam_W=0.05, lam_H=0.05)
    T = 4.0
    flow = ufm.simulate(p, steps=40, lr=T / 40, mode="flow", init_scale=0.5, record=("H",), n_records=2,
                        rtol=1e-11, atol=1e-13)
    errs = []
    for k in (40, 400, 4000):
        gd = ufm.simulate(p, steps=k, lr=T / k, init_scale=0.5, record=("H",), n_records=2)
        errs.append(np.abs(gd.H[0, -1] - flow.H[0, -1]).max())
    assert errs[0] > 5 * errs[1] > 25 * errs[2]      # first order in the step


def test_flow_log_time_reaches_huge_horizons_cheaply():
    p = UFMProblem(K=3, n=4, d=4, loss="ce")
    tr = ufm.simulate(p, steps=10**8, lr=1.0, mode="flow", init_scale=0.1, record=("objective",), n_records=40)
    assert tr.status is Status.completed and tr.meta["time_variable"] == "log(1+t)"
    assert tr.meta["nfev"][0] < 20000
    assert np.all(np.diff(tr.objective[0, 5:]) < 0) and tr.objective[0, -1] < 1e-7  # CE ~ 1/(t log t)
    with pytest.raises(ValueError, match="float64 only"):
        ufm.simulate(p, steps=10, lr=1.0, mode="flow", dtype=np.float32)


def _recomputed(problem, state, name):
    H = losses.features(problem, state)
    if name == "objective":
        return losses.state_objective(problem, state)
    if name == "gram_W":
        return state["W"] @ state["W"].T
    if name == "gram_H":
        return H.T @ H
    M = (H @ problem.Y.T) / np.asarray(problem.counts)
    return M.T @ M


@pytest.mark.parametrize("name,problem", [PROBLEMS[i] for i in (0, 1, 6, 8)] +
                         [("ce-wide", UFMProblem(K=5, n=1, d=9, loss="ce", lam_W=0.01, lam_H=0.01)),
                          ("ce-blas-gram", UFMProblem(K=30, n=2, d=40, loss="ce", lam_W=0.01, lam_H=0.01))],
                         ids=["ce", "ce-bias-imbalanced", "anchored-mse", "input-coupled-ce", "ce-wide", "ce-blas-gram"])
def test_kernel_records_equal_recomputed_values(name, problem):
    """The loss and Grams the GD kernel records itself equal their recomputation from the recorded state."""
    blocks = [b for b in losses.blocks(problem) if b != "H" or "A" not in losses.blocks(problem)]
    names = ("objective", "gram_means", "gram_W", "gram_H")
    for steps, rs in ((25, None), (7, np.arange(8))):        # a log grid (chunks span records) and every step
        tr = ufm.simulate(problem, steps=steps, lr=0.2, seeds=3, init_scale=0.3, record=names + tuple(blocks),
                          n_records=9, record_steps=rs)
        assert tr.status is Status.completed
        for s in range(3):
            for j in range(len(tr.steps)):
                state = {b: tr.records[b][s, j] for b in blocks}
                for n in names:
                    want = _recomputed(problem, state, n)
                    np.testing.assert_allclose(tr.records[n][s, j], want, rtol=1e-11, atol=1e-13, err_msg=n)


def test_kernel_records_in_float32_and_custom_loss_recorder():
    p = UFMProblem(K=4, n=2, d=6, loss="ce", lam_W=0.01, lam_H=0.01)
    tr = ufm.simulate(p, steps=30, lr=0.3, init_scale=0.3, record=("objective", "gram_H", "H", "W"), dtype=np.float32)
    for j in range(len(tr.steps)):
        st = {"W": tr.W[0, j], "H": tr.H[0, j]}
        assert tr.objective[0, j] == pytest.approx(losses.state_objective(p, st), rel=1e-5)
        np.testing.assert_allclose(tr.gram_H[0, j], st["H"].T @ st["H"], rtol=1e-5, atol=1e-7)
    # a user's own function under a built-in name is called as given, not replaced by the kernel's
    mine = ufm.simulate(p, steps=30, lr=0.3, init_scale=0.3, record={"loss": lambda prob, st: 7.0})
    assert np.all(mine.loss == 7.0)


def test_kernel_records_stop_where_the_run_stops():
    """Divergence inside a chunk that spans records: every kept row is finite and from before it."""
    p = UFMProblem(K=3, n=2, d=3, loss="mse")
    tr = ufm.simulate(p, steps=10**5, lr=50.0, init_scale=1.0, record=("objective", "gram_H"), seeds=2,
                      record_steps=np.arange(0, 10**5, 3))
    assert tr.status is Status.nonfinite and 1 <= len(tr.steps)
    assert np.all(np.isfinite(tr.objective)) and np.all(np.isfinite(tr.gram_H))


def test_label_matrix_is_built_once_and_not_pickled():
    import pickle

    p = UFMProblem(K=300, n=2, d=3)
    Y = p.Y
    assert Y is p.Y and not Y.flags.writeable and Y.sum() == p.N
    np.testing.assert_array_equal(Y.argmax(0), p.y)
    back = pickle.loads(pickle.dumps(p))
    assert "_Y_onehot" not in back.__dict__ and "_Y_onehot" not in back.label_set.__dict__
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(p)).Y, Y)


def test_simulate_restores_the_callers_blas_threads():
    """Each BLAS library keeps the caller's thread count after simulate (GD and flow).

    A library that was first loaded while a thread variable said 1 cannot go above 1
    (OpenBLAS sizes its pool at load), so the test compares each library with itself.
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas():
        return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    p = UFMProblem(K=30, n=2, d=40, loss="ce", lam_W=0.01, lam_H=0.01)
    with threadpool_limits(limits=3, user_api="blas"):
        before = blas()
        assert max(before.values()) > 1     # numpy's BLAS, loaded at import, follows the limit
        ufm.simulate(p, steps=5, lr=0.1, record=("objective", "gram_H"))
        assert blas() == before
        ufm.simulate(p, steps=5, lr=0.1, mode="flow")
        assert blas() == before


def test_interrupt_between_chunks_keeps_the_kernel_records_of_the_last_row(monkeypatch):
    """Ctrl-C after a grid step whose loss the next chunk would have recorded: that row is completed."""
    from ufm import _interrupt

    p = UFMProblem(K=3, n=2, d=3, loss="ce", lam_W=0.01, lam_H=0.01)
    calls = {"n": 0}

    def requested():
        calls["n"] += 1
        return calls["n"] > 5

    monkeypatch.setattr(_interrupt, "requested", requested)
    tr = ufm.simulate(p, steps=1000, lr=0.1, record=("objective", "gram_means", "W", "H"), n_records=30,
                      on_interrupt="return")
    assert tr.status is Status.interrupted and len(tr.steps) == 6
    for j in range(6):
        st = {"W": tr.W[0, j], "H": tr.H[0, j]}
        assert tr.objective[0, j] == pytest.approx(losses.state_objective(p, st), rel=1e-12)
        np.testing.assert_allclose(tr.gram_means[0, j], _recomputed(p, st, "gram_means"), rtol=1e-12)


def test_horizon_names_the_end_time_in_both_modes():
    """horizon = steps * lr: any two of the three, or horizon alone for a flow."""
    p = UFMProblem(K=3, n=2, d=4, loss="ce", lam_W=0.01, lam_H=0.01)
    a = ufm.simulate(p, steps=200, lr=0.05, record=("objective",), n_records=5)
    b = ufm.simulate(p, horizon=10.0, lr=0.05, record=("objective",), n_records=5)
    c = ufm.simulate(p, horizon=10.0, steps=200, record=("objective",), n_records=5)
    for tr in (b, c):
        np.testing.assert_array_equal(tr.steps, a.steps)
        np.testing.assert_allclose(tr.times, a.times, rtol=1e-12)
        np.testing.assert_allclose(tr.objective, a.objective, rtol=1e-12)
    f = ufm.simulate(p, horizon=10.0, mode="flow", record=("objective",), n_records=5)
    g = ufm.simulate(p, steps=200, lr=0.05, mode="flow", record=("objective",), n_records=5)
    assert f.times[-1] == pytest.approx(10.0, rel=1e-12) and f.status is Status.completed
    np.testing.assert_allclose(f.objective[0, -1], g.objective[0, -1], rtol=1e-6)
    with pytest.raises(ValueError, match="whole number of steps"):
        ufm.simulate(p, horizon=10.0, lr=0.3)
    with pytest.raises(ValueError, match="not all three"):
        ufm.simulate(p, steps=10, lr=0.1, horizon=1.0)
    with pytest.raises(ValueError, match="pass lr"):
        ufm.simulate(p, horizon=10.0)
    with pytest.raises(ValueError, match="steps is required"):
        ufm.simulate(p, lr=0.1)


def test_a_loss_without_compiled_kernel_runs_gd_in_numpy():
    """kernel_id = None: GD falls back to the model's NumPy gradients (meta says so); the flow refuses."""
    from dataclasses import dataclass

    from ufm.losses import CrossEntropy

    @dataclass(frozen=True)
    class SlowCE(CrossEntropy):
        name = "slow_ce"
        kernel_id = None

    p = UFMProblem(K=3, counts=[2, 3, 1], d=4, bias=True, lam_W=0.01, lam_H=0.02, loss=SlowCE())
    names = ("objective", "W", "H", "b", "gram_means")
    slow = ufm.simulate(p, steps=300, lr=0.5, seeds=2, record=names)
    fast = ufm.simulate(p.replace(loss="ce"), steps=300, lr=0.5, seeds=2, record=names)
    assert slow.status is Status.completed and "NumPy fallback" in slow.meta["loss_kernel"]
    assert "kernel loss id 0" in fast.meta["loss_kernel"]
    np.testing.assert_array_equal(slow.steps, fast.steps)
    for name in names:
        np.testing.assert_allclose(getattr(slow, name), getattr(fast, name), rtol=1e-10, atol=1e-13)
    assert not np.allclose(slow.W[:, 0], slow.W[:, -1])          # it did move
    with pytest.raises(ValueError, match="kernel_id"):
        ufm.simulate(p, steps=10, lr=0.5, mode="flow")
