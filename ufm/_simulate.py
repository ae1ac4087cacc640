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
* ``"objective"``: the value of the full objective (the loss plus the halved
  weight decays, THEORY (0.1));
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
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import losses
from . import _interrupt, _memory, _threads, metrics
from ._checks import ArgumentTypeError, check_attributes, check_bool, check_int
from ._progress import Progress, check_progress
from .metrics import double_centre
from .results import Status, Trajectory

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
    return double_centre(_class_mean_gram(problem, state))


def _metric(name):
    return getattr(metrics, name)


@dataclass(frozen=True)
class Recorder:
    """How to compute one recorded quantity and how big it is (for the memory estimate)."""

    fn: Callable
    shape: Callable
    hard_labels: bool = False


RECORDERS: dict[str, Recorder] = {
    "objective": Recorder(lambda p, s: losses.state_objective(p, s), lambda p: ()),
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
def _sorted_unique(a) -> np.ndarray:
    """``np.unique`` of an int64 array by sorting (numpy's hash-based unique took 7 ms for 20 000 steps)."""
    a = np.sort(np.asarray(a, dtype=np.int64))
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if a.size else a


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
    return _sorted_unique(np.concatenate([[0], pts, [steps]]))


# -- models: blocks, kernels ----------------------------------------------------------
def _model_name(problem) -> str:
    """The model's name; input validation: only models with compiled kernels can be simulated."""
    if not callable(getattr(problem, "kernel_binding", None)):
        raise ValueError(f"problem must be a UFMProblem, AnchoredUFM or InputCoupledUFM, got {type(problem).__name__}.")
    return problem.model


def initial_states(problem, seeds, seed, init_scale, given, dtype):
    """One state per seed: small Gaussian blocks (bias 0), or the user's arrays.

    Seed ``i`` draws from child ``i`` of ``SeedSequence(seed)`` (``spawn_key=(i,)``, what
    ``SeedSequence(seed).spawn`` gives), made one at a time; ``seed`` is an int or the root
    ``SeedSequence`` itself. Arrays are written in ``dtype``.
    """
    shapes = losses.blocks(problem)
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    batch = {}
    for name, shape in shapes.items():
        arr = np.empty((seeds,) + shape, dtype=dtype)
        value = given.get(name)
        if value is not None:
            v = np.asarray(value, dtype=np.float64)
            if v.shape != shape and v.shape != (seeds,) + shape:
                raise ValueError(f"{name}0 must have shape {shape} (all seeds) or {(seeds,) + shape} (per seed), "
                                 f"got {v.shape}.")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{name}0 contains NaN or inf.")
            arr[:] = v
        batch[name] = arr
    drawn = [name for name in shapes if given.get(name) is None]
    for i in range(seeds if drawn else 0):
        if i % 4096 == 4095 and _interrupt.requested():
            raise KeyboardInterrupt
        rng = np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=root.spawn_key + (i,),
                                                           pool_size=root.pool_size))
        for name in shapes:
            draw = np.zeros(shapes[name]) if name == "b" else init_scale * rng.standard_normal(shapes[name])
            if name in drawn:
                batch[name][i] = draw
    return batch


def _start_kind(init_scale, given, blocks) -> str:
    """What ``meta["start"]`` says of the start: ``"gaussian"`` (every weight block drawn), ``"zero"`` or
    ``"given: W0, A0"`` (the blocks the caller passed); the bias is not a weight block."""
    passed = [f"{n}0" for n in sorted(blocks) if n != "b" and given.get(n) is not None]
    if passed:
        return "given: " + ", ".join(passed)
    return "gaussian" if init_scale > 0 else "zero"


def _stationary_start(problem, batch, init_scale, given):
    """Seeds whose start is an exact stationary point of the features (gradient of W and H/A exactly 0)."""
    if init_scale > 0 and all(given.get(n) is None for n in ("W", "H", "A")):
        return []        # a Gaussian start is never exactly stationary
    bad = []
    seeds = batch["W"].shape[0]
    for i in range(seeds):
        g = losses.state_gradients(problem, _seed_state(batch, i))
        if all(not np.any(g[n]) for n in g if n != "b"):
            bad.append(i)
        if i == 63 and len(bad) == 64:       # the same start everywhere: no need to look further
            return list(range(seeds))
    return bad


def _seed_state(batch, i):
    return {name: np.asarray(arr[i], dtype=np.float64) for name, arr in batch.items()}


class _GD:
    """Runs chunks of plain gradient descent on a batch of seeds with the model's compiled kernels."""

    def __init__(self, problem, batch, lr, dtype):
        self.batch, self.lr = batch, float(lr)
        Y = np.ascontiguousarray(problem.loss.targets(problem.Y), dtype=dtype)
        self.kernels = problem.kernel_binding(Y, _kernel_id(problem), dtype)
        self.kernels.prepare(batch)

    def run(self, n_steps: int, recording=None) -> np.ndarray:
        return self.kernels.gd(self.batch, self.lr, n_steps, recording)

    def states(self):
        return self.kernels.states(self.batch)


class _NumpyGD:
    """GD in NumPy for a loss without a compiled kernel (``loss.kernel_id is None``).

    Each seed in turn takes the model's own gradients (:mod:`ufm.losses`, the kernels' reference);
    every quantity is recorded in Python. Much slower than the kernels; ``meta["loss_kernel"]``
    and the progress line say that this path ran.
    """

    def __init__(self, problem, batch, lr):
        self.problem, self.batch, self.lr = problem, batch, float(lr)

    def run(self, n_steps: int, recording=None) -> np.ndarray:
        last = np.empty(self.batch["W"].shape[0])
        for i in range(last.size):
            state = _seed_state(self.batch, i)
            with np.errstate(over="ignore", invalid="ignore"):
                for _ in range(n_steps):
                    grads = self.problem.gradients(state)
                    state = {name: v - self.lr * grads[name] for name, v in state.items()}
                last[i] = self.problem.objective(state)
            for name, v in state.items():
                self.batch[name][i] = v
        return last

    def states(self):
        return dict(self.batch)


def _kernel_id(problem, mode: str = "gd") -> int | None:
    """The compiled loss that evaluates ``problem.loss`` on its targets (the loss object says which).

    ``None`` (GD only): no compiled kernel; :class:`_NumpyGD` runs instead.
    """
    if problem.loss.kernel_id is None and mode != "gd":
        raise ValueError(f"loss {problem.loss} has no compiled kernel (its kernel_id is None): the flow needs one; "
                         "use mode='gd' (a NumPy path) or give the loss a kernel_id (see ufm.losses.Loss).")
    return problem.loss.kernel_id


def _kernel_name(problem) -> str:
    """How the compiled kernel evaluates the loss, for ``meta``: its id and the targets it is given."""
    if problem.loss.kernel_id is None:
        return f"NumPy fallback (no compiled kernel for {problem.loss})"
    same = problem.loss.targets(problem.Y) is problem.Y
    return f"kernel loss id {problem.loss.kernel_id} on {'the labels' if same else str(problem.loss) + ' targets'}"


def _flow_rhs_and_data(problem):
    Y = np.ascontiguousarray(problem.loss.targets(problem.Y), dtype=np.float64)
    return problem.kernel_binding(Y, _kernel_id(problem, "flow"), np.float64).flow()


def _flatten(state, names):
    return np.concatenate([np.asarray(state[n], dtype=np.float64).ravel() for n in names])


def _unflatten(y, shapes):
    out, i = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = y[i:i + size].reshape(shape)
        i += size
    return out


# -- memory ------------------------------------------------------------------------
def _available_bytes() -> "_memory.Limit | int":
    """The memory the guard divides (the tightest limit of this process); a function so tests can pretend the
    machine is small."""
    return _memory.available()


def memory_estimate(problem, recorders, seeds: int, n_times: int, mode: str = "gd", dtype=np.float64,
                    threads: int | None = None) -> dict:
    """Bytes ``ufm.simulate`` holds at its peak, by part (the guard of ``ufm._memory``).

    Parts: ``records`` (one float64 array ``(seeds, T, ...)`` per recorded quantity, filled
    in place and handed to the Trajectory without a copy), ``state`` (every seed's blocks),
    ``workspace`` (the kernels' buffers: per running seed for GD, the integrator's stages
    and the velocity's products for the flow), ``recording`` (the largest temporary of
    one recorded quantity at one seed: features, Grams) and ``seeding`` (the Gaussian
    draw of the largest block, made before the records exist: counted only above them).
    """
    shapes = losses.blocks(problem)
    K, N = problem.K, problem.N
    d = shapes["W"][1]
    item = np.dtype(dtype).itemsize
    n_state = sum(int(np.prod(sh)) for sh in shapes.values())
    parts = {"records": 8 * seeds * n_times * sum(int(np.prod(r.shape(problem))) for r in recorders.values())}
    parts["state"] = item * seeds * n_state
    own = problem.kernel_workspace(mode)      # the model's own buffers (H^T, A Phi, ...)
    if mode == "gd":
        if threads is None:
            threads = _threads.seed_threads()
        running = max(1, min(seeds, int(threads)))
        per = 2 * K * N + K * d + 3 * N + own["kernel"]
        parts["workspace"] = item * running * per
    else:
        # per seed, the integrator's state and FSAL derivative (made while the start is still held);
        # one seed's 8 stage buffers, the velocity's products and one recorded row
        parts["state"] += 2 * 8 * seeds * n_state
        parts["workspace"] = 8 * (9 * n_state + 2 * K * N + own["kernel"])
    feat = own["features"]                    # features computed afresh (A Phi, twice for gram_H); H is a view
    parts["recording"] = 8 * max((feat + int(np.prod(r.shape(problem))) for r in recorders.values()), default=0)
    # the start is drawn before the records exist: its temporaries count only where they exceed the rest
    rest = parts["records"] + parts["workspace"] + parts["recording"]
    parts["seeding"] = max(0, 16 * max(int(np.prod(sh)) for sh in shapes.values()) - rest)
    return parts


# -- the entry point -----------------------------------------------------------------
def simulate(problem, steps: int | None = None, lr: float | None = None, *, horizon: float | None = None,
             mode: str = "gd", init_scale: float = 1e-3,
             seed: int = 0, seeds: int = 1, record=("objective",), n_records: int = 100, grid: str = "log",
             record_steps=None, W0=None, H0=None, A0=None, b0=None, attributes=None, dtype=np.float64,
             progress="auto", time_variable: str = "auto", rtol: float = 1e-8, atol: float = 1e-10,
             max_steps: int = 10**6, on_interrupt: str = "raise", throw: bool = False) -> Trajectory:
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
    horizon : float, optional
        The end time ``steps * lr``, the name every ``ufm`` function gives it. Give two
        of ``steps``, ``lr`` and ``horizon`` (``horizon`` must then be a whole number of
        steps); in flow mode ``horizon`` alone is enough: the time unit is then
        ``lr = horizon / 2**20`` (recorded times are multiples of it).
    mode : {"gd", "flow"}
        ``"gd"``: plain GD with constant step, run by compiled kernels (its own
        dynamics, not the flow). ``"flow"``: the gradient-flow ODE integrated by an
        adaptive Dormand-Prince 5(4) method to tolerance ``rtol``/``atol``.
    init_scale : float
        Standard deviation of the Gaussian initialization of every block but the
        bias (initialized at 0). ``0`` puts the features at an exact stationary point
        (a saddle of the objective), which GD and the flow never leave: refused unless
        ``W0``/``H0``/``A0`` give a start that can move.
    seed : int, SeedSequence, Generator or None
        Where the initializations come from: an integer ``>= 0`` (recorded in
        ``meta["seed"]``), a ``np.random.SeedSequence`` (the root itself), a
        ``np.random.Generator`` (a child of its bit generator's ``SeedSequence`` is
        spawned, so two calls with one Generator differ) or ``None`` (fresh entropy).
        For the last three, ``meta["seed"]`` is ``{"entropy", "spawn_key"}`` and
        ``seed=np.random.SeedSequence(**meta["seed"])`` repeats the run. Anything else
        (a string, a float, a bool, a negative integer) is refused.
    seeds : int
        ``seeds`` independent runs; run ``i`` draws its initialization from child
        ``i`` of the root ``SeedSequence``, so a run does not depend on how
        many others there are. GD runs the seeds in blocks on up to
        ``ufm._threads.seed_threads()`` threads (``numba.get_num_threads()``, capped by
        ``NUMBA_NUM_THREADS``/``OMP_NUM_THREADS``, the usable CPUs and cgroup quota, and
        one thread inside a pytest-xdist, Dask or process-pool worker), with results
        identical whatever the thread count. BLAS runs on one thread during the call;
        the caller's BLAS threads are restored when it returns.
    record : sequence of str or dict
        What to keep at each recorded step (see the module docstring and
        :data:`RECORDERS`); a dict maps extra names to ``fn(problem, state)``.
    n_records, grid, record_steps :
        Recorded steps: ``record_grid(steps, n_records, grid)`` (log-spaced by
        default, always with 0 and ``steps``), or explicit ``record_steps``: step
        numbers in ``[0, steps]``, integers or whole floats (``10.0``); a fractional
        step such as ``1.5`` is refused, never rounded.
    W0, H0, A0, b0 : array, optional
        Initial blocks, one array for every seed or one per seed (leading axis).
    attributes : (K, F) int array, optional
        Latent attributes of the classes, for ``"semantic_gap"``; defaults to
        ``problem.attributes`` when the problem has them. Checked when given, whatever
        is recorded: one row per class, integer levels (whole floats allowed), no NaN.
    dtype : float64 or float32
        Arithmetic precision of the kernels (records are float64).
    progress : {"auto", True, False}
        A progress display (tqdm when installed, else lines on stderr; never stdout),
        updated between kernel chunks:
        ``"auto"`` (default) once the work has run 2 s, ``True`` from the start,
        ``False`` never. Every ``ufm`` entry point takes the same values.
    time_variable : {"auto", "t", "log"}
        Flow mode only. ``"log"`` integrates in ``s = log(1 + t)``, which makes log-time
        horizons cheap when nothing damps the dynamics (CE without weight decay
        converges like log t, THEORY §6.5); ``"t"`` integrates in plain time, which
        is better with weight decay (log-time makes that stiff). ``"auto"`` picks
        ``"log"`` exactly when the problem has no weight decay and no anchor.
    rtol, atol, max_steps :
        Flow mode: integrator tolerances and budget of step attempts per seed (6 evaluations each).
    on_interrupt : {"raise", "return"}
        What Ctrl-C (SIGINT) does. The kernels run in chunks of at most a few tenths of a
        second, so the run stops within about a second, between chunks, and every record
        made so far is kept in a Trajectory with status ``interrupted``. ``"raise"``
        (default): ``KeyboardInterrupt`` is raised with that Trajectory in its ``result``
        attribute, so a script stops where the user pressed Ctrl-C (``except
        KeyboardInterrupt as err: err.result`` keeps it); ``"return"``: the Trajectory is
        returned and the caller goes on.
    throw : bool
        ``True`` or ``False`` (a numpy bool too; a string such as ``"yes"`` is refused).
        Raise :class:`~ufm.results.NotConverged` (with the Trajectory in ``err.result``)
        instead of returning a run that diverged or ran out of integrator steps
        (an interruption follows ``on_interrupt``).

    Returns
    -------
    Trajectory
        ``steps``, ``times``, ``records`` (each ``(seeds, T, ...)``), ``success``,
        ``status`` (a :class:`~ufm.results.Status`: ``completed``, ``interrupted`` after Ctrl-C,
        ``nonfinite``, ``max_steps``), ``message``, ``mode`` and ``meta`` (``meta["time_variable"]`` in flow mode,
        ``meta["memory_estimate"]`` the peak bytes by part). Whatever was recorded before
        an interruption or overflow is kept, for every seed, up to the last step all seeds
        reached.

    Raises
    ------
    ValueError
        Bad arguments, a stationary start, or a run whose estimated peak memory
        (:func:`memory_estimate`: records, state, kernel buffers, temporaries) exceeds half
        the memory this process may use (:mod:`ufm._memory`: the available memory, the cgroup
        limit, ``ulimit -v``); all checked before anything large is allocated.
    KeyboardInterrupt
        After Ctrl-C with ``on_interrupt="raise"``; its ``result`` holds the Trajectory.
    NotConverged
        With ``throw=True``, for a run that diverged or ran out of integrator steps.

    References
    ----------
    THEORY.md §4 (gradients), §6 (dynamics), §8.1-8.2 (anchored and input-coupled models).
    """
    with _interrupt.protected("simulate", on_interrupt) as call:     # from the first check to the return
        return _simulate(call, problem, steps, lr, horizon, mode, init_scale, seed, seeds, record, n_records, grid,
                         record_steps, W0, H0, A0, b0, attributes, dtype, progress, time_variable, rtol, atol,
                         max_steps, on_interrupt, throw)


def _simulate(call, problem, steps, lr, horizon, mode, init_scale, seed, seeds, record, n_records, grid,
              record_steps, W0, H0, A0, b0, attributes, dtype, progress, time_variable, rtol, atol, max_steps,
              on_interrupt, throw) -> Trajectory:
    """:func:`simulate` in its protected region ``call`` (``_interrupt.STAGES["simulate"]``)."""
    call.stage("checks")
    model = _model_name(problem)
    check_progress(progress)
    _kernel_id(problem, mode)
    steps, lr = _steps_and_lr(mode, steps, lr, horizon)
    a = check_arguments(steps=steps, lr=lr, mode=mode, init_scale=init_scale, seeds=seeds, dtype=dtype,
                        time_variable=time_variable, n_records=n_records, grid=grid, rtol=rtol, atol=atol,
                        max_steps=max_steps, on_interrupt=on_interrupt, throw=throw, record_steps=record_steps)
    steps, lr, init_scale, seeds, dtype = a["steps"], a["lr"], a["init_scale"], a["seeds"], a["dtype"]
    root, seed_meta = _seed_root(seed)

    if record_steps is None:
        grid_steps = record_grid(steps, n_records, grid)
    else:
        grid_steps = _sorted_unique(np.concatenate([[0], a["record_steps"], [steps]]))

    recorders = _resolve_recorders(problem, record, attributes)
    parts = memory_estimate(problem, recorders, seeds, len(grid_steps), mode, dtype)
    if sum(parts.values()) > _memory.budget(_available_bytes()):
        big = max(parts, key=parts.get)
        fix = {"records": f"record Grams ('gram_means', K x K) or scalar metrics instead of full matrices "
                          f"(largest: {max(recorders, key=lambda n: np.prod(recorders[n].shape(problem)))!r}), "
                          f"or lower n_records (now {len(grid_steps)} records) or seeds (now {seeds})",
               "state": f"lower seeds (now {seeds}) or the problem size",
               "workspace": "use a smaller problem (K, N, d) or fewer numba threads",
               "recording": "record Grams or scalar metrics instead of N x N or d x N quantities",
               "seeding": "use a smaller problem"}[big]
        _memory.check(parts, "ufm.simulate", f"To fit: {fix}.", free=_available_bytes())

    given = {"W": W0, "H": H0, "A": A0, "b": b0}
    allowed = set(losses.blocks(problem))
    for name, value in given.items():
        if value is not None and name not in allowed:
            raise ValueError(f"{name}0 was given but a {model} model has no block {name!r} (blocks: {sorted(allowed)}).")

    meta = {"problem": problem.as_dict(), "model": model, "loss_kernel": _kernel_name(problem), "lr": lr,
            "steps_requested": steps, "seed": seed_meta,
            "seeds": seeds, "init_scale": init_scale, "dtype": dtype.name, "grid": grid if record_steps is None
            else "explicit", "record": sorted(recorders), "memory_estimate": {k: int(v) for k, v in parts.items()},
            "start": _start_kind(init_scale, given, allowed)}
    warnings = []
    call.stage("initial_states")
    batch = initial_states(problem, seeds, root, init_scale, given, dtype)
    still = _stationary_start(problem, batch, init_scale, given)
    if still:
        raise ValueError(
            f"the start of seed(s) {still[:8]}{'...' if len(still) > 8 else ''} is an exact stationary point: "
            f"the gradients of the weights and features are exactly 0 there"
            f"{' (init_scale=0 starts every block at 0, a saddle of the objective)' if init_scale == 0 else ''}"
            f", so GD and the gradient flow never leave it and the run would record a state that cannot move. "
            f"Pass init_scale > 0 (e.g. 1e-3) or initial blocks W0/H0/A0 with a nonzero gradient.")
    rec = _Records(problem, recorders, seeds, len(grid_steps), warnings)
    call.stage("run")
    if mode == "gd":
        status, message, kept = _run_gd(problem, batch, lr, dtype, grid_steps, rec, progress)
    else:
        status, message, kept, info = _run_flow(problem, batch, lr, grid_steps, rec, progress, time_variable,
                                                rtol, atol, max_steps)
        meta.update(info)
    if warnings:
        meta["warnings"] = warnings
    done = grid_steps[:kept]

    def trajectory(status, message):
        return Trajectory(steps=done, times=done * lr, records=rec.arrays(kept), status=status, message=message,
                          mode=mode, meta=meta, citation="THEORY §4, §6, §8; ufm.simulate")

    try:
        call.stage("result")
        traj = trajectory(status, message)
    except KeyboardInterrupt:            # Ctrl-C again while the Trajectory was built: built once more, interrupted
        traj = trajectory("interrupted", message if status == "interrupted" else
                          f"Ctrl-C came as the Trajectory was built, after the run had ended ({message}); all "
                          f"{kept} records are kept.")
    traj = call.finish(traj, traj.status is Status.interrupted, mark=_interrupted_after_the_run)
    if throw and traj.status is not Status.interrupted:
        traj.raise_on_failure()
    return traj


def _interrupted_after_the_run(traj: Trajectory) -> Trajectory:
    """``traj``, whose run ended before a Ctrl-C was seen, marked interrupted (nothing is missing from it)."""
    return traj.replace(status="interrupted", message=f"Ctrl-C came after the run had ended ({traj.message}); all "
                                                      f"{len(traj.steps)} records are kept.")


#: Time resolution of a flow given by its horizon alone: ``lr = horizon / FLOW_UNITS``.
FLOW_UNITS = 2**20


def _steps_and_lr(mode, steps, lr, horizon):
    """``steps`` and ``lr`` from any two of ``steps``, ``lr``, ``horizon`` (``horizon`` alone in flow mode)."""
    if horizon is None:
        if steps is None:
            raise ValueError("steps is required (or horizon, the end time steps * lr).")
        return steps, lr
    try:
        horizon = float(horizon)
    except (TypeError, ValueError):
        raise ValueError(f"horizon must be a finite time > 0, got {horizon!r}.") from None
    if not (math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon must be a finite time > 0, got {horizon}.")
    if steps is not None and lr is not None:
        raise ValueError(f"give two of steps, lr and horizon, not all three (horizon = steps * lr; got steps={steps}, "
                         f"lr={lr}, horizon={horizon}).")
    if steps is not None:
        return steps, horizon / check_int("steps", steps, 1)
    if lr is not None:
        lr = check_arguments(lr=lr)["lr"]
        n = round(horizon / lr)
        if n < 1 or abs(n * lr - horizon) > 1e-9 * horizon:
            raise ValueError(f"horizon={horizon} is not a whole number of steps of lr={lr} (horizon / lr = "
                             f"{horizon / lr:.6g}); pass steps instead, or a horizon that is a multiple of lr.")
        return n, lr
    if mode != "flow":
        raise ValueError("horizon alone sets a flow's end time; GD also needs its step size: pass lr (steps = "
                         f"horizon / lr) or steps (lr = horizon / steps), or mode='flow'.")
    return FLOW_UNITS, horizon / FLOW_UNITS


def check_arguments(**kw) -> dict:
    """Check the scalar arguments of :func:`simulate` that are given (by keyword); return them converted.

    ``ufm.sweep`` calls it on its fixed arguments and grid values before any run, so a bad
    ``steps`` or ``lr`` is one error, not one failed run per grid point.

    Parameters
    ----------
    **kw
        Any of ``steps``, ``lr``, ``mode``, ``init_scale``, ``seeds``, ``dtype``,
        ``time_variable``, ``n_records``, ``grid``, ``rtol``, ``atol``, ``max_steps``,
        ``on_interrupt``, ``throw``, ``record_steps`` (checked against ``steps`` when both are
        given), ``seed``; others are ignored.

    Returns
    -------
    dict
        The checked values (ints, floats, a numpy dtype, a bool; ``record_steps`` as sorted
        distinct int64 steps).
    """
    out = dict(kw)
    if "steps" in kw:
        out["steps"] = check_int("steps", kw["steps"], 1)
    if "seeds" in kw:
        out["seeds"] = check_int("seeds", kw["seeds"], 1)
    if "n_records" in kw:
        out["n_records"] = check_int("n_records", kw["n_records"], 2)
    if "max_steps" in kw:
        out["max_steps"] = check_int("max_steps", kw["max_steps"], 1)
    if "on_interrupt" in kw:
        _interrupt.check_on_interrupt(kw["on_interrupt"])
    if "throw" in kw:
        out["throw"] = check_bool("throw", kw["throw"])
    if kw.get("record_steps") is not None:
        out["record_steps"] = _check_record_steps(kw["record_steps"], out.get("steps"))
    if "seed" in kw:
        _seed_root(kw["seed"], spawn=False)
    if "lr" in kw:
        if kw["lr"] is None:
            raise ValueError("lr is required: the GD step size (in flow mode, the time unit: horizon = steps * lr).")
        try:
            lr = float(kw["lr"])
        except (TypeError, ValueError):
            raise ValueError(f"lr must be a finite number > 0, got {kw['lr']!r}.") from None
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr}.")
        out["lr"] = lr
    mode = kw.get("mode", "gd")
    if mode not in ("gd", "flow"):
        raise ValueError(f"mode must be 'gd' or 'flow', got {mode!r}.")
    if "init_scale" in kw:
        try:
            scale = float(kw["init_scale"])
        except (TypeError, ValueError):
            raise ValueError(f"init_scale must be finite and >= 0, got {kw['init_scale']!r}.") from None
        if not (math.isfinite(scale) and scale >= 0):
            raise ValueError(f"init_scale must be finite and >= 0, got {scale}.")
        out["init_scale"] = scale
    if "dtype" in kw:
        try:
            dtype = np.dtype(kw["dtype"])
        except TypeError:
            raise ValueError(f"dtype must be float64 or float32, got {kw['dtype']!r}.") from None
        if dtype not in (np.float64, np.float32):
            raise ValueError(f"dtype must be float64 or float32, got {dtype}.")
        if mode == "flow" and dtype != np.float64:
            raise ValueError("flow mode integrates in float64 only; drop dtype or use mode='gd'.")
        out["dtype"] = dtype
    if mode == "flow" and kw.get("time_variable", "auto") not in ("auto", "t", "log"):
        raise ValueError(f"time_variable must be 'auto', 't' or 'log', got {kw['time_variable']!r}.")
    if "grid" in kw and kw["grid"] not in ("log", "linear"):
        raise ValueError(f"grid must be 'log' or 'linear', got {kw['grid']!r}.")
    for name in ("rtol", "atol"):
        if name in kw and mode == "flow":
            try:
                v = float(kw[name])
            except (TypeError, ValueError):
                v = math.nan
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0 (the integrator's tolerance), got {kw[name]!r}.")
    return out


_SEED_TYPES = "an integer >= 0, a np.random.SeedSequence, a np.random.Generator or None (fresh entropy)"


def _seed_root(seed, spawn: bool = True):
    """The root ``SeedSequence`` of ``seed`` and what ``meta["seed"]`` records of it.

    An int is recorded as given; for a ``SeedSequence``, a ``Generator`` (a child of its
    bit generator's ``SeedSequence`` is spawned, so two runs given one Generator differ, as
    its draws would) or ``None`` (fresh entropy), ``{"entropy", "spawn_key"}``, so that
    ``seed=np.random.SeedSequence(**meta["seed"])`` repeats the run. ``spawn=False`` only checks.
    """
    if isinstance(seed, (bool, np.bool_)) or not (seed is None or isinstance(
            seed, (int, np.integer, np.random.SeedSequence, np.random.Generator))):
        raise ArgumentTypeError(f"seed must be {_SEED_TYPES}, got {seed!r} ({type(seed).__name__}); pass e.g. "
                                "seed=0.")
    if isinstance(seed, (int, np.integer)):
        if seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed}; pass e.g. seed=0 (or its absolute value).")
        return np.random.SeedSequence(int(seed)), int(seed)
    if isinstance(seed, np.random.Generator):
        parent = getattr(seed.bit_generator, "seed_seq", None)
        if not isinstance(parent, np.random.SeedSequence):
            raise ValueError("seed: this Generator was not made from a SeedSequence (its bit generator's seed_seq is "
                             f"{type(parent).__name__}), so no child can be spawned from it; pass an int seed or "
                             "np.random.default_rng(seed) instead.")
        if not spawn:
            return None, None
        root = parent.spawn(1)[0]
    elif seed is None:
        root = np.random.SeedSequence()
    else:
        root = seed
    entropy = root.entropy
    entropy = int(entropy) if isinstance(entropy, (int, np.integer)) else [int(e) for e in entropy]
    return root, {"entropy": entropy, "spawn_key": [int(k) for k in root.spawn_key]}


def _check_record_steps(record_steps, steps: int | None) -> np.ndarray:
    """``record_steps`` as sorted distinct int64 steps in ``[0, steps]``: integers or whole floats, never rounded."""
    try:
        arr = np.asarray(record_steps)
    except (TypeError, ValueError):
        arr = np.asarray(None)
    if arr.dtype.kind not in "iuf":
        raise ArgumentTypeError(f"record_steps must be a sequence of step numbers (integers), got {record_steps!r}; "
                                "pass e.g. record_steps=[0, 10, 100], or omit it for n_records log-spaced steps.")
    arr = arr.ravel()
    if arr.size == 0:
        raise ValueError("record_steps is empty; pass the steps to record, e.g. [0, 10, 100], or omit it for "
                         "n_records log-spaced steps.")
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if bad.size:
            first = float(arr[bad[0]])
            raise ValueError(f"record_steps must be whole step numbers: record_steps[{bad[0]}] = {first!r} is not "
                             f"({bad.size} such); pass integers, e.g. np.round(record_steps).astype(int), or a GD "
                             "run's own steps.")
    if arr.min() < 0 or (steps is not None and arr.max() > steps):
        raise ValueError(f"record_steps must lie in [0, steps={steps if steps is not None else 'steps'}], got "
                         f"values from {arr.min():g} to {arr.max():g}; drop the steps outside or raise steps.")
    return _sorted_unique(arr.astype(np.int64))


class _Records:
    """Preallocated records ``(seeds, T, ...)`` (float64), filled in place one seed and row at a time."""

    def __init__(self, problem, recorders, seeds, n_times, warnings):
        self.problem, self.recorders, self.warnings = problem, recorders, warnings
        # every row below the number kept is written for every seed, so no fill is needed
        self.data = {name: np.empty((seeds, n_times) + tuple(r.shape(problem)))
                     for name, r in recorders.items()}

    def keep(self, i, j, state, names=None):
        """Record every quantity (or those of ``names``) of seed ``i`` at row ``j`` from its state (float64 blocks)."""
        for name, r in self.recorders.items():
            if names is not None and name not in names:
                continue
            try:
                self.data[name][i, j] = r.fn(self.problem, state)
            except ValueError as err:   # a metric undefined at this state (e.g. coincident class means)
                self.data[name][i, j] = np.nan
                if len(self.warnings) < 20:
                    self.warnings.append(f"{name} undefined at a recorded step: {err}")

    def keep_all(self, batch, j, names=None):
        if names is not None and not names:
            return
        for i in range(next(iter(batch.values())).shape[0]):
            self.keep(i, j, _seed_state(batch, i), names)

    def arrays(self, kept):
        """The first ``kept`` rows, read-only views (the Trajectory takes them without copying)."""
        out = {}
        for name, arr in self.data.items():
            view = arr[:, :kept]
            view.setflags(write=False)
            out[name] = view
        return out


def _resolve_recorders(problem, record, attributes):
    if isinstance(record, str):
        record = (record,)
    extra = {}
    if isinstance(record, dict):
        extra = dict(record)
        names = []
    else:
        names = list(record)
    if attributes is not None:          # the caller's table: checked whatever is recorded
        attributes = check_attributes(attributes, problem.K, f"the problem has K={problem.K} classes")
    else:
        attributes = getattr(problem, "attributes", None)
    out = {}
    for name in names:
        if name == "loss":
            raise ValueError("cannot record 'loss': the full objective (the loss plus the halved weight decays) "
                             "is recorded as 'objective'; pass record=('objective', ...).")
        if name == "semantic_gap":
            if attributes is None:
                raise ValueError("recording 'semantic_gap' needs attributes=(K x F table) or a problem built "
                                 "with attributes (InputCoupledUFM.from_setting).")
            out[name] = _semantic_gap(check_attributes(attributes, problem.K, f"the problem has K={problem.K} "
                                                        "classes (problem.attributes has one row per item)"))
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
        raise ValueError("record is empty; name at least one quantity, e.g. record=('objective',).")
    return out


class _Chunks:
    """How much work to hand a kernel per call: grown or shrunk so one call takes about ``target`` seconds."""

    def __init__(self, start, target=0.2, top=1 << 40):
        self.size, self.target, self.top = int(start), target, top
        self.t0 = None

    def start(self):
        self.t0 = time.perf_counter()

    def done(self, used):
        dt = time.perf_counter() - self.t0
        if used >= self.size:           # the call used its whole budget: adjust toward the target duration
            if dt < self.target / 4:
                self.size = min(self.size * 4, self.top)
            elif dt < self.target / 2:
                self.size = min(self.size * 2, self.top)
            elif dt > self.target * 2:
                self.size = max(self.size // 2, 1)


#: Recorded quantities the GD kernels compute themselves, from what the step already has
#: (the loss the step evaluates, the features it holds), with their bit in ``_kernels.Recording``.
IN_KERNEL = {"objective": 1, "gram_means": 2, "gram_W": 4, "gram_H": 8}


def _kernel_recording(rec, seeds, compiled=True):
    """The kernel's share of the records: the names of :data:`IN_KERNEL` recorded with the built-in recorder
    (none without a compiled kernel)."""
    from ._kernels import Recording

    names = [n for n in rec.recorders if compiled and n in IN_KERNEL and rec.recorders[n] is RECORDERS[n]]
    p = rec.problem
    hard = not getattr(p, "soft", False)
    return names, Recording(seeds, sum(IN_KERNEL[n] for n in names),
                            **{n: rec.data[n] for n in names},
                            y=p.y if hard and "gram_means" in names else None,
                            counts=np.bincount(p.y, minlength=p.K) if hard and "gram_means" in names else None)


def _run_gd(problem, batch, lr, dtype, grid_steps, rec, progress):
    """GD in chunks of about 0.2 s between which Ctrl-C and progress are handled.

    The kernels record the objective and the Grams of :data:`IN_KERNEL` themselves, at any step
    inside a chunk; a grid step at the end of a chunk is recorded at the start of the next
    one (the final step by one more evaluation without update). Other recorders run in Python
    between chunks, so with them chunks end at every grid step. BLAS runs on one thread
    meanwhile, and the caller's setting is restored afterwards.
    """
    compiled = problem.loss.kernel_id is not None
    gd = _GD(problem, batch, lr, dtype) if compiled else _NumpyGD(problem, batch, lr)
    seeds = batch["W"].shape[0]
    knames, kr = _kernel_recording(rec, seeds, compiled)
    pnames = [n for n in rec.recorders if n not in knames]
    T = len(grid_steps)
    final = int(grid_steps[-1])
    bar = Progress(progress, final, "ufm.simulate (gd)" if compiled else "ufm.simulate (gd, NumPy fallback)")
    kj = 0 if knames else T     # rows whose kernel part is recorded
    pj = 0 if pnames else T     # rows whose Python part is recorded
    current = 0
    status, message = "completed", f"ran {final} GD steps."
    chunk = _Chunks(8)
    try:
        with _threads.one_blas_thread():     # the kernels' large products: one BLAS thread per seed thread
            while True:
                if pj < T and grid_steps[pj] == current:
                    rec.keep_all(gd.states(), pj, pnames)
                    pj += 1
                if current == final:
                    break
                if _interrupt.requested():
                    raise KeyboardInterrupt
                stop = int(grid_steps[pj]) if pj < T else final
                n = int(min(chunk.size, stop - current))
                end = current + n
                hi = T if end == final else int(np.searchsorted(grid_steps, end, "left"))  # rows inside the chunk
                kr.at(grid_steps[kj:hi] - current, np.arange(kj, hi))
                chunk.start()
                last = gd.run(n, kr)
                chunk.done(n)
                bad_at = int(kr.ran.min()) if kr.offsets.size else n + 1     # first offset with non-finite logits
                if bad_at <= n or not np.all(np.isfinite(last)) or \
                        not all(np.all(np.isfinite(a)) for a in gd.batch.values()):
                    worse = ~np.isfinite(last) | ((kr.ran <= n) if kr.offsets.size else False)
                    bad = np.flatnonzero(worse).tolist()
                    kj = min(hi, max(kj, int(np.searchsorted(grid_steps, current + min(bad_at, n), "left"))))
                    status = "nonfinite"
                    message = (f"the state became non-finite between steps {current} and {end} "
                               f"(seeds {bad or 'some'}); lower lr.")
                    break
                kj = max(kj, hi)
                current = end
                bar.update(current)
    except KeyboardInterrupt:
        status, message = "interrupted", f"stopped at step {current};"
    finally:
        bar.close()
    if knames and status != "nonfinite" and kj < T and grid_steps[kj] == current and pj > kj:
        rec.keep_all(gd.states(), kj, knames)     # stopped on a grid step the next chunk would have recorded
        kj += 1
    kept = min(kj, pj)
    upto = int(grid_steps[kept - 1]) if kept else 0
    if status == "nonfinite":
        message += f" Records up to step {upto} are kept."
    elif status == "interrupted":
        message += f" {kept} records kept (up to step {upto})."
    return status, message, kept


def _run_flow(problem, batch, lr, grid_steps, rec, progress, time_variable, rtol, atol, max_steps):
    """Every seed integrated in lockstep, one recorded time after the other, in pieces of bounded work."""
    from ._integrate import STATUS_MESSAGES, Stepper

    if time_variable == "auto":
        time_variable = "t" if problem.has_weight_decay else "log"
    rhs, data = _flow_rhs_and_data(problem)
    shapes = losses.blocks(problem)
    names = list(shapes)
    t_eval = grid_steps.astype(np.float64) * lr
    seeds = batch["W"].shape[0]
    steppers = []
    for i in range(seeds):
        st = Stepper(rhs, _flatten(_seed_state(batch, i), names), data, t_eval[-1], rtol=rtol, atol=atol,
                     log_time=(time_variable == "log"), max_steps=max_steps)
        steppers.append(st)
    batch.clear()           # the steppers hold the states now
    bar = Progress(progress, len(t_eval), "ufm.simulate (flow, records)", unit="record")
    row = np.empty((1, steppers[0].y.size))
    chunk = _Chunks(16, top=10**7)
    kept, failed = 0, None
    status = "completed"
    try:
        with _threads.one_blas_thread():     # restored after the run
            for j, t in enumerate(t_eval):
                if t > 0:
                    for i, st in enumerate(steppers):
                        reached = 0
                        while reached == 0 and st.status is None:
                            if _interrupt.requested():
                                raise KeyboardInterrupt
                            before = st.nsteps
                            chunk.start()
                            reached = st.advance(t_eval[j:j + 1], row, 0, chunk.size)
                            chunk.done(st.nsteps - before)
                        if st.status is not None:
                            failed = i
                            break
                        rec.keep(i, j, _unflatten(row[0], shapes))
                    if failed is not None:
                        break
                else:
                    for i, st in enumerate(steppers):
                        rec.keep(i, j, _unflatten(st.y, shapes))
                kept = j + 1
                bar.update(kept)
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        bar.close()
    nfev = [st.nfev for st in steppers]
    info = {"time_variable": "log(1+t)" if time_variable == "log" else "t", "integrator": "dopri5",
            "rtol": rtol, "atol": atol, "nfev": nfev}
    reached = f"t = {t_eval[kept - 1]:g}" if kept else "nothing"
    if status == "interrupted":
        return "interrupted", (f"stopped while integrating toward t = {t_eval[min(kept, len(t_eval) - 1)]:g}; "
                               f"{kept} records kept for all {seeds} seed(s), up to {reached}."), kept, info
    if failed is None:
        return "completed", f"integrated the gradient flow to t = {t_eval[-1]:g} ({sum(nfev)} evaluations).", \
            kept, info
    code = steppers[failed].status
    status = {1: "max_steps", 2: "nonfinite", 3: "nonfinite"}.get(code, "nonfinite")
    return status, (f"flow stopped early at seed {failed}: {STATUS_MESSAGES[code]} Records up to {reached} are "
                    f"kept."), kept, info
