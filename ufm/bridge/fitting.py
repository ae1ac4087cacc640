"""Fit UFM models to observed Gram trajectories (THEORY §8.6): parameters with intervals, and what they explain.

:func:`fit` takes class-mean Grams recorded over training (a bridge :class:`~ufm.results.Run`
file, arrays, or a :class:`~ufm.results.Trajectory` of :func:`ufm.simulate`) and fits, side by side:

``"static"``
    At each record, the least-squares decomposition of the centred, unit-norm
    Gram into the ETF part and one attribute kernel per factor,
    ``G_c ~ a P_K + sum_f b_f P_K S_f P_K`` (THEORY §8.6 step 2), with
    confidence intervals. Descriptive: ``1 + F`` free numbers per record, so
    it is never a candidate explanation, and it is flagged *saturated* when it
    has as many numbers per record as the representation it is matched on.
``"input_coupled"`` (M2, THEORY §8.2; :mod:`ufm.bridge.m2`)
    ``H = A Phi`` with the weight decay on ``W`` and ``A``: its end state is
    the weighted nuclear-norm optimum, not the simplex ETF.
``"feature_penalty"`` (M2-H, THEORY §8.2b)
    ``H = A Phi`` with the weight decay on ``W`` and on the features ``H``, as
    the reference networks are trained: its end state is the standard UFM
    optimum (the simplex ETF), the input kernel shapes the path.
``"anchored"`` (M1, THEORY §8.1)
    The minimizer of the anchored MSE UFM (8.1) on a grid of ``beta``, anchor
    ``H_0`` = the attribute one-hots; fitted: a non-increasing path
    ``beta(step)`` (``1/beta`` reads as capacity x training time). Its semantic
    gap can only fall along such a path, so it cannot produce the early rise.

For M2 and M2-H the inputs are ufm's encoding ``Phi = [Phi_attr(strengths);
sigma I]`` (``sigma`` and the strengths fitted) or the user's own inputs /
kernel (used as given); the weight decay ``lam``, the start scale and the
clock (:mod:`ufm.bridge.clock`: known for a ufm Trajectory, a declared
broken power law for a network) are fitted by least squares on the
records' shapes and sizes (:mod:`ufm.bridge.estimate`). Every fitted
parameter of the quoted model (the best accepted one, else the best fitted
M2-family model) gets an interval at ``level`` from a parametric bootstrap
and an identifiability flag: ``FitResult.intervals``, ``FitResult.identifiable``.

Representations (THEORY §8.6 step 5). Grams are compared after centring with
``P_K`` and scaling to unit Frobenius norm. *Full*: the whole unit-centred
Gram. *Patterns*: its average over pairs of classes that share the same set of
attributes (:mod:`ufm.bridge.patterns`), renormalized: everything an attribute
model can express, without the item-specific part of a finite network's Gram.
The fit is *matched* on one of them (``match``) and judged on both.

Goodness of fit (``FitResult.gof[model]``): ``gap_r2`` and ``etf_r2`` (R^2 of
the semantic-gap and ETF-distance curves over the records, model against the
full observed Grams, with their RMSE), ``rise_r2`` (the gap from the first
record to its peak), ``gram_r2`` (matched representation),
``gram_r2_patterns``, ``gram_r2_full`` (``1 - sum_t ||G_obs - G_model||^2 /
sum_t ||G_obs - mean_t G_obs||^2``), ``gram_distance``, ``end_etf`` and
``end_gap`` (the model's ETF distance and gap at the last record minus the
run's), ``n_params`` and ``n_data`` (independent numbers in the matched
representation: ``T (R - 2)`` for ``R`` patterns, ``T (K(K-1)/2 - 1)`` for
full Grams). The data's own ``outside_patterns`` (share of the Gram variance,
and of its change over training, that no attribute model can produce) is in
``FitResult.params``.

A dynamical model is *accepted* as an explanation only if it explains the gap
curve (and its rise), the ETF-distance curve, the matched and the full Grams
at their R^2 thresholds, and ends where the run ends (:data:`ACCEPT`: one
threshold per R^2; the verdict says "explains" only at or above it);
``best_model`` is the accepted model with the highest matched Gram R^2, or
``None``. ``FitResult.verdict`` says in one line what is and is not explained.

Events (``FitResult.transitions``; ``FitResult.forecast``): the gap's peak,
the gap transition (the Gram's turn towards its end state) and the collapse
(the first record with ETF distance at most ``collapse``), observed and, for
an accepted model, predicted with intervals; ``until=STEP`` fits the records
up to STEP only, so the predictions are a forecast of the rest.

References
----------
THEORY.md §7.2, §7.4, §8.1, §8.2, §8.2b, §8.6; Tirer, Huang, Niles-Weed, arXiv
2210.16658 (M1); Zhao, Papadimitriou, Thrampoulidis, "Structure Before
Collapse", arXiv 2606.26749.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import _interrupt, _memory, _threads
from .._checks import check_bool, check_int, check_nonneg, check_positive
from .._progress import Progress
from ..results import FitResult
from .clock import CLOCKS, Clock, align_monotone
from .estimate import LONG_REACH, Estimator, bootstrap, flat_range, interval_table, jacobian
from .io import as_numpy
from .m1 import anchored_path, anchored_path_patterns
from .m2 import CACHE_BYTES, CACHE_ENTRIES, ENGINES, STARTS, M2Model, isotropic_init
from .observed import Representations, first_state, read_observed, unit_centred, until_step
from .patterns import PatternAlgebra, pattern_ids, project_patterns
from .report import (ACCEPT, COLLAPSE, NAMES, TRANSIENT, estimate_lines, event_lines, explains, goodness_of_fit,
                     model_events, observed_events, observed_transition, table, verdict_line, within_class,
                     within_lines)
from .static import static_decomposition

__all__ = ["ACCEPT", "COLLAPSE", "MODELS", "TRANSIENT", "align_monotone", "anchored_path", "fit", "isotropic_init",
           "observed_transition", "pattern_ids", "project_patterns", "static_decomposition", "unit_centred",
           "within_class"]

MODELS = ("static", "input_coupled", "feature_penalty", "anchored")
#: The M2 family: model name -> the block the weight decay acts on besides W (:class:`~ufm.bridge.m2.M2Model`).
M2_FAMILY = {"input_coupled": "A", "feature_penalty": "H"}
#: A clock is degenerate when the model's Gram moves by less than this share of the run's over the records.
DEGENERATE = 0.1
#: The bootstrap's pilot (width, runs) when the start width is matched to the observed misfit.
PILOT = (64.0, 8)
#: A predicted event whose interval spans more than this factor in steps is not determined by the records.
FORECAST_SPAN = 10.0


def _check_models(models):
    if isinstance(models, str) or not all(isinstance(m, str) for m in np.atleast_1d(np.asarray(models, object))):
        raise ValueError(f"models must be a sequence of model names from {MODELS}, e.g. ('static', "
                         f"'input_coupled'), got {models!r}.")
    models = tuple(models)
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ValueError(f"models must be a non-empty subset of {MODELS}, got {list(models)}.")
    return models


def _check_grid(sigma_grid):
    if isinstance(sigma_grid, (str, bytes)) or np.ndim(sigma_grid) != 1 or len(sigma_grid) == 0:
        raise ValueError(f"sigma_grid must be a non-empty sequence of capacities > 0, e.g. (1.0, 2.0, 4.0), got "
                         f"{sigma_grid!r}.")
    return tuple(check_positive("sigma_grid", s, "a starting capacity") for s in sigma_grid)


def _check_accept(accept):
    out = dict(ACCEPT)
    if accept is None:
        return out
    if not isinstance(accept, dict) or set(accept) - set(ACCEPT):
        raise ValueError(f"accept must be a dict with keys among {sorted(ACCEPT)}, got {accept!r}.")
    for k, v in accept.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"accept[{k!r}] must be a number, got {v!r}.") from None
    return out


def fit(source, setting=None, *, attributes=None, steps=None, models=MODELS, loss: str = "ce", lam="fit",
        fit_strengths: bool = True, inputs=None, kernel=None, start: str = "isotropic", init_scale="fit",
        match: str = "auto", engine: str = "auto", clock: str = "auto", until=None, horizon: float = 1e6,
        sigma_grid=(0.5, 1.0, 2.0, 4.0, 8.0, 16.0), max_iter: int = 60, bootstrap: int = 30, width="auto",
        anchor=None, lam_W_anchor: float = 1e-2, lam_H_anchor: float = 1e-2, betas=None, level: float = 0.9,
        collapse: float = COLLAPSE, accept=None, seed: int = 0, progress="auto", on_interrupt: str = "raise",
        throw: bool = False) -> FitResult:
    """Fit the static decomposition, M2, M2-H and M1 to observed Grams; intervals, events and a verdict.

    Parameters
    ----------
    source : Run, path, Trajectory or array
        A bridge run (:class:`~ufm.results.Run` or the path of a file that
        :func:`ufm.bridge.load_run` reads), a :class:`~ufm.results.Trajectory`
        (its ``"gram_means"`` or ``"gram_H"`` record, averaged over seeds; the
        observed clock is its GD steps, or its flow times), or class-mean Grams
        ``(T, K, K)`` / ``(K, K)``. Grams are uncentred ``M^T M`` of class means
        (symmetric PSD).
    setting : Setting, optional
        The synthetic setting the classes come from (its attribute table and
        ufm's encoding for M2 / M1). Default: the run's recorded setting, or a
        setting built from ``attributes``. A setting whose attribute table
        differs from the one the run records is an error.
    attributes : int array (K, F), optional
        Attribute table, when there is no setting.
    steps : array (T,), optional
        Observed steps (default: the run's steps, the trajectory's, or ``0..T-1``).
    models : sequence of str
        Any of ``"static"``, ``"input_coupled"``, ``"feature_penalty"``, ``"anchored"``.
    loss : {"ce", "mse"}
        Loss of M2 / M2-H (the network's loss; default CE, mean over classes).
    lam : "fit" or float
        Weight decay of M2 (``lam_W = lam_A``) and M2-H (``lam_W = lam_H``), halved
        convention (THEORY §0.1). ``"fit"`` (default) fits ``log10 lam``.
    fit_strengths : bool
        With ufm's encoding: fit one strength per identifiable attribute block
        (with a fitted clock their geometric mean is 1: the encoding's overall
        scale trades against the time scale), or hold them at 1.
    inputs : array (p, K), optional
        The network's own inputs, one column per class (e.g. class-mean input
        vectors): M2 uses ``K_x = inputs^T inputs`` as given, and ``sigma`` and
        the strengths are not fitted.
    kernel : array (K, K), optional
        The input kernel itself (symmetric PSD), instead of ``inputs``.
    start : {"isotropic", "observed"}
        The models' start (:mod:`ufm.bridge.m2`): the wide-layer isotropic start, or
        the run's first record (class means and classifier rows when recorded,
        else the first Gram), which carries the run's random initialization.
    init_scale : "fit" or float
        Start scale ``s`` (``||W0||^2 + ||H0||^2 = s^2 (K + tr K_x)``); fitted
        by default.
    match : {"auto", "patterns", "full"}
        The representation the shape channel compares (module docstring).
        ``"auto"``: ``"full"`` with ``start="observed"``, else ``"patterns"``.
        Goodness of fit is reported in both.
    engine : {"auto", "patterns", "dense"}
        The integrator of M2 / M2-H (:class:`~ufm.bridge.m2.M2Model`). ``"auto"``:
        the exact pattern reduction when the attribute table is an association
        scheme, the kernel constant on its patterns and the start isotropic;
        else dense (``O(K^3)`` per step).
    clock : {"auto", "gd", "flow", "linear", "power"}
        How observed steps map to model time (:mod:`ufm.bridge.clock`).
        ``"auto"``: a ufm Trajectory's own clock (GD with its ``lr``, or its flow
        time: nothing fitted), else ``"broken"`` (``tau = c step^alpha (1 +
        step/b)^(beta - alpha)``: two power laws, which an Adam-trained network
        needs). For a declared clock the fit is also reported with the linear
        and the free (monotone) map, side by side.
    until : float, optional
        Fit only the records with ``step <= until`` (at least 3): the predicted
        events are then a forecast of the rest of the run (``FitResult.forecast``);
        the observed events use every record.
    horizon : float
        Last model time of the model's curves (with weight decay at most
        ``m2.END_TIME / lam`` = ``20 / lam``, where the model has reached its end state).
    sigma_grid : sequence of float
        Starting values of ``sigma`` (ufm's encoding).
    max_iter : int
        Function evaluations of each least-squares search (from the three best
        grid points, then once more after reweighting the two channels; 0: the
        best grid point, no search).
    bootstrap : int
        Synthetic runs of the parametric bootstrap for the intervals (0: no
        intervals; :mod:`ufm.bridge.estimate`).
    width : "auto" or float
        Width of the bootstrap's Gaussian starts (:mod:`ufm.bridge.estimate`).
        ``"auto"``: a ufm Trajectory's own width when it started from a
        Gaussian, else an effective width at which the synthetic runs misfit the
        model as much as the data does.
    anchor : array (d0, K), optional
        M1 anchor ``H_0``. Default: the attribute one-hots (THEORY §8.6 step 3),
        weighted by M2's fitted strengths when M2 is fitted, stacked on a zero
        K x K block that leaves room for the ETF.
    lam_W_anchor, lam_H_anchor : float
        M1 weight decays (Tirer normalization of (8.1)).
    betas : array, optional
        M1 grid (default ``logspace(3, -5, 81)``).
    level : float
        Confidence level of every interval (the static coefficients', the
        parameters' and the predicted events'); default 0.9.
    collapse : float
        ETF-distance threshold of a collapse (default 0.1; the distance is in [0, 2]).
    accept : dict, optional
        Overrides of :data:`ACCEPT`, the minimum quality of an explanation.
    seed : int
        Seed of M1's symmetry-breaking perturbation and of the bootstrap's starts.
    progress : {"auto", True, False}
        A progress display (tqdm when installed, else lines on stderr; never stdout;
        status lines at most every 2 s):
        ``"auto"`` (default) once the work has run 2 s, ``True`` from the start,
        ``False`` never. Every ``ufm`` entry point takes the same values.
    on_interrupt : {"raise", "return"}
        What Ctrl-C (SIGINT) does: the current search or bootstrap stops at its next
        simulation and the fit is finished from what was found so far, with ``status``
        ``interrupted``, ``meta["interrupted"] = True`` and a note. ``"raise"`` (default,
        as :func:`ufm.simulate`): ``KeyboardInterrupt`` carrying that FitResult in its
        ``result``; ``"return"``: the FitResult is returned (``ufm fit`` writes it and exits 130).
    throw : bool
        Raise :class:`ufm.results.NotConverged` (the FitResult in ``err.result``) instead of
        returning a fit that did not finish (``interrupted`` with ``on_interrupt="return"``).
        A finished fit in which no model is accepted is a result, not a failure.

    Returns
    -------
    FitResult
        ``params``: the quoted model's fitted values (``"model"`` names it: ``sigma``,
        ``strengths``, ``lam``, ``init_scale``, and for a declared clock
        ``time_scale``, ``time_exponent``, ``gram_scale``), M1's ``beta_start``,
        ``beta_end``, the static coefficients at the last record,
        ``outside_patterns`` and ``outside_patterns_change``; ``intervals`` and
        ``identifiable`` (the quoted model's); ``estimates`` (each M2-family
        model's values, intervals, clock, time maps, bootstrap); ``gof`` per model
        with ``explains`` and ``accepted``; ``curves``; ``grams``; ``best_model``;
        ``transitions`` (observed and predicted events); ``forecast``;
        ``verdict``.

    Raises
    ------
    ValueError
        A bad argument or source, named with the fix, before any simulation;
        a dynamical model with fewer than 3 records.
    KeyboardInterrupt
        After Ctrl-C with ``on_interrupt="raise"``; its ``result`` holds the FitResult.
    """
    throw = check_bool("throw", throw)
    # -- Ctrl-C: one protected region from the first check to the return (ufm._interrupt.STAGES["fit"]) --
    # and one BLAS thread: the least-squares SVDs and the model's products are small, and threads fighting
    # over a shared 2-core machine made each of them 100x slower (measured)
    with _interrupt.protected("fit", on_interrupt) as call, _threads.one_blas_thread():
        call.stage("checks")
        res = _fit(source, setting, attributes=attributes, steps=steps, models=models, loss=loss, lam=lam,
                   fit_strengths=fit_strengths, inputs=inputs, kernel=kernel, start=start, init_scale=init_scale,
                   match=match, engine=engine, clock=clock, until=until, horizon=horizon, sigma_grid=sigma_grid,
                   max_iter=max_iter, n_boot=bootstrap, width=width, anchor=anchor, lam_W_anchor=lam_W_anchor,
                   lam_H_anchor=lam_H_anchor, betas=betas, level=level, collapse=collapse, accept=accept,
                   seed=seed, progress=progress, stage=call.stage)
        res = call.finish(res, bool(res.meta.get("interrupted")), mark=_interrupted_after_the_fit,
                          message="interrupted (Ctrl-C): err.result holds the FitResult of every model fitted "
                                  "before it (see its notes)")
    return res.raise_on_failure() if throw else res


def _interrupted_after_the_fit(res: FitResult) -> FitResult:
    """``res``, whose every model was fitted before a Ctrl-C was seen, marked interrupted (nothing is missing)."""
    note = "interrupted (Ctrl-C) after the fit had ended; nothing is missing from it"
    return res.replace(status="interrupted", message=f"{res.message}\nnote: {note}",
                       meta={**res.meta, "interrupted": True, "notes": [*res.meta["notes"], note]})
# -- end of the Ctrl-C part of fit --


@dataclass
class _Fits:
    """What the fit collects, model by model, into the FitResult."""

    curves: dict = field(default_factory=dict)       # name -> curve over the records
    fitted: dict = field(default_factory=dict)       # model -> its Grams at the records
    gof: dict = field(default_factory=dict)          # model -> goodness of fit
    params: dict = field(default_factory=dict)
    estimates: dict = field(default_factory=dict)    # M2-family model -> values, intervals, clock, ...
    transitions: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    static_saturated: bool = False
    interrupted: bool = False


def _check_arguments(models, loss, lam, init_scale, start, engine, match, clock, horizon, max_iter, n_boot, width,
                     level, collapse, until, inputs, kernel, sigma_grid, accept):
    """Every argument of :func:`fit` that can be checked before the source is read."""
    models = _check_models(models)
    if loss not in ("ce", "mse"):
        raise ValueError(f"loss must be 'ce' or 'mse', got {loss!r}.")
    if not (isinstance(lam, str) and lam == "fit"):
        lam = check_nonneg("lam", lam)
    if not (isinstance(init_scale, str) and init_scale == "fit"):
        init_scale = check_positive("init_scale", init_scale, "the start scale, or 'fit'")
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}.")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}.")
    if match not in ("auto", "patterns", "full"):
        raise ValueError(f"match must be 'auto', 'patterns' or 'full', got {match!r}.")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS} (see ufm.bridge.clock), got {clock!r}.")
    horizon = check_positive("horizon", horizon, "the last model time")
    max_iter = check_int("max_iter", max_iter, 0)
    n_boot = check_int("bootstrap", n_boot, 0)
    if 0 < n_boot < 5:
        raise ValueError(f"bootstrap must be 0 (no intervals) or at least 5 synthetic runs, got {n_boot}.")
    if not (isinstance(width, str) and width == "auto"):
        width = check_positive("width", width, "the bootstrap's start width, or 'auto'")
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ValueError(f"level must be in (0, 1), e.g. 0.9, got {level!r}.")
    collapse = check_positive("collapse", collapse, "an ETF-distance threshold in (0, 2]")
    if until is not None:
        until = check_nonneg("until", until, "the last step to fit")
    if inputs is not None and kernel is not None:
        raise ValueError("pass inputs= or kernel=, not both.")
    return dict(models=models, lam=lam, init_scale=init_scale, horizon=horizon, max_iter=max_iter, n_boot=n_boot,
                width=width, collapse=collapse, until=until, sigma_grid=_check_grid(sigma_grid),
                accept=_check_accept(accept))


def _fit(source, setting=None, *, attributes, steps, models, loss, lam, fit_strengths, inputs, kernel, start,
         init_scale, match, engine, clock, until, horizon, sigma_grid, max_iter, n_boot, width, anchor,
         lam_W_anchor, lam_H_anchor, betas, level, collapse, accept, seed, progress, stage) -> FitResult:
    """:func:`fit` without the Ctrl-C policy (it runs inside ``fit``'s protected region): check, observe, fit each
    model, judge, bootstrap the quoted model, predict. ``stage(name)`` marks each stage of
    ``ufm._interrupt.STAGES["fit"]`` as it begins."""
    t_start = time.perf_counter()
    report = Progress(progress, None, "ufm.fit").note     # status lines on stderr
    a = _check_arguments(models, loss, lam, init_scale, start, engine, match, clock, horizon, max_iter, n_boot,
                         width, level, collapse, until, inputs, kernel, sigma_grid, accept)
    models, lam, init_scale, horizon, max_iter, n_boot = (a["models"], a["lam"], a["init_scale"], a["horizon"],
                                                          a["max_iter"], a["n_boot"])
    width, collapse, until, sigma_grid, accept = a["width"], a["collapse"], a["until"], a["sigma_grid"], a["accept"]
    stage("read")
    report("reading and checking the Grams", force=True)
    whole = read_observed(source, setting, attributes, steps)
    obs = until_step(whole, until)
    K, T = obs.K, obs.T
    the_clock = _clock_of(clock, whole)
    dense = engine == "dense" or start == "observed" or inputs is not None or kernel is not None
    _memory.check(memory_estimate(K, whole.T, np.asarray(obs.attributes).shape[1], models, dense=dense),
                  "ufm.fit", "Fit fewer records (a subset of the run's steps) or fewer models.")
    user = _user_inputs(inputs, kernel, K)
    dynamical = [m for m in models if m != "static"]
    if dynamical and T < 3:
        raise ValueError(f"the source has {T} record(s); fitting a trajectory ({', '.join(dynamical)}) needs at "
                         f"least 3 (more make it identifiable). Use models=('static',) for single Grams.")
    if match == "auto":
        match = "full" if start == "observed" else "patterns"

    out = _Fits()
    stage("observe")
    report(f"{K} classes, {T} records: centring, pattern projections, observed curves", force=True)
    rep = _observe(obs, match, out)
    rep_whole = rep if whole.T == T else Representations(whole, match, rep.algebra)
    out.transitions["observed"] = observed_events(whole.steps, rep_whole.gap, rep_whole.etf, rep_whole.matched,
                                                  collapse=collapse)
    if "static" in models:
        stage("static")
        report("static decomposition", force=True)
        _fit_static_model(rep, obs, level, match, out)
    options = dict(user=user, kind=("encoding" if user is None else "inputs" if inputs is not None else "kernel"),
                   loss=loss, lam=lam, init_scale=init_scale, fit_strengths=fit_strengths, start=start,
                   engine=engine, horizon=horizon, sigma_grid=sigma_grid, max_iter=max_iter, report=report,
                   clock=the_clock, size_offset=whole.clock is None)
    fitted = {}
    for name in (m for m in MODELS if m in models and m in M2_FAMILY):
        stage(name)
        if out.interrupted:
            out.notes.append(f"{name}: not fitted (interrupted before it started)")
            continue
        report(f"{name}: fitting {K} classes, {T} records ({the_clock.describe()})", force=True)
        f = _fit_m2_model(name, rep, obs, out, **options)
        if f is not None:
            fitted[name] = f
    if "anchored" in models:
        grid = np.logspace(3, -5, 81) if betas is None else np.asarray(betas, dtype=np.float64)
        if grid.ndim != 1 or len(grid) < 2 or np.any(grid <= 0):
            raise ValueError("betas must be a 1-D grid of at least 2 values > 0.")
        stage("anchored")
        report(f"anchored: beta path over {len(grid)} values", force=True)
        m2 = fitted.get("input_coupled") or fitted.get("feature_penalty")
        _fit_anchored_model(rep, obs, out, anchor=anchor, m2=m2, lam_W=lam_W_anchor, lam_H=lam_H_anchor, betas=grid,
                            seed=seed)

    stage("judge")
    report("goodness of fit", force=True)
    best, verdict = _judge(rep, out, accept)
    quoted = best if best in fitted else max(fitted, key=lambda m: out.gof[m]["gram_r2"], default=None)
    if quoted is not None:
        stage("intervals")
        _intervals_and_events(quoted, fitted[quoted], out, accepted=quoted == best, n_boot=n_boot, width=width,
                              whole=whole, level=level, collapse=collapse, seed=seed, until=until, report=report)
    else:
        out.transitions["predicted"] = {k: {"step": None, "low": None, "high": None,
                                            "reason": "no M2-family model was fitted"}
                                        for k in ("peak", "transition", "collapse")}
    _flat_params(out, quoted)
    interrupted = out.interrupted or _interrupt.requested()
    if interrupted and not any("interrupted (Ctrl-C)" in n for n in out.notes):
        out.notes.append("interrupted (Ctrl-C) where no search could stop early; every model was fitted to the end")
    text = table(out.gof, rep)
    message = (f"fit of {obs.desc}: {K} classes, {T} records"
               + (f" (up to step {until:g} of {whole.T})" if until is not None else "")
               + f", matched on {match} Grams.\n{text}\nverdict: {verdict}"
               + event_lines(out.transitions) + estimate_lines(out.estimates, level) + within_lines(out.curves)
               + "".join(f"\nnote: {n}" for n in out.notes))
    meta = {"source": obs.desc, "models": list(models), "match": match, "loss": loss, "lam": lam,
            "fit_strengths": fit_strengths, "start": start, "init_scale": init_scale, "engine": engine,
            "clock": the_clock.kind, "until": until, "horizon": horizon, "max_iter": max_iter, "bootstrap": n_boot,
            "width": width, "level": level, "collapse": collapse, "accept": accept, "seed": seed,
            "setting": getattr(obs.setting, "name", None), "attributes": np.asarray(obs.attributes).tolist(),
            "seconds": time.perf_counter() - t_start, "notes": out.notes, "interrupted": interrupted}
    pred = out.transitions.get("predicted", {}).get("transition", {})
    q = out.estimates.get(quoted, {}) if quoted else {}
    stage("result")
    return FitResult(params=out.params, gof=out.gof, steps=obs.steps, curves=out.curves, grams=out.fitted,
                     best_model=best, predicted_transition=pred.get("step"), transitions=out.transitions,
                     verdict=verdict, intervals=q.get("intervals") or {}, identifiable=q.get("identifiable") or {},
                     estimates=out.estimates, message=message,
                     status="interrupted" if interrupted else "completed", meta=meta)


def _clock_of(clock: str, obs) -> Clock:
    """The clock of the fit: a Trajectory's own for ``"auto"``, else the declared power law (or as asked)."""
    own = obs.clock
    if clock == "auto":
        if own is None:
            return Clock("broken")
        return Clock("gd", lr=own["lr"]) if own["kind"] == "gd" else Clock("flow")
    if clock == "gd":
        if own is None or own["kind"] != "gd":
            raise ValueError("clock='gd' needs a ufm Trajectory of a GD run (its steps and lr); for a network pass "
                             "clock='linear' or 'power'.")
        return Clock("gd", lr=own["lr"])
    if clock == "flow" and own is not None and own["kind"] == "gd":
        raise ValueError("clock='flow' on a GD Trajectory: its steps are GD steps; pass clock='gd' or 'auto'.")
    return Clock(clock)


def _user_inputs(inputs, kernel, K: int):
    """The user's inputs ``(p, K)`` or input kernel ``(K, K)``, checked; ``None`` when neither is given."""
    if inputs is not None:
        user = as_numpy(inputs, "inputs")
        if user.ndim != 2 or user.shape[1] != K:
            raise ValueError(f"inputs must be (p, K = {K}), one column per class in the run's order, got shape "
                             f"{user.shape}.")
        if not np.any(user):
            raise ValueError("inputs are all zero: the input kernel is 0 and the model cannot move.")
        return user
    if kernel is not None:
        user = as_numpy(kernel, "kernel")
        if user.shape != (K, K) or not np.allclose(user, user.T, atol=1e-10 * max(1.0, np.abs(user).max())):
            raise ValueError(f"kernel must be a symmetric (K = {K}, K) input kernel, got shape {user.shape}.")
        if np.linalg.eigvalsh(0.5 * (user + user.T))[0] < -1e-10 * max(1.0, np.abs(user).max()):
            raise ValueError("kernel must be positive semidefinite (an input Gram X^T X).")
        return user
    return None


def _observe(obs, match: str, out: _Fits) -> Representations:
    """The observed Grams in the matched representation and their curves."""
    try:
        algebra = PatternAlgebra.from_attributes(obs.attributes)
    except ValueError as err:
        algebra = None
        out.notes.append(f"patterns: {err} (M2 runs on the dense engine)")
    rep = Representations(obs, match, algebra)
    out.curves.update(observed_gap=rep.gap, observed_etf_distance=rep.etf, outside_patterns=rep.outside)
    if obs.within is not None and np.any(obs.counts > 1):
        wc = within_class(obs.grams, obs.within, obs.counts)
        out.curves.update(observed_nc1_trace_ratio=wc["nc1_trace_ratio"], observed_cdnv=wc["cdnv_mean"])
    out.fitted.update(observed=rep.full, observed_patterns=rep.patterns)
    out.params.update(outside_patterns=float(rep.outside.mean()), outside_patterns_change=rep.outside_change)
    return rep


def _fit_static_model(rep, obs, level: float, match: str, out: _Fits) -> None:
    """The static ETF + attribute decomposition of every record (THEORY §8.6)."""
    T = obs.T
    st = static_decomposition(obs.grams, obs.attributes, level=level)
    out.fitted["static"] = st["fitted"]
    per = 1 + len(st["factors"])
    gap, etf, out.gof["static"] = goodness_of_fit(rep, st["fitted"], T * per)
    out.static_saturated = per >= rep.dims
    out.gof["static"]["saturated"] = out.static_saturated
    out.curves.update(static_gap=gap, static_etf_distance=etf, static_a=st["a"], static_b=st["b"],
                      static_a_ci=st["a_ci"], static_b_ci=st["b_ci"], static_r2=st["r2"])
    out.params.update(a_end=float(st["a"][-1]), b_end=st["b"][-1].tolist(), a_end_ci=st["a_ci"][-1].tolist(),
                      b_end_ci=st["b_ci"][-1].tolist(), ratio_end=(st["b"][-1] / st["a"][-1]).tolist(),
                      static_factors=st["factors"], static_df=st["df"])
    if st["dropped"]:
        out.notes.append(f"static: factors {st['dropped']} dropped (they do not split the classes or repeat others)")
    if out.static_saturated:
        out.notes.append(f"static: {per} numbers per record for {rep.dims} in the {match} representation: "
                         f"saturated, its Gram R^2 says nothing")


# -- M2 and M2-H ---------------------------------------------------------------------------------------
def _m2_model(name, rep, obs, *, user, kind, loss, lam, init_scale, fit_strengths, start, engine, clock, **_):
    """The :class:`M2Model` of one M2-family model for this run."""
    observed_start = None
    if start == "observed":
        observed_start = first_state(obs)
    common = dict(penalty=M2_FAMILY[name], loss=loss, lam=None if isinstance(lam, str) else lam,
                  scale=None if isinstance(init_scale, str) else init_scale, fit_strengths=fit_strengths,
                  absolute=clock.known, start=start, observed_start=observed_start, algebra=rep.algebra,
                  engine=engine)
    if kind == "encoding":
        return M2Model(obs.K, setting=obs.setting, **common)
    return M2Model(obs.K, **{kind: user}, **common)


def _starts(model, sigma_grid):
    """The starting grid: ``sigma`` (ufm's encoding) x weight decay x start scale, strengths at 1."""
    sig = sigma_grid if model.kind == "encoding" else [None]
    lams = [None] if model.lam is not None else [1e-4, 1e-3, 1e-2]
    scales = [None] if model.scale is not None else [1e-3, 1e-2, 1e-1]
    return [model.pack(sigma=s, strengths=np.ones(model.B), lam=lv, scale=sv) for s in sig for lv in lams
            for sv in scales]


def _fit_m2_model(name, rep, obs, out: _Fits, *, user, kind, loss, lam, init_scale, fit_strengths, start, engine,
                  horizon, sigma_grid, max_iter, report, clock, size_offset) -> dict | None:
    """One M2-family model fitted by least squares (:class:`~ufm.bridge.estimate.Estimator`), with its gof."""
    model = _m2_model(name, rep, obs, user=user, kind=kind, loss=loss, lam=lam, init_scale=init_scale,
                      fit_strengths=fit_strengths, start=start, engine=engine, clock=clock)
    if start == "observed" and obs.M0 is None:
        out.notes.append(f"{name}: start='observed' from the first Gram only (the run has no class means); the "
                         f"classifier starts isotropic and orthogonal to the features")
    est = Estimator(model, clock, obs.steps, obs.grams, match=rep.match, ids=rep.ids, attributes=obs.attributes,
                    size_offset=size_offset, horizon=horizon)
    tag = f"{name} ({model.engine})"
    try:
        r = est.fit(_starts(model, sigma_grid), max_nfev=max_iter, n_best=2,
                    report=lambda m, **k: report(f"{tag}: {m}"))
    except KeyboardInterrupt:
        out.interrupted = True
        r = est.best_so_far()
        if r is None:
            out.notes.append(f"{name}: not fitted: interrupted (Ctrl-C) before any starting point was simulated")
            return None
        out.notes.append(f"{name}: interrupted (Ctrl-C); the parameters are the best point found before it")
    if r["x"] is None:
        out.notes.append(f"{name}: not fitted: none of the {r['starts']} starting points could be simulated (every "
                         f"flow non-finite or outside the parameter bounds); it is left out of the table and verdict")
        report(f"{name}: not fitted", force=True)
        return None
    if max_iter == 0:
        out.notes.append(f"{name}: max_iter=0, so no least-squares search ran: the parameters are the best grid point")
    x = r["x"]
    fitted = est.model_grams(x)
    if fitted is None:
        raise RuntimeError(f"the best {name} parameters no longer simulate; this is a bug, please report it.")
    gap, etf, gof = goodness_of_fit(rep, fitted, len(x))
    out.gof[name] = gof
    out.fitted[name] = fitted
    long = est.long_curve(x)
    out.curves.update({f"{name}_gap": gap, f"{name}_etf_distance": etf, f"{name}_time_map": est.model_times(x),
                       f"{name}_model_times": long["times"], f"{name}_model_steps": long["steps"],
                       f"{name}_model_gap": long["gap"], f"{name}_model_etf_distance": long["etf"]})
    values = est.values(x)
    maps = _time_maps(est, x, rep, name, out, gof) if not clock.known else {}
    degenerate = _degenerate_clock(est, x)
    if degenerate:
        out.notes.append(f"{name}: {degenerate}")
        gof["degenerate_clock"] = degenerate
    out.estimates[name] = {"params": values, "intervals": None, "identifiable": None, "interval_method": None,
                           "clock": clock.describe(), "engine": model.engine, "start": start, "kernel": kind,
                           "simulations": model.n_sim, "cost": r["cost"], "weights": list(r["weights"]),
                           "time_maps": maps}
    report(f"{tag}: done, {model.n_sim} simulations, cost {r['cost']:.4g}", force=True)
    return {"est": est, "x": x, "long": long}


def _degenerate_clock(est, x) -> str:
    """Why the fitted clock is degenerate, or ``""``: the records collapse onto (nearly) one model time, so the
    model's Gram hardly moves over a run whose Grams do (less than :data:`DEGENERATE` of their change)."""
    tau = est.model_times(x)
    shape, _ = est.predict(x)
    moved = float(np.max(np.linalg.norm(shape - shape[0], axis=1)))
    seen = float(np.max(np.linalg.norm(est.obs_shape - est.obs_shape[0], axis=1)))
    if seen > 0 and moved < DEGENERATE * seen:
        pos = tau[tau > 0]
        span = f"model times {pos[0]:.3g} to {pos[-1]:.3g}" if len(pos) else "model time 0"
        return (f"degenerate time map: the {len(tau)} records map onto {span}, where the model's Gram moves by "
                f"{moved:.2g} while the run's moves by {seen:.2g}; the model does not follow the run, and its fit "
                f"says nothing about it")
    return ""


def _time_maps(est, x, rep, name, out, gof) -> dict:
    """The declared clock (goodness of fit ``gof``) against the linear map (refitted) and the free monotone map
    (same model), side by side."""
    maps = {}
    gof_of = {est.clock.kind: gof}
    if est.clock.kind in ("power", "broken"):
        lin = est.with_clock(Clock("linear"))
        xl = np.delete(x, range(est.n_model + 1, est.n_model + est.n_clock))
        try:
            r = lin.solve(xl, max_nfev=100)
            G = lin.model_grams(r["x"])
            if G is not None:
                gof_of["linear"] = goodness_of_fit(rep, G, len(r["x"]))[2]
        except KeyboardInterrupt:         # Ctrl-C: the side-by-side refit is left out
            out.interrupted = True
            out.notes.append(f"{name}: interrupted (Ctrl-C) before the linear time map was refitted")
    free = est.free_map(x)
    if free is not None:
        out.curves[f"{name}_free_time_map"] = free[0]
        gof_of["free"] = goodness_of_fit(rep, free[1], est.n_model + est.T + int(est.size_offset))[2]
    for k, g in gof_of.items():
        maps[k] = {key: g[key] for key in ("gram_r2", "gram_r2_full", "gap_r2", "etf_r2", "n_params")}
    return maps


def _intervals_and_events(name, f, out: _Fits, *, accepted, n_boot, width, whole, level, collapse, seed, until,
                          report) -> None:
    """The quoted model's bootstrap intervals, identifiability and predicted events (with intervals)."""
    est, x = f["est"], f["x"]
    e = out.estimates[name]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5eed]))
    refits, bs = None, None
    if n_boot > 0 and not out.interrupted:
        try:
            J = jacobian(est, x)                 # one Jacobian at the estimate serves every refit
            w, source = _bootstrap_width(est, x, J, width, whole, rng, report)
            how = (f"parametric bootstrap: {n_boot} runs of the fitted model from Gaussian starts of width {w:.3g} "
                   f"({source})")
            report(f"{name}: {how}", force=True)
            bs = bootstrap(est, x, width=w, n_runs=n_boot, rng=rng, report=lambda m: report(f"{name}: {m}"),
                           seeds=(whole.clock or {}).get("seeds", 1), J=J, events=(collapse, _event_steps(whole.steps)))
        except KeyboardInterrupt as err:
            out.interrupted = True
            bs = getattr(err, "partial", None)
            out.notes.append(f"{name}: bootstrap interrupted (Ctrl-C) after "
                             f"{0 if bs is None else len(bs['refits'])} runs")
        if bs is not None and len(bs["refits"]) >= 5:
            refits = bs["refits"]
            ratio = float(np.mean(bs["costs"]) / max(est.channel_rss(x)[0], 1e-300))
            inflate = 1.0 / math.sqrt(ratio) if source.startswith("the narrowest") and ratio < 1 else 1.0
            iv, ok, corrected = interval_table(est, x, refits, level, inflate=inflate)
            for p_name, good in ok.items():        # a parameter the records cannot pin: its flat range
                if good is False:
                    flat = flat_range(est, x, p_name)
                    if flat is not None:
                        iv[p_name] = [min(flat[0], iv[p_name][0]), max(flat[1], iv[p_name][1])]
            e.update(intervals=iv, identifiable=ok, corrected=corrected,
                     interval_method=how.replace(f"{n_boot} runs", f"{len(refits)} runs")
                     + "; Gauss-Newton refits; bias-corrected normal intervals")
            e["bootstrap"] = {"runs": len(refits), "failed": bs["failed"], "width": w, "width_source": source,
                              "misfit_ratio": ratio, "widened": inflate, "seconds": bs["seconds"]}
            if inflate > 1:
                e["interval_method"] += f"; widened {inflate:.2f}x (the data misfit {1 / ratio:.2f}x as much)"
            flat = [n for n, v in ok.items() if (not all(v for v in v if v is not None) if isinstance(v, list)
                                                  else not v)]
            if flat:
                out.notes.append(f"{name}: not identifiable from these records: {', '.join(flat)} (their intervals "
                                 f"are the flat ranges)")
        elif bs is not None:
            out.notes.append(f"{name}: only {len(bs['refits'])} bootstrap runs could be refitted; no intervals")
    elif n_boot == 0:
        out.notes.append(f"{name}: bootstrap=0, so no intervals: the parameters are point values only")
    # events: the model's own, in steps; their prediction intervals from what the bootstrap runs did
    events = _events_of(est, x, collapse, f["long"])
    runs = list(zip(bs["events"], [_events_of(est, r, collapse)[0] for r in refits])) if refits is not None else []
    pred = {}
    note = f" (fitted on the records up to step {until:g})" if until is not None else ""
    for k in ("peak", "transition", "collapse"):
        v, why = events[0].get(k), events[1].get(k, "")
        if not accepted:
            pred[k] = {"step": None, "low": None, "high": None, "model_step": v,
                       "reason": f"no model is accepted for this run, so none predicts it ({NAMES[name]}, the "
                                 f"best fitted, is not accepted)"}
            continue
        if v is None:
            pred[k] = {"step": None, "low": None, "high": None, "model_step": None, "reason": why + note}
            continue
        pred[k] = _predicted_event(k, v, runs, level, NAMES[name], note, n_boot)
    out.transitions["predicted"] = pred


def _event_steps(steps):
    """Where the bootstrap runs' own events are read: the run's record steps, then on past its last record at
    the same log spacing as its last two, to :data:`ufm.bridge.estimate.LONG_REACH` x its last step (a
    prediction is compared with the run's events at the resolution the run has)."""
    steps = np.asarray(steps, dtype=np.float64)
    last, before = steps[-1], steps[-2] if len(steps) > 1 else 0.0
    ratio = last / before if before > 0 and last > before else 1.1
    n = int(math.ceil(math.log(LONG_REACH) / math.log(ratio)))
    return np.concatenate([steps, last * ratio ** np.arange(1, min(n, 400) + 1)])


def _predicted_event(k, v, runs, level, who, note, n_boot) -> dict:
    """One predicted event: the model's own step ``v`` corrected by the bootstrap's prediction errors.

    In each bootstrap run the error is ``log(step the run's own Grams reach the event) - log(step its
    refitted model predicts)``: what separates a finite run, read at its record steps, from the model
    fitted to it. The prediction is ``v exp(median error)`` and its interval runs from ``v exp(q)`` to
    ``v exp(q')`` with ``q, q'`` the errors' ``(1 - level)/2`` and ``(1 + level)/2`` quantiles (empirical:
    an event read at record steps takes few values); it is not determined when more than the interval's
    tail of runs miss the event (or their refit does) within the model's horizon, or when the interval
    spans more than :data:`FORECAST_SPAN`."""
    entry = {"step": v, "low": None, "high": None, "model_step": v,
             "reason": f"{who}'s own {k}, mapped to steps by its clock{note}"}
    if not runs:
        if n_boot > 0:
            entry["reason"] += "; no interval (the bootstrap did not run)"
        return entry
    err = np.array([math.log(o[k]) - math.log(p[k]) if o.get(k) and p.get(k) else np.nan for o, p in runs])
    missing = int(np.sum(~np.isfinite(err)))
    if missing > (1 - level) / 2 * len(err):
        entry.update(step=None, reason=f"not determined by the records{note}: in {missing} of {len(err)} bootstrap "
                                       f"runs the run or its refitted model has no {k} within the model's horizon "
                                       f"({who}'s own: step {v:.4g})")
        return entry
    e = err[np.isfinite(err)]
    tail = (1 - level) / 2
    mid = float(np.median(e))
    lo = v * math.exp(float(np.quantile(e, tail, method="lower")))
    hi = v * math.exp(float(np.quantile(e, 1 - tail, method="higher")))
    if hi / lo > FORECAST_SPAN:
        entry.update(step=None, reason=f"not determined by the records{note}: its {100 * level:.0f}% interval "
                                       f"[{lo:.4g}, {hi:.4g}] spans more than {FORECAST_SPAN:g}x ({who}'s own: "
                                       f"step {v:.4g})")
        return entry
    entry.update(step=v * math.exp(mid), low=lo, high=hi,
                 reason=f"{who}'s own {k} at step {v:.4g}{note}, corrected by the bootstrap runs' prediction "
                        f"errors (the interval is where a run of the fitted model reaches it)")
    return entry


def _events_of(est, x, collapse, long=None):
    """``({"peak", "transition", "collapse"}: steps or None, reasons)`` of the model at ``x`` (its long curve
    ``long`` when already computed)."""
    long = est.long_curve(x) if long is None else long
    if long is None:
        return {}, {k: "the model could not be simulated" for k in ("peak", "transition", "collapse")}
    G = long["grams"]
    if est.model.engine == "patterns":
        a = est.model.algebra

        def dist(i, j):
            return math.sqrt(max(float(np.sum(a.mult * (G[i] - G[j]) ** 2)), 0.0))
    else:
        def dist(i, j):
            return float(np.linalg.norm(G[i] - G[j]))
    times, why = model_events(long["times"], long["gap"], long["etf"], dist, collapse=collapse)
    steps = {k: (None if t is None else float(est.clock.steps(est.split(x)[1], [t])[0])) for k, t in times.items()}
    return steps, why


def _bootstrap_width(est, x, J, width, whole, rng, report):
    """The width of the bootstrap's Gaussian starts and where it comes from.

    Given, or a ufm Trajectory's own; otherwise matched to the observed misfit: a pilot of
    :data:`PILOT` runs at width 64, and ``d = 64 x (pilot misfit / observed misfit)`` (a Gaussian
    start's imprint on the Grams shrinks as ``1 / d``), within [K, 10^6]. At the floor ``K`` the
    runs misfit less than the data, and :func:`_intervals_and_events` widens the intervals by the
    square root of the ratio."""
    if not isinstance(width, str):
        return float(width), "given"
    own = (whole.clock or {}).get("width")
    if own is not None:
        return float(own), "the run's own width"
    d0, n0 = PILOT
    data = est.channel_rss(x)[0]
    report(f"bootstrap: {n0} pilot runs at width {d0:g} to match the observed misfit", force=True)
    pilot = bootstrap(est, x, width=d0, n_runs=n0, rng=rng, J=J)
    if len(pilot["costs"]) == 0 or data <= 0:
        return 1e6, "the widest start (the pilot failed, or the data fit exactly)"
    w = d0 * np.mean(pilot["costs"]) / data
    floor = float(est.model.K)
    if w < floor:
        return floor, (f"the narrowest start used, K = {est.model.K} wide: the data misfit the model more than "
                       f"a start of any such width does, and the intervals are widened to match")
    return float(min(w, 1e6)), "an effective width: the synthetic runs misfit the model as much as the data does"


def _flat_params(out: _Fits, quoted) -> None:
    """The quoted model's values in ``params`` (``params["model"]`` names it), with how it was simulated."""
    out.params["model"] = quoted
    if quoted is None:
        return
    e = out.estimates[quoted]
    out.params.update(e["params"])
    out.params.update(engine=e["engine"], start=e["start"], kernel=e["kernel"], simulations=e["simulations"],
                      clock=e["clock"])


# -- M1 ---------------------------------------------------------------------------------------------------
def _fit_anchored_model(rep, obs, out: _Fits, *, anchor, m2, lam_W, lam_H, betas, seed) -> None:
    """The anchored model M1 along a path of anchor strengths beta (THEORY §8.1)."""
    K = obs.K
    H0 = anchor
    if H0 is None:     # attribute one-hots (M2's fitted strengths if any), with room for an ETF
        strengths = None
        if m2 is not None and m2["est"].model.kind == "encoding":
            strengths = m2["est"].values(m2["x"]).get("strengths")
        H0 = np.vstack([obs.setting.attribute_encoding(strengths), np.zeros((K, K))])
    H0 = as_numpy(H0, "anchor")
    if H0.ndim != 2 or H0.shape[1] != K:
        raise ValueError(f"anchor must be (d0, K = {K}), got shape {H0.shape}.")
    m1 = _fit_m1(rep, H0, lam_W=lam_W, lam_H=lam_H, betas=betas, seed=seed)
    out.fitted["anchored"] = m1["model_grams"]
    gap, etf, out.gof["anchored"] = goodness_of_fit(rep, m1["model_grams"], obs.T)
    out.curves.update(anchored_gap=gap, anchored_etf_distance=etf, beta_path=m1["betas"])
    out.params.update(beta_end=float(m1["betas"][-1]), beta_start=float(m1["betas"][0]), m1_solver=m1["solver"])


def _fit_m1(rep, H0, *, lam_W, lam_H, betas, seed):
    """The M1 path: minimizers on the ``beta`` grid (pattern closed form when the anchor allows), then a
    non-increasing ``beta(step)`` by monotone alignment in the matched representation."""
    a = rep.algebra
    S0 = H0.T @ H0
    order = np.argsort(-betas)               # non-increasing beta over training
    if a is not None and a.contains(S0, rtol=1e-9):
        sig = anchored_path_patterns(a.eigen(a.values(S0)), betas[order], lam_W=lam_W, lam_H=lam_H)
        xi = a.unit_centred(sig)             # in the algebra: its pattern projection is itself
        obs = a.eigen(a.values(rep.full))
        if rep.match == "patterns":
            obs = obs / np.sqrt(np.sum(a.mult * obs ** 2, axis=1, keepdims=True))
        path, cost = align_monotone(np.maximum(2.0 - 2.0 * a.inner(obs, xi), 0.0))
        return {"betas": betas[order][path], "model_grams": a.dense(xi[path]), "cost": cost, "solver": "patterns"}
    _, H = anchored_path(H0, betas[order], lam_W=lam_W, lam_H=lam_H, seed=seed)
    full = unit_centred(np.einsum("bdk,bdl->bkl", H, H))
    grams = project_patterns(full, rep.ids) if rep.match == "patterns" else full
    D = np.maximum(2.0 - 2.0 * rep.matched.reshape(rep.T, -1) @ grams.reshape(len(order), -1).T, 0.0)
    path, cost = align_monotone(D)
    return {"betas": betas[order][path], "model_grams": full[path], "cost": cost,
            "solver": "block-coordinate descent"}


# -- judging ------------------------------------------------------------------------------------------
def _judge(rep, out: _Fits, accept) -> tuple:
    """Which observations each dynamical model explains, the best accepted model and the verdict line."""
    explained, accepted = {}, {}
    for m, g in out.gof.items():
        if m == "static":
            g["explains"], g["accepted"] = {}, False
            continue
        e = explains(g, accept, rep)
        if g.get("degenerate_clock"):
            e["clock"] = False
        explained[m] = e
        g["explains"] = e
        g["accepted"] = accepted[m] = all(e.values())
    best = max((m for m in accepted if accepted[m]), key=lambda m: out.gof[m]["gram_r2"], default=None)
    verdict = verdict_line(out.gof, explained, best, rep.outside_change, out.static_saturated, accept)
    for m, g in out.gof.items():
        if g.get("degenerate_clock"):
            verdict += f" {NAMES[m]}: {g['degenerate_clock']}."
    return best, verdict


def memory_estimate(K: int, T: int, F: int, models=MODELS, *, dense: bool = False) -> dict:
    """Bytes :func:`fit` holds at its peak, by part (the guard of ``ufm._memory``).

    Parameters
    ----------
    K, T, F : int
        Classes, records and attribute factors of the observed run.
    models : sequence of str
        The models fitted.
    dense : bool
        Whether M2 / M2-H run on the dense engine (``K x K`` per model time).

    Returns
    -------
    dict
        ``"Grams and their copies"``: the observed ``(T, K, K)`` Grams as read, centred,
        unit-normed and pattern-projected, each fitted model's Grams and the result's
        copies (7 Gram stacks for one model, 2 more per further model); ``"M2 simulation
        cache"`` (at most ``m2.CACHE_ENTRIES`` curves of 400 model times or ``m2.CACHE_BYTES``); ``"pattern
        algebra"``: what building the pattern algebra needs beyond that, while two Gram
        stacks are held (``5 R^3`` floats for ``R <= 128`` patterns, about ``4 K^2`` above).
    """
    g = 8 * T * K * K
    grams = g * (7 + 2 * max(len(models) - 1, 0))
    R = min(2 ** min(F, 62), K)
    algebra = 8 * 5 * R ** 3 if R <= 128 else 8 * 4 * K * K
    per = 8 * max(400, T) * (K * K if dense else R + 1) + 400
    n_m2 = sum(m in M2_FAMILY for m in models)
    cache = min(CACHE_ENTRIES * per, CACHE_BYTES + per) if n_m2 else 0
    return {"Grams and their copies": grams, "M2 simulation cache": cache,
            "pattern algebra": max(0, algebra + 2 * g - grams - cache)}

