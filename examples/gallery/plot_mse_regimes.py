"""
MSE regimes: orthogonal frame, ETF, and the bias in between
===========================================================

For the squared loss the geometry of the optimum depends on the bias
(:ref:`THEORY §2.2 <theory-2-2>`, test vector TV2):

* without a bias the classifiers form an **orthogonal frame** (``W W^T`` proportional to ``I_K``);
* with a free bias they form a **simplex ETF** (proportional to ``P_K = I - 11^T/K``);
* with a regularized bias ``lam_b/2 ||b||^2`` they stay an ETF up to the threshold
  ``lam_b* = K gamma / (1 - K gamma)`` and then drift toward the orthogonal frame as ``lam_b`` grows.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

import ufm
from ufm.closed_form import thresholds
from ufm.plotting import plot_gram

base = ufm.UFMProblem(K=4, n=3, d=6, loss="mse", lam_W=0.01, lam_H=0.02)
cases = {
    "no bias": base,
    "free bias": base.replace(bias=True, lam_b=0.0),
    "lam_b = 0.2": base.replace(bias=True, lam_b=0.2),
    "lam_b = 1": base.replace(bias=True, lam_b=1.0),
}
print("case           status                    f*           W W^T diag / off-diagonal")
sols = {}
for name, p in cases.items():
    sols[name] = s = ufm.solve(p, method="closed_form")
    G = s.gram_W
    print(f"{name:13s}  {s.regime:24s}  {s.objective:.8f}   {G[0, 0]:.6f} / {G[0, 1]:.6f}")
print("lam_b* =", round(thresholds(cases["lam_b = 1"])["lam_b_star"], 6), "(TV2: 0.108622)")

# %%
# TV2 lists ``f* = 0.09317959`` (no bias), ``0.06988469`` (free bias), ``0.08717959``
# (``lam_b = 0.2``) and ``0.09197959`` (``lam_b = 1``).
fig, axes = plt.subplots(1, 4, figsize=(12, 3.1))
for ax, (name, s) in zip(axes, sols.items()):
    plot_gram(s.gram_W, ax=ax, title=f"{name}\n{s.regime}", colorbar=False)
fig.tight_layout()

# %%
# The classifier cosine across the bias decay: ``-1/(K-1)`` (ETF) up to ``lam_b*``, then toward 0
# (orthogonal frame).
p = cases["lam_b = 1"]
lbs = np.logspace(-3, 3, 100)
cos = []
for lb in lbs:
    G = ufm.solve(p.replace(lam_b=lb), method="closed_form").gram_W
    cos.append(G[0, 1] / G[0, 0])
fig, ax = plt.subplots(figsize=(5.5, 3.4))
ax.semilogx(lbs, cos)
ax.axhline(-1 / 3, color="gray", ls=":", label="ETF: -1/(K-1)")
ax.axhline(0.0, color="gray", ls="-.", label="orthogonal frame")
ax.axvline(thresholds(p)["lam_b_star"], color="k", ls="--", lw=1, label=r"$\lambda_b^*$")
ax.set_xlabel(r"bias decay $\lambda_b$")
ax.set_ylabel(r"$\cos(w_k, w_l)$")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
