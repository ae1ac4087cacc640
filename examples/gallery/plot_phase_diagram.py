"""
The phase diagram of structure before collapse
==============================================

How much semantic structure appears during training, and how much of it survives at the end?
:func:`ufm.phase_diagram` answers this for the input-coupled UFM (M2,
:ref:`THEORY §8.2 <theory-8-2>`) at every point of a grid over the per-item capacity ``sigma``,
the attribute strength and the weight decay, from theory alone: the peak of the semantic gap
and the transition time come from :func:`ufm.dynamics.semantic_curve`, the end state from the
exact convex solver. Each point takes a fraction of a second, so the grid runs sequentially
(pass ``backend="loky"`` or ``"dask"`` to spread larger grids, see :func:`ufm.sweep`).
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

import ufm
from ufm.plotting import plot_phase_diagram, plot_phase_lines

sigmas = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
res = ufm.phase_diagram(settings=("factorial", "hierarchy"), sigmas=sigmas, strengths=(0.5, 1.0, 2.0),
                        lams=(1e-3,))
print(res.message)
print("columns:", sorted(k for k in res.records[0] if not k.startswith("seed")))

# %%
# Capacity against the end state and the transient
# ------------------------------------------------
# The end state's distance to the ETF falls as ``sigma`` grows (enough capacity reaches the
# symmetric state), while the early peak of the semantic gap stays far above the end state's gap.
fig, ax = plt.subplots(figsize=(6.5, 4))
plot_phase_lines(res, x="sigma", values=("peak_gap", "end_gap", "end_etf_distance"), hue="setting",
                 where={"strength": 1.0}, ax=ax)
ax.set_xlabel(r"capacity $\sigma$")
fig.tight_layout()

# %%
# Two parameters at once
# ----------------------
# Peak gap and end-state ETF distance over capacity and attribute strength (factorial setting).
fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
plot_phase_diagram(res, x="sigma", y="strength", value="peak_gap", where={"setting": "factorial"}, ax=a1,
                   annotate=True, title="peak semantic gap")
plot_phase_diagram(res, x="sigma", y="strength", value="end_etf_distance", where={"setting": "factorial"},
                   ax=a2, annotate=True, title="end state: ETF distance")
fig.tight_layout()

sig = np.array(res.column("sigma"))
end_etf = np.array(res.column("end_etf_distance"))
sel = (np.array(res.column("setting")) == "factorial") & (np.array(res.column("strength")) == 1.0)
for sv, ev in zip(sig[sel], end_etf[sel]):
    print(f"factorial, strength 1, sigma = {sv:3.1f}: end-state ETF distance {ev:.3f}")
plt.show()
