"""Ctrl-C keeps what was computed: a real SIGINT sent to a child process.

Each test starts a child (a script or the ``ufm`` command) in its own process group, waits
until it says it is inside the long computation, sends SIGINT to the group (what a
terminal's Ctrl-C does) and checks the partial result on disk and the exit code. The
problems are tiny and the runs would last many minutes or hours without the signal; no timing is asserted.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import ufm
from ufm.results import Run, Status

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}

pytestmark = pytest.mark.slow          # child processes: `make test-fast` leaves these out


# A child inherits its parent's blocked and ignored signals across exec; a test process that ran other
# tests may carry them (seen in a full -n 2 run: the children never saw the SIGINT). Start each child
# the way a terminal starts a program: SIGINT unblocked and at its default action.
TRAMPOLINE = ("import os, signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
              "signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])")


class Child:
    """A child process in its own process group; its stdout and stderr lines arrive on one queue."""

    def __init__(self, args, cwd):
        self.parent_sigint = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
        self.proc = subprocess.Popen([sys.executable, "-c", TRAMPOLINE, *map(str, args)], cwd=cwd, env=ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines, self.out, self.err = queue.Queue(), [], []
        for stream, keep in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, keep), daemon=True).start()

    def _read(self, stream, keep):
        for line in stream:
            keep.append(line)
            self.lines.put(line)

    def wait_for(self, text, timeout=120):
        """Block until a line containing ``text`` arrives (fail if the child ends or the time runs out)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"no line with {text!r} in {timeout} s; stdout {''.join(self.out)[-2000:]} "
                            f"stderr {''.join(self.err)[-2000:]}; parent SIGINT handler and mask "
                            f"{self.parent_sigint}")
            if text in line:
                return line

    def ctrl_c(self):
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self, timeout=120):
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            pytest.fail(f"the child did not stop after Ctrl-C (parent SIGINT handler and mask {self.parent_sigint})")
        return code, "".join(self.out), "".join(self.err)


SIMULATE_CHILD = textwrap.dedent(r"""
    import sys, time, ufm
    out = sys.argv[1]
    gd = ufm.UFMProblem(K=4, n=2, d=8, lam_W=1e-3, lam_H=1e-3)
    flow = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=2.0, d=8, lam_W=1e-5, lam_A=1e-5)
    def long(mode, seeds, **kw):
        # many minutes of work without the signal: GD to step 1e12; the flow to t = 1e12 at tight tolerances
        # (about 13 minutes a seed: the step size stops growing once the weight decay has settled the state;
        # t = 1e9 took one second, so a signal sent half a second after "go" could come after the run ended)
        if mode == "gd":
            return ufm.simulate(gd, steps=10**12, lr=0.1, seeds=seeds, record=("objective", "W"), **kw)
        return ufm.simulate(flow, steps=10**12, lr=1.0, mode="flow", seeds=seeds, record=("objective", "A"),
                            rtol=1e-10, atol=1e-12, max_steps=10**9, **kw)
    for mode in ("gd", "flow"):                      # load the compiled kernels before the first signal
        ufm.simulate(gd if mode == "gd" else flow, steps=10, lr=0.1, mode=mode, seeds=2)
    for mode, seeds in (("gd", 1), ("gd", 3), ("flow", 1), ("flow", 3)):
        print("go", mode, seeds, flush=True)
        try:
            long(mode, seeds)
            sys.exit("not interrupted")
        except KeyboardInterrupt as err:            # the default: the interrupt reaches the script
            print("saved", err.result.save(f"{out}/{mode}{seeds}.npz"), flush=True)
    print("go return", flush=True)
    tr = long("gd", 2, on_interrupt="return")        # or the partial result is returned and the script goes on
    print("returned", tr.status.name, flush=True)
    print("next", ufm.simulate(gd, steps=100, lr=0.1).status.name, flush=True)
    print("go uncaught", flush=True)
    long("flow", 1)                                  # not caught: the script stops here, as after any Ctrl-C
    print("not reached", flush=True)
""")


def test_ctrl_c_keeps_every_record_of_gd_and_flow_runs_and_reaches_the_script(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(SIMULATE_CHILD)
    child = Child([sys.executable, str(script), str(tmp_path)], cwd=tmp_path)
    for case in ("gd 1", "gd 3", "flow 1", "flow 3", "return", "uncaught"):
        child.wait_for(f"go {case}")
        threading.Event().wait(0.5)
        child.ctrl_c()
        if case not in ("return", "uncaught"):
            child.wait_for("saved")
    code, out, err = child.finish()
    # an uncaught Ctrl-C ends the script the way Python does: killed by SIGINT, with the traceback
    assert code == -signal.SIGINT, (code, err[-3000:])
    assert "KeyboardInterrupt: Interrupted (Ctrl-C)" in err and "not reached" not in out
    assert "returned interrupted" in out and "next completed" in out      # on_interrupt="return": goes on

    gd = ufm.UFMProblem(K=4, n=2, d=8, lam_W=1e-3, lam_H=1e-3)
    flow = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=2.0, d=8, lam_W=1e-5, lam_A=1e-5)
    for mode, seeds in (("gd", 1), ("gd", 3), ("flow", 1), ("flow", 3)):
        tr = ufm.load(tmp_path / f"{mode}{seeds}.npz")
        assert tr.status is Status.interrupted and "Ctrl-C" in tr.message
        T = len(tr.steps)
        assert T >= 3 and tr.steps[-1] < 10**12
        assert tr.objective.shape == (seeds, T) and np.all(np.isfinite(tr.objective))  # every seed, every row
        block = "W" if mode == "gd" else "A"
        # the records are those of an uninterrupted run to the last kept step, row for row
        ref = ufm.simulate(gd if mode == "gd" else flow, steps=int(tr.steps[-1]), lr=0.1 if mode == "gd" else 1.0,
                           mode=mode, seeds=seeds, record=("objective", block), record_steps=tr.steps,
                           **({} if mode == "gd" else dict(rtol=1e-10, atol=1e-12, max_steps=10**9)))
        np.testing.assert_array_equal(ref.steps, tr.steps)
        tol = dict(rtol=0, atol=0) if mode == "gd" else dict(rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(tr.records[block], ref.records[block], **tol)


def _fit_run(path):
    s = ufm.factorial((2,) * 5)
    m = ufm.InputCoupledUFM.from_setting(s, sigma=3.0, d=32, lam_W=1e-3, lam_A=1e-3)
    tr = ufm.simulate(m, steps=4000, lr=0.5, mode="flow", record=("gram_means",), n_records=30, init_scale=1e-2)
    Run(steps=np.round(tr.steps).astype(int), grams=tr.records["gram_means"][0], labels=np.arange(s.N),
        counts=np.ones(s.N, int), attributes=s.attributes, meta={"setting": s.params}).save(path)


def test_ctrl_c_during_ufm_fit_writes_the_best_point_and_exits_130(tmp_path):
    run = tmp_path / "run.npz"
    _fit_run(run)
    out = tmp_path / "fit"
    child = Child([sys.executable, "-m", "ufm.cli", "fit", str(run), "--out", str(out), "--no-figure"], tmp_path)
    child.wait_for("input_coupled: fitting")
    threading.Event().wait(0.3)
    child.ctrl_c()
    code, stdout, err = child.finish()
    assert code == 130, err[-3000:]
    assert "interrupted (Ctrl-C)" in err
    res = ufm.load(out / "fit.npz")
    assert res.meta["interrupted"] is True and any("interrupted" in n for n in res.meta["notes"])
    assert res.params["sigma"] > 0 and "input_coupled" in res.gof     # the best point found before Ctrl-C


SWEEP_TOML = """
task = "simulate"
seeds = 1
backend = "{backend}"
n_jobs = 2
[problem]
kind = "ufm"
K = 4
n = 2
d = 8
lam_W = 1e-3
lam_H = 1e-3
[fixed]
lr = 0.1
record = ["objective"]
[grid]
steps = [{steps}]
init_scale = [0.1, 0.2]
"""


@pytest.mark.parametrize("backend", ["sequential", "loky"])
def test_ctrl_c_during_ufm_sweep_writes_the_finished_runs_and_exits_130(tmp_path, backend):
    # a few quick runs, then runs that would take hours: the signal comes when the quick ones are cached
    steps = ", ".join(["20", "40", "60"] + [str(10**12 + i) for i in range(4)])
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(SWEEP_TOML.format(backend=backend, steps=steps))
    out = tmp_path / "out"
    child = Child([sys.executable, "-m", "ufm.cli", "sweep", str(cfg), "--out", str(out), "--no-figure"], tmp_path)
    cache = out / "cache"
    for _ in range(1200):              # until the quick runs are on disk (at most 2 minutes)
        if cache.is_dir() and len(list(cache.glob("*.npz"))) >= 6:
            break
        threading.Event().wait(0.1)
    threading.Event().wait(0.5)
    child.ctrl_c()
    code, stdout, err = child.finish()
    assert code == 130, (stdout[-2000:], err[-3000:])
    res = ufm.load(out / "result.npz")
    assert res.status is Status.interrupted and "--resume" in stdout
    assert 6 <= len(res.records) < 14 and all(r["ok"] for r in res.records)
    assert {r["steps"] for r in res.records} >= {20, 40, 60}


def test_ctrl_c_during_ufm_demo_keeps_the_finished_tables_and_exits_130(tmp_path):
    out = tmp_path / "demo"
    child = Child([sys.executable, "-m", "ufm.cli", "demo", "--quick", "--no-figures", "--out", str(out)], tmp_path)
    child.wait_for("== structure before collapse")         # the simulation is done; the phase diagram runs
    threading.Event().wait(0.5)
    child.ctrl_c()
    code, stdout, err = child.finish()
    assert code == 130, err[-3000:]
    assert "interrupted (Ctrl-C)" in err and "Traceback" not in err
    assert (out / "sbc_summary.csv").is_file() and (out / "sbc_phase.csv").is_file()
    from ufm.demo import _phase_grid

    rows = (out / "sbc_phase.csv").read_text().strip().splitlines()[1:]
    assert len(rows) < len(_phase_grid(True))                 # the points finished before Ctrl-C
