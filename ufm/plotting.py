"""Plots of UFM objects; every function is ``plot_*(..., ax=None) -> Axes``.

matplotlib is imported only when a plot is drawn. Functions draw into ``ax``
when given (so they compose into a user's own figure) and otherwise into a new
figure; they never call ``plt.show``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_gram"]


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
