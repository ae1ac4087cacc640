"""``ufm demo``: standard UFMs solved in closed form, written as a table and figures.

The cases are the test vectors of THEORY TV1-TV3 plus the layer-peeled model,
so every number printed is also pinned by a test.
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np

from .problems import LayerPeeledProblem, UFMProblem

__all__ = ["CASES", "run"]

#: (label, problem) pairs shown by the demo.
CASES = [
    ("CE, balanced (TV1)", UFMProblem(K=4, n=3, d=6, loss="ce", lam_W=0.01, lam_H=0.01)),
    ("CE, zero regime", UFMProblem(K=4, n=3, d=6, loss="ce", lam_W=0.2, lam_H=0.2)),
    ("CE, no decay, counts 3,3,1,1 (SELI)", UFMProblem(K=4, counts=[3, 3, 1, 1], d=6, loss="ce")),
    ("MSE, no bias (TV2)", UFMProblem(K=4, n=3, d=6, loss="mse", lam_W=0.01, lam_H=0.02)),
    ("MSE, free bias", UFMProblem(K=4, n=3, d=6, loss="mse", lam_W=0.01, lam_H=0.02, bias=True)),
    ("MSE, lam_b = 0.2 > lam_b*", UFMProblem(K=4, n=3, d=6, loss="mse", lam_W=0.01, lam_H=0.02,
                                              bias=True, lam_b=0.2)),
    ("layer-peeled, E_W=2, E_H=1", LayerPeeledProblem(K=4, n=3, d=6, E_W=2.0, E_H=1.0)),
]


def _row(label, sol):
    from . import metrics

    G = sol.gram_W
    K = G.shape[0]
    norms = np.diag(G)
    off = ~np.eye(K, dtype=bool)
    if np.any(norms > 0):
        C = G / np.sqrt(np.outer(norms, norms))
        etf = metrics.etf_distance(G, center=False)
        cos_lo, cos_hi = C[off].min(), C[off].max()
    else:
        etf = cos_lo = cos_hi = math.nan
    return {"case": label, "status": sol.status, "objective": sol.loss,
            "etf_distance_WWt": etf, "cos_min": cos_lo, "cos_max": cos_hi,
            "w_sq_min": norms.min(), "w_sq_max": norms.max()}


def _fmt(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _regime_figure(path):
    import matplotlib.pyplot as plt

    from ._solve import solve
    from .closed_form import thresholds

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    K, n = 4, 3
    lams = np.logspace(-4, 0, 120)
    margins = [solve(UFMProblem(K=K, n=n, d=K, lam_W=lam, lam_H=lam)).meta.get("s", 0.0) for lam in lams]
    a1.semilogx(lams, margins, color="C0")
    a1.axvline(1 / (K * math.sqrt(n)), color="k", ls="--", lw=1, label=r"$K\gamma = 1$")
    a1.set_xlabel(r"$\lambda_W = \lambda_H$")
    a1.set_ylabel(r"optimal margin $s^*$")
    a1.set_title("balanced CE, K=4, n=3: ETF until the zero regime", fontsize=9)
    a1.legend(fontsize=8)
    base = UFMProblem(K=K, n=n, d=K, loss="mse", lam_W=0.01, lam_H=0.02, bias=True, lam_b=1.0)
    lbs = np.logspace(-3, 3, 120)
    cos = []
    for lb in lbs:
        G = solve(base.replace(lam_b=lb)).gram_W
        cos.append(G[0, 1] / G[0, 0])
    a2.semilogx(lbs, cos, color="C1")
    a2.axhline(-1 / (K - 1), color="gray", ls=":", lw=1, label="ETF cosine -1/(K-1)")
    a2.axhline(0.0, color="gray", ls="-.", lw=1, label="orthogonal frame")
    a2.axvline(thresholds(base)["lam_b_star"], color="k", ls="--", lw=1, label=r"$\lambda_b^*$")
    a2.set_xlabel(r"bias decay $\lambda_b$")
    a2.set_ylabel(r"$\cos(w_k, w_l)$")
    a2.set_title("MSE with regularized bias: ETF to orthogonal frame", fontsize=9)
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(out: str | os.PathLike = "ufm-demo", *, figures: bool = True, echo=print) -> dict:
    """Solve :data:`CASES` in closed form; write ``closed_forms.csv``/``.md`` and figures to ``out``.

    Returns a dict with the table rows and the paths written.
    """
    from ._solve import solve

    os.makedirs(out, exist_ok=True)
    sols = [(label, solve(p, method="closed_form")) for label, p in CASES]
    rows = [_row(label, sol) for label, sol in sols]
    cols = list(rows[0])
    csv_path = os.path.join(out, "closed_forms.csv")
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    md_path = os.path.join(out, "closed_forms.md")
    with open(md_path, "w") as fh:
        fh.write("\n".join(md) + "\n")
    echo("\n".join(md))
    written = {"table_csv": csv_path, "table_md": md_path}
    if figures:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        from .plotting import plot_gram

        fig, axes = plt.subplots(1, len(sols), figsize=(2.3 * len(sols), 2.6))
        for ax, (label, sol) in zip(axes, sols):
            plot_gram(sol.gram_W, ax=ax, title=f"{label}\n{sol.status}", colorbar=False)
        fig.suptitle(r"cosines of the optimal classifiers $W W^\top$ (closed form)", fontsize=10)
        fig.tight_layout()
        grams = os.path.join(out, "closed_form_grams.png")
        fig.savefig(grams, dpi=110)
        plt.close(fig)
        regimes = os.path.join(out, "regimes.png")
        _regime_figure(regimes)
        written.update(grams=grams, regimes=regimes)
    echo("wrote: " + ", ".join(written.values()))
    return {"rows": rows, "paths": written}
