"""Plots of UFM objects; every function is ``plot_*(..., ax=None) -> Axes``.

matplotlib is imported only when a plot is drawn. Functions draw into ``ax``
when given (so they compose into a user's own figure) and otherwise into a new
figure; they never call ``plt.show``.
"""

from __future__ import annotations

import numpy as np

from .results import distinct_values

__all__ = ["plot_fit", "plot_fit_figure", "plot_gram", "plot_trajectory", "plot_phase_diagram", "plot_phase_lines"]


def _axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(3.2, 3.0)).add_subplot()


def plot_gram(gram, ax=None, *, title=None, normalize="cosine", labels=None, cmap="RdBu_r", colorbar=True):
    """Heat map of a Gram matrix (K x K classifier Gram, class-mean or item Gram).

    Parameters
    ----------
    gram : (m, m) array
        Symmetric matrix to show.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.
    title : str, optional
    normalize : {"cosine", "max", None}
        ``"cosine"`` shows ``G_kl / sqrt(G_kk G_ll)`` on the fixed scale [-1, 1]
        (zero rows stay zero); ``"max"`` divides by ``max |G|``; ``None`` shows raw values.
    labels : sequence of str, optional
        Tick labels (one per row).
    cmap : str
        Matplotlib colormap.
    colorbar : bool
        Draw a colorbar.

    Returns
    -------
    Axes
        The axes drawn on.
    """
    G = np.asarray(gram, dtype=float)
    if G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"gram must be a square matrix, got shape {G.shape}.")
    if not np.all(np.isfinite(G)):
        raise ValueError("gram contains NaN or inf; plot a finite matrix.")
    if normalize == "cosine":
        dg = np.sqrt(np.clip(np.diag(G), 0, None))
        safe = np.where(dg > 0, dg, 1.0)
        shown, vmax = G / np.outer(safe, safe), 1.0
    elif normalize == "max":
        m = np.abs(G).max()
        shown, vmax = (G / m if m > 0 else G), 1.0
    elif normalize is None:
        shown, vmax = G, max(np.abs(G).max(), 1e-300)
    else:
        raise ValueError(f"normalize must be 'cosine', 'max' or None, got {normalize!r}.")
    ax = _axes(ax)
    im = ax.imshow(shown, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
    if labels is not None:
        if len(labels) != G.shape[0]:
            raise ValueError(f"labels has {len(labels)} entries but gram is {G.shape[0]} x {G.shape[0]}.")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def plot_phase_diagram(result, x, y, value, ax=None, *, where=None, cmap="viridis", colorbar=True,
                       annotate=False, title=None):
    """Heat map of a scalar over two grid parameters of a sweep, averaged over seeds.

    Parameters
    ----------
    result : SweepResult or sequence of dict
        What :func:`ufm.sweep` returned (or its ``records``).
    x, y : str
        Grid parameters on the horizontal and vertical axes; each distinct value
        is one column (row), in increasing order when the values are numbers.
    value : str
        The record entry to show (a number, or an array that is averaged, e.g.
        final values over ``simulate`` seeds).
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.
    where : dict, optional
        Keep only records with these parameter values, e.g. ``{"lam_A": 1e-3}``.
        Required when a parameter other than ``x`` and ``y`` takes several
        values (nothing is averaged over silently).
    cmap : str
        Matplotlib colormap.
    colorbar : bool
        Draw a colorbar.
    annotate : bool
        Write the value in each cell.
    title : str, optional
        Axes title (default: the value and the number of runs per cell).

    Returns
    -------
    Axes
        Cell ``(row j, column i)`` holds the mean of ``value`` over the
        successful runs at ``y = ys[j]``, ``x = xs[i]`` (``NaN``, drawn blank,
        where none succeeded); the matrix is also in ``ax.images[-1].get_array()``.
        Cells with failed runs (``ok=False``: an error, or a simulation that
        diverged or did not finish) carry a red cross and "n failed" (the line
        with ``gid="failed"``), and the title counts them.
    """
    records = list(getattr(result, "records", result))
    axes = list(getattr(result, "axes", ())) or list(dict.fromkeys(
        k for r in records for k in r if k not in ("seed", "seed_index", "ok", "error")))
    for name in (x, y):
        if not any(name in r for r in records):
            raise ValueError(f"{name!r} is not a grid parameter of these records; parameters: {axes}.")
    if x == y:
        raise ValueError(f"x and y are both {x!r}; choose two different grid parameters.")
    where = dict(where or {})
    rows = [r for r in records if all(r.get(k) == v for k, v in where.items())]
    if not rows:
        raise ValueError(f"no record matches where={where}.")
    for name in axes:
        if name in (x, y) or name in where:
            continue
        values = distinct_values(rows, name)
        if len(values) > 1:
            raise ValueError(f"records vary in {name!r} too ({[_fmt(v) for v in values]}); pick one with "
                             f"where={{{name!r}: {values[0]!r}}}.")
    ok = [r for r in rows if r.get("ok", True)]
    if ok and not any(value in r for r in ok):
        raise ValueError(f"no record has {value!r}; entries: {sorted({k for r in ok for k in r})}.")

    def ordered(name):
        vals = distinct_values(rows, name)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            vals = sorted(vals)
        return vals

    xs, ys = ordered(x), ordered(y)
    sums = np.zeros((len(ys), len(xs)))
    counts = np.zeros((len(ys), len(xs)))
    failed = np.zeros((len(ys), len(xs)), dtype=int)
    for r in rows:
        if not r.get("ok", True):
            failed[ys.index(r[y]), xs.index(r[x])] += 1
    for r in ok:
        v = r.get(value)
        if v is None or isinstance(v, (str, tuple)):
            continue
        v = float(np.mean(v))
        if not np.isfinite(v):
            continue
        j, i = ys.index(r[y]), xs.index(r[x])
        sums[j, i] += v
        counts[j, i] += 1
    with np.errstate(invalid="ignore"):
        M = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    ax = _axes(ax)
    im = ax.imshow(M, origin="lower", aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_xticks(range(len(xs)), [_fmt(v) for v in xs], rotation=45 if len(xs) > 6 else 0, fontsize=7)
    ax.set_yticks(range(len(ys)), [_fmt(v) for v in ys], fontsize=7)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if annotate:
        for j in range(len(ys)):
            for i in range(len(xs)):
                if np.isfinite(M[j, i]):
                    light = np.mean(im.cmap(im.norm(M[j, i]))[:3]) > 0.5
                    ax.text(i, j, f"{M[j, i]:.3g}", ha="center", va="center", fontsize=6,
                            color="k" if light else "w")
    if failed.any():        # failed runs (errors, diverged or unfinished simulations) are marked, never hidden
        jj, ii = np.nonzero(failed)
        ax.plot(ii, jj, linestyle="none", marker="x", markersize=9, markeredgewidth=1.5, color="r", gid="failed",
                label="failed runs")
        for j, i in zip(jj, ii):
            ax.text(i, j - 0.3, f"{failed[j, i]} failed", ha="center", va="center", fontsize=6, color="r")
    seeds = int(counts.max()) if counts.size else 0
    extra = f"; x: {int(failed.sum())} failed" if failed.any() else ""
    ax.set_title(title if title is not None else f"{value} (mean of {seeds} run{'s' * (seeds != 1)} per cell{extra})",
                 fontsize=9)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=value)
    return ax


_PRETTY = {"semantic_gap": "semantic gap $\\Delta$", "etf_distance": "ETF distance $d_{ETF}$", "objective": "objective",
           "peak_gap": "peak semantic gap", "end_gap": "end-state semantic gap",
           "end_etf_distance": "end-state ETF distance", "gap_init": "initial semantic gap",
           "peak_time": "peak time", "transition_time": "transition time"}


def _pretty(name: str) -> str:
    return _PRETTY.get(name, name.replace("_", " "))


def plot_trajectory(trajectory, metric: str = "semantic_gap", ax=None, *, theory=None, theory_metric=None,
                    end_value=None, label=None, color=None, seeds: bool = True, marks: bool = True,
                    logx: bool = True, title=None, legend: bool = True):
    """A recorded metric over (log-)time, with a theory curve and the end state overlaid.

    Parameters
    ----------
    trajectory : Trajectory or None
        What :func:`ufm.simulate` returned; ``metric`` must be a scalar record
        (``(seeds, T)``). The mean over seeds is drawn solid, each seed faint
        (``seeds=True``). ``None``: draw the theory curve only.
    metric : str
        Record name, e.g. ``"semantic_gap"`` or ``"etf_distance"``.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.
    theory : TheoryCurve, optional
        Drawn dashed (record ``theory_metric``, default ``metric``); the
        legend names the start it assumes (``theory.meta["start_label"]``,
        e.g. "theory start: Gaussian start 0.001, wide limit (isotropic)"); its ``peak_time`` and
        ``transition_time`` are marked by dotted vertical lines when
        ``marks=True``, and when it carries the spread over sampled random
        starts (``semantic_curve(..., spread=n)``) the 10%-90% range of their
        transition times is shaded.
    theory_metric : str, optional
        The theory curve's record to draw (default ``metric``).
    end_value : float, optional
        The end state's value (e.g. from ``ufm.solve``), a dash-dotted horizontal line.
    label, color : optional
        Label of the simulated curve (default ``"simulation (mean of n seeds)"``) and its color.
    seeds : bool
        Draw each seed faintly besides the mean.
    marks : bool
        Mark the theory's peak and transition times.
    logx : bool
        Log time axis; ``t = 0`` cannot be shown on it and is left out.
    title : str, optional
        Axes title.
    legend : bool
        Draw the legend.

    Returns
    -------
    Axes
        Lines carry labels ``"simulation ..."``, ``"theory (<kind>)"``, ``"theory start: <start>"`` (no data),
        ``"end state ..."``, ``"peak (theory)"``, ``"transition (theory)"``; the shaded spread
        ``"transition, n random starts (10-90%)"``.
    """
    if trajectory is None and theory is None:
        raise ValueError("give a trajectory, a theory curve or both.")
    ax = _axes(ax)
    color = color or "C0"
    tmin = []
    if trajectory is not None:
        if metric not in trajectory.records:
            raise ValueError(f"{metric!r} is not recorded; the trajectory has {sorted(trajectory.records)}.")
        v = np.asarray(trajectory.records[metric], dtype=float)
        if v.ndim != 2:
            raise ValueError(f"{metric!r} has shape {v.shape}; plot_trajectory draws scalar records (seeds x T).")
        t = np.asarray(trajectory.times, dtype=float)
        keep = t > 0 if logx else np.ones(t.shape, bool)
        if seeds and v.shape[0] > 1:
            for row in v:
                ax.plot(t[keep], row[keep], color=color, alpha=0.25, lw=0.8)
        n = v.shape[0]
        lab = label or f"simulation (mean of {n} seed{'s' * (n != 1)})"
        ax.plot(t[keep], np.nanmean(v, 0)[keep], color=color, lw=2.0, label=lab)
        tmin.append(t[keep].min())
    if theory is not None:
        name = theory_metric or metric
        if name not in theory.records:
            raise ValueError(f"the theory curve has no record {name!r}; it has {sorted(theory.records)}.")
        tt = np.asarray(theory.times, dtype=float)
        keep = tt > 0 if logx else np.ones(tt.shape, bool)
        ax.plot(tt[keep], np.asarray(theory.records[name])[keep], color="k", ls="--", lw=1.4,
                label=f"theory ({theory.kind})")
        start = theory.meta.get("start_label")
        if start:       # a legend line of its own: which start the theory assumes
            ax.plot([], [], ls="none", label=f"theory start: {start}")
        if marks:
            if theory.peak_time is not None:
                ax.axvline(theory.peak_time, color="C3", ls=":", lw=1.2, label="peak (theory)")
            if theory.transition_time is not None:
                ax.axvline(theory.transition_time, color="C2", ls=":", lw=1.2, label="transition (theory)")
            spread = theory.meta.get("spread") or {}
            if spread.get("transition_time"):
                lo, hi = spread["transition_time"][0], spread["transition_time"][-1]
                ax.axvspan(lo, hi, color="C2", alpha=0.12,
                           label=f"transition, {spread['n']} random starts (10-90%)")
    if end_value is not None:
        ax.axhline(float(end_value), color="gray", ls="-.", lw=1.2, label="end state (exact)")
    if logx:
        ax.set_xscale("log")
        ax.set_xlabel("gradient-flow time t (log scale)")
    else:
        ax.set_xlabel("gradient-flow time t")
    ax.set_ylabel(_pretty(metric))
    if title:
        ax.set_title(title, fontsize=9)
    if legend:
        ax.legend(fontsize=7)
    return ax


def plot_phase_lines(result, x: str = "sigma", values=("peak_gap", "end_gap", "end_etf_distance"), ax=None, *,
                     hue: str | None = "setting", where=None, logx: bool = True, logy: bool = False, title=None,
                     legend: bool = True):
    """Curves of sweep outputs against one grid parameter, one color per ``hue`` value, one line style per value.

    The companion of :func:`plot_phase_diagram` for a single swept axis (e.g.
    the end-state ETF distance and the peak semantic gap against ``sigma``).

    Parameters
    ----------
    result : SweepResult or sequence of dict
    x : str
        The grid parameter on the horizontal axis (numbers).
    values : sequence of str
        Record entries to draw (solid, dashed, dotted, ... in this order).
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.
    hue : str or None
        A grid parameter drawn in different colors (``None``: one color).
    where : dict, optional
        Keep only records with these parameter values; every other parameter
        must then take a single value (nothing is averaged over silently),
        except seeds, which are averaged.
    logx, logy : bool
        Logarithmic axes.
    title : str, optional
        Axes title.
    legend : bool
        Draw the legend.

    Returns
    -------
    Axes
        One line per ``(hue value, value)``, labelled ``"<hue value>: <value>"``.
    """
    records = [r for r in getattr(result, "records", result) if r.get("ok", True)]
    where = dict(where or {})
    records = [r for r in records if all(r.get(k) == v for k, v in where.items())]
    if not records:
        raise ValueError(f"no successful record matches where={where}.")
    if isinstance(values, str):
        values = (values,)
    for name in (x,) + ((hue,) if hue else ()) + tuple(values):
        if not any(name in r for r in records):
            raise ValueError(f"no record has {name!r}; entries: {sorted({k for r in records for k in r})}.")
    params = [k for k in getattr(result, "axes", ()) or ()] or [
        k for k in ("setting", "sigma", "strength", "lam") if k in records[0]]
    for name in params:
        if name in (x, hue) or name in where:
            continue
        distinct = {repr(r.get(name)) for r in records}
        if len(distinct) > 1:
            raise ValueError(f"records vary in {name!r} too ({sorted(distinct)}); pick one with where={{{name!r}: ...}}.")
    groups = list(dict.fromkeys(r.get(hue) for r in records)) if hue else [None]
    styles = ["-", "--", ":", "-."]
    ax = _axes(ax)
    for ci, g in enumerate(groups):
        rows = [r for r in records if hue is None or r.get(hue) == g]
        xs = sorted({float(r[x]) for r in rows})
        for vi, name in enumerate(values):
            ys = [np.nanmean([float(r[name]) for r in rows if float(r[x]) == xv]) for xv in xs]
            lab = f"{g}: {_pretty(name)}" if hue else _pretty(name)
            ax.plot(xs, ys, color=f"C{ci}", ls=styles[vi % len(styles)], marker="o", ms=3, label=lab)
    if logx:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        allx = sorted({float(r[x]) for r in records})
        ax.set_xticks(allx, [_fmt(v) for v in allx])
        ax.xaxis.set_minor_formatter(NullFormatter())
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x + (" (log scale)" if logx else ""))
    ax.set_ylabel(", ".join(_pretty(v) for v in values) if len(values) == 1 else "value")
    if title:
        ax.set_title(title, fontsize=9)
    if legend:
        ax.legend(fontsize=6)
    return ax


_FIT_STYLE = {"static": ("static", ":", "tab:gray"), "input_coupled": ("M2 input-coupled", "-", "tab:blue"),
              "feature_penalty": ("M2-H feature penalty", "-.", "tab:green"),
              "anchored": ("M1 anchored", "--", "tab:orange")}


def plot_fit(result, metric: str = "gap", ax=None):
    """Observed curve (dots) with each fitted model's curve over log-steps, from a :class:`~ufm.results.FitResult`.

    Every model's legend entry carries the R^2 of *this* curve and whether the
    fit accepted the model as an explanation (``ufm.bridge.fitting.ACCEPT``);
    a saturated static decomposition (as many numbers per record as the data)
    is not drawn. Vertical lines: the observed gap transition and, when a model
    is accepted, its predicted one with its interval (shaded).

    Parameters
    ----------
    result : FitResult
        What :func:`ufm.fit` returned.
    metric : {"gap", "etf_distance", "outside_patterns"}
        The semantic gap (THEORY §7.4) or the ETF distance (§7.2) of the
        centred, unit-norm Grams, or the observed share of each unit Gram
        outside the attribute patterns (no model curve).
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    Axes
        The axes drawn on.
    """
    if metric not in ("gap", "etf_distance", "outside_patterns"):
        raise ValueError(f"metric must be 'gap', 'etf_distance' or 'outside_patterns', got {metric!r}.")
    ax = _axes(ax)
    steps = np.asarray(result.steps, dtype=float)
    x = np.where(steps > 0, steps, np.nan)
    if np.isnan(x[0]) and len(x) > 1:            # show step 0 half a decade before the first positive step
        first = np.nanmin(x)
        x[0] = first / 3.0
    observed = "outside_patterns" if metric == "outside_patterns" else f"observed_{metric}"
    if observed not in result.curves:
        raise ValueError(f"the fit has no {observed!r} curve; it was made by an older ufm. Refit it.")
    ax.plot(x, result.curves[observed], "o", ms=3.5, color="k", label="observed")
    r2_key = {"gap": "gap_r2", "etf_distance": "etf_r2"}.get(metric)
    for model, gof in result.gof.items():
        key = f"{model}_{metric}"
        if r2_key is None or key not in result.curves or gof.get("saturated"):
            continue
        name, ls, color = _FIT_STYLE.get(model, (model, "-", None))
        status = "descriptive" if model == "static" else ("accepted" if gof.get("accepted") else "not accepted")
        ax.plot(x, result.curves[key], ls, color=color, lw=1.6,
                label=f"{name}: R²={gof[r2_key]:.2f} ({status})")
    trans = getattr(result, "transitions", {}) or {}
    observed = trans.get("observed") or {}
    obs_tr = (observed.get("transition") or {}).get("step") if "transition" in observed else observed.get("step")
    if obs_tr is not None:
        ax.axvline(obs_tr if obs_tr > 0 else x[0], color="k", ls=":", lw=0.9, label="observed transition")
    pred = (trans.get("predicted") or {}).get("transition") or {}
    if pred.get("step") is not None:
        quoted = _FIT_STYLE.get(result.params.get("model"), ("model",))[0]
        ax.axvline(pred["step"], color="tab:blue", lw=0.8, alpha=0.6, label=f"{quoted}: predicted transition")
        if pred.get("low") is not None:
            ax.axvspan(pred["low"], pred["high"], color="tab:blue", alpha=0.1)
    ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel({"gap": "semantic gap", "etf_distance": "ETF distance",
                   "outside_patterns": "share outside patterns"}[metric])
    ax.legend(fontsize=7)
    return ax


def plot_fit_figure(result, *, snapshots: int = 3, models=None):
    """The overlay figure of ``ufm fit``: the fit's verdict, its curves with their R^2, Gram snapshots.

    Title: the fit's verdict line (what is and is not explained). Top row:
    :func:`plot_fit` for the semantic gap, the ETF distance and the share of
    the observed Grams outside the attribute patterns. Next rows: the observed
    centred Gram (cosines) at the first record, the semantic-gap peak and the
    last record, beside each model of ``models`` at the aligned time, titled
    with that model's full-Gram R^2.

    Parameters
    ----------
    result : FitResult
        What :func:`ufm.fit` returned.
    snapshots : int
        Number of Gram snapshots.
    models : sequence of str, optional
        The fitted models to show beside the observed Grams (default: the quoted model,
        ``result.params["model"]``).

    Returns
    -------
    matplotlib Figure
        The figure.
    """
    import textwrap

    import matplotlib.pyplot as plt

    if models is None:
        models = [result.params.get("model") or "input_coupled"]
    models = [m for m in models if m in result.grams]
    gap = np.asarray(result.curves["observed_gap"])
    picks = sorted({0, int(np.argmax(gap)), len(gap) - 1})[:snapshots]
    cols = max(len(picks), 3)
    rows = 1 + 1 + len(models)
    fig = plt.figure(figsize=(3.4 * cols, 2.9 * rows + 0.6), constrained_layout=True)
    grid = fig.add_gridspec(rows, cols)
    for c, metric in enumerate(("gap", "etf_distance", "outside_patterns")):
        plot_fit(result, metric, fig.add_subplot(grid[0, c]))
    for r, name in enumerate(["observed"] + models, start=1):
        for c, t in enumerate(picks):
            ax = fig.add_subplot(grid[r, c])
            label = _FIT_STYLE.get(name, (name,))[0]
            extra = "" if name == "observed" else f" (full R²={result.gof[name]['gram_r2_full']:.2f})"
            plot_gram(result.grams[name][t], ax, title=f"{label}, step {result.steps[t]:.4g}{extra}",
                      colorbar=False)
    verdict = getattr(result, "verdict", "") or ""
    if verdict:
        fig.suptitle("\n".join(textwrap.wrap(verdict, 40 * cols)), fontsize=8)
    return fig
