"""``ufm.simulate``: gradient descent and gradient flow of UFM models, recorded over log-time.

The module is private (``ufm._simulate``) so that the function ``ufm.simulate``
is never shadowed by a submodule of the same name.

Models (see :mod:`ufm.problems`): :class:`UFMProblem` (CE, MSE, soft-label CE,
optional bias), :class:`AnchoredUFM` (M1, THEORY §8.1), :class:`InputCoupledUFM`
(M2, THEORY §8.2). The compiled kernels live in :mod:`ufm._kernels`; their
plain-numpy twins in :mod:`ufm.losses`.

Recording
---------
``record`` names what to keep at each recorded step; every name maps to one
function in :data:`RECORDERS` (add a quantity by adding one entry there):

* state: ``"W"``, ``"H"`` (features; ``A Phi`` for the input-coupled model),
  ``"A"``, ``"b"``, ``"Z"`` (logits);
* ``"loss"``: the full objective (halved weight decays, THEORY (0.1));
* Grams: ``"gram_H"`` (N x N ``H^T H``), ``"gram_means"`` (K x K ``M^T M`` of
  the uncentred class means), ``"gram_W"`` (``W W^T``);
* metrics of :mod:`ufm.metrics`: ``"nc1"`` (pinv variant), ``"nc1_trace_ratio"``,
  ``"cdnv"`` (mean over class pairs), ``"nc2"``, ``"nc2_classifier"``, ``"nc3"`` (Zhu form),
  ``"nc4"``, ``"etf_distance"`` (of the class-mean Gram, centred with P_K),
  ``"semantic_gap"`` (class-mean Gram, centred; needs ``attributes``),
  ``"effective_rank"`` (of the centred class-mean Gram);
* any ``{"name": fn}`` with ``fn(problem, state) -> array``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import losses
from ._checks import available_bytes, check_int
from .problems import AnchoredUFM, InputCoupledUFM, UFMProblem
from .results import Trajectory

__all__ = ["simulate", "RECORDERS", "record_grid"]


# -- what can be recorded -----------------------------------------------------------
def _labels(problem):
    return problem.y


def _class_mean_gram(problem, state):
    H = losses.features(problem, state)
    y = _labels(problem)
    counts = np.bincount(y, minlength=problem.K)
    M = np.zeros((H.shape[0], problem.K))
    np.add.at(M.T, y, H.T)
    M /= counts
    return M.T @ M


def _centred_mean_gram(problem, state):
    G = _class_mean_gram(problem, state)
    P = np.eye(problem.K) - 1.0 / problem.K
    return P @ G @ P


def _metric(name):
    from . import metrics

    return getattr(metrics, name)


@dataclass(frozen=True)
class Recorder:
    """How to compute one recorded quantity and how big it is (for the memory estimate)."""

    fn: Callable
    shape: Callable
    hard_labels: bool = False


RECORDERS: dict[str, Recorder] = {
    "loss": Recorder(lambda p, s: losses.state_objective(p, s), lambda p: ()),
    "W": Recorder(lambda p, s: s["W"], lambda p: (p.K, p.d)),
    "H": Recorder(lambda p, s: losses.features(p, s), lambda p: (p.d, p.N)),
    "A": Recorder(lambda p, s: s["A"], lambda p: (p.d, p.p)),
    "b": Recorder(lambda p, s: s["b"], lambda p: (p.K,)),
    "Z": Recorder(lambda p, s: losses.state_logits(p, s), lambda p: (p.K, p.N)),
    "gram_H": Recorder(lambda p, s: losses.features(p, s).T @ losses.features(p, s), lambda p: (p.N, p.N)),
    "gram_means": Recorder(_class_mean_gram, lambda p: (p.K, p.K), True),
    "gram_W": Recorder(lambda p, s: s["W"] @ s["W"].T, lambda p: (p.K, p.K)),
    "nc1": Recorder(lambda p, s: _metric("nc1")(losses.features(p, s), p.y, "pinv", K=p.K), lambda p: (), True),
    "nc1_trace_ratio": Recorder(lambda p, s: _metric("nc1")(losses.features(p, s), p.y, "trace_ratio", K=p.K),
                                lambda p: (), True),
    "cdnv": Recorder(lambda p, s: _metric("cdnv_mean")(losses.features(p, s), p.y, K=p.K), lambda p: (), True),
    "nc2": Recorder(lambda p, s: _metric("nc2")(losses.features(p, s), p.y, K=p.K), lambda p: (), True),
    "nc2_classifier": Recorder(lambda p, s: _metric("nc2_classifier")(s["W"]), lambda p: ()),
    "nc3": Recorder(lambda p, s: _metric("nc3")(s["W"], losses.features(p, s), p.y, "zhu", K=p.K),
                    lambda p: (), True),
    "nc4": Recorder(lambda p, s: _metric("nc4")(s["W"], losses.features(p, s), p.y, s.get("b"), K=p.K),
                    lambda p: (), True),
    "etf_distance": Recorder(lambda p, s: _metric("etf_distance")(_class_mean_gram(p, s), center=True),
                             lambda p: (), True),
    "effective_rank": Recorder(lambda p, s: _metric("effective_rank")(gram=_centred_mean_gram(p, s)),
                               lambda p: (), True),
}


def _semantic_gap(attributes):
    return Recorder(lambda p, s: _metric("semantic_gap")(_class_mean_gram(p, s), attributes, center=True),
                    lambda p: (), True)


# -- the recording grid ---------------------------------------------------------------
def record_grid(steps: int, n_records: int = 100, grid: str = "log") -> np.ndarray:
    """Recorded steps: 0, the last step, and ``n_records`` points spaced by ``grid``.

    ``"log"``: geometric spacing from step 1 to ``steps`` (rounded, duplicates
    removed, so small step counts give fewer points); ``"linear"``: even spacing.
    """
    steps = check_int("steps", steps, 1)
    n_records = check_int("n_records", n_records, 2)
    if grid == "log":
        pts = np.round(np.logspace(0, math.log10(steps), n_records - 1)).astype(np.int64)
    elif grid == "linear":
        pts = np.round(np.linspace(0, steps, n_records)).astype(np.int64)
    else:
        raise ValueError(f"grid must be 'log' or 'linear', got {grid!r}.")
    return np.unique(np.concatenate([[0], pts, [steps]]))


# -- models: blocks, kernels ----------------------------------------------------------
def _model_name(problem) -> str:
    if isinstance(problem, InputCoupledUFM):
        return "input_coupled"
    if isinstance(problem, AnchoredUFM):
        return "anchored"
    if isinstance(problem, UFMProblem):
        return "ufm"
    raise ValueError(f"problem must be a UFMProblem, AnchoredUFM or InputCoupledUFM, got {type(problem).__name__}.")


def _has_weight_decay(problem) -> bool:
    if isinstance(problem, InputCoupledUFM):
        return problem.lam_W > 0 or problem.lam_A > 0
    return problem.lam_W > 0 or problem.lam_H > 0 or problem.lam_b > 0 or getattr(problem, "beta", 0.0) > 0


def _initial_states(problem, seeds, seed, init_scale, given, dtype):
    """One state per seed: small Gaussian blocks (bias 0), or the user's arrays."""
    shapes = losses.blocks(problem)
    children = np.random.SeedSequence(seed).spawn(seeds)
    batch = {}
    for name, shape in shapes.items():
        arr = np.empty((seeds,) + shape, dtype=np.float64)
        value = given.get(name)
        if value is not None:
            v = np.asarray(value, dtype=np.float64)
            if v.shape == shape:
                arr[:] = v
            elif v.shape == (seeds,) + shape:
                arr[:] = v
            else:
                raise ValueError(f"{name}0 must have shape {shape} (all seeds) or {(seeds,) + shape} (per seed), "
                                 f"got {v.shape}.")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}0 contains NaN or inf.")
        batch[name] = arr
    for i, child in enumerate(children):
        rng = np.random.default_rng(child)
        for name, shape in shapes.items():
            draw = np.zeros(shape) if name == "b" else init_scale * rng.standard_normal(shape)
            if given.get(name) is None:
                batch[name][i] = draw
    return {name: np.ascontiguousarray(arr, dtype=dtype) for name, arr in batch.items()}


def _seed_state(batch, i):
    return {name: np.asarray(arr[i], dtype=np.float64) for name, arr in batch.items()}


class _GD:
    """Runs chunks of plain gradient descent on a batch of seeds with the compiled kernels."""

    def __init__(self, problem, batch, lr, dtype):
        from . import _kernels as k

        self.k, self.problem, self.batch, self.lr = k, problem, batch, float(lr)
        self.Y = np.ascontiguousarray(problem.Y, dtype=dtype)
        self.loss_id = k.LOSS_IDS[problem.loss]
        if isinstance(problem, InputCoupledUFM):
            self.Phi = np.ascontiguousarray(problem.Phi, dtype=dtype)
        else:
            anchored = isinstance(problem, AnchoredUFM) and problem.beta > 0
            self.Hanc = np.ascontiguousarray(problem.H_anchor if anchored else np.zeros((1, 1)), dtype=dtype)
            self.beta = problem.beta if anchored else 0.0
            if "b" not in batch:
                batch["b"] = np.zeros((batch["W"].shape[0], problem.K), dtype=dtype)
                self._drop_b = True
            else:
                self._drop_b = False

    def run(self, n_steps: int) -> np.ndarray:
        p, b, k = self.problem, self.batch, self.k
        if isinstance(p, InputCoupledUFM):
            return k.icm_gd(b["W"], b["A"], self.Phi, self.Y, p.lam_W, p.lam_A, self.loss_id, self.lr, n_steps)
        return k.ufm_gd(b["W"], b["H"], b["b"], self.Y, self.Hanc, p.lam_W, p.lam_H, p.lam_b, self.beta,
                        self.loss_id, p.bias, self.lr, n_steps)

    def states(self):
        batch = dict(self.batch)
        if not isinstance(self.problem, InputCoupledUFM) and self._drop_b:
            batch.pop("b")
        return batch


def _flow_rhs_and_data(problem):
    from . import _kernels as k

    Y = np.ascontiguousarray(problem.Y, dtype=np.float64)
    loss_id = k.LOSS_IDS[problem.loss]
    if isinstance(problem, InputCoupledUFM):
        data = (problem.K, problem.d, problem.p, np.ascontiguousarray(problem.Phi), Y,
                float(problem.lam_W), float(problem.lam_A), loss_id)
        return k.icm_flow_rhs, data
    anchored = isinstance(problem, AnchoredUFM) and problem.beta > 0
    Hanc = np.ascontiguousarray(problem.H_anchor if anchored else np.zeros((1, 1)), dtype=np.float64)
    data = (problem.K, problem.d, problem.N, Y, Hanc, float(problem.lam_W), float(problem.lam_H),
            float(problem.lam_b), float(problem.beta if anchored else 0.0), loss_id, bool(problem.bias))
    return k.ufm_flow_rhs, data


def _flatten(state, names):
    return np.concatenate([np.asarray(state[n], dtype=np.float64).ravel() for n in names])


def _unflatten(y, shapes):
    out, i = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = y[i:i + size].reshape(shape)
        i += size
    return out


# -- progress -----------------------------------------------------------------------
class _Progress:
    def __init__(self, enabled, total, desc):
        self.bar = None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
            except ImportError:
                self.total, self.desc, self.last = total, desc, -1

    def update(self, done):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        else:
            pct = int(100 * done / max(self.total, 1))
            if pct >= self.last + 10 or done == self.total:
                print(f"{self.desc}: {done}/{self.total} ({pct}%)", file=sys.stderr, flush=True)
                self.last = pct

    def close(self):
        if self.bar is not None:
            self.bar.close()


# -- memory ------------------------------------------------------------------------
def _available_bytes() -> int:
    free = available_bytes()
    return 1 << 34 if free is None else free   # unknown platform: assume 16 GiB


def _check_memory(recorders, problem, seeds, n_times):
    sizes = {name: 8 * seeds * n_times * int(np.prod(r.shape(problem))) for name, r in recorders.items()}
    total = sum(sizes.values())
    budget = _available_bytes() // 2
    if total > budget:
        big = sorted(sizes, key=sizes.get, reverse=True)[:2]
        raise ValueError(
            f"recording {sorted(recorders)} for {seeds} seeds at {n_times} steps needs about "
            f"{total / 2**30:.2f} GiB, more than half the free memory ({budget / 2**30:.2f} GiB). "
            f"The largest records are {big}; record Grams ('gram_means', K x K) or scalar metrics instead of "
            f"full matrices, or lower n_records / seeds."
        )
    return total


# -- the entry point -----------------------------------------------------------------
def simulate(problem, steps: int, lr: float | None = None, *, mode: str = "gd", init_scale: float = 1e-3,
             seed: int = 0, seeds: int = 1, record=("loss",), n_records: int = 100, grid: str = "log",
             record_steps=None, W0=None, H0=None, A0=None, b0=None, attributes=None, dtype=np.float64,
             progress: bool = False, time_variable: str = "auto", rtol: float = 1e-8, atol: float = 1e-10,
             max_steps: int = 10**6) -> Trajectory:
    """Simulate gradient descent or gradient flow of a UFM model and record it over (log-)time.

    Parameters
    ----------
    problem : UFMProblem, AnchoredUFM or InputCoupledUFM
        The model and its objective (halved weight decays, THEORY §0.1).
    steps : int
        Number of GD steps. In flow mode the horizon is ``t = steps * lr``.
    lr : float
        Step size of GD; in flow mode the time unit, so that ``times = steps * lr``
        in both modes (GD with step ``lr`` approximates the flow at ``t = k lr``).
    mode : {"gd", "flow"}
        ``"gd"``: plain GD with constant step, run by compiled kernels (its own
        dynamics, not the flow). ``"flow"``: the gradient-flow ODE integrated by an
        adaptive Dormand-Prince 5(4) method to tolerance ``rtol``/``atol``.
    init_scale : float
        Standard deviation of the Gaussian initialization of every block but the
        bias (initialized at 0).
    seed, seeds : int
        ``seeds`` independent runs; run ``i`` draws its initialization from child
        ``i`` of ``np.random.SeedSequence(seed)``, so a run does not depend on how
        many others there are. GD runs the seeds in parallel (numba ``prange``),
        with results identical whatever the thread count.
    record : sequence of str or dict
        What to keep at each recorded step (see the module docstring and
        :data:`RECORDERS`); a dict maps extra names to ``fn(problem, state)``.
    n_records, grid, record_steps :
        Recorded steps: ``record_grid(steps, n_records, grid)`` (log-spaced by
        default, always with 0 and ``steps``), or explicit ``record_steps``.
    W0, H0, A0, b0 : array, optional
        Initial blocks, one array for every seed or one per seed (leading axis).
    attributes : (K, F) int array, optional
        Latent attributes of the classes, for ``"semantic_gap"``; defaults to
        ``problem.attributes`` when the problem has them.
    dtype : float64 or float32
        Arithmetic precision of the kernels (records are float64).
    progress : bool
        Show a progress bar (tqdm when installed, else lines on stderr), updated
        between kernel chunks.
    time_variable : {"auto", "t", "log"}
        Flow mode only. ``"log"`` integrates in ``s = log(1 + t)``, which makes log-time
        horizons cheap when nothing damps the dynamics (CE without weight decay
        converges like log t, THEORY §6.5); ``"t"`` integrates in plain time, which
        is better with weight decay (log-time makes that stiff). ``"auto"`` picks
        ``"log"`` exactly when the problem has no weight decay and no anchor.
    rtol, atol, max_steps :
        Flow mode: integrator tolerances and budget of step attempts per seed (6 evaluations each).

    Returns
    -------
    Trajectory
        ``steps``, ``times``, ``records`` (each ``(seeds, T, ...)``), ``status``
        (``"completed"``, ``"interrupted"`` after Ctrl-C, ``"nonfinite"``, ``"max_steps"``),
        ``message``, ``mode`` and ``meta`` (``meta["time_variable"]`` in flow mode).
        Whatever was recorded before an interruption or overflow is kept.

    References
    ----------
    THEORY.md §4 (gradients), §6 (dynamics), §8.1-8.2 (anchored and input-coupled models).
    """
    model = _model_name(problem)
    steps = check_int("steps", steps, 1)
    seeds = check_int("seeds", seeds, 1)
    if lr is None:
        raise ValueError("lr is required: the GD step size (in flow mode, the time unit: horizon = steps * lr).")
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr}.")
    if mode not in ("gd", "flow"):
        raise ValueError(f"mode must be 'gd' or 'flow', got {mode!r}.")
    init_scale = float(init_scale)
    if not (math.isfinite(init_scale) and init_scale >= 0):
        raise ValueError(f"init_scale must be finite and >= 0, got {init_scale}.")
    dtype = np.dtype(dtype)
    if dtype not in (np.float64, np.float32):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}.")
    if mode == "flow" and dtype != np.float64:
        raise ValueError("flow mode integrates in float64 only; drop dtype or use mode='gd'.")

    if record_steps is None:
        grid_steps = record_grid(steps, n_records, grid)
    else:
        grid_steps = np.unique(np.asarray(record_steps, dtype=np.int64))
        if grid_steps.size == 0 or grid_steps[0] < 0 or grid_steps[-1] > steps:
            raise ValueError(f"record_steps must lie in [0, steps={steps}].")
        grid_steps = np.unique(np.concatenate([[0], grid_steps, [steps]]))

    recorders = _resolve_recorders(problem, record, attributes)
    _check_memory(recorders, problem, seeds, len(grid_steps))

    given = {"W": W0, "H": H0, "A": A0, "b": b0}
    allowed = set(losses.blocks(problem))
    for name, value in given.items():
        if value is not None and name not in allowed:
            raise ValueError(f"{name}0 was given but a {model} model has no block {name!r} (blocks: {sorted(allowed)}).")
    batch = _initial_states(problem, seeds, seed, init_scale, given, dtype)

    meta = {"problem": problem.as_dict(), "model": model, "lr": lr, "steps_requested": steps, "seed": seed,
            "seeds": seeds, "init_scale": init_scale, "dtype": dtype.name, "grid": grid if record_steps is None
            else "explicit", "record": sorted(recorders)}
    rec = {name: [] for name in recorders}
    warnings = []

    def keep(states):
        """Record every quantity at one step; all or nothing, so records stay aligned."""
        row = {}
        for name, r in recorders.items():
            per_seed = []
            for i in range(next(iter(states.values())).shape[0]):
                st = _seed_state(states, i)
                try:
                    per_seed.append(np.asarray(r.fn(problem, st), dtype=np.float64))
                except ValueError as err:   # a metric undefined at this state (e.g. coincident class means)
                    per_seed.append(np.full(r.shape(problem), np.nan))
                    if len(warnings) < 20:
                        warnings.append(f"{name} undefined at a recorded step: {err}")
            row[name] = np.stack(per_seed)
        for name, value in row.items():
            rec[name].append(value)

    if mode == "gd":
        status, message, kept = _run_gd(problem, batch, lr, dtype, grid_steps, keep, progress)
    else:
        status, message, kept, info = _run_flow(problem, batch, lr, grid_steps, keep, progress, time_variable,
                                                rtol, atol, max_steps)
        meta.update(info)
    if warnings:
        meta["warnings"] = warnings
    done = grid_steps[:kept]
    records = {name: np.stack(vals, axis=1) if vals else np.zeros((seeds, 0)) for name, vals in rec.items()}
    return Trajectory(steps=done, times=done * lr, records=records, status=status, message=message, mode=mode,
                      meta=meta, citation="THEORY §4, §6, §8; ufm.simulate")


def _resolve_recorders(problem, record, attributes):
    if isinstance(record, str):
        record = (record,)
    extra = {}
    if isinstance(record, dict):
        extra = dict(record)
        names = []
    else:
        names = list(record)
    if attributes is None:
        attributes = getattr(problem, "attributes", None)
    out = {}
    for name in names:
        if name == "semantic_gap":
            if attributes is None:
                raise ValueError("recording 'semantic_gap' needs attributes=(K x F table) or a problem built "
                                 "with attributes (InputCoupledUFM.from_setting).")
            out[name] = _semantic_gap(np.asarray(attributes))
        elif name in RECORDERS:
            out[name] = RECORDERS[name]
        else:
            raise ValueError(f"cannot record {name!r}; known names: {sorted(RECORDERS) + ['semantic_gap']}, "
                             "or pass {name: fn(problem, state)}.")
        blocks = losses.blocks(problem)
        if name in ("A", "b") and name not in blocks:
            raise ValueError(f"cannot record {name!r}: this model has no block {name!r} (blocks: {sorted(blocks)}).")
        if out[name].hard_labels and getattr(problem, "soft", False):
            raise ValueError(f"{name!r} needs hard labels (class means); this problem has soft labels.")
    for name, fn in extra.items():
        if not callable(fn):
            raise ValueError(f"record[{name!r}] must be a function fn(problem, state), got {type(fn).__name__}.")
        shape = np.shape(fn(problem, {k: np.zeros(s) for k, s in losses.blocks(problem).items()}))
        out[name] = Recorder(fn, lambda p, shape=shape: shape)
    if not out:
        raise ValueError("record is empty; name at least one quantity, e.g. record=('loss',).")
    return out


def _run_gd(problem, batch, lr, dtype, grid_steps, keep, progress):
    gd = _GD(problem, batch, lr, dtype)
    bar = _Progress(progress, int(grid_steps[-1]), "ufm.simulate (gd)")
    kept, current = 0, 0
    status, message = "completed", f"ran {int(grid_steps[-1])} GD steps."
    try:
        _limit_blas()
        for target in grid_steps:
            if target > current:
                last = gd.run(int(target - current))
                if not np.all(np.isfinite(last)) or not all(np.all(np.isfinite(a)) for a in gd.batch.values()):
                    bad = np.flatnonzero(~np.isfinite(last)).tolist()
                    status = "nonfinite"
                    message = (f"the state became non-finite between steps {current} and {int(target)} "
                               f"(seeds {bad or 'some'}); lower lr. Records up to step {current} are kept.")
                    break
                current = int(target)
            keep(gd.states())
            kept += 1
            bar.update(current)
    except KeyboardInterrupt:
        status, message = "interrupted", f"interrupted at step {current}; {kept} records kept."
    finally:
        bar.close()
    return status, message, kept


def _limit_blas():
    """Large products inside the kernels call BLAS; keep it to one thread per numba thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a core dependency
        return
    threadpool_limits(1)


def _run_flow(problem, batch, lr, grid_steps, keep, progress, time_variable, rtol, atol, max_steps):
    from ._integrate import integrate

    if time_variable == "auto":
        time_variable = "t" if _has_weight_decay(problem) else "log"
    if time_variable not in ("t", "log"):
        raise ValueError(f"time_variable must be 'auto', 't' or 'log', got {time_variable!r}.")
    rhs, data = _flow_rhs_and_data(problem)
    shapes = losses.blocks(problem)
    names = list(shapes)
    t_eval = grid_steps.astype(np.float64) * lr
    seeds = batch["W"].shape[0]
    paths, nfev, statuses, messages = [], [], [], []
    bar = _Progress(progress, seeds, "ufm.simulate (flow, seeds)")
    interrupted = False
    try:
        for i in range(seeds):
            y0 = _flatten(_seed_state(batch, i), names)
            res = integrate(rhs, y0, data, t_eval, rtol=rtol, atol=atol, log_time=(time_variable == "log"),
                            max_steps=max_steps)
            paths.append(res)
            nfev.append(int(res.nfev))
            statuses.append(int(res.status))
            messages.append(res.message)
            bar.update(i + 1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    n_ok = min((r.n_ok for r in paths), default=0)
    for j in range(n_ok):      # seeds not integrated (after Ctrl-C) are left out, never half-kept
        keep({name: np.stack([_unflatten(r.y[j], shapes)[name] for r in paths]) for name in names})
    info = {"time_variable": "log(1+t)" if time_variable == "log" else "t", "integrator": "dopri5",
            "rtol": rtol, "atol": atol, "nfev": nfev}
    if interrupted:
        return "interrupted", f"interrupted after {len(paths)} of {seeds} seeds; those seeds are kept.", n_ok, info
    worst = max(statuses) if statuses else 0
    if worst == 0:
        return "completed", f"integrated the gradient flow to t = {t_eval[-1]:g} ({sum(nfev)} evaluations).", \
            n_ok, info
    status = {1: "max_steps", 2: "nonfinite", 3: "nonfinite"}.get(worst, "nonfinite")
    return status, f"flow stopped early: {messages[statuses.index(worst)]} Records up to t = " \
                   f"{t_eval[n_ok - 1] if n_ok else 0:g} are kept.", n_ok, info
