"""
Gradient flow against its theory curves
=======================================

:func:`ufm.simulate` integrates the gradient flow of a UFM (``mode="flow"``, adaptive
Dormand-Prince, in log-time when nothing damps the dynamics) or runs plain gradient descent
(``mode="gd"``). :mod:`ufm.dynamics` predicts the same curves from ODEs. Here both meet on the
balanced cross-entropy UFM started on the symmetric subspace ``W = a U``, ``H = beta (U^T kron 1_n^T)``
(:ref:`THEORY §6.5 <theory-6-5>`), where the logit margin ``p = a beta`` obeys

``dp/dt = 2/(sqrt(n)(K-1)) p phi(p)``, ``phi(p) = (K-1) e^{-p} / (1 + (K-1) e^{-p})``.

Without weight decay the margin grows like ``log t`` for ever (the direction converges to the
ETF); with weight decay it settles at the closed-form margin ``s*`` of :ref:`THEORY §1.2 <theory-1-2>`.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

import ufm
from ufm import dynamics

K, n = 3, 4
P_K = np.eye(K) - np.ones((K, K)) / K


def symmetric_start(p0):
    """Blocks on the balanced symmetric manifold with margin p0 (d = K, U = P_K)."""
    a0 = (np.sqrt(n) * p0) ** 0.5
    W0 = a0 * P_K
    H0 = (p0 / a0) * np.kron(P_K, np.ones((1, n)))
    return W0, H0


def margin(Z):
    """Mean logit gap z_y - z_c over examples (class-major labels) for Z of shape (..., K, N)."""
    y = np.repeat(np.arange(K), n)
    zy = Z[..., y, np.arange(K * n)]
    zc = (Z.sum(axis=-2) - zy) / (K - 1)
    return (zy - zc).mean(axis=-1)


p0 = 1e-2
W0, H0 = symmetric_start(p0)
p = ufm.UFMProblem(K=K, n=n, d=K, loss="ce")
flow = ufm.simulate(p, steps=10**8, lr=1.0, mode="flow", W0=W0, H0=H0, record=("Z", "objective"), n_records=120)
gd = ufm.simulate(p, steps=20_000, lr=1.0, mode="gd", W0=W0, H0=H0, record=("Z",), n_records=60)
theory = dynamics.symmetric_flow(p, flow.times, p0=p0)
print(flow.message)
print("time variable of the integrator:", flow.meta["time_variable"])
p_flow, p_gd = margin(flow.Z[0]), margin(gd.Z[0])
print(f"margin at t = 1e8: simulated {p_flow[-1]:.6f}, theory {theory.p[-1]:.6f}")
assert abs(p_flow[-1] - theory.p[-1]) < 1e-4 * theory.p[-1]

# %%
# The late-time law ``p ~ log(2t/sqrt n) + log log(2t/sqrt n)`` is reached after the
# exponential early phase (rate ``2/(K sqrt n)``).
t = flow.times[flow.times > 10]
late = np.log(2 * t / np.sqrt(n)) + np.log(np.log(2 * t / np.sqrt(n)))
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
a1.loglog(flow.times[1:], p_flow[1:], "o", ms=3, label="ufm.simulate, flow")
a1.loglog(gd.times[1:], p_gd[1:], "x", ms=4, label="ufm.simulate, GD (lr = 1)")
a1.loglog(theory.times[1:], theory.p[1:], "-", label="dynamics.symmetric_flow")
a1.loglog(t, late, "k:", label="log t + log log t")
a1.set_xlabel("time t")
a1.set_ylabel("margin p(t)")
a1.set_title("CE, no weight decay")
a1.legend(fontsize=8)

# %%
# With weight decay
# -----------------
# The same start with ``lam_W = lam_H = 1e-2``: the flow settles at the closed-form optimum.
pr = p.replace(lam_W=1e-2, lam_H=1e-2)
flow_r = ufm.simulate(pr, steps=10**5, lr=0.01, mode="flow", W0=W0, H0=H0, record=("Z",), n_records=120)
theory_r = dynamics.symmetric_flow(pr, flow_r.times, p0=p0)
s_star = ufm.solve(pr, method="closed_form").meta["s"]
print(f"end margin: simulated {margin(flow_r.Z[0])[-1]:.6f}, theory {theory_r.p[-1]:.6f}, closed form s* = {s_star:.6f}")
a2.semilogx(flow_r.times[1:], margin(flow_r.Z[0])[1:], "o", ms=3, label="ufm.simulate, flow")
a2.semilogx(theory_r.times[1:], theory_r.p[1:], "-", label="dynamics.symmetric_flow")
a2.axhline(s_star, color="k", ls="--", lw=1, label=r"closed form $s^*$")
a2.set_xlabel("time t")
a2.set_ylabel("margin p(t)")
a2.set_title(r"CE, $\lambda_W = \lambda_H = 10^{-2}$")
a2.legend(fontsize=8)
fig.tight_layout()
plt.show()
