"""What the compiled Dormand-Prince integrator costs on top of its right-hand side, same run.

Run from the repository root, in the project's virtual environment::

    python benchmarks/bench_integrate.py                   # K = 16, 32, 64 (about 2 minutes)
    python benchmarks/bench_integrate.py --sizes 16 32     # a quick look
    python benchmarks/bench_integrate.py --before f9c0a98  # also a git revision's integrator

The flow is the one ``ufm.fit`` integrates most: the kernel flow of the input-coupled model
(``ufm._kernels.m2_kernel_flow_rhs``, state ``W`` (K x d) and ``H`` (d x K), d = 2K, CE,
``Y = I_K``), set up as ``ufm.bridge.m2`` does for its isotropic start (``W = [0, I]``,
``H = [R; 0]`` with ``R^T R = K_x``, a random kernel of rank K), integrated with ``rtol = 1e-6``
to ``t = 1e6`` over 160 output times, as the fit's M2 simulations are: with weight decay
``lam = 1e-3`` (plain time) and without (``lam = 0``, log time).

For every size and case, interleaved round-robin (the integrators take turns at coming first)
and repeated:

* ``integrate``: one :func:`ufm._integrate.integrate` call (the entry point the fit calls),
  ``nfev`` right-hand-side calls;
* ``rhs loop``: the same right-hand side called ``nfev`` times in a compiled loop (on the
  trajectory's output states, in turn), called directly, and through a first-class function
  pointer as the integrator calls it.

Reported: median times (CPU seconds of this one-thread process, and the same from wall time)
and the integrator's overhead per right-hand-side call, ``integrate / rhs loop (direct) - 1``
(median over rounds of the per-round ratio; the target is below 10%). ``--before REV`` loads
``ufm/_integrate.py`` of a git revision (``git archive``) as a second module in the same
process and times it in the same rounds, so both integrators run on the same right-hand side,
states and machine state; the report says whether they took the same number of steps and how
far apart their results are.

Then the integrators alone: the same state sizes on ``dy/dt = -c y``, whose right-hand side
costs next to nothing, so the time per step is the integrator's own (stage combinations, error
norm, step control), in CPU nanoseconds per state element per step.

One thread (numba and BLAS: the right-hand side's ``np.dot`` calls). The CPU model and the
load average at the start and at the end are printed with the table.
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import types as nbt  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from ufm import _integrate  # noqa: E402
from ufm import _kernels as kern  # noqa: E402

from _machine import cpu_model, load  # noqa: E402   # benchmarks/_machine.py: CPU and load next to every table

RTOL, HORIZON, N_MODEL = 1e-6, 1e6, 160
CASES = {"lam = 1e-3 (time t)": 1e-3, "lam = 0 (log time)": 0.0}






def problem(K, lam, seed=0):
    """Arguments of ``integrate`` for the input-coupled model's kernel flow, as ufm.bridge.m2 builds them."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((K, K)) / np.sqrt(K)
    Kx = X.T @ X + 0.1 * np.eye(K)
    evals, evecs = np.linalg.eigh(Kx)
    R = (evecs * np.sqrt(evals)).T                 # R^T R = Kx
    d = 2 * K
    H0 = np.vstack([R, np.zeros((K, K))])
    W0 = np.hstack([np.zeros((K, K)), np.eye(K)])
    c = np.sqrt((K + np.trace(Kx)) / (np.sum(W0 ** 2) + np.sum(H0 ** 2)))
    y0 = c * np.concatenate([W0.ravel(), H0.ravel()])
    rate = 2.0 * evals[-1] / K
    horizon = HORIZON if lam == 0 else min(HORIZON, 50.0 / lam)
    t = np.concatenate([[0.0], np.geomspace(min(1e-2 / rate, horizon * 1e-6), horizon, N_MODEL - 1)])
    data = (K, d, np.ascontiguousarray(Kx), lam, lam, 0.0, 0)      # lam_W, lam_A, lam_H, CE
    return dict(rhs=kern.m2_kernel_flow_rhs, y0=y0, data=data, t_eval=t, rtol=RTOL, atol=RTOL * c * 1e-3,
                log_time=lam == 0, max_steps=50_000)


def _direct_loop(rhs):
    @numba.njit
    def loop(states, data, out, n):
        m = states.shape[0]
        for i in range(n):
            rhs(states[i % m], data, out)
    return loop


@numba.njit
def _pointer_loop(rhs, states, data, out, n):
    m = states.shape[0]
    for i in range(n):
        rhs(states[i % m], data, out)


def rhs_loops(args):
    """The right-hand side alone in two compiled loops: a direct call, and a call through a function pointer."""
    rhs, data = args["rhs"], args["data"]
    arr = numba.typeof(args["y0"])
    rhs_args = (arr, numba.typeof(data), arr)
    rhs.compile(rhs_args)
    fty = nbt.FunctionType(rhs.overloads[rhs_args].signature.return_type(*rhs_args))
    sig = (fty, numba.typeof(np.empty((2, 2))), numba.typeof(data), arr, nbt.int64)
    _pointer_loop.compile(sig)
    pointer = _pointer_loop.overloads[sig].entry_point
    direct = _direct_loop(rhs)
    return direct, (lambda states, out, n: pointer(rhs, states, data, out, n))


@numba.njit(cache=True)
def _decay(y, data, out):
    """``dy/dt = -c y``: a right-hand side that costs next to nothing, to time the integrator alone."""
    c = data[0]
    for i in range(y.shape[0]):
        out[i] = -c * y[i]


def _turn(names, r):
    """The integrators' order in round ``r``: as given in even rounds, reversed in odd ones. The
    first integrator after the right-hand-side loops runs on colder caches and (in log time) takes
    the minor page faults of memory the allocator gave back meanwhile; taking turns spreads that
    over both instead of charging it to the same one in every round."""
    return names if r % 2 == 0 else names[::-1]


def measure_alone(sizes, rounds, mods):
    """Each integrator on ``dy/dt = -c y`` with the state sizes of the flows: its own cost per step."""
    rows = []
    for K in sizes:
        n = 4 * K * K
        y0 = np.random.default_rng(0).standard_normal(n)
        t = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, N_MODEL - 1)])
        for log_time in (False, True):
            args = dict(rhs=_decay, y0=y0, data=(1e-2,), t_eval=t, rtol=1e-9, atol=1e-12, log_time=log_time)
            res = {name: m.integrate(**args) for name, m in mods.items()}
            times = {name: [] for name in mods}
            for r in range(rounds):
                for name in _turn(list(mods), r):
                    c0 = time.process_time()
                    mods[name].integrate(**args)
                    times[name].append(time.process_time() - c0)
            steps = (res["this tree"].nfev - 1) // 6
            row = {"n": n, "log_time": log_time, "steps": steps,
                   "ns_per_element_step": {k: statistics.median(v) / steps / n * 1e9 for k, v in times.items()},
                   "same": all(np.array_equal(r.y, res["this tree"].y) for r in res.values())}
            if len(mods) > 1:
                other = [k for k in mods if k != "this tree"][0]
                row["speedup"] = statistics.median(a / b for a, b in zip(times[other], times["this tree"]))
            rows.append(row)
            print(f"  alone n={n} log_time={log_time}: {row}", file=sys.stderr, flush=True)
    return rows


def measure(sizes, rounds, before):
    threadpool_limits(1)
    numba.set_num_threads(1)
    mods = {"this tree": _integrate}
    if before:
        mods[before[0]] = before[1]
    out = {"cpu": cpu_model(), "load_start": load(), "rows": []}
    for K in sizes:
        for case, lam in CASES.items():
            args = problem(K, lam)
            res = {name: m.integrate(**args) for name, m in mods.items()}          # compile, and the states
            ref = res["this tree"]
            assert ref.success, ref.message
            nfev = ref.nfev
            states = np.ascontiguousarray(ref.y)
            direct, pointer = rhs_loops(args)
            buf = np.empty_like(args["y0"])
            direct(states, args["data"], buf, 10)
            pointer(states, buf, 10)
            timers = {f"integrate ({name})": (lambda m=m: m.integrate(**args)) for name, m in mods.items()}
            timers["rhs loop (direct)"] = lambda: direct(states, args["data"], buf, nfev)
            timers["rhs loop (pointer)"] = lambda: pointer(states, buf, nfev)
            times = {k: [] for k in timers}
            walls = {k: [] for k in timers}
            integrators = [k for k in timers if k.startswith("integrate")]
            for r in range(rounds):
                for k in _turn(integrators, r) + ["rhs loop (direct)", "rhs loop (pointer)"]:
                    c0, t0 = time.process_time(), time.perf_counter()
                    timers[k]()
                    times[k].append(time.process_time() - c0)
                    walls[k].append(time.perf_counter() - t0)
            base, wbase = times["rhs loop (direct)"], walls["rhs loop (direct)"]
            row = {"K": K, "d": 2 * K, "n": args["y0"].size, "case": case, "nfev": {}, "max_diff": {},
                   "median": {k: statistics.median(v) for k, v in times.items()},
                   "overhead": {k: statistics.median(a / b - 1 for a, b in zip(v, base)) for k, v in times.items()},
                   "overhead_wall": {k: statistics.median(a / b - 1 for a, b in zip(v, wbase))
                                     for k, v in walls.items()}}
            for name, r in res.items():
                row["nfev"][name] = r.nfev
                row["max_diff"][name] = float(np.max(np.abs(r.y - ref.y)))
            out["rows"].append(row)
            print(f"  K={K} {case}: nfev {row['nfev']}, overhead "
                  + ", ".join(f"{k} {v:+.1%}" for k, v in row["overhead"].items()), file=sys.stderr, flush=True)
    out["alone"] = measure_alone(sizes, rounds, mods)
    out["load_end"] = load()
    return out


def table(res, command):
    names = [k for k in res["rows"][0]["median"] if k.startswith("integrate")]
    lines = [f"Command: `{command}`; CPU {res['cpu']}, load average {res['load_start']} at the start, "
             f"{res['load_end']} at the end; one thread. Times are the process's CPU seconds (one thread: "
             "what a quiet core's wall time would be), medians over interleaved rounds; in brackets the "
             "overhead = time / (rhs loop, direct) - 1, per round, median (the same from wall times after "
             "the slash).", "",
             "| K (state size) | case | rhs calls | rhs loop (direct) | rhs loop (pointer) | "
             + " | ".join(names) + " |", "|---|---|---|---|---|" + "---|" * len(names)]
    for r in res["rows"]:
        med, ov = r["median"], r["overhead"]
        nf = r["nfev"]["this tree"]
        cells = []
        for k in names:
            name = k[len("integrate ("):-1]
            note = "" if r["nfev"][name] == nf else f", {r['nfev'][name]} calls"
            if name != "this tree":
                note += f", max diff {r['max_diff'][name]:.1e}"
            cells.append(f"{med[k] * 1e3:.1f} ms ({ov[k]:+.1%} / {r['overhead_wall'][k]:+.1%}{note})")
        lines.append(f"| {r['K']} ({r['n']}) | {r['case']} | {nf} | {med['rhs loop (direct)'] * 1e3:.1f} ms | "
                     f"{med['rhs loop (pointer)'] * 1e3:.1f} ms ({ov['rhs loop (pointer)']:+.1%} / "
                     f"{r['overhead_wall']['rhs loop (pointer)']:+.1%}) | "
                     + " | ".join(cells) + " |")
    names = list(res["alone"][0]["ns_per_element_step"])
    lines += ["", "The integrator alone, on `dy/dt = -c y` (a right-hand side that costs next to nothing) with the "
              "same state sizes, rtol 1e-9, to t = 1e3: CPU nanoseconds per state element per step (median)"
              + (f", and {names[-1]} / this tree" if len(names) > 1 else "") + ".", "",
              "| state size | time variable | steps | " + " | ".join(names) + (" | ratio |" if len(names) > 1 else ""),
              "|---|---|---|" + "---|" * len(names) + ("---|" if len(names) > 1 else "")]
    for r in res["alone"]:
        ns = r["ns_per_element_step"]
        lines.append(f"| {r['n']} | {'log' if r['log_time'] else 't'} | {r['steps']} | "
                     + " | ".join(f"{ns[k]:.2f} ns" for k in names)
                     + (f" | {r['speedup']:.2f}x{'' if r['same'] else ' (results differ)'} |" if len(names) > 1 else ""))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[16, 32, 64])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--before", metavar="REV", help="also time ufm/_integrate.py of this git revision")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)
    command = " ".join(["python benchmarks/bench_integrate.py"] + list(sys.argv[1:] if argv is None else argv))
    with tempfile.TemporaryDirectory() as tmp:
        before = None
        if args.before:
            subprocess.run(f"git -C {ROOT} archive {args.before} ufm/_integrate.py | tar -x -C {tmp}", shell=True,
                           check=True)
            spec = importlib.util.spec_from_file_location("_integrate_before", Path(tmp) / "ufm" / "_integrate.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod               # numba's cache finds a kernel's module by name
            spec.loader.exec_module(mod)
            before = (args.before, mod)
        res = measure(args.sizes, args.rounds, before)
    print(table(res, command))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
