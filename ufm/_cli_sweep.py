"""``ufm sweep CONFIG.toml``: a sweep described by a TOML file, its records and its phase diagram.

This is the command line's part of sweeping (:mod:`ufm.cli` calls :func:`run_config`);
the sweep itself is :func:`ufm.sweep`.
"""

from __future__ import annotations

import difflib
import os

from . import _interrupt
from ._atomic import write_atomically
from ._checks import check_bool
from ._sweep import PROBLEMS, RESERVED, TASKS, sweep
from ._util import check_output_folder
from .results import Status
from .plotting import plot_phase_diagram

__all__ = ["run_config"]

_CONFIG_KEYS = {"task", "grid", "seeds", "seed", "backend", "n_jobs", "out", "keep", "problem", "fixed", "plot",
                "seed_scope", "retries", "allow_import"}


_PLOT_KEYS = {"x", "y", "value", "where", "annotate"}

#: Scalar quantities of ``ufm.simulate`` (what a phase diagram of a simulate sweep can show).
_SCALAR_RECORDS = ("objective", "nc1", "nc1_trace_ratio", "cdnv", "nc2", "nc2_classifier", "nc3", "nc4", "etf_distance",
                   "semantic_gap", "effective_rank")


def _pick_value(records, preferred=("etf_distance", "objective", "value")):
    ok = [r for r in records if r["ok"]]
    for name in preferred:
        if any(name in r for r in ok):
            return name
    for r in ok:
        for k, v in r.items():
            if k not in RESERVED and isinstance(v, (int, float)) and not isinstance(v, bool):
                return k
    return None


def _check_task(path, cfg, allow_import: bool) -> str:
    """The config's task: a name of :data:`ufm._sweep.TASKS`, or ``module:function`` when both opt-ins are given.

    A config names what runs by a registered name, since an import path runs any function of
    any module (``os:system`` too) for whoever hands out the file; ``allow_import = true`` in
    the file and ``allow_import=True`` (``ufm sweep --allow-import``) from the person running
    it are both needed for one. Checked before anything is imported.
    """
    task = cfg["task"]
    if not isinstance(task, str):
        raise ValueError(f"{path}: task must be the name of a registered task, one of {sorted(TASKS)}; got {task!r}.")
    if task in TASKS:
        return task
    if ":" not in task:
        close = difflib.get_close_matches(task, TASKS, n=1)
        raise ValueError(f"{path}: task = {task!r} is not a registered task; name one of {sorted(TASKS)}"
                         + (f" (did you mean {close[0]!r}?)" if close else "") + ".")
    opt_in = cfg.get("allow_import", False)
    if not isinstance(opt_in, bool):
        raise ValueError(f"{path}: allow_import must be true or false, got {opt_in!r}.")
    if opt_in and allow_import:
        return task
    missing = [m for m, given in (("allow_import = true in the file", opt_in),
                                  ("--allow-import on the command line (run_config(..., allow_import=True))",
                                   allow_import)) if not given]
    raise ValueError(f"{path}: task = {task!r} is an import path, which would import and run any function named in "
                     f"the file; a config names a registered task ({sorted(TASKS)}). To run your own function from a "
                     f"file you trust, give both opt-ins; missing: {' and '.join(missing)}. Nothing was imported.")


def run_config(path, *, out=None, resume: bool = False, backend=None, n_jobs=None, figure: bool = True,
               progress: bool = True, echo=print, on_interrupt: str = "raise", allow_import: bool = False) -> dict:
    """Run the sweep described by a TOML file; write ``result.npz`` and ``phase_diagram.png`` to its ``out``.

    The file (see ``examples/sweep.toml``) holds ``task`` (a registered name:
    ``"simulate"`` or ``"solve"``, see :data:`ufm._sweep.TASKS`), ``[grid]`` (parameter
    lists), and optionally ``seeds``, ``seed``, ``backend``, ``n_jobs``, ``out``, ``keep``,
    ``seed_scope``, ``retries``, ``allow_import``, ``[problem]`` (``kind`` and fixed problem
    keywords), ``[fixed]`` (task keywords) and ``[plot]`` (``x``, ``y``,
    ``value``, optional ``[plot.where]``). Finished runs are cached in
    ``out/cache``; ``resume=True`` continues from it, and without it an
    existing cache is an error (so results of another configuration are never
    mixed in by accident). Everything is checked before the first run: unknown keys
    (at the top level and in ``[plot]``), the task's name, the ``[plot]`` axes and value,
    the output folder, and the task's arguments.

    A task given as an import path ``"module:function"`` (your own function) runs only with
    two opt-ins: ``allow_import = true`` in the file and ``allow_import=True`` here
    (``ufm sweep --allow-import``); otherwise it is refused before anything is imported, as
    a file that names ``"os:system"`` would run a shell command.

    Parameters
    ----------
    path : str or path-like
        The TOML file.
    out : str, optional
        Output folder (default: the file's ``out``, else ``ufm-sweep``).
    resume : bool
        Continue from ``out/cache``.
    backend, n_jobs : optional
        Override the file's.
    figure : bool
        Draw ``phase_diagram.png`` (failed runs are marked in it).
    progress : bool
        Progress bar.
    echo : callable
        Where the summary lines go.
    on_interrupt : {"raise", "return"}
        Ctrl-C: the partial result is written to ``result.npz`` first, then raised in
        ``KeyboardInterrupt`` (in its ``result``) or returned (``ufm sweep`` returns it and exits 130).
    allow_import : bool
        Let a file whose ``task`` is ``"module:function"`` (and which says ``allow_import = true``)
        import and run that function.
        A Ctrl-C while ``result.npz`` is written or the figure drawn lets the file be
        completed (the figure is then not drawn) and counts as an interruption too.

    Returns
    -------
    dict
        ``result`` (the SweepResult), ``paths`` written and ``interrupted`` (whether
        Ctrl-C was pressed: during the sweep, whose result then has status
        ``interrupted``, or after it, while writing).
    """
    with _interrupt.protected("sweep_config", on_interrupt) as call:     # from reading the file to the return
        return _run_config(call, path, out, resume, backend, n_jobs, figure, progress, echo, allow_import)


def _run_config(call, path, out, resume, backend, n_jobs, figure, progress, echo, allow_import) -> dict:
    """:func:`run_config` in its protected region ``call`` (``_interrupt.STAGES["sweep_config"]``)."""
    import tomllib

    call.stage("config")
    allow_import = check_bool("allow_import", allow_import)
    with open(path, "rb") as fh:
        try:
            cfg = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML ({err}).") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not a TOML text file (it is not UTF-8: {err.reason} at byte {err.start}); "
                             "pass the sweep's .toml configuration.") from None
    unknown = set(cfg) - _CONFIG_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}.")
    for table in ("grid", "fixed", "problem", "plot"):
        if table in cfg and not isinstance(cfg[table], dict):
            raise ValueError(f"{path}: {table} must be a table ([{table}]), got {cfg[table]!r}.")
    plot_cfg = dict(cfg.get("plot", {}))
    bad = set(plot_cfg) - _PLOT_KEYS
    if bad:
        raise ValueError(f"{path}: unknown keys in [plot]: {sorted(bad)}; known: {sorted(_PLOT_KEYS)} (a key written "
                         "after a [table] header belongs to that table: put top-level keys before the first table).")
    grid_names = set(cfg.get("grid", {})) if isinstance(cfg.get("grid"), dict) else set()
    for key in ("x", "y"):
        if key in plot_cfg and plot_cfg[key] not in grid_names:
            raise ValueError(f"{path}: [plot] {key} = {plot_cfg[key]!r} is not a [grid] parameter "
                             f"({sorted(grid_names)}).")
    for key in plot_cfg.get("where", {}) or {}:
        if key not in grid_names:
            raise ValueError(f"{path}: [plot.where] {key!r} is not a [grid] parameter ({sorted(grid_names)}).")
    if "value" in plot_cfg and cfg.get("task") == "simulate":
        rec = cfg.get("fixed", {}).get("record", ("objective",))
        names = [rec] if isinstance(rec, str) else list(rec)
        scalars = [n for n in names if n in _SCALAR_RECORDS]
        if plot_cfg["value"] not in scalars:
            raise ValueError(f"{path}: [plot] value = {plot_cfg['value']!r} is not a scalar that [fixed] record = "
                             f"{names} keeps; use one of {scalars} or add it to record.")
    if "task" not in cfg or "grid" not in cfg:
        raise ValueError(f"{path}: needs task = one of {sorted(TASKS)} and a [grid] table.")
    task = _check_task(path, cfg, allow_import)
    fixed = dict(cfg.get("fixed", {}))
    problem = None
    if "problem" in cfg:
        spec = dict(cfg["problem"])
        if "kind" not in spec:
            raise ValueError(f"{path}: [problem] needs kind = one of {sorted(PROBLEMS)}.")
        problem = spec.pop("kind")
        both = set(spec) & set(fixed)
        if both:
            raise ValueError(f"{path}: {sorted(both)} are in both [problem] and [fixed]; keep one.")
        fixed.update(spec)
    out = os.fspath(out if out is not None else cfg.get("out", "ufm-sweep"))
    cache = os.path.join(out, "cache")
    if not resume and os.path.isdir(cache) and any(n.endswith(".npz") for n in os.listdir(cache)):
        raise ValueError(f"{cache} holds runs of an earlier sweep; pass --resume to continue it, or choose "
                         "another --out.")
    check_output_folder(out, "out")
    os.makedirs(out, exist_ok=True)
    call.stage("sweep")
    try:
        result = sweep(task, cfg["grid"], seeds=cfg.get("seeds", 1), seed=cfg.get("seed", 0), fixed=fixed,
                       problem=problem, keep=cfg.get("keep", ()), backend=backend or cfg.get("backend", "loky"),
                       n_jobs=n_jobs or cfg.get("n_jobs"), cache_dir=cache, progress=progress,
                       retries=cfg.get("retries", 2), seed_scope=cfg.get("seed_scope", "point"),
                       on_interrupt="return")
    except KeyboardInterrupt as err:      # Ctrl-C pressed twice: the sweep's partial result is still written
        if getattr(err, "result", None) is None:
            raise
        result = err.result
    stopped = result.status is Status.interrupted
    done = {"result": result, "paths": {}, "interrupted": stopped}
    try:
        call.stage("save")
        done["paths"]["result"] = result.save(os.path.join(out, "result.npz"))
        echo(result.summary())
        if stopped:
            echo("interrupted (Ctrl-C): wrote the finished runs; rerun with --resume to compute the rest.")
        elif figure and result.records and not _interrupt.requested():
            call.stage("figure")
            _phase_figure(cfg, result, out, done["paths"], echo)
    except KeyboardInterrupt:       # Ctrl-C again while writing: what is written is listed, the runs are in the cache
        raise _interrupt.interrupted({**done, "interrupted": True},
                                     f"interrupted (Ctrl-C) while writing; wrote {list(done['paths'].values())}; "
                                     f"the finished runs are in {cache} (--resume)") from None
    echo("wrote: " + ", ".join(done["paths"].values()))
    return call.finish(done, stopped, mark=lambda d: {**d, "interrupted": True}, message=result.message)


def _phase_figure(cfg, result, out, paths, echo) -> None:
    """``phase_diagram.png`` of the ``[plot]`` table (axes and value picked when not given), added to ``paths``."""
    plot = dict(cfg.get("plot", {}))
    x, y = plot.get("x"), plot.get("y")
    varying = [a for a in result.axes if len(result.axis_values(a)) > 1] or list(result.axes)
    if x is None:
        x = next((a for a in varying if a != y), None)
    if y is None:
        y = next((a for a in varying if a != x), None)
    value = plot.get("value") or _pick_value(result.records)
    if x is None or y is None or value is None:
        echo("no phase diagram: it needs two grid parameters and a numeric result ([plot] x, y, value).")
        return
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    plot_phase_diagram(result, x, y, value, ax=ax, where=plot.get("where"), annotate=plot.get("annotate", True))
    fig.tight_layout()
    paths["figure"] = write_atomically(os.path.join(out, "phase_diagram.png"),
                                       lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)
