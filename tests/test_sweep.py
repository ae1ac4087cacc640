"""ufm.sweep: identical records on every backend, seeds independent of order, failures recorded,
resumable caches, interrupts and dead workers (loky and a Dask LocalCluster) with no run lost or repeated."""

import os
import signal
import threading
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ufm  # noqa: E402
from ufm import _sweep, cli  # noqa: E402
from ufm.results import Status, Trajectory  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sweep.toml"


# -- tasks (module level: workers import this module or receive the functions by value) -------
def draw(a, b, seed):
    """Random numbers from the run's seed: equal records mean equal seeds."""
    rng = np.random.default_rng(seed)
    return {"x": a + rng.standard_normal(), "v": rng.standard_normal(3), "label": f"{b}{a}", "n": {"a2": a * a}}


def counted(a, seed, counter, fail=None, stop_file=None, crash=None, crash_marker=None, sleep=0.0):
    """Append ``a`` to ``counter`` when the run finishes (file-based: workers are other processes).

    ``fail``: raise ValueError at that ``a``; ``stop_file``: raise KeyboardInterrupt at ``a == 3``
    while that file exists; ``crash``: kill the worker process at that ``a`` (only the first time
    when ``crash_marker`` is given, always otherwise).
    """
    if sleep:
        time.sleep(sleep)
    if stop_file is not None and a == 3 and os.path.exists(stop_file):
        raise KeyboardInterrupt
    if crash is not None and a == crash:
        if crash_marker is None:
            os._exit(3)
        try:
            os.close(os.open(crash_marker, os.O_CREAT | os.O_EXCL))
            os._exit(3)
        except FileExistsError:
            pass
    if fail is not None and a == fail:
        raise ValueError(f"a={a} is not allowed")
    with open(counter, "a") as fh:
        fh.write(f"{a}\n")
    return a + (seed % 1000) / 1000.0


def interrupted_trajectory(a, seed):
    if a == 1:
        return Trajectory(steps=[0], times=[0.0], records={"objective": [[1.0]]}, status="interrupted",
                          message="Ctrl-C", mode="gd")
    return float(a)


def thread_caps(a, seed):
    import numba
    from threadpoolctl import threadpool_info

    blas = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return {"numba": numba.get_num_threads(), "blas": max(blas, default=1)}


def counts(path):
    if not os.path.exists(path):
        return {}
    out = {}
    for line in Path(path).read_text().split():
        out[int(line)] = out.get(int(line), 0) + 1
    return out


def same_records(r1, r2):
    assert len(r1.records) == len(r2.records)
    for a, b in zip(r1.records, r2.records):
        assert list(a) == list(b)
        for k in a:
            if isinstance(a[k], np.ndarray):
                assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k])
            else:
                assert a[k] == b[k], k
    assert r1.meta["records_hash"] == r2.meta["records_hash"]


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


GRID = {"a": [1, 2, 3], "b": ["x", "y"]}


# -- grid, seeds, records ----------------------------------------------------------------------
def test_grid_order_and_validation():
    pts = _sweep.grid_points({"a": [1, 2], "b": ("x", "y", "z")})
    assert pts == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"},
                   {"a": 2, "b": "x"}, {"a": 2, "b": "y"}, {"a": 2, "b": "z"}]
    assert _sweep.grid_points([{"a": 2}, {"a": 1, "c": [1, 2]}]) == [{"a": 2}, {"a": 1, "c": (1, 2)}]
    assert _sweep.grid_points({}) == [{}]
    with pytest.raises(ValueError, match=r"grid\['a'\] must be a list.*\[0.5\]"):
        _sweep.grid_points({"a": 0.5})
    with pytest.raises(ValueError, match="duplicate"):
        _sweep.grid_points([{"a": 1}, {"a": 1}])
    with pytest.raises(ValueError, match="seed.*set by the sweep"):
        _sweep.grid_points({"seed": [1, 2]})
    with pytest.raises(ValueError, match="problem=.*index"):
        _sweep.grid_points({"p": [ufm.UFMProblem(K=2, n=1, d=2)]})


def test_axis_values_in_grid_order():
    res = ufm.sweep(lambda a, b, seed: a, {"b": ["y", "x"], "a": [3, 1, 2]}, seeds=2, backend="sequential",
                    progress=False)
    assert res.axis_values("a") == [3, 1, 2] and res.axis_values("b") == ["y", "x"]
    assert ufm.results.distinct_values([{"a": 1}, {"a": 1.0}, {"c": 2}, {"a": (1, 2)}], "a") == [1, 1.0, (1, 2)]
    with pytest.raises(ValueError, match="not a grid parameter.*axes: \\['b', 'a'\\]"):
        res.axis_values("seed")


def test_argument_errors_name_the_fix():
    with pytest.raises(ValueError, match="backend must be one of"):
        ufm.sweep(draw, GRID, backend="mpi")
    with pytest.raises(ValueError, match="'c' is not a keyword of the task"):
        ufm.sweep(draw, {"a": [1], "b": ["x"], "c": [0]}, backend="sequential")
    with pytest.raises(ValueError, match="seeds must be an integer >= 1"):
        ufm.sweep(draw, GRID, seeds=0)
    with pytest.raises(ValueError, match="client is for backend='dask'"):
        ufm.sweep(draw, GRID, client="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="both a grid parameter and in fixed"):
        ufm.sweep(draw, {"a": [1]}, fixed={"a": 2, "b": "x"})
    with pytest.raises(ValueError, match="'module:function'"):
        ufm.sweep("no_such_task", GRID)


def test_seeds_depend_only_on_point_and_index():
    forward = ufm.sweep(draw, GRID, seeds=3, seed=7, backend="sequential", progress=False)
    points = _sweep.grid_points(GRID)
    backward = ufm.sweep(draw, [{"b": p["b"], "a": p["a"]} for p in reversed(points)], seeds=3, seed=7,
                         backend="sequential", progress=False)
    by_point = {(r["a"], r["b"], r["seed_index"]): r for r in backward.records}
    for r in forward.records:
        other = by_point[(r["a"], r["b"], r["seed_index"])]
        assert other["seed"] == r["seed"] and other["x"] == r["x"]
    seeds = [r["seed"] for r in forward.records]
    assert len(set(seeds)) == len(seeds)                       # distinct across points and indices
    assert all(0 <= s < 2**63 for s in seeds)
    # more seeds per point keeps the first ones; another base seed changes them all
    more = ufm.sweep(draw, GRID, seeds=4, seed=7, backend="sequential", progress=False)
    assert [r["seed"] for r in more.records if r["seed_index"] < 3] == seeds
    other = ufm.sweep(draw, GRID, seeds=3, seed=8, backend="sequential", progress=False)
    assert not set(seeds) & {r["seed"] for r in other.records}
    # common random numbers: seed i is child i of SeedSequence(seed) at every point
    crn = ufm.sweep(draw, GRID, seeds=2, seed=7, seed_scope="sweep", backend="sequential", progress=False)
    child = [int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)) for c in np.random.SeedSequence(7).spawn(2)]
    assert [r["seed"] for r in crn.records] == child * len(points)


@pytest.mark.slow
def test_identical_records_on_every_backend(dask_client):
    kw = dict(seeds=2, seed=3, progress=False, n_jobs=2)
    ref = ufm.sweep(draw, GRID, backend="sequential", **kw)
    assert ref.success and len(ref.records) == 12
    assert [(r["a"], r["b"], r["seed_index"]) for r in ref.records][:3] == [(1, "x", 0), (1, "x", 1), (1, "y", 0)]
    first = ref.records[0]
    assert list(first)[:6] == ["a", "b", "seed_index", "seed", "ok", "error"]
    assert first["n.a2"] == 1 and first["v"].shape == (3,) and first["label"] == "x1"
    for backend in ("threads", "loky"):
        same_records(ref, ufm.sweep(draw, GRID, backend=backend, **kw))
    same_records(ref, ufm.sweep(draw, GRID, backend="dask", client=dask_client, **kw))
    # a real ufm task with a problem built at each point: closed-form solves
    grid = {"lam_W": [1e-3, 1e-2], "K": [3, 4]}
    fixed = {"n": 2, "d": 5, "lam_H": 1e-2}
    sol = ufm.sweep(ufm.solve, grid, problem="ufm", fixed=fixed, backend="sequential", progress=False)
    exact = ufm.solve(ufm.UFMProblem(K=4, n=2, d=5, lam_W=1e-2, lam_H=1e-2))
    last = sol.records[-1]
    assert last["objective"] == exact.objective and (last["status"], last["regime"]) == ("exact", "etf")
    assert last["method"] == "closed_form"
    assert sol.meta["seed_arg"] is None             # solve takes no seed
    same_records(sol, ufm.sweep("solve", grid, problem="ufm", fixed=fixed, backend="dask", client=dask_client,
                                progress=False))


def test_summaries_of_ufm_results():
    p = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), 1.0, lam_W=1e-3, lam_A=1e-3)
    res = ufm.sweep(ufm.simulate, {"lr": [0.5]}, fixed={"problem": p, "steps": 50, "n_records": 5,
                                                         "record": ("objective", "gram_means")},
                    keep=("objective",), backend="sequential", progress=False)
    rec = res.records[0]
    traj = ufm.simulate(p, 50, 0.5, n_records=5, record=("objective", "gram_means"), seed=rec["seed"])
    assert rec["objective"] == traj.objective[0, -1] and rec["status"] == "completed" and rec["step"] == 50
    assert "gram_means" not in rec                          # arrays only when asked for
    assert np.array_equal(rec["objective_history"], traj.objective) and np.array_equal(rec["times"], traj.times)
    bad = ufm.sweep(ufm.simulate, {"lr": [0.5]}, fixed={"problem": p, "steps": 5}, keep=("W",),
                    backend="sequential", progress=False)
    assert "keep='W': not recorded" in bad.records[0]["error"]
    sol = ufm.sweep("solve", {"lam_W": [1e-2]}, problem="ufm", keep=("W",), backend="sequential", progress=False,
                    fixed={"K": 3, "n": 1, "d": 3, "lam_H": 1e-2})
    assert sol.records[0]["W"].shape == (3, 3)


def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path):
    counter = tmp_path / "count"
    for backend in ("sequential", "loky"):
        res = ufm.sweep(counted, {"a": [1, 2, 3, 4]}, seeds=2, fixed={"counter": str(counter), "fail": 2},
                        backend=backend, n_jobs=2, progress=False)
        assert res.status is Status.runs_failed and not res.success and res.n_failed == 2
        assert [r["ok"] for r in res.records] == [True, True, False, False, True, True, True, True]
        assert res.failed[0]["error"] == "ValueError: a=2 is not allowed"
        assert res.meta["errors"] == {"ValueError: a=2 is not allowed": 2}
        assert "6 ok, 2 failed" in res.message and "2 x ValueError: a=2 is not allowed" in res.summary()
        assert "counted" in res.meta["tracebacks"]["ValueError: a=2 is not allowed"]
        assert np.isnan(res.column("value")[2]) and res.column("value")[0] >= 1
    assert counts(counter) == {1: 4, 3: 4, 4: 4}


def test_save_load_round_trip_and_frozen(tmp_path):
    res = ufm.sweep(draw, GRID, seeds=2, backend="sequential", progress=False)
    path = res.save(tmp_path / "sweep")
    back = ufm.load(path)
    assert type(back) is ufm.SweepResult and back.axes == ("a", "b") and back.status is Status.completed
    same_records(res, back)
    assert back.meta["content_hash"] == res.meta["content_hash"]
    with np.load(path, allow_pickle=False) as data:          # no pickles anywhere
        assert all(data[k].dtype != object for k in data.files)
    with pytest.raises(TypeError, match="frozen"):
        res.records[0]["x"] = 0
    with pytest.raises(TypeError, match="frozen"):
        res.records.append({})
    with pytest.raises(ValueError):
        res.records[0]["v"][0] = 1.0                          # read-only arrays
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            res.to_pandas()
    else:
        df = res.to_pandas()
        assert len(df) == 12 and list(df.columns[:4]) == ["a", "b", "seed_index", "seed"]


@pytest.mark.slow
def test_workers_run_numba_and_blas_on_one_thread(dask_client):
    for backend, extra in (("loky", {}), ("dask", {"client": dask_client})):
        res = ufm.sweep(thread_caps, {"a": [0, 1, 2, 3]}, backend=backend, n_jobs=2, progress=False, **extra)
        assert res.success
        assert {(r["numba"], r["blas"]) for r in res.records} == {(1, 1)}, backend


# -- nothing lost, nothing repeated ----------------------------------------------------------
def test_interrupt_keeps_finished_runs_and_resume_computes_only_missing(tmp_path):
    counter, stop, cache = tmp_path / "count", tmp_path / "stop", tmp_path / "cache"
    stop.touch()
    fixed = {"counter": str(counter), "stop_file": str(stop)}
    grid = {"a": [1, 2, 3, 4, 5]}
    with pytest.raises(KeyboardInterrupt) as err:          # the default: Ctrl-C reaches the caller, with the result
        ufm.sweep(counted, grid, seeds=2, fixed=fixed, backend="sequential", cache_dir=cache, progress=False)
    first = err.value.result
    assert first.status is Status.interrupted and "compute only the 6 missing" in first.message
    assert [(r["a"], r["seed_index"]) for r in first.records] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert len(list(cache.glob("*.npz"))) == 4 and not list(cache.glob("*.tmp"))
    stop.unlink()
    second = ufm.sweep(counted, grid, seeds=2, fixed=fixed, backend="sequential", cache_dir=cache, progress=False)
    assert second.success and second.meta["n_cached"] == 4 and second.meta["n_computed"] == 6
    assert counts(counter) == {1: 2, 2: 2, 3: 2, 4: 2, 5: 2}       # every run computed exactly once
    fresh = ufm.sweep(counted, grid, seeds=2, fixed={"counter": str(tmp_path / "other"), "stop_file": str(stop)},
                      backend="sequential", progress=False)
    assert [r["value"] for r in fresh.records] == [r["value"] for r in second.records]
    third = ufm.sweep(counted, grid, seeds=2, fixed=fixed, backend="loky", cache_dir=cache, progress=False)
    assert third.meta["n_cached"] == 10 and counts(counter) == {1: 2, 2: 2, 3: 2, 4: 2, 5: 2}
    same_records(second, third)
    # a changed argument is another run: nothing stale comes back from the cache
    other = ufm.sweep(counted, grid, seeds=2, fixed={**fixed, "fail": 5}, backend="sequential", cache_dir=cache,
                      progress=False)
    assert other.meta["n_cached"] == 0 and other.n_failed == 2


def test_interrupted_simulation_stops_the_sweep():
    res = ufm.sweep(interrupted_trajectory, {"a": [0, 1, 2]}, backend="sequential", progress=False,
                    on_interrupt="return")
    assert res.status is Status.interrupted and [r["a"] for r in res.records] == [0]


@pytest.mark.slow
def test_ctrl_c_during_a_loky_sweep_then_resume(tmp_path):
    counter, cache = tmp_path / "count", tmp_path / "cache"
    grid = {"a": list(range(10, 40))}
    fixed = {"counter": str(counter), "sleep": 0.15}

    finished = threading.Event()

    def interrupt_after_three_runs():
        while len(list(cache.glob("*.npz"))) < 3:
            if finished.wait(0.01):
                return
        os.kill(os.getpid(), signal.SIGINT)

    cache.mkdir()
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Ctrl-C is delivered to the main thread only")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)   # Ctrl-C raises KeyboardInterrupt
    try:
        watcher = threading.Thread(target=interrupt_after_three_runs, daemon=True)
        watcher.start()
        first = ufm.sweep(counted, grid, fixed=fixed, backend="loky", n_jobs=2, cache_dir=cache, progress=False,
                          on_interrupt="return")
    finally:
        finished.set()
        watcher.join(5)
        signal.signal(signal.SIGINT, previous)
    assert first.status is Status.interrupted and len(first.records) < 30
    before = counts(counter)
    done_first = len(list(cache.glob("*.npz")))      # runs the workers finished (some perhaps not yet received)
    assert 3 <= done_first < 30 and done_first >= len(first.records)
    second = ufm.sweep(counted, grid, fixed=fixed, backend="loky", n_jobs=2, cache_dir=cache, progress=False)
    assert second.success and len(second.records) == 30
    assert second.meta["n_cached"] == done_first and second.meta["n_computed"] == 30 - done_first
    after = counts(counter)
    rerun = {a: after.get(a, 0) - before.get(a, 0) for a in grid["a"]}
    assert sum(rerun.values()) == 30 - done_first and set(rerun.values()) <= {0, 1}


def assert_counted_once_but_for_the_killed(seen, expected):
    """Every run finished, none twice, except perhaps the one the other worker was running when loky
    replaced its pool (loky kills every worker when one dies): finished, but not yet written back."""
    assert sorted(seen) == sorted(expected)
    assert sum(seen.values()) - len(expected) <= 1


@pytest.mark.slow
def test_killed_loky_worker_loses_nothing(tmp_path):
    counter = tmp_path / "count"
    grid = {"a": list(range(12))}
    # a worker dies once in the middle (no cache_dir: the sweep keeps a scratch one to survive it)
    fixed = {"counter": str(counter), "crash": 5, "crash_marker": str(tmp_path / "crashed"), "sleep": 0.02}
    res = ufm.sweep(counted, grid, fixed=fixed, backend="loky", n_jobs=2, progress=False)
    assert (tmp_path / "crashed").exists()
    assert res.success and [r["a"] for r in res.records] == grid["a"]
    assert_counted_once_but_for_the_killed(counts(counter), grid["a"])
    # a run that kills its worker every time ends as a failed record; the others finish
    counter2 = tmp_path / "count2"
    res = ufm.sweep(counted, {"a": list(range(6))}, fixed={"counter": str(counter2), "crash": 2}, backend="loky",
                    n_jobs=2, retries=0, progress=False)
    assert res.status is Status.runs_failed and res.n_failed == 1
    assert res.failed[0]["a"] == 2 and res.failed[0]["error"].startswith("WorkerDied")
    assert_counted_once_but_for_the_killed(counts(counter2), [0, 1, 3, 4, 5])


@pytest.mark.slow
def test_dask_worker_killed_mid_sweep(tmp_path, dask_client):
    counter, cache = tmp_path / "count", tmp_path / "cache"
    grid = {"a": list(range(16))}
    fixed = {"counter": str(counter), "crash": 6, "crash_marker": str(tmp_path / "crashed"), "sleep": 0.05}
    res = ufm.sweep(counted, grid, seeds=2, fixed=fixed, backend="dask", client=dask_client, cache_dir=cache,
                    progress=False)
    assert (tmp_path / "crashed").exists()                # a worker process did die
    assert res.success and len(res.records) == 32
    assert [(r["a"], r["seed_index"]) for r in res.records] == [(a, i) for a in grid["a"] for i in (0, 1)]
    assert counts(counter) == {a: 2 for a in grid["a"]}   # each run finished exactly once
    ref = ufm.sweep(counted, grid, seeds=2, fixed={**fixed, "counter": str(tmp_path / "c2"), "crash": None},
                    backend="sequential", progress=False)
    assert [r["value"] for r in ref.records] == [r["value"] for r in res.records]
    wait_for_workers(dask_client)


def wait_for_workers(client, n=2):
    deadline = time.time() + 30                          # the nanny brings a killed worker back
    while len(client.scheduler_info()["workers"]) < n and time.time() < deadline:
        time.sleep(0.1)


def set_allowed_failures(dask_scheduler, n):
    old, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, n
    return old


@pytest.mark.slow
def test_dask_run_that_keeps_killing_workers_is_recorded(tmp_path, dask_client):
    # Dask gives up on a task after `allowed-failures` worker deaths (default 3), counting every task the
    # dead worker held; 0 and a single run keep this quick and free of bystanders.
    old = dask_client.run_on_scheduler(set_allowed_failures, n=0)
    try:
        res = ufm.sweep(counted, {"a": [4]}, seeds=1, fixed={"counter": str(tmp_path / "count"), "crash": 4},
                        backend="dask", client=dask_client, progress=False)
    finally:
        dask_client.run_on_scheduler(set_allowed_failures, n=old)
    assert res.status is Status.runs_failed and res.n_failed == 1 and res.records[0]["a"] == 4
    assert res.records[0]["error"].startswith("KilledWorker")
    assert "1 failed" in res.message
    wait_for_workers(dask_client)


# -- CLI and phase diagram ------------------------------------------------------------------
def test_phase_diagram_averages_over_seeds():
    res = ufm.sweep(draw, {"a": [2, 1], "b": ["x", "y"]}, seeds=3, backend="sequential", progress=False)
    from ufm.plotting import plot_phase_diagram

    ax = plot_phase_diagram(res, "a", "b", "x")
    M = np.asarray(ax.images[-1].get_array())
    for j, b in enumerate(["x", "y"]):
        for i, a in enumerate([1, 2]):                      # numeric axes are sorted
            vals = [r["x"] for r in res.records if r["a"] == a and r["b"] == b]
            assert M[j, i] == pytest.approx(np.mean(vals), abs=1e-15)
    res3 = ufm.sweep(draw, {"a": [1, 2], "b": ["x", "y"]}, seeds=1, backend="sequential", progress=False)
    with pytest.raises(ValueError, match="x and y are both"):
        plot_phase_diagram(res3, "a", "a", "x")
    with pytest.raises(ValueError, match="no record has 'nope'"):
        plot_phase_diagram(res3, "a", "b", "nope")


@pytest.mark.slow
def test_cli_sweep_example_and_resume(tmp_path, capsys):
    out = tmp_path / "out"
    # sequential: one process compiles the simulate kernels (on a cold numba cache that is ~30 s a process)
    args = ["sweep", str(EXAMPLE), "--out", str(out), "--quiet", "--backend", "sequential"]
    assert cli.main(args) == 0
    res = ufm.load(out / "result.npz")
    assert res.success and len(res.records) == 32 and res.axes == ("sigma", "lam_W", "lam_A")
    assert (out / "phase_diagram.png").stat().st_size > 0
    big = [r["etf_distance"] for r in res.records if r["sigma"] == 3.0]
    small = [r["etf_distance"] for r in res.records if r["sigma"] == 0.1]
    assert max(big) < min(small)                            # more capacity, closer to the ETF
    assert "32 ok, 0 failed" in capsys.readouterr().out
    assert cli.main(args) == 2                              # an existing cache needs --resume
    assert "--resume" in capsys.readouterr().err
    assert cli.main(args + ["--resume"]) == 0
    again = ufm.load(out / "result.npz")
    assert again.meta["n_cached"] == 32 and again.meta["n_computed"] == 0
    same_records(res, again)


def test_cli_sweep_rejects_bad_config(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('task = "simulate"\ngrdi = {}\n')
    assert cli.main(["sweep", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "unknown keys ['grdi']" in capsys.readouterr().err
