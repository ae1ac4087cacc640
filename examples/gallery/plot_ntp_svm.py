"""
Next-token prediction: the NTP-SVM and the centred support matrix
=================================================================

In next-token prediction every context has a *set* of possible next tokens (its support) with
probabilities. The NTP-UFM (:ref:`THEORY §5.2 <theory-5-2>`) is the UFM with these soft labels.
Without weight decay its logits split into two parts:

* the **in-support** part ``L_in``: finite, explicit, the centred log-probabilities on each support;
* the **out-of-support** part: it grows without bound in the direction of the NTP-SVM solution
  ``L_mm`` of (5.2), which depends only on the support pattern ``S``.

The centred support matrix ``S~ = (I - 11^T/V) S`` is always feasible for (5.2) and equals ``L_mm``
for one-hot labels; in general it is only a proxy. This example reproduces test vector TV4.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

import ufm

# V = 6 tokens, m = 5 contexts; supports {0,1}, {0,1}, {2,3}, {3,4}, {5}
V, m = 6, 5
P = np.zeros((V, m))
P[[0, 1], 0] = 0.7, 0.3
P[[0, 1], 1] = 0.2, 0.8
P[[2, 3], 2] = 0.5, 0.5
P[[3, 4], 3] = 0.6, 0.4
P[5, 4] = 1.0
p = ufm.UFMProblem(K=V, labels=P, d=V)          # soft labels: a V x m column-stochastic matrix
sol = ufm.solve(p, method="svm")
print(sol.message)

L_in = np.array(sol.meta["L_in"])
L_mm = sol.Z
S_proxy = np.array(sol.meta["support_proxy"])
print(f"||L_mm||_* = {sol.meta['nuclear']:.5f} (TV4: 4.42650), ||S~||_* = {sol.meta['nuclear_proxy']:.5f} (TV4: 4.45573)")
print(f"cos(L_mm, S~) = {sol.meta['cos_to_proxy']:.5f} (TV4: 0.99218)")
print("L_in column 0 on tokens 0, 1:", np.round(L_in[:2, 0], 4), "(TV4: 0.4236, -0.4236)")
print("L_mm columns 0 and 1 coincide (subspace collapse):", np.allclose(L_mm[:, 0], L_mm[:, 1], atol=1e-6))

# %%
# The three logit matrices side by side (rows: tokens, columns: contexts). ``L_mm`` differs from
# ``S~`` mostly on token 3, which lies in two supports.
fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
for ax, (name, M) in zip(axes, [("in-support $L_{in}$", L_in), ("NTP-SVM $L_{mm}$", L_mm),
                                ("centred support $\\tilde S$", S_proxy)]):
    lim = np.abs(M).max()
    im = ax.imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(name)
    ax.set_xlabel("context j")
    ax.set_ylabel("token z")
    fig.colorbar(im, ax=ax, fraction=0.046)
fig.tight_layout()

# %%
# Regularization path
# -------------------
# With a small weight decay the optimum approaches ``L_in + R L_mm`` with ``R ~ log(1/lam)``:
# its in-support part converges to ``L_in`` at rate ``O(lam)``, and its out-of-support part turns,
# slowly, toward ``L_mm``.
S = P > 0


def split(L):
    """In-support part (centred on each support) and the rest of a logit matrix."""
    Lf = np.zeros_like(L)
    for j in range(m):
        sup = S[:, j]
        Lf[sup, j] = L[sup, j] - L[sup, j].mean()
    return Lf, L - Lf


lams = [1e-2, 1e-3, 1e-4]
err_in, cos_mm = [], []
for lam in lams:
    Z = ufm.solve(p.replace(lam_W=lam, lam_H=lam), method="prox", tol=1e-10).Z
    Lf, Lperp = split(Z)
    err_in.append(np.linalg.norm(Lf - L_in))
    cos_mm.append(np.sum(Lperp * L_mm) / (np.linalg.norm(Lperp) * np.linalg.norm(L_mm)))
    print(f"lam = {lam:.0e}:  ||P_F L - L_in|| = {err_in[-1]:.1e},  cos(P_F-perp L, L_mm) = {cos_mm[-1]:.4f}")

fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
a1.loglog(lams, err_in, "o-")
a1.set_xlabel(r"$\lambda$")
a1.set_ylabel(r"$\|P_F L_\lambda - L_{in}\|$")
a2.semilogx(lams, cos_mm, "o-")
a2.set_xlabel(r"$\lambda$")
a2.set_ylabel(r"cosine to $L_{mm}$")
fig.tight_layout()
plt.show()
