"""
The simplex ETF and its norms
=============================

The balanced cross-entropy UFM with weight decay has a closed-form global optimum
(:ref:`THEORY §1.2 <theory-1-2>`): below the threshold ``K gamma = 1``, with
``gamma = sqrt(n lam_W lam_H)``, the classifiers form a simplex equiangular tight frame (ETF),
every pairwise cosine equals ``-1/(K-1)``, and the norms and the logit margin
``s* = log(1/gamma - (K-1))`` are explicit. Above the threshold the optimum is ``W = H = 0``.

This example solves the test vector TV1 in closed form, checks it against the certified convex
solver, and draws the margin across the threshold.
"""

# %%
# The closed form at TV1
# ----------------------
# ``K = 4`` classes, ``n = 3`` examples each, ``d = 6``, ``lam_W = lam_H = 0.01``
# (halved weight decays, :ref:`THEORY (0.1) <theory-eq-0-1>`).
import matplotlib.pyplot as plt
import numpy as np

import ufm
from ufm import metrics
from ufm.plotting import plot_gram

p = ufm.UFMProblem(K=4, n=3, d=6, loss="ce", lam_W=0.01, lam_H=0.01)
sol = ufm.solve(p, method="closed_form")
print(sol.regime, sol.message)
print(f"objective f*   = {sol.objective:.7f}   (THEORY TV1: 0.2613364)")
print(f"margin s*      = {sol.meta['s']:.6f}    (TV1: 4.002504)")
print(f"||w_k||^2      = {np.diag(sol.gram_W)}  (TV1: 5.199405)")
print(f"||h||^2        = {np.mean(np.sum(sol.H**2, axis=0)):.6f}    (TV1: 1.733135)")
print(f"ETF distance of W W^T: {metrics.etf_distance(sol.gram_W):.2e}")

# %%
# The exact convex reformulation (:ref:`THEORY §4 <theory-4>`) finds the same optimum without
# knowing the closed form, and certifies it with a duality gap.
num = ufm.solve(p, method="prox")
print(f"prox objective = {num.objective:.10f}, relative duality gap {num.meta['rel_duality_gap']:.1e}")
assert abs(num.objective - sol.objective) < 1e-6

# %%
# Classifier cosines: the off-diagonal entries are all ``-1/(K-1) = -1/3``.
fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
plot_gram(sol.gram_W, ax=axes[0], title=r"closed form: cosines of $W W^\top$")
plot_gram(num.gram_W, ax=axes[1], title=r"convex solver: cosines of $W W^\top$")
fig.tight_layout()

# %%
# Across the threshold
# --------------------
# The margin ``s*`` shrinks as the weight decay grows and hits 0 exactly at ``K gamma = 1``;
# beyond it the optimum is zero and the objective is ``log K``.
K, n = 4, 3
lams = np.logspace(-4, 0, 80)
margins, values = [], []
for lam in lams:
    s = ufm.solve(ufm.UFMProblem(K=K, n=n, d=K, lam_W=lam, lam_H=lam), method="closed_form")
    margins.append(s.meta.get("s", 0.0))
    values.append(s.objective)
lam_zero = 1 / (K * np.sqrt(n))      # K sqrt(n) lam = 1 when lam_W = lam_H = lam

fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
a1.semilogx(lams, margins)
a1.axvline(lam_zero, color="k", ls="--", lw=1, label=r"$K\gamma = 1$")
a1.set_xlabel(r"$\lambda_W = \lambda_H$")
a1.set_ylabel(r"optimal margin $s^*$")
a1.legend()
a2.semilogx(lams, values)
a2.axhline(np.log(K), color="gray", ls=":", label=r"$\log K$")
a2.axvline(lam_zero, color="k", ls="--", lw=1)
a2.set_xlabel(r"$\lambda_W = \lambda_H$")
a2.set_ylabel(r"optimal objective $f^*$")
a2.legend()
fig.tight_layout()
plt.show()
