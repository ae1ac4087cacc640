"""
Fitting the models to a recorded run
====================================

:func:`ufm.fit` takes class-mean Grams recorded over training (a bridge :class:`ufm.Run`) and fits
the static decomposition, the input-coupled UFMs (M2 and M2-H) and the anchored UFM (M1) side by side
(:ref:`THEORY §8.6 <theory-8-6>`). Here the "network" is a simulated M2 run with a known capacity
``sigma = 2``, recorded with the :class:`ufm.bridge.Exporter` exactly as a training loop would,
so we can see what the fit recovers, with what interval, and how its table reads. The user guide's
:doc:`bridge page </guide/bridge>` explains each column.
"""

# %%
# Record a run
# ------------
import matplotlib.pyplot as plt
import numpy as np

import ufm
from ufm.bridge import Exporter
from ufm.plotting import plot_fit

s = ufm.factorial((2, 2, 2))
net = ufm.InputCoupledUFM.from_setting(s, sigma=2.0, d=64)
tr = ufm.simulate(net, steps=10**6, lr=1.0, mode="flow", record=("H",), n_records=30, init_scale=1e-3)

ex = Exporter(labels=np.arange(s.N), attributes=s.attributes, name="simulated M2, sigma = 2")
for step, H in zip(tr.steps, tr.H[0]):
    ex.record(int(step), H.T, labels=np.arange(s.N))      # features: one row per example
run = ex.run()
print(run.grams.shape, "class-mean Grams over", len(run.steps), "records")

# %%
# Fit and read the table
# ----------------------
# The weight decay is not given: a user rarely knows it. The records' steps are the flow's time
# units, one per step at a constant rate, so the clock is declared linear (``tau = c * step``,
# ``c`` fitted); a network trained with Adam would keep the default, a broken power law. The fit
# is judged on the curves and the Grams it reproduces (the table); the parameters come with 90%
# intervals from a parametric bootstrap, and a parameter the records cannot pin down says so.
f = ufm.fit(run, setting=s, clock="linear")
print(f.message)
print()
lo, hi = f.intervals["sigma"]
print(f"quoted model: {f.params['model']}; fitted sigma {f.params['sigma']:.3f}, 90% interval [{lo:.3f}, {hi:.3f}] "
      f"(true 2.0); lam identifiable: {f.identifiable['lam']}, flat over {f.intervals['lam']} (true 0)")

# %%
# The observed curves with each model's fit, over the recorded steps: M2 follows the rise and the
# fall of the semantic gap; M1 can only let the gap fall along its ``beta`` path.
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
plot_fit(f, "gap", ax=a1)
plot_fit(f, "etf_distance", ax=a2)
fig.tight_layout()
plt.show()
