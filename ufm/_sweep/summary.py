"""What a task returned, as one tidy record; and whether the run failed."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..results import Result, Solution, Status, Trajectory

__all__ = ["run_failure", "summarize"]

_SKIP_META = ("content_hash", "objective", "versions")


def _is_scalar(v) -> bool:
    return v is None or isinstance(v, (bool, str, int, float, np.generic))


def summarize(out, keep=()) -> dict:
    """What a task returned, as the outputs of one record.

    * :class:`~ufm.results.Solution`: ``objective`` (its value), ``success``, ``status`` (the
      :class:`~ufm.results.Status` name), ``regime``, ``method``, ``nit`` and the scalar entries of ``meta`` (regime quantities,
      duality gaps, ...; timings such as ``solve_time`` are left out so records
      do not depend on the machine); ``keep`` names arrays or properties to add
      (``"W"``, ``"H"``, ``"Z"``, ``"gram_H"``, ...).
    * :class:`~ufm.results.Trajectory`: ``status`` (name), ``success``, ``mode``, the
      last ``step`` and ``time``, and the final value of every scalar record
      (``objective``, ``nc1``, ...; an array over the simulate seeds when there are
      several); ``keep`` names records to add whole as ``<name>_history``
      (shape ``(seeds, T, ...)``), with ``times``.
    * other results (e.g. :class:`~ufm.results.PhasePoint`): ``success`` and their scalar fields
      (``status`` by name; fields that are ``None`` are left out); ``keep`` names array fields.
    * a dict: taken as is (nested dicts flattened with ``"."``; lists become arrays).
    * a number, string or array: stored as ``value``.
    """
    keep = (keep,) if isinstance(keep, str) else tuple(keep)
    if isinstance(out, Solution):
        rec = {"objective": out.objective, "success": out.success, "status": out.status.name, "regime": out.regime,
               "method": out.method, "nit": out.nit}
        for k, v in out.meta.items():
            if _is_scalar(v) and k not in _SKIP_META and "time" not in k and k not in rec:
                rec[k] = v
        for name in keep:
            value = getattr(out, name, None)
            if value is None:
                raise ValueError(f"keep={name!r}: this Solution has no array {name!r}; try 'W', 'H', 'b', 'Z', 'A', "
                                 "'gram_H' or 'gram_W'.")
            rec[name] = np.asarray(value)
        return rec
    if isinstance(out, Trajectory):
        rec = {"status": out.status.name, "success": out.success, "mode": out.mode,
               "step": int(out.steps[-1]) if len(out.steps) else 0,
               "time": float(out.times[-1]) if len(out.times) else 0.0}
        for name, arr in out.records.items():
            if arr.ndim == 2 and arr.shape[1] > 0:
                final = arr[:, -1]
                rec[name] = float(final[0]) if final.shape[0] == 1 else np.array(final)
        for name in keep:
            if name not in out.records:
                raise ValueError(f"keep={name!r}: not recorded; the trajectory has {sorted(out.records)} "
                                 f"(add it to simulate's record=).")
            rec[f"{name}_history"] = np.array(out.records[name])
        if keep:
            rec["times"] = np.array(out.times)
        return rec
    if isinstance(out, Result):
        values = {f.name: getattr(out, f.name) for f in dataclasses.fields(out) if f.init and f.name != "meta"}
        values = {k: v.name if isinstance(v, Status) else v for k, v in values.items()}
        rec = {"success": out.success, **{k: v for k, v in values.items() if _is_scalar(v) and v is not None}}
        for name in keep:
            rec[name] = np.asarray(getattr(out, name))
        return rec
    if isinstance(out, dict):
        rec = {}

        def walk(d, prefix):
            for k, v in d.items():
                name = f"{prefix}{k}"
                if isinstance(v, dict):
                    walk(v, name + ".")
                else:
                    rec[name] = np.asarray(v) if isinstance(v, (list, tuple)) else v
        walk(out, "")
        return rec
    if _is_scalar(out) or isinstance(out, (np.ndarray, list, tuple)):
        return {"value": np.asarray(out) if isinstance(out, (list, tuple)) else out}
    raise ValueError(f"the task returned a {type(out).__name__}; return a Solution, a Trajectory, a dict of "
                     "scalars and arrays, a number or an array.")


def run_failure(out) -> str | None:
    """Why a task's result is a failed run, or ``None``.

    A simulation that did not complete (``status`` ``nonfinite``: it diverged;
    ``max_steps``: the integrator gave up), a solution that is not a certified
    optimum (``success=False``), any other result with ``success=False``, or a simulation
    whose final recorded scalars are not finite: such runs are counted as failed
    (``ok=False``), with their summary kept.
    """
    if isinstance(out, Trajectory):
        if not out.success:
            return f"{out.status.name}: {out.message}"
        objective = out.records.get("objective")
        if objective is not None and objective.shape[1] and not np.all(np.isfinite(objective[:, -1])):
            return "nonfinite: the final objective is not finite"
        return None
    if isinstance(out, Solution) and not out.success:
        return f"not solved ({out.status.name}): {out.message}"
    if isinstance(out, Result) and not out.success:
        return f"{out.status.name}: {out.message}"
    return None
