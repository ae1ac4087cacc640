"""Ctrl-C at every stage of every entry point, delivered deterministically through the stage hook.

``ufm._interrupt.stage(entry, name)`` is called as each stage of ``_interrupt.STAGES`` begins.
The tests replace it so that, at one chosen stage, a Ctrl-C arrives exactly as a signal
would deliver it: the installed SIGINT handler is called in place, once (a first Ctrl-C:
inside the protected region it only sets the flag) or twice (the user insists: the second
call raises ``KeyboardInterrupt`` at once). Whatever the stage, the Ctrl-C is honoured (the
call ends interrupted, never silently ``completed``) and every ``KeyboardInterrupt`` that
leaves the entry point carries ``result``: the partial or complete result, or ``None`` with a
message naming the stage when nothing was kept. (Real signals sent to child processes are in
test_interrupt.py.)
"""

from __future__ import annotations

import signal

import numpy as np
import pytest

import ufm
from ufm import _interrupt
from ufm._cli_sweep import run_config
from ufm.results import Run, Status

STAGES = _interrupt.STAGES
GD = ufm.UFMProblem(K=4, n=2, d=8, lam_W=1e-3, lam_H=1e-3)
SIM = dict(steps=200, lr=0.1, seeds=2, record=("objective", "W"), n_records=10, progress=False)


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Each test starts with Python's own SIGINT handler, as a script does (and leaves it so)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler      # every region restored it
    signal.signal(signal.SIGINT, previous)


def ctrl_c_at(monkeypatch, entry, name, presses=1, nth=1):
    """At the ``nth`` time ``entry`` enters stage ``name``, press Ctrl-C ``presses`` times (the handler, in place)."""
    visited, count = [], {"n": 0}

    def hook(e, n):
        visited.append((e, n))
        if (e, n) == (entry, name):
            count["n"] += 1
            if count["n"] == nth:
                for _ in range(presses):
                    signal.getsignal(signal.SIGINT)(signal.SIGINT, None)     # what the signal runs

    monkeypatch.setattr(_interrupt, "stage", hook)
    return visited


def raised(fn, **kw):
    """The ``KeyboardInterrupt`` ``fn(**kw)`` raises: exactly that type, with a ``result`` attribute."""
    with pytest.raises(KeyboardInterrupt) as err:
        fn(**kw)
    assert type(err.value) is KeyboardInterrupt and hasattr(err.value, "result")
    return err.value


# -- ufm.simulate ------------------------------------------------------------------------------
REFERENCE = {}


def _reference(mode):
    if mode not in REFERENCE:
        REFERENCE[mode] = _simulate(mode)
    return REFERENCE[mode]


def _simulate(mode, **kw):
    if mode == "gd":
        return ufm.simulate(GD, mode="gd", **SIM, **kw)
    flow = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=2.0, d=8, lam_W=1e-3, lam_A=1e-3)
    return ufm.simulate(flow, mode="flow", **{**SIM, "record": ("objective", "A"), "lr": 0.5}, **kw)


def test_simulate_enters_its_stages_in_order(monkeypatch):
    visited = ctrl_c_at(monkeypatch, "none", "none")
    tr = ufm.simulate(GD, **SIM)
    assert tr.status is Status.completed and visited == [("simulate", n) for n in STAGES["simulate"]]


@pytest.mark.parametrize("mode", ["gd", "flow"])
@pytest.mark.parametrize("name", list(STAGES["simulate"]))
def test_one_ctrl_c_at_any_stage_of_simulate_ends_it_interrupted_with_what_ran(monkeypatch, name, mode):
    ref = _reference(mode)
    ctrl_c_at(monkeypatch, "simulate", name)
    err = raised(_simulate, mode=mode)
    tr = err.result
    assert tr.status is Status.interrupted and not tr.success and "Ctrl-C" in tr.message
    before_run = name in ("checks", "initial_states", "run")
    T = len(tr.steps)
    assert T == (1 if before_run else len(ref.steps))     # stopped at its first check, or the whole run
    block = "W" if mode == "gd" else "A"
    np.testing.assert_array_equal(tr.records[block], ref.records[block][:, :T])
    if not before_run:               # the run had ended: kept whole, and said so
        assert f"after the run had ended ({ref.message})" in tr.message
    ctrl_c_at(monkeypatch, "simulate", name)
    back = _simulate(mode, on_interrupt="return")          # or it is returned, and the caller goes on
    assert back.status is Status.interrupted and len(back.steps) == T


@pytest.mark.parametrize("name", list(STAGES["simulate"]))
def test_two_ctrl_c_at_any_stage_of_simulate_raise_at_once_and_keep_what_can_be_kept(monkeypatch, name):
    ref = _reference("gd")
    ctrl_c_at(monkeypatch, "simulate", name, presses=2)
    err = raised(_simulate, mode="gd", on_interrupt="return")      # the second Ctrl-C raises even so
    if name in ("checks", "initial_states", "run"):
        assert err.result is None
        assert str(err) == (f"ufm.simulate: interrupted (Ctrl-C) while {STAGES['simulate'][name]}; no result "
                            f"was kept.")
    else:                            # the run had ended: its Trajectory is built (again) and kept whole
        tr = err.result
        assert tr.status is Status.interrupted and len(tr.steps) == len(ref.steps)
        np.testing.assert_array_equal(tr.records["W"], ref.records["W"])


def test_a_value_error_after_a_ctrl_c_still_reaches_the_caller_as_the_interrupt(monkeypatch):
    ctrl_c_at(monkeypatch, "simulate", "checks")
    err = raised(ufm.simulate, problem=GD, steps=200, lr=-1.0)
    assert err.result is None and "also failed (ValueError: lr must be" in str(err)
    assert isinstance(err.__cause__, ValueError)


# -- ufm.sweep ---------------------------------------------------------------------------------
def _sweep(**kw):
    return ufm.sweep(ufm.simulate, {"steps": [20, 40, 60]}, problem="ufm",
                     fixed=dict(K=3, n=1, d=4, lr=0.1, record=("objective",)), backend="sequential",
                     progress=False, **kw)


def test_sweep_enters_its_stages_in_order(monkeypatch):
    visited = ctrl_c_at(monkeypatch, "none", "none")
    res = _sweep()
    assert res.status is Status.completed
    assert [v for v in visited if v[0] == "sweep"] == [("sweep", n) for n in STAGES["sweep"]]
    assert visited.count(("simulate", "return")) == 3


@pytest.mark.parametrize("presses", [1, 2])
@pytest.mark.parametrize("name", list(STAGES["sweep"]))
def test_ctrl_c_at_any_stage_of_sweep_keeps_every_finished_run(monkeypatch, tmp_path, name, presses):
    full = _sweep()
    ctrl_c_at(monkeypatch, "sweep", name, presses=presses)
    err = raised(_sweep, cache_dir=tmp_path / "cache")
    if name == "plan" and presses == 2:
        assert err.result is None and "while checking the grid and the arguments" in str(err)
        return
    res = err.result
    assert res.status is Status.interrupted and not res.success
    n = 0 if name in ("plan", "cache", "run") else 3
    assert len(res.records) == n and len(list((tmp_path / "cache").glob("*.npz"))) == n
    assert [r["objective"] for r in res.records] == [r["objective"] for r in full.records][:n]


def test_a_ctrl_c_as_a_short_run_ends_stops_the_sequential_sweep_after_it(monkeypatch, tmp_path):
    # the SIGINT arrives after the second run's last check: that run is in flight, the third never starts
    ctrl_c_at(monkeypatch, "simulate", "return", nth=2)
    err = raised(_sweep, cache_dir=tmp_path)
    assert err.result.status is Status.interrupted and [r["steps"] for r in err.result.records] == [20]
    ctrl_c_at(monkeypatch, "simulate", "return", nth=1)
    res = _sweep(cache_dir=tmp_path, on_interrupt="return")      # the cached run is loaded, not run again
    assert res.status is Status.interrupted and res.meta["n_cached"] == 1 and len(res.records) == 1


def test_a_ctrl_c_while_a_users_task_runs_raises_there_and_stops_the_sweep(monkeypatch):
    calls = []

    def task(a, seed=0):
        calls.append(a)
        if a == 1:
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)       # raises at once: the task is abandoned
            calls.append("not reached")
        return {"a2": a * a}

    res = ufm.sweep(task, {"a": [0, 1, 2]}, backend="sequential", progress=False, on_interrupt="return")
    assert calls == [0, 1] and res.status is Status.interrupted and [r["a"] for r in res.records] == [0]


# -- ufm.fit -----------------------------------------------------------------------------------
SETTING = ufm.factorial((2, 2))
FIT = dict(setting=SETTING, max_iter=0, sigma_grid=(2.0,), bootstrap=5, progress=False)


@pytest.fixture(scope="module")
def run():
    m = ufm.InputCoupledUFM.from_setting(SETTING, sigma=2.0, d=8, lam_W=1e-3, lam_A=1e-3)
    tr = ufm.simulate(m, steps=2000, lr=0.5, mode="flow", record=("gram_means",), n_records=12, init_scale=1e-2,
                      progress=False)
    return Run(steps=tr.steps, grams=tr.records["gram_means"][0], labels=np.arange(4), counts=np.ones(4, int),
               attributes=SETTING.attributes)


def test_fit_enters_its_stages_in_order(monkeypatch, run):
    visited = ctrl_c_at(monkeypatch, "none", "none")
    res = ufm.fit(run, **FIT)
    assert res.status is Status.completed and visited == [("fit", n) for n in STAGES["fit"]]


@pytest.mark.parametrize("name", list(STAGES["fit"]))
def test_one_ctrl_c_at_any_stage_of_fit_ends_it_interrupted_with_every_model_it_could_fit(monkeypatch, run, name):
    full = ufm.fit(run, **FIT)
    ctrl_c_at(monkeypatch, "fit", name)
    err = raised(ufm.fit, source=run, **FIT)
    res = err.result
    assert res.status is Status.interrupted and res.meta["interrupted"] is True and not res.success
    before_m2 = name in ("checks", "read", "observe", "static", "input_coupled")
    if before_m2:                    # M2 stops before its first simulation (M2-H is not started); M1 is fitted
        assert sorted(res.gof) == ["anchored", "static"]
        assert any("input_coupled: not fitted: interrupted (Ctrl-C) before any starting point was simulated" in n
                   for n in res.meta["notes"])
    elif name == "feature_penalty":  # M2 was fitted; M2-H stops before its first simulation
        assert sorted(res.gof) == ["anchored", "input_coupled", "static"]
        assert any("feature_penalty: not fitted: interrupted (Ctrl-C) before any starting point was simulated" in n
                   for n in res.meta["notes"])
    elif name in ("anchored", "judge", "intervals"):   # every model fitted; the bootstrap stops before its first run
        assert sorted(res.gof) == sorted(full.gof) and res.params["sigma"] == full.params["sigma"]
        assert any("bootstrap interrupted (Ctrl-C) after 0 runs" in n for n in res.meta["notes"]) and not res.intervals
    else:
        assert sorted(res.gof) == sorted(full.gof)
        assert res.params["sigma"] == full.params["sigma"]
        late = "after the fit had ended" if name in ("result", "return") else "where no search could stop early"
        assert any(late in n for n in res.meta["notes"]) and late in res.message
    ctrl_c_at(monkeypatch, "fit", name)
    back = ufm.fit(run, on_interrupt="return", **FIT)
    assert back.status is Status.interrupted and sorted(back.gof) == sorted(res.gof)


@pytest.mark.parametrize("name", list(STAGES["fit"]))
def test_two_ctrl_c_at_any_stage_of_fit_raise_at_once_with_a_result_or_a_message(monkeypatch, run, name):
    ctrl_c_at(monkeypatch, "fit", name, presses=2)
    err = raised(ufm.fit, source=run, on_interrupt="return", **FIT)
    if name == "return":             # the fit was complete: kept, marked
        assert err.result.status is Status.interrupted and "input_coupled" in err.result.gof
    else:
        assert err.result is None
        assert str(err) == f"ufm.fit: interrupted (Ctrl-C) while {STAGES['fit'][name]}; no result was kept."


# -- ufm sweep CONFIG.toml (run_config) --------------------------------------------------------
CONFIG = """
task = "simulate"
backend = "sequential"
[problem]
kind = "ufm"
K = 3
n = 1
d = 4
[fixed]
lr = 0.1
record = ["objective"]
[grid]
steps = [20, 40]
init_scale = [0.1, 0.2]
"""


def test_run_config_enters_its_stages_in_order(monkeypatch, tmp_path):
    (tmp_path / "s.toml").write_text(CONFIG)
    visited = ctrl_c_at(monkeypatch, "none", "none")
    done = run_config(tmp_path / "s.toml", out=tmp_path / "out", progress=False, echo=lambda *a: None)
    assert not done["interrupted"] and (tmp_path / "out" / "phase_diagram.png").is_file()
    assert [v for v in visited if v[0] == "sweep_config"] == [("sweep_config", n) for n in STAGES["sweep_config"]]


@pytest.mark.parametrize("presses", [1, 2])
@pytest.mark.parametrize("name", list(STAGES["sweep_config"]))
def test_ctrl_c_at_any_stage_of_ufm_sweep_writes_what_it_has(monkeypatch, tmp_path, name, presses):
    (tmp_path / "s.toml").write_text(CONFIG)
    out = tmp_path / "out"
    ctrl_c_at(monkeypatch, "sweep_config", name, presses=presses)
    err = raised(run_config, path=tmp_path / "s.toml", out=out, progress=False, echo=lambda *a: None)
    if presses == 2 and name in ("config", "sweep"):
        assert err.result is None and STAGES["sweep_config"][name] in str(err)
        return
    done = err.result
    assert done["interrupted"] is True
    if presses == 2 and name == "save":           # nothing written; the finished runs are in the cache
        assert done["paths"] == {} and len(list((out / "cache").glob("*.npz"))) == 4
        return
    saved = ufm.load(out / "result.npz")           # complete: the sweep's result as it ended
    ran = 0 if name in ("config", "sweep") else 4
    assert len(saved.records) == ran and saved.status is (Status.interrupted if ran == 0 else Status.completed)
    drew = name in ("return",) or (name == "figure" and presses == 1)
    assert (out / "phase_diagram.png").is_file() == drew


# -- the commands: what they write when Ctrl-C comes late ----------------------------------------
def _run_file(run, path):
    Run(steps=run.steps, grams=run.grams, labels=run.labels, counts=run.counts, attributes=run.attributes,
        meta={"setting": SETTING.params}).save(path)
    return path


def test_ufm_fit_pressed_twice_as_it_ends_still_writes_the_whole_fit_and_exits_130(monkeypatch, run, tmp_path,
                                                                                    capsys):
    from ufm.cli import main

    source = _run_file(run, tmp_path / "run.npz")
    ctrl_c_at(monkeypatch, "fit", "return", presses=2)
    assert main(["fit", str(source), "--out", str(tmp_path / "fit"), "--no-figure", "--quiet"]) == 130
    saved = ufm.load(tmp_path / "fit" / "fit.npz")
    assert saved.meta["interrupted"] and "input_coupled" in saved.gof and "static" in saved.gof
    assert "the best parameters found before it were written" in capsys.readouterr().err


def test_a_ctrl_c_while_ufm_fit_writes_lets_the_file_be_completed_and_exits_130(monkeypatch, run, tmp_path,
                                                                              capsys):
    import ufm.results
    from ufm.cli import main

    source = _run_file(run, tmp_path / "run.npz")
    write = ufm.results.write_npz

    def pressed_while_writing(path, arrays, **kw):
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)            # Ctrl-C as fit.npz is written
        return write(path, arrays, **kw)

    monkeypatch.setattr(ufm.results, "write_npz", pressed_while_writing)
    assert main(["fit", str(source), "--out", str(tmp_path / "fit"), "--quiet"]) == 130
    saved = ufm.load(tmp_path / "fit" / "fit.npz")
    assert saved.status is Status.completed and "input_coupled" in saved.gof      # the fit had ended: complete
    assert not (tmp_path / "fit" / "fit_overlay.png").exists()                     # the figure is left out
    assert "interrupted (Ctrl-C) while writing; fit.npz holds the whole fit" in capsys.readouterr().err


def test_ufm_sweep_interrupted_after_the_sweep_ended_writes_every_run_and_exits_130(monkeypatch, tmp_path, capsys):
    from ufm.cli import main

    (tmp_path / "s.toml").write_text(CONFIG)
    ctrl_c_at(monkeypatch, "sweep_config", "save")
    assert main(["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out"), "--quiet"]) == 130
    saved = ufm.load(tmp_path / "out" / "result.npz")
    assert saved.status is Status.completed and len(saved.records) == 4
    assert "interrupted (Ctrl-C) after the sweep had ended; result.npz holds every run" in capsys.readouterr().err
