"""
Three candidate models: M1, M2 and M3
=====================================

Which modification of the UFM produces structure *before* collapse? :func:`ufm.phase.transient_models`
runs the three candidates of :ref:`THEORY §8 <theory-8>` on the same setting, cross-entropy loss:

* **M1, anchored UFM** (:ref:`§8.1 <theory-8-1>`): features pulled toward an anchor ``H_0`` that
  carries the attributes. The gap rises to the anchor's on the time scale ``1/beta``, then falls.
* **M2, input-coupled UFM** (:ref:`§8.2 <theory-8-2>`): ``H = A Phi``; the attribute modes are
  learned first, so the gap rises from a small value, peaks and falls toward the end state.
* **M3, kernel flow** (:ref:`§8.3 <theory-8-3>`): ``dZ/dt = -grad g(Z) Theta`` with a block
  kernel; the logits inherit the kernel's blocks at once and lose them only slowly: a plateau,
  no delayed rise.

The shapes differ, which is what lets :func:`ufm.fit` tell the models apart on a measured run.
"""

# %%
import matplotlib.pyplot as plt

from ufm.phase import transient_models

out = transient_models("factorial", sigma=3.0, lam=1e-3, beta=1e-2, horizon=1e5, n_records=100)
names = out.models
for name in names:
    t, gap, etf = out.times[name], out.semantic_gap[name], out.etf_distance[name]
    j = gap.argmax()
    print(f"{name:18s} gap: start {gap[1]:.3f}, peak {gap[j]:.3f} at t = {t[j]:.3g}, end {gap[-1]:.3f};"
          f" ETF distance at the end {etf[-1]:.3f}")

# %%
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
for name in names:
    t, gap, etf = out.times[name], out.semantic_gap[name], out.etf_distance[name]
    a1.semilogx(t[1:], gap[1:], label=name)
    a2.semilogx(t[1:], etf[1:], label=name)
a1.set_ylabel("semantic gap")
a2.set_ylabel("ETF distance")
for ax in (a1, a2):
    ax.set_xlabel("time t")
a1.legend(fontsize=8)
fig.tight_layout()
plt.show()
