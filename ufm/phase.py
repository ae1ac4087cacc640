"""Phase diagram of structure before collapse: where the semantic transient appears, and where it ends.

:func:`phase_diagram` runs :func:`phase_point` over a grid of capacity
``sigma``, attribute strength, weight decay and setting with :func:`ufm.sweep`,
and returns its :class:`~ufm.results.SweepResult` (one tidy record per point).
Plot it with :func:`ufm.plotting.plot_phase_diagram` (heat map over two
parameters) or :func:`ufm.plotting.plot_phase_lines` (curves over ``sigma``).

Where each number comes from
----------------------------
* ``peak_gap``, ``peak_time``, ``transition_time``, ``gap_init``: the theory
  curve :func:`ufm.dynamics.semantic_curve` of the input-coupled UFM (M2,
  THEORY §6.3, §8.2) from a Gaussian initialization of scale ``init_scale``, in
  expectation (the mean run). The transition time is measured against the
  exact end state below.
* ``end_gap``, ``end_etf_distance``: the exact end state ``ufm.solve(problem)``
  (convex program with weight decay, max-margin program without, THEORY §8.2
  (b)); semantic gap (THEORY §7.4) and ETF distance (THEORY §7.2) of its
  centred item Gram ``H^T H``.
* with ``simulate=True`` also ``sim_peak_gap``, ``sim_peak_time``,
  ``sim_end_gap``, ``sim_end_etf_distance``: one gradient-flow run of
  :func:`ufm.simulate` (flow mode) to ``horizon`` (default: ``10 x`` the
  predicted transition time), so the theory and the simulation can be compared
  point by point.

What it shows (THEORY §8.2 "Behavior"): as ``sigma`` grows relative to the
attribute strength, the end state approaches the simplex ETF (its ETF
distance and semantic gap fall towards 0), while the early peak of the
semantic gap is still there, many times above both the initial and the final
gap.

References
----------
THEORY.md §6.3, §7.2, §7.4, §8.2; Zhao, Papadimitriou, Thrampoulidis,
"Structure Before Collapse", arXiv 2606.26749.
"""

from __future__ import annotations

import math

import numpy as np

from . import _simulate, dynamics, metrics
from ._solve import solve
from ._sweep import sweep
from .problems import AnchoredUFM, InputCoupledUFM
from .results import PhasePoint, TransientModels
from .settings import named_setting

__all__ = ["phase_point", "phase_diagram", "transient_models"]

def phase_point(setting: str = "factorial", sigma: float = 3.0, strength: float = 1.0, lam: float = 1e-3, *,
                loss: str = "ce", d: int | None = None, init_scale: float = 1e-3, simulate: bool = False,
                horizon: float | None = None, seed: int = 0) -> PhasePoint:
    """Peak, transition and end state of the semantic transient at one point of the phase diagram.

    Parameters
    ----------
    setting : {"factorial", "hierarchy", "ntp_contexts"}
        The default instance (:func:`ufm.settings.named_setting`).
    sigma : float
        Per-item capacity (``Phi = [strength * Phi_attr; sigma I]``, THEORY §8.2).
    strength : float
        Weight of every attribute block (``Setting.encoding(..., strengths=strength)``).
    lam : float
        Weight decay, ``lam_W = lam_A = lam`` (halved convention, THEORY §0.1);
        ``0`` gives the max-margin end state.
    loss : {"ce", "mse"}
    d : int, optional
        Feature dimension (default ``N``).
    init_scale : float
        Std of the Gaussian initialization (theory: in expectation; simulation: the draw).
    simulate : bool
        Also run one gradient flow (flow mode, time variable ``t``) and report its numbers.
    horizon : float, optional
        End time of the simulation; default the larger of ``10 x`` the predicted
        transition time (``100 x`` the peak time when there is none) and ``100/lam``.
    seed : int
        Seed of the simulated initialization.

    Returns
    -------
    PhasePoint
        ``gap_init``, ``peak_gap``, ``peak_time``, ``transition_time`` (theory,
        ``nan`` when not reached), ``end_gap``, ``end_etf_distance`` (exact end
        state), ``end_method``, ``rises`` (``peak_gap > 1.5 gap_init`` and
        ``peak_gap > 1.5 end_gap``), and the ``sim_*`` fields with ``simulate=True``;
        ``status`` is ``completed`` unless the end-state solve or the simulation did not succeed.
    """
    st = named_setting(setting)
    m = InputCoupledUFM.from_setting(st, sigma=float(sigma), d=d, loss=loss, lam_W=float(lam), lam_A=float(lam),
                                     strengths=float(strength))
    sol = solve(m)
    E = sol.H.T @ sol.H
    end_gap = float(metrics.semantic_gap(E, st.attributes, center=True))
    end_etf = float(metrics.etf_distance(E, center=True))
    c = dynamics.semantic_curve(m, [0.0], init_scale=init_scale, end_gram=E, keep_gram=False)
    meta = {"setting": setting, "sigma": float(sigma), "strength": float(strength), "lam": float(lam), "loss": loss,
            "problem": m.as_dict(), "init_scale": init_scale, "seed": seed}
    if not c.success:
        nan = float("nan")
        return PhasePoint(gap_init=nan, peak_gap=nan, peak_time=nan, transition_time=nan, end_gap=end_gap,
                          end_etf_distance=end_etf, end_method=sol.method, rises=False, status=c.status,
                          message=f"theory curve: {c.message}", meta=meta)
    trans = c.transition_time
    out = {"gap_init": float(c.meta["gap_at_0"]), "peak_gap": float(c.peak_value), "peak_time": float(c.peak_time),
           "transition_time": float("nan") if trans is None else float(trans),
           "end_gap": end_gap, "end_etf_distance": end_etf, "end_method": sol.method,
           "rises": bool(c.peak_value > 1.5 * c.meta["gap_at_0"] and c.peak_value > 1.5 * end_gap)}
    status, message = sol.status, f"end state by {sol.method}: {sol.message}"
    if simulate:
        if horizon is not None:
            T = float(horizon)
        else:   # past the transition, and many decay times 1/lam (the slow approach to the end state)
            T = 10.0 * trans if trans is not None else 100.0 * c.peak_time
            T = max(T, 100.0 / lam) if lam > 0 else T
        steps = 10**6
        tr = _simulate.simulate(m, steps=steps, lr=T / steps, mode="flow", time_variable="t" if lam > 0 else "log",
                 init_scale=init_scale, seed=seed, record=("semantic_gap", "etf_distance"), n_records=200)
        g = tr.records["semantic_gap"][0]
        j = int(np.nanargmax(g))
        out.update(sim_peak_gap=float(g[j]), sim_peak_time=float(tr.times[j]), sim_end_gap=float(g[-1]),
                   sim_end_etf_distance=float(tr.records["etf_distance"][0, -1]), sim_horizon=T)
        if sol.success:
            status, message = tr.status, f"simulation: {tr.message}"
    if status.success:
        status, message = "completed", f"{setting}, sigma={sigma:g}, strength={strength:g}, lam={lam:g}."
    return PhasePoint(**out, status=status, message=message, meta=meta)


def phase_diagram(settings=("factorial", "hierarchy", "ntp_contexts"), sigmas=(1.0, 2.0, 3.0, 4.0, 6.0, 8.0),
                  strengths=(1.0,), lams=(1e-3,), *, grid=None, loss: str = "ce", simulate: bool = False,
                  init_scale: float = 1e-3, backend: str = "sequential", n_jobs: int | None = None,
                  cache_dir=None, progress="auto", seed: int = 0, on_interrupt: str = "raise"):
    """Structure-before-collapse phase diagram over capacity, attribute strength, weight decay and setting.

    Runs :func:`phase_point` with :func:`ufm.sweep` at every point of the
    Cartesian product ``setting x sigma x strength x lam`` (or at the points of
    ``grid``, a list of dicts with those keys, for a sparser design).

    Parameters
    ----------
    settings, sigmas, strengths, lams : sequences
        The grid axes (setting names of :data:`ufm.settings.NAMED_SETTINGS`; ``lam`` is
        ``lam_W = lam_A``).
    grid : list of dict, optional
        Explicit points instead of the product.
    loss : {"ce", "mse"}
    simulate : bool
        Also simulate each point (see :func:`phase_point`): slower, and adds the ``sim_*`` columns.
    init_scale : float
        Std of the Gaussian initialization (theory: in expectation; simulation: the draw).
    backend, n_jobs, cache_dir, progress :
        Passed to :func:`ufm.sweep` (``backend="loky"`` for processes; the
        default ``"sequential"`` avoids starting workers for the cheap theory-only points).
    seed : int
        Base seed (used by the simulations).
    on_interrupt : {"raise", "return"}
        Ctrl-C: as in :func:`ufm.sweep` (the finished points are kept).

    Returns
    -------
    SweepResult
        One record per point: the parameters ``setting``, ``sigma``,
        ``strength``, ``lam`` and the entries of :func:`phase_point`.
        ``result.column("end_etf_distance")`` etc. give arrays in grid order.

    Examples
    --------
    >>> res = phase_diagram(settings=("factorial",), sigmas=(2.0, 4.0))   # doctest: +SKIP
    >>> res.column("end_etf_distance")                                     # doctest: +SKIP
    array([0.406, 0.111])
    """
    if grid is None:
        settings = _axis("settings", settings, "setting names", "('factorial', 'hierarchy')")
        for s in settings:
            named_setting(s)    # a clear error for an unknown name, before any work
        grid = {"setting": list(settings),
                "sigma": _numbers("sigmas", sigmas, positive=True, meaning="per-item capacities"),
                "strength": _numbers("strengths", strengths, positive=False, meaning="attribute weights"),
                "lam": _numbers("lams", lams, positive=False, meaning="weight decays")}
    else:
        if isinstance(grid, dict) or not isinstance(grid, (list, tuple)) or not grid:
            raise ValueError("grid must be a non-empty list of dicts with keys setting, sigma, strength, lam (one "
                             "per point); for a product of axes pass settings=, sigmas=, strengths=, lams=.")
        for i, point in enumerate(grid):
            if not isinstance(point, dict):
                raise ValueError(f"grid[{i}] must be a dict of setting, sigma, strength, lam; got {point!r}.")
            if "setting" in point:
                named_setting(point["setting"])
            for key, pos, meaning in (("sigma", True, "a per-item capacity"), ("strength", False, "an attribute "
                                      "weight"), ("lam", False, "a weight decay")):
                if key in point:
                    _numbers(f"grid[{i}][{key!r}]", [point[key]], positive=pos, meaning=meaning)
    if loss not in ("ce", "mse"):
        raise ValueError(f"loss must be 'ce' or 'mse', got {loss!r}.")
    init_scale = _numbers("init_scale", [init_scale], positive=True, meaning="a start scale")[0]
    fixed = {"loss": loss, "simulate": bool(simulate), "init_scale": init_scale}
    return sweep(phase_point, grid, fixed=fixed, backend=backend, n_jobs=n_jobs, cache_dir=cache_dir,
                 progress=progress, seed=seed, on_interrupt=on_interrupt)


def _axis(name, vals, what, example):
    """A non-empty list from a sequence argument; a string or a scalar is refused (not iterated)."""
    if isinstance(vals, (str, bytes)) or not hasattr(vals, "__iter__") or isinstance(vals, dict):
        raise ValueError(f"{name} must be a sequence of {what}, e.g. {name}={example}; got {vals!r} "
                         f"(for one value write {name}=({vals!r},)).")
    out = list(vals)
    if not out:
        raise ValueError(f"{name} is empty; give at least one value.")
    return out


def _numbers(name, vals, *, positive, meaning):
    """Finite floats (> 0 when ``positive``, else >= 0) from a sequence argument."""
    out = []
    for v in _axis(name, vals, f"numbers ({meaning})", "(1.0, 2.0)"):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must hold numbers ({meaning}), got {v!r}.") from None
        if isinstance(v, (bool, np.bool_)) or not math.isfinite(f) or (f <= 0 if positive else f < 0):
            raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'} ({meaning}), got {v!r}.")
        out.append(f)
    return out



def transient_models(setting: str = "factorial", *, sigma: float = 3.0, lam: float = 1e-3, beta: float = 1e-2,
                     anchor_scale: float = 0.3, shared: float = 0.6, horizon: float = 1e5, init_scale: float = 1e-3,
                     n_records: int = 120, seed: int = 0) -> TransientModels:
    """The semantic transient of the three candidate models M1, M2, M3 (THEORY §8.1-8.3) on one setting, CE loss.

    * ``"M1 anchored"``: :class:`~ufm.problems.AnchoredUFM` with anchor
      ``H_0 = [anchor_scale * Phi_attr; 0_{N x N}]`` (attribute one-hots, room
      for an ETF), strength ``beta``, ``lam_W = lam_H = lam``; simulated by
      gradient flow (:func:`ufm.simulate`). Features are pulled to the anchor on
      the time scale ``1/beta`` (the gap rises to the anchor's), then CE
      separates them toward the regularized end state.
    * ``"M2 input-coupled"``: :class:`~ufm.problems.InputCoupledUFM` with
      ``Phi = [Phi_attr; sigma I]``, ``lam_W = lam_A = lam``, simulated; the gap
      rises from its small initial value as the attribute modes are learned
      first, then falls (THEORY §8.2).
    * ``"M3 kernel flow"``: :func:`ufm.dynamics.kernel_flow` with the block
      kernel ``block_kernel(setting, 1, shared, 0)`` (no weight decay); the
      logit Gram inherits the kernel's blocks at once and then loses them only
      log-slowly as CE saturates: a plateau and slow decay, no delayed rise.

    Parameters
    ----------
    setting : {"factorial", "hierarchy", "ntp_contexts"}
        The default instance (:func:`ufm.settings.named_setting`).
    sigma : float
        Per-item capacity of M2.
    lam : float
        Weight decay of M1 and M2 (halved convention).
    beta : float
        Anchor strength of M1.
    anchor_scale : float
        Scale of the attribute one-hots in M1's anchor.
    shared : float
        Kernel value of M3 for items that share attributes (``same = 1``, ``none = 0``).
    horizon : float
        End time of the three flows.
    init_scale : float
        Std of the Gaussian initialization of M1 and M2.
    n_records : int
        Records on the log-time grid.
    seed : int
        Seed of the initialization.

    Returns
    -------
    TransientModels
        ``times``, ``semantic_gap``, ``etf_distance``: model name -> 1-D array
        (item Gram for M1/M2, logit Gram for M3); ``runs``: name -> the
        Trajectory or TheoryCurve; ``status`` is ``completed`` unless a run did not succeed.
    """
    st = named_setting(setting)
    N = st.N
    steps = 10**6
    H0 = np.vstack([anchor_scale * st.attribute_encoding(), np.zeros((N, N))])
    m1 = AnchoredUFM(K=N, n=1, H_anchor=H0, beta=beta, loss="ce", lam_W=lam, lam_H=lam)
    m2 = InputCoupledUFM.from_setting(st, sigma=sigma, loss="ce", lam_W=lam, lam_A=lam)
    results = {}
    for name, prob in (("M1 anchored", m1), ("M2 input-coupled", m2)):
        results[name] = _simulate.simulate(prob, steps=steps, lr=horizon / steps, mode="flow", time_variable="t",
                                           init_scale=init_scale, seed=seed, record=("semantic_gap", "etf_distance"),
                                           attributes=st.attributes, n_records=n_records)
    times = results["M2 input-coupled"].times
    results["M3 kernel flow"] = dynamics.kernel_flow(st, dynamics.block_kernel(st, 1.0, shared, 0.0), times,
                                                     loss="ce", init_scale=init_scale, seed=seed)
    times, gaps, etfs = {}, {}, {}
    for name, r in results.items():
        missing = np.full(len(r.times), np.nan)         # a curve that failed has no records
        g, e = np.asarray(r.records.get("semantic_gap", missing)), np.asarray(r.records.get("etf_distance", missing))
        times[name], gaps[name], etfs[name] = r.times, g[0] if g.ndim == 2 else g, e[0] if e.ndim == 2 else e
    failed = [(name, r) for name, r in results.items() if not r.success]
    status, message = (failed[0][1].status, f"{failed[0][0]}: {failed[0][1].message}") if failed else \
        ("completed", f"M1, M2, M3 on {setting} to t = {horizon:g}.")
    meta = {"setting": setting, "sigma": sigma, "lam": lam, "beta": beta, "anchor_scale": anchor_scale,
            "shared": shared, "horizon": horizon, "init_scale": init_scale, "n_records": n_records, "seed": seed}
    return TransientModels(times=times, semantic_gap=gaps, etf_distance=etfs, runs=results, status=status,
                           message=message, meta=meta)
