"""Plots of UFM objects; every function is ``plot_*(..., ax=None) -> Axes``.

matplotlib is imported only when a plot is drawn. Functions draw into ``ax``
when given (so they compose into a user's own figure) and otherwise into a new
figure; they never call ``plt.show``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_gram", "plot_phase_diagram"]


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

    Returns
    -------
    Axes
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
    annotate : bool
        Write the value in each cell.

    Returns
    -------
    Axes
        Cell ``(row j, column i)`` holds the mean of ``value`` over the
        successful runs at ``y = ys[j]``, ``x = xs[i]`` (``NaN``, drawn blank,
        where none succeeded); the matrix is also in ``ax.images[-1].get_array()``.
    """
    from ._sweep import grid_axis

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
        values = grid_axis(rows, name)
        if len(values) > 1:
            raise ValueError(f"records vary in {name!r} too ({[_fmt(v) for v in values]}); pick one with "
                             f"where={{{name!r}: {values[0]!r}}}.")
    ok = [r for r in rows if r.get("ok", True)]
    if ok and not any(value in r for r in ok):
        raise ValueError(f"no record has {value!r}; entries: {sorted({k for r in ok for k in r})}.")

    def ordered(name):
        vals = grid_axis(rows, name)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            vals = sorted(vals)
        return vals

    xs, ys = ordered(x), ordered(y)
    sums = np.zeros((len(ys), len(xs)))
    counts = np.zeros((len(ys), len(xs)))
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
    seeds = int(counts.max()) if counts.size else 0
    ax.set_title(title if title is not None else f"{value} (mean of {seeds} run{'s' * (seeds != 1)} per cell)",
                 fontsize=9)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=value)
    return ax
