"""Faults that must not lose work or look like success: memory, divergence, wrong input (Ctrl-C is in test_interrupt.py).

Each test reproduces a reported fault (it failed before the fix) and checks the
class of fault, not just the one call.
"""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
import pytest

import ufm
from ufm import _memory, _simulate
from ufm.results import Status, _hash_array

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "sweep.toml")


# -- 4. memory: one estimate, refused before allocating ----------------------------------
def test_a_simulation_too_large_for_memory_is_refused_by_name_before_anything_is_allocated(monkeypatch):
    """K=100, n=100, d=1000, H recorded at every one of the 101 distinct steps: 8.1 GB of records. The old guard
    counted them once (the peak was 4x: list, stack, frozen copy, hash bytes) and let it run into the OOM killer
    (23.7 GB); now the estimate is the peak, and with 12 GiB free the run is refused at once, naming the fix."""
    p = ufm.UFMProblem(K=100, n=100, d=1000)
    rec = _simulate._resolve_recorders(p, ("H",), None)
    T = len(_simulate.record_grid(100, 10**4))
    parts = _simulate.memory_estimate(p, rec, 1, T, "gd", threads=1)
    assert T == 101 and parts["records"] == 8 * 101 * 1000 * 10**4
    assert parts["records"] < sum(parts.values()) < 1.05 * parts["records"]
    monkeypatch.setattr(_simulate, "_available_bytes", lambda: 12 * 2**30)
    with pytest.raises(ValueError, match=r"n_records .*seeds") as err:
        ufm.simulate(p, steps=100, lr=0.1, record=("H",), n_records=10**4)
    assert "'H'" in str(err.value) and "records" in str(err.value)
    with pytest.raises(ValueError, match="lower seeds"):       # seeds=10**7: the state, refused (it used to hang)
        ufm.simulate(ufm.UFMProblem(K=10, n=2, d=10), steps=10, lr=0.1, seeds=10**7)


def test_the_estimate_counts_state_workspace_and_recording_not_only_records():
    p = ufm.UFMProblem(K=20, n=5, d=50)
    rec = _simulate._resolve_recorders(p, ("objective",), None)
    parts = _simulate.memory_estimate(p, rec, seeds=1000, n_times=10, mode="gd", threads=2)
    assert parts["state"] == 8 * 1000 * (20 * 50 + 50 * 100)          # every seed's W and H
    assert parts["records"] == 8 * 1000 * 10                          # one float per seed and record
    assert parts["workspace"] > 0 and parts["recording"] > 0
    flow = _simulate.memory_estimate(p, rec, seeds=1000, n_times=10, mode="flow")
    assert flow["state"] == 3 * parts["state"]                        # start + the integrator's state and FSAL stage


def test_records_are_handed_to_the_trajectory_without_copies():
    tr = ufm.simulate(ufm.UFMProblem(K=4, n=2, d=5), steps=30, lr=0.1, record=("H", "objective"), n_records=6)
    H = tr.records["H"]
    assert not H.flags.writeable and H.base is not None and H.base.shape[1] >= H.shape[1]   # a view of the buffer
    mine = np.ones((2, 3))
    t2 = tr.replace(records={"x": mine})                               # a caller's array is copied, never frozen
    assert mine.flags.writeable and not np.shares_memory(mine, t2.records["x"])


@pytest.mark.parametrize("shape, index", [((7, 5), np.s_[:, :]), ((3, 50, 40), np.s_[:, :17]),
                                          ((4, 9, 2, 3), np.s_[::2, 3:])])
def test_the_incremental_hash_equals_the_hash_of_the_bytes(shape, index, monkeypatch):
    monkeypatch.setattr("ufm.results._HASH_BLOCK", 64)                   # force the piecewise path
    a = np.random.default_rng(0).standard_normal(shape)[index]
    h = hashlib.sha256()
    _hash_array(h, a)
    assert h.hexdigest() == hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_sweep_workers_share_the_memory_budget(monkeypatch):
    monkeypatch.setattr(_memory, "available", lambda: _memory.Limit(8 * 2**30, "an 8 GiB machine"))
    assert _memory.budget() == 4 * 2**30
    monkeypatch.setattr(_memory, "WORKERS", 4)
    assert _memory.budget() == 2**30
    with pytest.raises(ValueError, match="4 sweep workers"):
        _memory.check({"records": 2 * 2**30}, "ufm.simulate", "Lower n_records.")


def test_fit_and_settings_use_the_same_guard(monkeypatch):
    from ufm.bridge.fitting import memory_estimate

    parts = memory_estimate(K=64, T=40, F=6, models=("static",))
    assert parts["Grams and their copies"] == 7 * 8 * 40 * 64 * 64
    monkeypatch.setattr(_memory, "available", lambda: _memory.Limit(2**20, "a 1 MiB machine"))
    s = ufm.factorial((2, 2, 2, 2, 2))
    G = np.stack([s.input_kernel(x) for x in (1.0, 2.0, 3.0)])
    with pytest.raises(ValueError, match="ufm.fit needs about"):
        ufm.fit(G, setting=s, models=("static",))
    with pytest.raises(ValueError, match="fewer items"):
        ufm.factorial((2,) * 12).share


# -- 5. divergence is a failure -----------------------------------------------------------
@pytest.mark.slow
def test_a_sweep_of_diverged_runs_reports_failures_and_marks_them(tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    text = open(EXAMPLE).read().replace("lr = 0.5", "lr = 1e6").replace('backend = "loky"', 'backend = "sequential"')
    cfg = tmp_path / "diverge.toml"
    cfg.write_text(text)
    from ufm import cli

    code = cli.main(["sweep", str(cfg), "--out", str(tmp_path / "o"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 1 and "0 ok, 32 failed" in out and "none succeeded" in err
    res = ufm.load(tmp_path / "o" / "result.npz")
    assert res.n_failed == 32 and all(r["error"].startswith("RunFailed: nonfinite") for r in res.records)
    assert all(r["status"] == "nonfinite" for r in res.records)          # the run's own summary is kept
    from ufm.plotting import plot_phase_diagram

    ax = plot_phase_diagram(res, "sigma", "lam_W", "etf_distance", where={"lam_A": 1e-3})
    marks = [ln for ln in ax.lines if ln.get_gid() == "failed"]
    assert len(marks) == 1 and len(marks[0].get_xdata()) == 8 and "16 failed" in ax.get_title()
    assert np.all(np.isnan(np.ma.filled(ax.images[-1].get_array(), np.nan)))   # no colour from diverged states


def test_unfinished_simulations_and_unsolved_problems_are_failed_runs():
    from ufm._sweep import run_failure

    p = ufm.UFMProblem(K=3, n=1, d=3)
    ok = ufm.simulate(p, steps=5, lr=0.1)
    assert run_failure(ok) is None
    assert run_failure(ok.replace(status="max_steps", message="gave up")).startswith("max_steps")
    sol = ufm.solve(p)
    assert run_failure(sol) is None and "not solved (max_iter)" in run_failure(sol.replace(status="max_iter"))
    regularized = ufm.UFMProblem(K=3, n=1, d=3, lam_W=0.1, lam_H=0.1)     # no max-margin limit
    assert run_failure(ufm.solve(regularized, method="svm")).startswith("not solved (no_method)")


# -- 6. a start that cannot move -----------------------------------------------------------
@pytest.mark.parametrize("mode", ["gd", "flow"])
def test_an_exact_saddle_start_is_refused(mode):
    p = ufm.UFMProblem(K=4, n=2, d=5, lam_W=1e-3, lam_H=1e-3)
    with pytest.raises(ValueError, match="stationary point.*init_scale=0"):
        ufm.simulate(p, steps=10, lr=0.1, mode=mode, init_scale=0.0)
    with pytest.raises(ValueError, match="stationary point"):             # given blocks: the same check
        ufm.simulate(p, steps=10, lr=0.1, W0=np.zeros((4, 5)), H0=np.zeros((5, 8)))
    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=1.0, d=4)
    with pytest.raises(ValueError, match="stationary point"):
        ufm.simulate(m, steps=10, lr=0.1, mode=mode, init_scale=0.0)
    tr = ufm.simulate(p, steps=10, lr=0.1, W0=np.zeros((4, 5)), init_scale=0.1)   # W = 0 but H random: moves
    assert tr.status is Status.completed


# -- 8. output paths checked before the work -------------------------------------------------
def test_output_paths_are_checked_before_the_work(tmp_path, capsys):
    from ufm import cli

    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert cli.main(["demo", "--quick", "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert cli.main(["sweep", EXAMPLE, "--out", str(a_file), "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cache_dir .* is a file"):
        ufm.sweep(ufm.simulate, {"steps": [2]}, problem="ufm", fixed=dict(K=2, n=1, d=2, lr=0.1),
                  backend="sequential", cache_dir=a_file, progress=False)
    sol = ufm.solve(ufm.UFMProblem(K=3, n=1, d=3, lam_W=0.1, lam_H=0.1))
    with pytest.raises(ValueError, match="is a folder"):
        sol.save(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        sol.save(tmp_path / "missing" / "s.npz")
    assert not (tmp_path.parent / (tmp_path.name + ".npz")).exists()     # nothing written next to the folder


# -- 9. arguments checked up front, by name ---------------------------------------------------
def test_solve_names_an_option_the_method_does_not_take():
    p = ufm.UFMProblem(K=4, n=2, d=6, lam_W=1e-2, lam_H=1e-2)
    with pytest.raises(ValueError, match="method='closed_form' takes no option 'tol'"):
        ufm.solve(p, method="closed_form", tol=1e-3)
    with pytest.raises(ValueError, match="takes no option 'tol2'"):
        ufm.solve(p, tol2=1e-3)


@pytest.mark.parametrize("kw, match", [
    (dict(sigmas=2.0), r"sigmas must be a sequence .* sigmas=\(2.0,\)"),
    (dict(settings="factorial"), r"settings must be a sequence .*got 'factorial'"),
    (dict(strengths=[-1.0]), r"strengths must be finite and >= 0"),
    (dict(lams=[-1e-3]), r"lams must be finite and >= 0"),
    (dict(sigmas=[]), "sigmas is empty"),
    (dict(grid={"sigma": [1.0]}), "grid must be a non-empty list of dicts"),
    (dict(grid=[{"setting": "factorial", "sigma": -1.0, "strength": 1.0, "lam": 1e-3}]), r"grid\[0\]\['sigma'\]"),
])
def test_phase_diagram_checks_its_axes_before_any_point(kw, match):
    with pytest.raises(ValueError, match=match):
        ufm.phase_diagram(**kw)


def test_sweep_arguments_are_one_error_before_any_run(tmp_path, monkeypatch):
    fixed = dict(K=2, n=1, d=2, lr=0.1)
    with pytest.raises(ValueError, match="every run would fail: steps must be an integer >= 1"):
        ufm.sweep(ufm.simulate, {"sigma_unused": [1]} if False else {"lam_W": [0.1, 0.2]}, problem="ufm",
                  fixed={**fixed, "steps": -1}, backend="sequential", progress=False)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0.*grid point"):
        ufm.sweep(ufm.simulate, {"lr": [0.1, -1.0]}, problem="ufm", fixed=dict(K=2, n=1, d=2, steps=3),
                  backend="sequential", progress=False)
    with pytest.raises(ValueError, match="grid is empty"):
        ufm.sweep(ufm.simulate, {}, problem="ufm", fixed={**fixed, "steps": 2}, backend="sequential", progress=False)
    monkeypatch.setitem(sys.modules, "distributed", None)               # dask.distributed not installed
    with pytest.raises(ValueError, match=r"pip install 'ufm\[distributed\]'"):
        ufm.sweep(ufm.simulate, {"steps": [2]}, problem="ufm", fixed=fixed, backend="dask", progress=False)


@pytest.mark.parametrize("edit, match", [
    (lambda t: t + "\nsedes = 4\n", r"unknown keys in \[plot\]: \['sedes'\]"),      # a typo after the last table
    (lambda t: t.replace('value = "etf_distance"', 'value = "etf"'), r"\[plot\] value = 'etf' is not a scalar"),
    (lambda t: t.replace('x = "sigma"', 'x = "sigmaa"'), r"\[plot\] x = 'sigmaa' is not a \[grid\] parameter"),
    (lambda t: t.replace("steps = 3000", "steps = -1"), "every run would fail: steps must be an integer >= 1"),
])
def test_sweep_toml_mistakes_are_one_error_before_any_run(tmp_path, edit, match):
    from ufm._cli_sweep import run_config

    cfg = tmp_path / "s.toml"
    cfg.write_text(edit(open(EXAMPLE).read()))
    with pytest.raises(ValueError, match=match):
        run_config(cfg, out=tmp_path / "o", progress=False, echo=lambda *a: None)
    assert not (tmp_path / "o" / "cache").exists() or not list((tmp_path / "o" / "cache").iterdir())


def test_a_binary_toml_file_is_named_in_the_error(tmp_path):
    from ufm._cli_sweep import run_config

    path = tmp_path / "binary.toml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match="binary.toml: not a TOML text file"):
        run_config(path, out=tmp_path / "o")


def test_on_interrupt_is_checked():
    with pytest.raises(ValueError, match="on_interrupt must be 'raise'"):
        ufm.simulate(ufm.UFMProblem(K=3, n=1, d=3), steps=5, lr=0.1, on_interrupt="ignore")


# -- 10. a fit that did not run or cannot be identified says so --------------------------------
def test_fits_that_cannot_identify_anything_say_so():
    s = ufm.factorial((2, 2, 2))
    G = np.stack([s.input_kernel(x) for x in (1.0, 2.0, 3.0, 4.0)])
    with pytest.raises(ValueError, match="needs at least 3"):
        ufm.fit(G[:2], setting=s)
    with pytest.raises(ValueError, match="1 record"):
        ufm.fit(G[0], setting=s)
    one = ufm.fit(G[0], setting=s, models=("static",))
    assert one.best_model is None and "no dynamical model was fitted" in one.verdict
    r = ufm.fit(G, setting=s, models=("input_coupled",), max_iter=0, bootstrap=0)
    assert "max_iter=0, so no least-squares search ran" in r.message


def test_a_model_that_cannot_be_simulated_from_any_start_is_left_out_with_a_note(monkeypatch):
    """M2 whose every starting point fails to integrate: the fit finishes without it and says so."""
    from ufm.bridge import m2

    s = ufm.factorial((2, 2, 2))
    G = np.stack([s.input_kernel(x) for x in (1.0, 2.0, 3.0, 4.0)])
    monkeypatch.setattr(m2.M2Model, "run", lambda self, x, points: None)   # every flow "not finite"
    r = ufm.fit(G, setting=s, models=("static", "input_coupled", "anchored"), max_iter=5)
    assert r.success and "input_coupled" not in r.gof and {"static", "anchored"} <= set(r.gof)
    assert "input_coupled: not fitted: none of the" in r.message
    assert r.best_model != "input_coupled"
    only = ufm.fit(G, setting=s, models=("input_coupled",), max_iter=5)
    assert only.best_model is None and "not fitted" in only.message
    assert only.verdict == "no dynamical model was fitted (see the notes)."
