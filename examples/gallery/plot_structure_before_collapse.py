"""
Structure before collapse in the input-coupled UFM
==================================================

Eight items with three binary latent attributes, each item with its own one-hot label
(``ufm.factorial((2, 2, 2))``). In the plain UFM nothing can prefer items that share attributes,
so the features go straight to the simplex ETF. In the input-coupled UFM (M2,
:ref:`THEORY §8.2 <theory-8-2>`) the features are ``H = A Phi`` with fixed input encodings
``Phi = [attribute one-hots; sigma I]``: the attribute directions have the larger singular values,
so they are learned first and the items cluster by shared attributes (the *semantic gap* rises);
later the item-specific directions catch up and the geometry spreads toward the ETF.

This example simulates the gradient flow from a small random start, overlays the theory curve
of :func:`ufm.dynamics.semantic_curve`, and solves the exact end state with :func:`ufm.solve`
(the convex form (8.2b)).
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

import ufm
from ufm import dynamics, metrics
from ufm.plotting import plot_gram

s = ufm.factorial((2, 2, 2))
sigma, lam = 3.0, 1e-3
m = ufm.InputCoupledUFM.from_setting(s, sigma=sigma, d=16, loss="ce", lam_W=lam, lam_A=lam)

# the exact end state: global optimum of the convex form, certified
end = ufm.solve(m)
E = end.H.T @ end.H
print(end.method, end.status.name, end.regime, f"objective {end.objective:.8f}")
print(f"end state: semantic gap {metrics.semantic_gap(E, s.attributes):.4f}, "
      f"ETF distance {metrics.etf_distance(E):.4f}")

# %%
# Simulation and theory on the same times
# ---------------------------------------
# The horizon is ten times the predicted transition time (and at least ``100/lam``).
pred0 = dynamics.semantic_curve(m, [0.0], init_scale=1e-3, end_gram=E, keep_gram=False)
horizon = max(10 * pred0.transition_time, 100 / lam)
steps = 10**6
tr = ufm.simulate(m, steps=steps, lr=horizon / steps, mode="flow", init_scale=1e-3, seeds=2,
                  record=("semantic_gap", "etf_distance", "gram_H"), n_records=120)
pred = dynamics.semantic_curve(m, tr.times, init_scale=1e-3, end_gram=E)
print(tr.message)
print(f"theory: peak gap {pred.peak_value:.3f} at t = {pred.peak_time:.3g}, "
      f"transition at t = {pred.transition_time:.3g}")
print(f"simulation: peak gap {tr.semantic_gap.mean(0).max():.3f} "
      f"at t = {tr.times[np.argmax(tr.semantic_gap.mean(0))]:.3g}")

fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
t = tr.times[1:]
for k in range(tr.semantic_gap.shape[0]):
    a1.semilogx(t, tr.semantic_gap[k, 1:], "o", ms=2.5, alpha=0.6, label=f"simulation, seed {k}")
    a2.semilogx(t, tr.etf_distance[k, 1:], "o", ms=2.5, alpha=0.6)
a1.semilogx(t, pred.semantic_gap[1:], "k-", label="theory (semantic_curve)")
a2.semilogx(t, pred.etf_distance[1:], "k-")
for ax, end_value in ((a1, metrics.semantic_gap(E, s.attributes)), (a2, metrics.etf_distance(E))):
    ax.axhline(end_value, color="C3", ls="--", lw=1, label="exact end state (ufm.solve)")
    ax.axvline(pred.peak_time, color="gray", ls=":", lw=1)
    ax.axvline(pred.transition_time, color="gray", ls="-.", lw=1)
    ax.set_xlabel("time t")
a1.set_ylabel("semantic gap")
a2.set_ylabel("ETF distance")
a1.legend(fontsize=7)
fig.tight_layout()

# %%
# The item Gram at the start, at the peak of the gap, and at the end state
# ------------------------------------------------------------------------
# At the peak the items sharing attributes have large positive cosines (blocks); the end state
# is close to the ETF (all off-diagonal cosines near ``-1/7``), with a residual semantic trace
# that shrinks as ``sigma`` grows.
j_peak = int(np.argmax(tr.semantic_gap[0]))
fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
plot_gram(metrics.center_gram(tr.gram_H[0, 1]), ax=axes[0], title="early", colorbar=False)
plot_gram(metrics.center_gram(tr.gram_H[0, j_peak]), ax=axes[1], title=f"peak (t = {tr.times[j_peak]:.3g})",
          colorbar=False)
plot_gram(metrics.center_gram(E), ax=axes[2], title="exact end state")
fig.tight_layout()
plt.show()
