"""How a fit reports: goodness of fit, acceptance, transitions, the verdict line and the table.

Everything :func:`ufm.fit` says about how well a model explains a run lives
here, so one file defines what each number means (the definitions are also in
the docstring of :mod:`ufm.bridge.fitting` and in ``docs/bridge/fits.md``).

References
----------
THEORY.md §7.1 (NC1, CDNV), §7.2 (ETF distance), §7.4 (semantic gap), §8.6.
"""

from __future__ import annotations

import numpy as np

from .. import metrics
from .patterns import project_patterns

# the rest (goodness_of_fit, explains, verdict_line, table, ...) is the fit's own plumbing
__all__ = ["ACCEPT", "NAMES", "TRANSIENT", "observed_transition", "within_class"]

NAMES = {"static": "static", "input_coupled": "M2 (input-coupled)", "feature_penalty": "M2-H (feature penalty)",
         "anchored": "M1 (anchored)"}

#: Minimum quality for a dynamical model to count as an explanation (``fit(accept=...)`` overrides). Each R^2
#: has one threshold, and the verdict says a model "explains" a curve or the Grams only at or above it:
#: ``gap_r2`` the semantic-gap curve, ``rise_r2`` its early rise (the records from the first to the gap's
#: peak, when the gap rises clearly: a model whose gap can only fall matches the fall and fails here),
#: ``etf_r2`` the ETF-distance curve, ``gram_r2`` the Grams in the matched representation, ``full_gram_r2``
#: the full Grams. A curve that hardly moves (it spans less than 3 times ``*_rmse``, so its R^2 measures
#: noise) is explained when the model stays within ``*_rmse`` of it instead (said as "a flat curve").
#: ``end_etf`` / ``end_gap``: the model's ETF distance and semantic gap at the last record must lie within
#: these of the run's (a model is a model of the run only if it ends where the run ends), plus
#: ``end_slack`` times the run's own value there: at a run's collapsed end (ETF distance ~0) the tolerance is
#: ``end_etf``; at a last record mid-way (``fit(until=...)``, ETF distance 0.5) it is ``end_etf + 0.05``.
ACCEPT = {"gap_r2": 0.8, "gap_rmse": 0.01, "rise_r2": 0.5, "etf_r2": 0.5, "etf_rmse": 0.02, "gram_r2": 0.5,
          "full_gram_r2": 0.5, "end_etf": 0.05, "end_gap": 0.05, "end_slack": 0.1}

#: The observed transition needs a clear transient: a rise of at least ``rise`` above the first record,
#: then a fall of at least ``max(rise, fall * (peak - start))`` below the peak by the last record.
TRANSIENT = {"rise": 0.02, "fall": 0.25}

#: Default ETF-distance threshold of a collapse (``fit(collapse=...)``): the first record at or below it.
COLLAPSE = 0.1


# -- within-class metrics from a run's traces --------------------------------------------
def within_class(grams, within, counts) -> dict:
    """NC1 (trace ratio) and mean CDNV per record, from class-mean Grams and within-class traces.

    A bridge :class:`~ufm.results.Run` keeps, per record, the class-mean Gram
    ``M^T M`` and each class's within-class trace
    ``(1/n_k) sum_{y_i = k} ||h_i - mu_k||^2``. Those determine
    ``NC1~ = tr Sigma_W / tr Sigma_B`` (the ``"trace_ratio"`` variant of
    :func:`ufm.metrics.nc1`: ``Sigma_W`` pooled over examples, ``Sigma_B``
    over classes around the *sample* global mean) and the CDNV of
    :func:`ufm.metrics.cdnv_mean` (THEORY §7.1). NC1's ``"pinv"`` / ``"svd"``
    variants need the whole within-class covariance, which a run does not
    keep. With one example per class (``within = 0``) both are 0.

    Parameters
    ----------
    grams : array (T, K, K)
        Class-mean Grams ``M^T M``.
    within : array (T, K)
        Within-class traces per class.
    counts : array (K,)
        Examples per class.

    Returns
    -------
    dict
        ``nc1_trace_ratio`` (T,) and ``cdnv_mean`` (T,).
    """
    G = np.asarray(grams, dtype=np.float64)
    w = np.asarray(within, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    N, K = n.sum(), len(n)
    nc1, cd = [], []
    off = ~np.eye(K, dtype=bool)
    for g, wt in zip(G, w):
        dg = np.diag(g)
        gn = g @ n / N
        between = dg - 2 * gn + (n @ gn) / N                  # ||mu_k - mu_G||^2, mu_G the sample mean
        tb = between.sum() / K
        nc1.append(np.nan if tb <= 0 else float((n @ wt / N) / tb))
        dist2 = dg[:, None] + dg[None, :] - 2 * g
        with np.errstate(divide="ignore", invalid="ignore"):
            V = 0.5 * (wt[:, None] + wt[None, :]) / dist2
        cd.append(float(np.mean(V[off])) if np.all(dist2[off] > 0) else np.inf)
    return {"nc1_trace_ratio": np.array(nc1), "cdnv_mean": np.array(cd)}


# -- goodness of fit --------------------------------------------------------------------
def gaps_of(G, attributes):
    return np.array([metrics.semantic_gap(g, attributes, center=False, check_psd=False) for g in G])


def etf_of(G):
    return np.array([metrics.etf_distance(g, center=False, check_psd=False) for g in G])


def r2(y, yhat):
    ss = float(np.sum((y - y.mean()) ** 2))
    return float(1.0 - np.sum((y - yhat) ** 2) / ss) if ss > 0 else float("nan")


def _gramr2(obs, model):
    spread = float(np.sum((obs - obs.mean(axis=0)) ** 2))
    res = float(np.sum((obs - model) ** 2))
    return float(1.0 - res / spread) if spread > 0 else float("nan")


def unit(G):
    n = np.linalg.norm(G, axis=(-2, -1), keepdims=True)
    return G / np.where(n > 0, n, 1.0)


def curves_of(rep, G):
    """Semantic gap and ETF distance of unit-centred Grams (T, K, K): O(R) each when they lie in the algebra."""
    a = rep.algebra
    if a is not None and a.contains(G[0], rtol=1e-9) and a.contains(G[-1], rtol=1e-9):
        xi = a.eigen(a.values(G))
        return a.semantic_gap(xi, rep.attributes), a.etf_distance(xi)
    return gaps_of(G, rep.attributes), etf_of(G)


def goodness_of_fit(rep, model_full, n_params):
    """Goodness of fit of one model's unit-centred Grams (T, K, K) against the observed representations.

    Besides the R^2 of the curves and the Grams (module :mod:`ufm.bridge.fitting`), ``end_etf`` and
    ``end_gap`` are the model's ETF distance and semantic gap at the last record minus the run's."""
    gap, etf = curves_of(rep, model_full)
    model_pat = project_patterns(model_full, rep.ids)
    model_matched = model_pat if rep.match == "patterns" else model_full
    d = np.linalg.norm((rep.matched - model_matched).reshape(rep.T, -1), axis=1)
    g = {"gap_r2": r2(rep.gap, gap), "gap_rmse": float(np.sqrt(np.mean((rep.gap - gap) ** 2))),
         "etf_r2": r2(rep.etf, etf), "etf_rmse": float(np.sqrt(np.mean((rep.etf - etf) ** 2))),
         "gram_r2": _gramr2(rep.matched, model_matched),
         "gram_r2_patterns": _gramr2(rep.patterns, model_pat), "gram_r2_full": _gramr2(rep.full, model_full),
         "gram_distance": float(d.mean()), "n_params": int(n_params), "n_data": int(rep.n_data),
         "end_etf": float(etf[-1] - rep.etf[-1]), "end_gap": float(gap[-1] - rep.gap[-1]),
         "run_end_etf": float(rep.etf[-1]), "run_end_gap": float(rep.gap[-1])}
    if rep.rise is not None:                    # the early rise alone: a model whose gap can only fall fails here
        o, m = rep.gap[rep.rise], gap[rep.rise]
        g.update(rise_r2=r2(o, m), rise_rmse=float(np.sqrt(np.mean((o - m) ** 2))))
    return gap, etf, g


def explains(g, accept, rep) -> dict:
    """Which of the curves, the Grams and the end state a model explains, by the thresholds of ``accept``.

    A curve is explained when its R^2 reaches the threshold, or, for a *flat* curve (the observed values
    span less than 3 times the RMSE tolerance, where R^2 measures noise), when the model stays within
    the RMSE tolerance of it. The end state is explained when the model's ETF distance and semantic gap at
    the last record are within ``end_etf`` and ``end_gap`` (plus ``end_slack`` times the run's own values
    there) of the run's.
    """
    def ok(r2, r2_min, rmse=None, rmse_max=None, span=None):
        if np.isfinite(r2) and r2 >= r2_min:
            return True
        return bool(rmse is not None and span <= 3 * rmse_max and rmse <= rmse_max)

    out = {"gap": ok(g["gap_r2"], accept["gap_r2"], g["gap_rmse"], accept["gap_rmse"], float(np.ptp(rep.gap))),
           "etf": ok(g["etf_r2"], accept["etf_r2"], g["etf_rmse"], accept["etf_rmse"], float(np.ptp(rep.etf))),
           "gram": ok(g["gram_r2"], accept["gram_r2"]),
           "full_gram": ok(g["gram_r2_full"], accept["full_gram_r2"]),
           "end": bool(abs(g["end_etf"]) <= accept["end_etf"] + accept["end_slack"] * abs(g["run_end_etf"])
                       and abs(g["end_gap"]) <= accept["end_gap"] + accept["end_slack"] * abs(g["run_end_gap"]))}
    if "rise_r2" in g:
        out["rise"] = ok(g["rise_r2"], accept["rise_r2"], g["rise_rmse"], accept["gap_rmse"],
                         float(np.ptp(rep.gap[rep.rise])))
    return out


# -- events: the gap's peak, the transition, the collapse ---------------------------------------------
def observed_transition(steps, gaps, grams, *, rise: float = TRANSIENT["rise"],
                        fall: float = TRANSIENT["fall"]) -> dict:
    """The observed transition of a run: defined only after a clear rise and a clear fall of the gap.

    Definition (documented in ``docs/bridge/fits.md``): with ``p`` the record
    of the largest semantic gap, the run has a transient when ``p`` is neither
    the first nor the last record, ``gap[p] - gap[0] >= rise`` and
    ``gap[p] - gap[-1] >= max(rise, fall * (gap[p] - gap[0]))``. The transition
    is then the first record after ``p`` whose Gram (the representation the
    fit is matched on) is closer to the last record's Gram than to the peak's.
    A monotone gap curve (peak at the first or last record) has no transition.

    Parameters
    ----------
    steps : array (T,)
        The record steps.
    gaps : array (T,)
        The semantic gap of each record.
    grams : array (T, K, K)
        The Grams the fit is matched on.
    rise, fall : float
        The thresholds of the definition above.

    Returns
    -------
    dict
        ``step`` (float or None), ``index``, ``peak_step`` and ``reason`` (why there is
        none, or how it was found).
    """
    gaps = np.asarray(gaps, dtype=np.float64)
    T = len(gaps)
    if T < 3 or not np.all(np.isfinite(gaps)):
        return {"step": None, "index": None, "peak_step": None,
                "reason": "fewer than 3 records, or an undefined gap at some record"}
    p = int(np.argmax(gaps))
    peak_step = float(steps[p])
    up, down = gaps[p] - gaps[0], gaps[p] - gaps[-1]
    if p == 0:
        return {"step": None, "index": None, "peak_step": peak_step,
                "reason": "no rise: the semantic gap is largest at the first record"}
    if p == T - 1:
        return {"step": None, "index": None, "peak_step": peak_step,
                "reason": "no fall: the semantic gap is largest at the last record (still rising)"}
    if up < rise:
        return {"step": None, "index": None, "peak_step": peak_step,
                "reason": f"no clear rise: the gap rises by {up:.3g} < {rise:g} above the first record"}
    if down < max(rise, fall * up):
        return {"step": None, "index": None, "peak_step": peak_step,
                "reason": f"no clear fall: the gap falls by {down:.3g} after its peak, less than "
                          f"{max(rise, fall * up):.3g} (max({rise:g}, {fall:g} x the rise))"}
    end = grams[-1]
    for j in range(p + 1, T):
        if np.linalg.norm(grams[j] - end) < np.linalg.norm(grams[j] - grams[p]):
            return {"step": float(steps[j]), "index": j, "peak_step": peak_step,
                    "reason": "first record after the gap peak whose Gram is closer to the last record's than "
                              "to the peak's"}
    return {"step": None, "index": None, "peak_step": peak_step, "reason": "the Grams never get closer to the "
            "last record's than to the peak's"}


def observed_events(steps, gaps, etf, grams, *, collapse: float = COLLAPSE) -> dict:
    """The three events of a run, each ``{"step", "reason"}``: ``peak``, ``transition``, ``collapse``.

    * ``peak``: the record of the largest semantic gap, when the gap rises clearly above the first
      record to it and falls clearly after it (:data:`TRANSIENT`; the criterion of
      :func:`observed_transition`): a gap that only rises or only falls has no peak.
    * ``transition``: :func:`observed_transition`, the Gram's turn towards the end state.
    * ``collapse``: the first record whose ETF distance is at most ``collapse``; none when the run never
      gets there (it does not collapse within its records).

    Parameters
    ----------
    steps, gaps, etf : array (T,)
        Record steps, semantic gaps and ETF distances.
    grams : array (T, K, K)
        The Grams the fit is matched on.
    collapse : float
        ETF-distance threshold.

    Returns
    -------
    dict
        The three events.
    """
    tr = observed_transition(steps, gaps, grams)
    clear = tr["step"] is not None or not any(w in tr["reason"] for w in ("no rise", "no fall", "no clear", "fewer"))
    peak = ({"step": tr["peak_step"], "reason": "the record of the largest semantic gap (a clear rise and fall)"}
            if clear else {"step": None, "reason": tr["reason"]})
    etf = np.asarray(etf, dtype=np.float64)
    hit = np.flatnonzero(etf <= collapse)
    if hit.size:
        col = {"step": float(steps[hit[0]]), "reason": f"the first record with ETF distance <= {collapse:g}"}
    else:
        col = {"step": None, "reason": f"the run does not collapse within its records: its ETF distance stays above "
                                       f"{collapse:g} (last record {etf[-1]:.3g}, lowest {np.nanmin(etf):.3g})"}
    return {"peak": peak, "transition": {"step": tr["step"], "reason": tr["reason"]}, "collapse": col}


def model_events(times, gaps, etf, dist, *, collapse: float = COLLAPSE) -> dict:
    """The model's own events over its curve, as model times: ``{"peak", "transition", "collapse"}``.

    Each value is a model time or None; ``reasons`` says why one is missing. The peak is the largest gap
    when it lies inside the curve (not at its first or last time); the transition the first time after it
    whose Gram is closer to the curve's end than to the peak (``dist(i, j)``); the collapse the first time
    with ETF distance at most ``collapse``.
    """
    gaps = np.asarray(gaps, dtype=np.float64)
    etf = np.asarray(etf, dtype=np.float64)
    out, why = {"peak": None, "transition": None, "collapse": None}, {}
    j_tr, p = model_transition_index(gaps, dist)
    if p in (0, len(times) - 1):
        why["peak"] = why["transition"] = ("the model's semantic gap has no interior peak within its horizon"
                                           if p == 0 else "the model's semantic gap still rises at its horizon")
    else:
        out["peak"] = float(times[p])
        if j_tr is None:
            why["transition"] = "the model's Gram never gets closer to its end state than to its peak"
        else:
            out["transition"] = float(times[j_tr])
    hit = np.flatnonzero(etf <= collapse)
    if hit.size:
        out["collapse"] = float(times[hit[0]])
    else:
        why["collapse"] = (f"the model's ETF distance stays above {collapse:g} within its horizon (it ends at "
                           f"{etf[-1]:.3g}: its end state is not the simplex ETF)")
    return out, why


def model_transition_index(gaps, dist):
    gaps = np.asarray(gaps, dtype=np.float64)
    if not np.any(np.isfinite(gaps)):
        return None, 0
    p = int(np.nanargmax(gaps))
    J = len(gaps)
    if p == 0 or p == J - 1:
        return None, p
    for j in range(p + 1, J):
        if dist(j, J - 1) < dist(j, p):
            return j, p
    return None, p


# -- the verdict ------------------------------------------------------------------------------
def verdict_line(gof, explains, best, outside_change, static_saturated, accept) -> str:
    """One plain-language line: what the dynamical models explain and what nothing here explains.

    A model is said to explain a curve or the Grams only when its R^2 reaches that R^2's threshold in
    ``accept`` (or, for a flat curve, when it stays within the RMSE tolerance; said as "a flat curve"),
    and the end state only when it ends within ``end_etf`` / ``end_gap`` of the run."""
    dyn = [m for m in gof if m != "static"]
    if not dyn:
        msg = "no dynamical model was fitted" + ("; the static decomposition describes each record separately"
                                                 if "static" in gof else " (see the notes)")
        if "static" in gof and static_saturated:
            msg += " (saturated here: as many numbers per record as the data, so its R^2 = 1 says nothing)"
        return msg + "."
    parts, missing = [], []
    keys = [("gap", "the semantic-gap curve", "gap_r2", "gap_rmse")]
    if all("rise_r2" in gof[m] for m in dyn):
        keys.append(("rise", "its early rise", "rise_r2", "rise_rmse"))
    keys += [("etf", "the ETF distance", "etf_r2", "etf_rmse"),
             ("full_gram", "the full Grams", "gram_r2_full", None)]
    threshold = {"gap_r2": "gap_r2", "rise_r2": "rise_r2", "etf_r2": "etf_r2", "gram_r2_full": "full_gram_r2"}
    for key, label, r2_name, rmse in keys:
        def score(m):
            return gof[m][r2_name] if np.isfinite(gof[m][r2_name]) else -np.inf
        who = [m for m in dyn if explains[m][key]]
        if who:
            m = max(who, key=score)
            how = (f"R^2 {gof[m][r2_name]:.2f}" if score(m) >= accept[threshold[r2_name]] else
                   f"a flat curve, RMSE {gof[m][rmse]:.3f}")
            parts.append((m, label, how))
        else:
            m = max(dyn, key=score)
            missing.append(f"{label} (best R^2 {gof[m][r2_name]:.2f}, {NAMES[m]})")
    who = [m for m in dyn if explains[m]["end"]]
    if who:
        m = min(who, key=lambda m: abs(gof[m]["end_etf"]))
        parts.append((m, "the end state", f"ETF distance {gof[m]['end_etf']:+.3f} from the run's"))
    else:
        m = min(dyn, key=lambda m: abs(gof[m]["end_etf"]))
        missing.append(f"the end state (closest: {NAMES[m]}, ETF distance {gof[m]['end_etf']:+.3f} and gap "
                       f"{gof[m]['end_gap']:+.3f} from the run's at the last record)")
    by_model = {}
    for m, label, how in parts:
        by_model.setdefault(m, []).append(f"{label} ({how})")
    said = [f"{NAMES[m]} explains " + join_words(items) for m, items in by_model.items()]
    if missing:
        said.append("nothing here explains " + join_words(missing))
    for m in dyn:
        if explains[m]["gap"] and not explains[m].get("rise", True):
            said.append(f"{NAMES[m]} follows the gap curve only through its fall (rise R^2 {gof[m]['rise_r2']:.2f})")
    if outside_change > 0.2:
        said.append(f"{100 * outside_change:.0f}% of the Grams' change over training lies outside the attribute "
                    f"patterns, which no attribute model started isotropically produces")
    end = (f"best model: {NAMES[best]}" if best is not None else
           "no dynamical model is accepted as an explanation (best_model = None)")
    return "; ".join(said) + f". {end[0].upper()}{end[1:]}."


def join_words(items):
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def table(gof, rep) -> str:
    head = (f"{'model':<16}{'gap R^2':>9}{'rise R^2':>9}{'ETF R^2':>9}{'Gram R^2':>10}{'patt R^2':>10}"
            f"{'full R^2':>10}{'end dETF':>10}{'params':>8}{'data':>7}  accepted")
    rows = [head]

    def f(v, fmt="{:.3f}"):
        return "n/a" if v is None or not np.isfinite(v) else fmt.format(v)
    for m, g in gof.items():
        if m == "static" and g.get("saturated"):
            tail = "saturated (descriptive)"
        elif m == "static":
            tail = "descriptive"
        else:
            tail = "yes" if g["accepted"] else "no (" + ", ".join(k for k, v in g["explains"].items() if not v) + ")"
        rows.append(f"{m:<16}{f(g['gap_r2']):>9}{f(g.get('rise_r2')):>9}{f(g['etf_r2']):>9}{f(g['gram_r2']):>10}"
                    f"{f(g['gram_r2_patterns']):>10}{f(g['gram_r2_full']):>10}{f(g.get('end_etf'), '{:+.3f}'):>10}"
                    f"{g['n_params']:>8d}{g['n_data']:>7d}  {tail}")
    rows.append(f"data: {100 * rep.outside.mean():.0f}% of the unit Grams (mean over records) and "
                f"{100 * rep.outside_change:.0f}% of their change over training lie outside the attribute patterns")
    return "\n".join(rows)


def event_lines(transitions) -> str:
    """The observed and predicted events, one line each, with the predicted intervals."""
    out = ""
    names = {"peak": "gap peak", "transition": "gap transition", "collapse": "collapse"}
    o = transitions.get("observed", {})
    for k, label in names.items():
        e = o.get(k)
        if e is not None:
            out += f"\nobserved {label}: " + (f"step {e['step']:.4g}" if e["step"] is not None else "none") \
                   + f" ({e['reason']})"
    p = transitions.get("predicted", {})
    for k, label in names.items():
        e = p.get(k)
        if e is None:
            continue
        if e.get("step") is None:
            out += f"\npredicted {label}: none ({e['reason']})"
        else:
            rng = "" if e.get("low") is None else f" [{e['low']:.4g}, {e['high']:.4g}]"
            out += f"\npredicted {label}: step {e['step']:.4g}{rng} ({e['reason']})"
    return out


def within_lines(curves) -> str:
    if "observed_nc1_trace_ratio" not in curves:
        return ""
    nc1, cd = curves["observed_nc1_trace_ratio"], curves["observed_cdnv"]
    return (f"\nwithin-class (observed, from the recorded traces; no model here has within-class spread): "
            f"NC1 trace ratio {nc1[0]:.3g} -> {nc1[-1]:.3g}, mean CDNV {cd[0]:.3g} -> {cd[-1]:.3g}")


def estimate_lines(estimates, level) -> str:
    """Each M2-family model's parameters: value, interval at ``level`` and identifiability; its time maps."""
    out = ""
    for m, e in estimates.items():
        vals, iv, ok = e["params"], e.get("intervals") or {}, e.get("identifiable") or {}
        cor = e.get("corrected") or {}
        items = []
        for name in PARAM_ORDER:
            if name not in vals:
                continue
            v = vals[name]
            if isinstance(v, list):
                n = len(v)
                for b, vb in enumerate(v):
                    items.append(_param_text(f"{name}[{b}]", vb, (iv.get(name) or [None] * n)[b],
                                             (ok.get(name) or [None] * n)[b], (cor.get(name) or [None] * n)[b]))
            else:
                items.append(_param_text(name, v, iv.get(name), ok.get(name), cor.get(name)))
        how = e.get("interval_method")
        how = (f"{how}; {100 * level:.0f}% intervals" if how else
               "point values: the intervals are computed for the quoted model")
        out += f"\n{NAMES[m]} parameters ({how}): " + ", ".join(items)
        maps = e.get("time_maps")
        if maps:
            out += f"\n{NAMES[m]} time map: " + "; ".join(
                f"{k} (full Gram R^2 {g['gram_r2_full']:.3f}, gap R^2 {g['gap_r2']:.3f}, {g['n_params']} params)"
                for k, g in maps.items())
    return out


#: The order in which a model's parameters are printed.
PARAM_ORDER = ("sigma", "strengths", "lam", "init_scale", "time_scale", "time_exponent", "time_break", "late_exponent",
               "gram_scale")


def _param_text(name, v, interval, identifiable, corrected=None) -> str:
    """``name value [low, high]``; the bias-corrected value when it is off the estimate by more than a quarter
    of the interval; the flat range of a parameter that is not identifiable."""
    if interval is None:
        return f"{name} {v:.3g}"
    lo, hi = interval
    if identifiable is False:
        return f"{name} {v:.3g} (not identifiable: flat over [{lo:.3g}, {hi:.3g}])"
    shift = "" if corrected is None or abs(corrected - v) <= 0.25 * (hi - lo) else f" (bias-corrected {corrected:.3g})"
    return f"{name} {v:.3g}{shift} [{lo:.3g}, {hi:.3g}]"
