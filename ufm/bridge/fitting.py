"""Fit UFM models to observed Gram trajectories (THEORY §8.6), and say honestly what they explain.

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
    ``H = A Phi`` under gradient flow, with ufm's encoding
    ``Phi = [Phi_attr(strengths); sigma I]`` (``sigma`` and the strengths
    fitted) or the user's own inputs / kernel (used as given); the weight
    decay, the start scale and a monotone time map from observed steps to
    model time are fitted. Started isotropically or from the run's own first
    record.
``"anchored"`` (M1, THEORY §8.1)
    The minimizer of the anchored MSE UFM (8.1) on a grid of ``beta``, anchor
    ``H_0`` = the attribute one-hots; fitted: a non-increasing path
    ``beta(step)`` (``1/beta`` reads as capacity x training time). Its semantic
    gap can only fall along such a path, so it cannot produce the early rise.

Representations (THEORY §8.6 step 5). Grams are compared after centring with
``P_K`` and scaling to unit Frobenius norm. *Full*: the whole unit-centred
Gram. *Patterns*: its average over pairs of classes that share the same set of
attributes (:mod:`ufm.bridge.patterns`), renormalized: everything an attribute
model can express, without the item-specific part of a finite network's Gram.
The fit is *matched* on one of them (``match``) and judged on both.

Goodness of fit (``FitResult.gof[model]``): ``gap_r2`` and ``etf_r2`` (R^2 of
the semantic-gap and ETF-distance curves over the records, model against the
full observed Grams, with their RMSE), ``gram_r2`` (matched representation),
``gram_r2_patterns``, ``gram_r2_full`` (``1 - sum_t ||G_obs - G_model||^2 /
sum_t ||G_obs - mean_t G_obs||^2``), ``gram_distance``, ``n_params`` (the time
map and per-record coefficients count, one per record) and ``n_data``
(independent numbers in the matched representation: ``T (R - 2)`` for ``R``
patterns, ``T (K(K-1)/2 - 1)`` for full Grams). The data's own
``outside_patterns`` (share of the Gram variance, and of its change over
training, that no attribute model can produce) is in ``FitResult.params``.

A dynamical model is *accepted* as an explanation only if it explains the
gap curve, the ETF-distance curve and the matched Grams and does better than
the time-averaged Gram on the full Grams (thresholds: :data:`ACCEPT`);
``best_model`` is the accepted model with the highest matched Gram R^2, or
``None``. ``FitResult.verdict`` says in one line what is and is not explained.

References
----------
THEORY.md §7.2, §7.4, §8.1, §8.2, §8.6; Tirer, Huang, Niles-Weed, arXiv
2210.16658 (M1); Zhao, Papadimitriou, Thrampoulidis, "Structure Before
Collapse", arXiv 2606.26749.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import _interrupt, _memory
from .._checks import check_int, check_nonneg, check_positive
from .._progress import Progress
from ..results import FitResult
from .io import as_numpy
from .m1 import anchored_path, anchored_path_patterns
from .m2 import (CACHE_BYTES, CACHE_ENTRIES, ENGINES, STARTS, M2Model, align_monotone, align_refined,
                 alignment_cost, at_fraction, fit_m2, isotropic_init)
from .observed import Representations, first_state, read_observed, unit_centred
from .patterns import PatternAlgebra, pattern_ids, project_patterns
from .report import (ACCEPT, TRANSIENT, etf_of, explains, gaps_of, goodness_of_fit, model_transition_index,
                     m2_lines, observed_transition, predicted_transition, table, time_map_powerlaw, transition_lines,
                     unit,
                     verdict_line, within_class, within_lines)
from .static import static_decomposition

__all__ = ["ACCEPT", "MODELS", "TRANSIENT", "align_monotone", "anchored_path", "fit", "isotropic_init",
           "observed_transition", "pattern_ids", "project_patterns", "static_decomposition", "unit_centred",
           "within_class"]

MODELS = ("static", "input_coupled", "anchored")


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
        match: str = "auto", engine: str = "auto", horizon: float = 1e6, n_model: int = 160,
        sigma_grid=(0.5, 1.0, 2.0, 4.0, 8.0, 16.0), max_iter: int = 150, anchor=None, lam_W_anchor: float = 1e-2,
        lam_H_anchor: float = 1e-2, betas=None, level: float = 0.95, accept=None, seed: int = 0,
        progress="auto", on_interrupt: str = "raise", throw: bool = False) -> FitResult:
    """Fit the static decomposition, the input-coupled UFM (M2) and the anchored UFM (M1) to observed Grams.

    Parameters
    ----------
    source : Run, path, Trajectory or array
        A bridge run (:class:`~ufm.results.Run` or the path of a file that
        :func:`ufm.bridge.load_run` reads), a :class:`~ufm.results.Trajectory`
        (its ``"gram_means"`` or ``"gram_H"`` record, averaged over seeds; the
        observed clock is ``traj.times``), or class-mean Grams ``(T, K, K)`` /
        ``(K, K)``. Grams are uncentred ``M^T M`` of class means (symmetric PSD).
    setting : Setting, optional
        The synthetic setting the classes come from (its attribute table and
        ufm's encoding for M2 / M1). Default: the run's recorded setting, or a
        setting built from ``attributes``. A setting whose attribute table
        differs from the one the run records is an error.
    attributes : int array (K, F), optional
        Attribute table, when there is no setting.
    steps : array (T,), optional
        Observed steps (default: the run's steps, the trajectory's times, or ``0..T-1``).
    models : sequence of str
        Any of ``"static"``, ``"input_coupled"``, ``"anchored"``.
    loss : {"ce", "mse"}
        Loss of M2 (the network's loss; default CE, mean over classes).
    lam : "fit" or float
        Weight decay ``lam_W = lam_A`` of M2 (halved convention, THEORY §0.1).
        ``"fit"`` (default) fits ``log10 lam`` from the starts -4, -3, -2: a
        finite-time stand-in for whatever ends a network's transient.
    fit_strengths : bool
        With ufm's encoding: fit one strength per attribute block (geometric
        mean 1), or hold them at 1.
    inputs : array (p, K), optional
        The network's own inputs, one column per class (e.g. class-mean input
        vectors): M2 uses ``K_x = inputs^T inputs`` as given, and ``sigma`` and
        the strengths are not fitted.
    kernel : array (K, K), optional
        The input kernel itself (symmetric PSD), instead of ``inputs``.
    start : {"isotropic", "observed"}
        M2's start (:mod:`ufm.bridge.m2`): the wide-layer isotropic start, or
        the run's first record (class means and classifier rows when recorded,
        else the first Gram), which carries the run's random initialization.
    init_scale : "fit" or float
        Start scale ``s`` (``||W0||^2 + ||H0||^2 = s^2 (K + tr K_x)``); fitted
        by default from the starts 1e-3, 1e-2, 1e-1.
    match : {"auto", "patterns", "full"}
        The representation the dynamical models are fitted on (module
        docstring). ``"auto"``: ``"full"`` with ``start="observed"`` (the model
        then carries the run's own item-specific start), else ``"patterns"``.
        Goodness of fit is reported in both.
    engine : {"auto", "patterns", "dense"}
        M2's integrator (:class:`~ufm.bridge.m2.M2Model`). ``"auto"``: the exact
        pattern reduction when the attribute table is an association scheme,
        the kernel constant on its patterns and the start isotropic (factorial
        and hierarchy settings: milliseconds per simulation at any K); else
        dense (``O(K^3)`` per step). With ``start="observed"`` and a scheme,
        the isotropic pattern fit runs first and starts the dense search.
    horizon, n_model
        M2: last model time (with weight decay at most ``50 / lam``) and
        model records (0 and a log-spaced grid).
    sigma_grid : sequence of float
        Starting values of ``sigma`` (ufm's encoding).
    max_iter : int
        Nelder-Mead iterations of each search (two searches from the best
        starting points, then a restart from the best point; 0: the best grid
        point, no search).
    anchor : array (d0, K), optional
        M1 anchor ``H_0``. Default: the attribute one-hots (THEORY §8.6 step 3),
        weighted by M2's fitted strengths when M2 is fitted, stacked on a zero
        K x K block that leaves room for the ETF.
    lam_W_anchor, lam_H_anchor : float
        M1 weight decays (Tirer normalization of (8.1)).
    betas : array, optional
        M1 grid (default ``logspace(3, -5, 81)``).
    level : float
        Confidence level of the static intervals.
    accept : dict, optional
        Overrides of :data:`ACCEPT`, the minimum quality of an explanation.
    seed : int
        Seed of M1's symmetry-breaking perturbation.
    progress : {"auto", True, False}
        A progress display (tqdm when installed, else lines on stderr; never stdout;
        status lines at most every 2 s):
        ``"auto"`` (default) once the work has run 2 s, ``True`` from the start,
        ``False`` never. Every ``ufm`` entry point takes the same values.
    on_interrupt : {"raise", "return"}
        What Ctrl-C (SIGINT) does: the M2 search stops at its next simulation (within
        milliseconds) and the fit is finished from the best point found so far, with
        ``status`` ``interrupted``, ``meta["interrupted"] = True`` and a note. ``"raise"`` (default, as
        :func:`ufm.simulate`): ``KeyboardInterrupt`` carrying that FitResult in its
        ``result``; ``"return"``: the FitResult is returned (``ufm fit`` writes it and exits 130).
    throw : bool
        Raise :class:`ufm.results.NotConverged` (the FitResult in ``err.result``) instead of
        returning a fit that did not finish (``interrupted`` with ``on_interrupt="return"``).
        A finished fit in which no model is accepted is a result, not a failure.

    Returns
    -------
    FitResult
        ``params``: M2's ``sigma``, ``strengths``, ``lam``, ``init_scale``,
        ``time_exponent``, ``time_offset``; M1's ``beta_start``, ``beta_end``;
        the static coefficients at the last record; ``observed_transition``
        (see :func:`observed_transition`); ``outside_patterns`` (mean share of
        the unit Grams outside the patterns) and ``outside_patterns_change``.
        ``gof`` per model (module docstring) with ``explains`` and
        ``accepted``; ``curves``; ``grams``; ``best_model`` (``None`` when no
        model is accepted); ``predicted_transition`` (a step inside the
        observed range, else ``None``); ``transitions`` (both, with the reason
        when undefined or extrapolated); ``verdict``.

    Raises
    ------
    ValueError
        A bad argument or source, named with the fix, before any simulation;
        a dynamical model with fewer than 3 records.
    KeyboardInterrupt
        After Ctrl-C with ``on_interrupt="raise"``; its ``result`` holds the FitResult.
    """
    # -- Ctrl-C: one protected region from the first check to the return (ufm._interrupt.STAGES["fit"]) --
    with _interrupt.protected("fit", on_interrupt) as call:
        call.stage("checks")
        res = _fit(source, setting, attributes=attributes, steps=steps, models=models, loss=loss, lam=lam,
                   fit_strengths=fit_strengths, inputs=inputs, kernel=kernel, start=start,
                   init_scale=init_scale, match=match, engine=engine, horizon=horizon, n_model=n_model,
                   sigma_grid=sigma_grid, max_iter=max_iter, anchor=anchor, lam_W_anchor=lam_W_anchor,
                   lam_H_anchor=lam_H_anchor, betas=betas, level=level, accept=accept, seed=seed,
                   progress=progress, stage=call.stage)
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


def _fit(source, setting=None, *, attributes=None, steps=None, models=MODELS, loss: str = "ce", lam="fit",
         fit_strengths: bool = True, inputs=None, kernel=None, start: str = "isotropic", init_scale="fit",
         match: str = "auto", engine: str = "auto", horizon: float = 1e6, n_model: int = 160,
         sigma_grid=(0.5, 1.0, 2.0, 4.0, 8.0, 16.0), max_iter: int = 150, anchor=None, lam_W_anchor: float = 1e-2,
         lam_H_anchor: float = 1e-2, betas=None, level: float = 0.95, accept=None, seed: int = 0,
         progress="auto", stage) -> FitResult:
    """:func:`fit` without the Ctrl-C policy (it runs inside ``fit``'s protected region): check, observe, fit each
    model, judge. ``stage(name)`` marks each stage of ``ufm._interrupt.STAGES["fit"]`` as it begins."""
    t_start = time.perf_counter()
    report = Progress(progress, None, "ufm.fit").note     # status lines on stderr
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
    horizon = check_positive("horizon", horizon, "the last model time")
    n_model = check_int("n_model", n_model, 3)
    max_iter = check_int("max_iter", max_iter, 0)
    sigma_grid = _check_grid(sigma_grid)
    accept = _check_accept(accept)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level!r}.")
    if inputs is not None and kernel is not None:
        raise ValueError("pass inputs= or kernel=, not both.")
    report("reading and checking the Grams", force=True)
    stage("read")
    obs = read_observed(source, setting, attributes, steps)
    K, T = obs.K, obs.T
    dense = engine == "dense" or start == "observed" or inputs is not None or kernel is not None
    _memory.check(memory_estimate(K, T, np.asarray(obs.attributes).shape[1], models, n_model=n_model, dense=dense),
                  "ufm.fit", "Fit fewer records (a subset of the run's steps), fewer models, or a smaller n_model.")
    user = _user_inputs(inputs, kernel, K)
    dynamical = [m for m in models if m != "static"]
    if dynamical and T < 3:
        raise ValueError(f"the source has {T} record(s); fitting a trajectory ({', '.join(dynamical)}) needs at "
                         f"least 3 (more make it identifiable). Use models=('static',) for single Grams.")
    if match == "auto":
        match = "full" if start == "observed" else "patterns"

    out = _Fits()
    report(f"{K} classes, {T} records: centring, pattern projections, observed curves", force=True)
    stage("observe")
    rep = _observe(obs, match, out)
    if "static" in models:
        report("static decomposition", force=True)
        stage("static")
        _fit_static_model(rep, obs, level, match, out)
    m2 = None
    if "input_coupled" in models:
        report(f"input_coupled: fitting {K} classes, {T} records", force=True)
        stage("input_coupled")
        m2 = _fit_input_coupled_model(rep, obs, out, user=user, inputs_given=inputs is not None, loss=loss, lam=lam,
                                      init_scale=init_scale, fit_strengths=fit_strengths, start=start, engine=engine,
                                      horizon=horizon, n_model=n_model, sigma_grid=sigma_grid, max_iter=max_iter,
                                      report=report)
    if "anchored" in models:
        grid = np.logspace(3, -5, 81) if betas is None else np.asarray(betas, dtype=np.float64)
        if grid.ndim != 1 or len(grid) < 2 or np.any(grid <= 0):
            raise ValueError("betas must be a 1-D grid of at least 2 values > 0.")
        report(f"anchored: beta path over {len(grid)} values", force=True)
        stage("anchored")
        _fit_anchored_model(rep, obs, out, anchor=anchor, m2=m2, lam_W=lam_W_anchor, lam_H=lam_H_anchor, betas=grid,
                            seed=seed)

    report("goodness of fit", force=True)
    stage("judge")
    best, verdict = _judge(rep, out, accept)
    pred = out.transitions.get("predicted")
    predicted = pred["step"] if pred is not None and pred.get("inside") else None
    interrupted = bool(m2 is not None and m2["interrupted"]) or _interrupt.requested()
    if interrupted and not any("interrupted (Ctrl-C)" in n for n in out.notes):
        out.notes.append("interrupted (Ctrl-C) where no search could stop early; every model was fitted to the end")
    text = table(out.gof, rep)
    message = (f"fit of {obs.desc}: {K} classes, {T} records, matched on {match} Grams.\n{text}\nverdict: {verdict}"
               + transition_lines(out.transitions) + m2_lines(out.params) + within_lines(out.curves)
               + "".join(f"\nnote: {n}" for n in out.notes))
    meta = {"source": obs.desc, "models": list(models), "match": match, "loss": loss, "lam": lam,
            "fit_strengths": fit_strengths, "start": start, "init_scale": init_scale, "engine": engine,
            "horizon": horizon, "n_model": n_model, "max_iter": max_iter, "accept": accept, "seed": seed,
            "setting": getattr(obs.setting, "name", None), "attributes": np.asarray(obs.attributes).tolist(),
            "seconds": time.perf_counter() - t_start, "notes": out.notes, "interrupted": interrupted}
    stage("result")
    return FitResult(params=out.params, gof=out.gof, steps=obs.steps, curves=out.curves, grams=out.fitted,
                     best_model=best, predicted_transition=predicted, transitions=out.transitions, verdict=verdict,
                     message=message, status="interrupted" if interrupted else "completed", meta=meta)


@dataclass
class _Fits:
    """What the fit collects, model by model, into the FitResult."""

    curves: dict = field(default_factory=dict)       # name -> curve over the records
    fitted: dict = field(default_factory=dict)       # model -> its Grams at the records
    gof: dict = field(default_factory=dict)          # model -> goodness of fit
    params: dict = field(default_factory=dict)
    transitions: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    static_saturated: bool = False


def _user_inputs(inputs, kernel, K: int):
    """The user's inputs ``(p, K)`` or input kernel ``(K, K)``, checked; ``None`` when neither is given."""
    if inputs is not None:
        user = as_numpy(inputs, "inputs")
        if user.ndim != 2 or user.shape[1] != K:
            raise ValueError(f"inputs must be (p, K = {K}), one column per class in the run's order, got shape "
                             f"{user.shape}.")
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
    """The observed Grams in the matched representation, their curves and their transition."""
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
    ot = observed_transition(obs.steps, rep.gap, rep.matched)
    out.transitions["observed"] = ot
    out.params["observed_transition"] = ot["step"]
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


class _NotFitted(Exception):
    """M2 could not be simulated from any starting point: the fit goes on without it, with a note."""


def _fit_input_coupled_model(rep, obs, out: _Fits, *, start, report, **options) -> dict | None:
    """The input-coupled model M2 fitted to the trajectory, with its time map and predicted transition."""
    T = obs.T
    try:
        m2 = _fit_input_coupled(rep, obs, start=start, report=report, **options)
    except _NotFitted as why:
        out.notes.append(f"input_coupled: not fitted: {why}; it is left out of the table and the verdict")
        report(f"input_coupled: not fitted ({why})", force=True)
        return None
    out.notes += m2["notes"]
    out.fitted["input_coupled"] = m2["aligned"]
    tau = m2["tau"]
    gap, etf, out.gof["input_coupled"] = goodness_of_fit(rep, m2["aligned"], len(m2["x"]) + T)
    out.curves.update(input_coupled_gap=gap, input_coupled_etf_distance=etf, time_map=tau,
                      model_times=m2["times"], model_gap=m2["model_gap"], model_etf_distance=m2["model_etf"])
    exponent, offset = time_map_powerlaw(obs.steps, tau)
    q = m2["params"]
    params = out.params
    params.update({k: v for k, v in (("sigma", q.get("sigma")), ("strengths", q.get("strengths"))) if v is not None})
    params["near_best"] = {("init_scale" if k == "scale" else k): v for k, v in m2["near_best"].items()}
    params.update(lam=q["lam"], init_scale=q["scale"], time_exponent=exponent, time_offset=offset,
                  m2_engine=m2["engine"], m2_start=start, m2_kernel=m2["kernel_kind"], m2_simulations=m2["n_sim"])
    if m2["transition_time"] is None:
        out.transitions["predicted"] = {"step": None, "model_time": None, "inside": False,
                                        "reason": m2["transition_reason"]}
    else:
        out.transitions["predicted"] = predicted_transition(m2["transition_time"], obs.steps, tau, exponent, offset)
        params["transition_model_time"] = m2["transition_time"]
    return m2


def _fit_anchored_model(rep, obs, out: _Fits, *, anchor, m2, lam_W, lam_H, betas, seed) -> None:
    """The anchored model M1 along a path of anchor strengths beta (THEORY §8.1)."""
    K = obs.K
    H0 = anchor
    if H0 is None:     # attribute one-hots (M2's fitted strengths if any), with room for an ETF
        strengths = None if m2 is None or "strengths" not in m2["params"] else m2["params"]["strengths"]
        H0 = np.vstack([obs.setting.attribute_encoding(strengths), np.zeros((K, K))])
    H0 = as_numpy(H0, "anchor")
    if H0.ndim != 2 or H0.shape[1] != K:
        raise ValueError(f"anchor must be (d0, K = {K}), got shape {H0.shape}.")
    m1 = _fit_m1(rep, H0, lam_W=lam_W, lam_H=lam_H, betas=betas, seed=seed)
    out.fitted["anchored"] = m1["model_grams"]
    gap, etf, out.gof["anchored"] = goodness_of_fit(rep, m1["model_grams"], obs.T)
    out.curves.update(anchored_gap=gap, anchored_etf_distance=etf, beta_path=m1["betas"])
    out.params.update(beta_end=float(m1["betas"][-1]), beta_start=float(m1["betas"][0]), m1_solver=m1["solver"])


def _judge(rep, out: _Fits, accept) -> tuple:
    """Which observations each dynamical model explains, the best accepted model and the verdict line."""
    explained, accepted = {}, {}
    for m, g in out.gof.items():
        if m == "static":
            g["explains"], g["accepted"] = {}, False
            continue
        e = explains(g, accept, rep)
        explained[m] = e
        g["explains"] = e
        g["accepted"] = accepted[m] = all(e.values())
    best = max((m for m in accepted if accepted[m]), key=lambda m: out.gof[m]["gram_r2"], default=None)
    return best, verdict_line(out.gof, explained, best, rep.outside_change, out.static_saturated, accept)


def memory_estimate(K: int, T: int, F: int, models=MODELS, *, n_model: int = 160, dense: bool = False) -> dict:
    """Bytes :func:`fit` holds at its peak, by part (the guard of ``ufm._memory``).

    Parameters
    ----------
    K, T, F : int
        Classes, records and attribute factors of the observed run.
    models : sequence of str
        The models fitted.
    n_model : int
        M2's model records.
    dense : bool
        Whether M2 runs on the dense engine (``n_model x K x K`` per cached simulation).

    Returns
    -------
    dict
        ``"Grams and their copies"``: the observed ``(T, K, K)`` Grams as read, centred,
        unit-normed and pattern-projected, each fitted model's Grams and the result's
        copies (7 Gram stacks for one model, 2 more per further model); ``"M2
        simulation cache"`` (at most ``m2.CACHE_ENTRIES`` trajectories or
        ``m2.CACHE_BYTES``); ``"pattern algebra"``: what building the pattern algebra
        needs beyond that, while two Gram stacks are held (``5 R^3`` floats for ``R <= 128``
        patterns, about ``4 K^2`` above).
    """
    g = 8 * T * K * K
    grams = g * (7 + 2 * max(len(models) - 1, 0))
    R = min(2 ** min(F, 62), K)
    algebra = 8 * 5 * R ** 3 if R <= 128 else 8 * 4 * K * K
    per = 8 * n_model * (K * K if dense else R + 1) + 400
    cache = min(CACHE_ENTRIES * per, CACHE_BYTES + per) if "input_coupled" in models else 0
    return {"Grams and their copies": grams, "M2 simulation cache": cache,
            "pattern algebra": max(0, algebra + 2 * g - grams - cache)}


def _fit_input_coupled(rep, obs, *, user, inputs_given, loss, lam, init_scale, fit_strengths, start, engine,
                       horizon, n_model, sigma_grid, max_iter, report):
    """Fit M2 (grid, then Nelder-Mead) and describe its best trajectory."""
    K = rep.K
    notes = []
    lam_v = None if isinstance(lam, str) else lam
    scale_v = None if isinstance(init_scale, str) else init_scale
    common = dict(loss=loss, lam=lam_v, scale=scale_v, fit_strengths=fit_strengths, horizon=horizon,
                  n_model=n_model, algebra=rep.algebra)
    if user is None:
        common["setting"] = obs.setting
        kind = "encoding"
    elif inputs_given:
        common["inputs"] = user
        kind = "inputs"
    else:
        common["kernel"] = user
        kind = "kernel"
    observed_start = None
    if start == "observed":
        observed_start = first_state(obs)
        if obs.M0 is None:
            notes.append("input_coupled: start='observed' from the first Gram only (the run has no class means); "
                          "the classifier starts isotropic and orthogonal to the features")
        elif obs.W0 is None:
            notes.append("input_coupled: start='observed' from the first class means; the run has no classifier "
                          "rows, so the classifier starts isotropic and orthogonal to the features")
    model = M2Model(K, start=start, observed_start=observed_start, engine=engine, **common)

    def grid(m):
        sig = sigma_grid if m.kind == "encoding" else [None]
        lams = [None] if m.lam is not None else [1e-4, 1e-3, 1e-2]
        scales = [None] if m.scale is not None else ([1e-3, 1e-2, 1e-1] if m.engine == "patterns" or
                                                      m.start == "observed" else [1e-2])
        return [m.pack(sigma=s, strengths=np.ones(m.B), lam=lv, scale=sv)
                for s in sig for lv in lams for sv in scales]

    starts = grid(model)
    interrupted = False
    if model.engine == "dense" and start == "observed" and rep.algebra is not None and kind == "encoding":
        # the isotropic pattern fit is cheap: its strengths and weight decay seed the observed-start grid
        pre = M2Model(K, start="isotropic", engine="patterns", **common)
        r1 = fit_m2(pre, alignment_cost(rep, pre)[0], starts=grid(pre), max_iter=max_iter, report=report)
        if r1["x"] is None:
            raise _NotFitted("interrupted (Ctrl-C) before any starting point was simulated" if r1["interrupted"] else
                             f"none of the {len(r1['seen'])} starting points of the isotropic pattern fit could be "
                             f"simulated (every flow non-finite or outside the parameter bounds)")
        interrupted = r1["interrupted"]
        q1 = pre.unpack(r1["x"])
        starts = [r1["x"]] + [model.pack(sigma=s, strengths=q1["strengths"], lam=q1["lam"], scale=sv)
                              for s in sigma_grid for sv in ([None] if model.scale is not None else [1e-3, 1e-2, 1e-1])]
        notes.append(f"input_coupled: the isotropic pattern fit ({pre.n_sim} simulations) seeded the observed-start "
                     f"search")
    cost, inner, adjacent = alignment_cost(rep, model)
    x = starts[0]
    if not interrupted:
        seeded = model.engine == "dense" and len(starts) and start == "observed" and rep.algebra is not None
        r = fit_m2(model, cost, starts=starts, max_iter=min(max_iter, 150) if seeded else max_iter, report=report,
                   n_searches=2)
        interrupted, x, seen = r["interrupted"], r["x"], r["seen"]
        if x is None:
            raise _NotFitted("interrupted (Ctrl-C) before any starting point was simulated" if interrupted else
                             f"none of the {len(seen)} starting points could be simulated (every flow non-finite or "
                             f"outside the parameter bounds); check the inputs or kernel and the horizon")
    else:
        seen = []
    if interrupted:
        notes.append("input_coupled: interrupted (Ctrl-C); the parameters are the best found before it")
    if max_iter == 0:
        notes.append("input_coupled: max_iter=0, so Nelder-Mead did not run: the parameters are the best grid point")
    out = model.trajectory(x)
    if out is None:
        raise RuntimeError("the best M2 parameters no longer integrate; this is a bug, please report it.")
    times, G = out
    frac, c = align_refined(inner(G), adjacent(G))
    aligned = unit(model.dense(at_fraction(G, frac)))
    if model.engine == "patterns":
        aligned = unit_centred(aligned)
    if model.engine == "patterns":
        a = rep.algebra
        model_gap, model_etf = a.semantic_gap(G, rep.attributes), a.etf_distance(G)

        def dist(i, j):
            return math.sqrt(max(float(np.sum(a.mult * (G[i] - G[j]) ** 2)), 0.0))
    else:
        model_gap, model_etf = gaps_of(G, rep.attributes), etf_of(G)

        def dist(i, j):
            return float(np.linalg.norm(G[i] - G[j]))
    j_tr, p = model_transition_index(model_gap, dist)
    if j_tr is None:
        tt, reason = None, ("M2's semantic gap has no interior peak within the horizon" if p in (0, len(times) - 1)
                            else "M2's Gram never gets closer to its end state than to its peak within the horizon")
    else:
        tt, reason = float(times[j_tr]), ""
    q = model.unpack(x)
    near = _near_best(model, seen, NEAR_BEST)
    report(f"input_coupled ({model.engine}): done, {model.n_sim} simulations, cost {c:.4g}", force=True)
    return {"x": x, "params": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in q.items()},
            "times": times, "tau": at_fraction(times, frac, log=True), "frac": frac, "cost": c, "aligned": aligned,
            "model_gap": model_gap,
            "model_etf": model_etf, "transition_time": tt, "transition_reason": reason, "engine": model.engine,
            "kernel_kind": kind, "n_sim": model.n_sim, "interrupted": interrupted, "notes": notes, "near_best": near}


#: M2 parameters are reported with the range they take over every simulated point whose alignment cost is
#: within this factor of the best: how flat the cost is around the optimum (not a confidence interval).
NEAR_BEST = 1.05   # report.m2_lines says 5%


def _near_best(model, seen, factor):
    """``{"sigma": [lo, hi], ...}`` over the evaluated points with cost <= factor * best."""
    finite = [(c, x) for c, x in seen if np.isfinite(c)]
    if not finite:
        return {}
    best = min(c for c, _ in finite)
    keep = [model.unpack(x) for c, x in finite if c <= factor * best + 1e-15]
    out = {}
    for name in ("sigma", "lam", "scale"):
        if name in keep[0]:
            v = [q[name] for q in keep]
            out[name] = [float(min(v)), float(max(v))]
    if "strengths" in keep[0]:
        S = np.array([q["strengths"] for q in keep])
        out["strengths"] = [S.min(axis=0).tolist(), S.max(axis=0).tolist()]
    return out


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
