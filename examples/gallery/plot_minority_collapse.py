"""
Minority collapse
=================

With imbalanced classes the ETF is lost. In the regularized cross-entropy UFM the classifiers of
the minority classes move toward each other as the imbalance ratio ``R = n_major / n_minor``
grows, and at a finite ``R`` they coincide exactly: the model can no longer tell the minority
classes apart (:ref:`THEORY §3.1 <theory-3-1>`, test vector TV11; Fang, He, Long, Su 2021).

No closed form covers this case; :func:`ufm.solve` finds the global optimum through the convex
reformulation of :ref:`THEORY §4 <theory-4>` and certifies it.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

import ufm
from ufm import metrics
from ufm.plotting import plot_gram


def minority_geometry(R):
    """Cosines and norm ratio of the optimal classifiers for counts (R, R, 1, 1)."""
    p = ufm.UFMProblem(K=4, counts=[R, R, 1, 1], d=4, lam_W=0.01, lam_H=0.01)
    sol = ufm.solve(p)
    C = metrics.cosine_matrix(sol.gram_W)
    norms = np.sqrt(np.diag(sol.gram_W))
    return sol, C[2, 3], C[0, 1], norms[2] / norms[0]


print(" R   cos(min1,min2)  cos(maj1,maj2)  |w_min|/|w_maj|   method")
for R in (1, 5, 20, 50, 500):
    sol, c_min, c_maj, ratio = minority_geometry(R)
    print(f"{R:3d}   {c_min:13.4f}  {c_maj:14.4f}  {ratio:15.3f}   {sol.method}")

# %%
# THEORY TV11 lists ``cos(w_min1, w_min2) = 0.0129, 0.4910, 1.0000`` at ``R = 5, 20, 50``.
# The cosine of the two minority classifiers over a range of imbalance ratios:
Rs = np.unique(np.round(np.logspace(0, 2.5, 25)).astype(int))
rows = [minority_geometry(int(R))[1:] for R in Rs]
c_min, c_maj, ratio = map(np.array, zip(*rows))

fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
a1.semilogx(Rs, c_min, "o-", ms=3, label="minority pair")
a1.semilogx(Rs, c_maj, "s-", ms=3, label="majority pair")
a1.axhline(-1 / 3, color="gray", ls=":", label="ETF: -1/(K-1)")
a1.set_xlabel("imbalance ratio R")
a1.set_ylabel("cosine of the classifiers")
a1.legend(fontsize=8)
a2.semilogx(Rs, ratio, "o-", ms=3)
a2.set_xlabel("imbalance ratio R")
a2.set_ylabel(r"$\|w_{min}\| / \|w_{maj}\|$")
fig.tight_layout()

# %%
# The classifier Grams at ``R = 1`` (the ETF) and ``R = 50`` (the minority rows coincide).
fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
for ax, R in zip(axes, (1, 50)):
    sol = minority_geometry(R)[0]
    plot_gram(sol.gram_W, ax=ax, title=f"R = {R}", labels=["maj 1", "maj 2", "min 1", "min 2"])
fig.tight_layout()
plt.show()
