"""Derive the balanced layer-peeled optimum (THEORY §1.3).

Problem (Fang, He, Long, Su, "Exploring deep neural networks via layer-peeled
model: minority collapse in imbalanced training", arXiv 2101.12699, PNAS 2021):

    min (1/N) sum_{k,i} CE(W h_{k,i}, k)
    s.t. (1/K) sum_k ||w_k||^2 <= E_W,   (1/K) sum_k (1/n) sum_i ||h_{k,i}||^2 <= E_H.

Starting from the classifier geometry of the theorem (simplex ETF with
||w_k||^2 = E_W), this script derives with sympy that the best feature of class
k is h = sqrt(E_H/E_W) w_k (symmetrization + monotonicity of the loss in the
margin), the margin s = K sqrt(E_H E_W)/(K-1) and the loss
log(1 + (K-1) e^{-s}), and asserts they equal ufm.symbolic.layer_peeled_optimum().
It also solves a small instance (K = 3) numerically over all W, H with scipy
to confirm the ETF value is the global one, and checks consistency with the
regularized optimum of §1.2 (energies of ce_optimum() give the margin s*).
"""

import itertools
import random

import numpy as np
import sympy as sp
from scipy.optimize import minimize

from ufm import symbolic as S

K, n, E_W, E_H, lam_W, lam_H = S.K, S.n, S.E_W, S.E_H, S.lam_W, S.lam_H
a = sp.Symbol("a", positive=True)     # h = a w_k
s = sp.Symbol("s", positive=True)
RNG = random.Random(3)


def ok(msg):
    print(f"OK: {msg}")


LP = S.layer_peeled_optimum()

# --- 1. ETF classifier: Gram G = E_W (K/(K-1)) P_K -----------------------------------------
g_same, g_other = E_W, -E_W / (K - 1)
row_sum = g_same + (K - 1) * g_other          # = w_k^T sum_c w_c
assert sp.simplify(row_sum) == 0, (
    "expected: ETF rows are centred: w_k^T sum_c w_c = 0, so sum_c w_c = 0 and sum_{c != k} w_c = "
    "-w_k")
ok("ETF rows are centred: w_k^T sum_c w_c = 0, so sum_c w_c = 0 and sum_{c != k} w_c = -w_k")

# --- 2. best feature direction for class k -------------------------------------------------
# Only the component of h in span{w_c} changes the logits; a component outside costs energy
# for nothing. Averaging h over the permutations of the K-1 wrong classes (which fix w_k and
# permute the others) keeps ||h|| from growing (convexity of the norm) and cannot raise the
# CE (convex, invariant under those permutations): so h = x w_k + y sum_{c!=k} w_c = (x - y) w_k.
for Kv in (3, 4, 5):
    P = sp.eye(Kv) - sp.ones(Kv, Kv) / Kv
    Wc = sp.sqrt(E_W * sp.Rational(Kv, Kv - 1)) * P          # rows: ETF with ||w_k||^2 = E_W
    assert all(sp.simplify((Wc * Wc.T)[i, i] - E_W) == 0 for i in range(Kv)), "ETF rows need ||w_k||^2 = E_W"
    v = sp.symbols(f"v0:{Kv}", real=True)                   # arbitrary h = sum_c v_c w_c, class k = 0
    h_avg = sp.zeros(1, Kv)
    perms = [p for p in itertools.permutations(range(1, Kv))]
    for perm in perms:
        coeff = [v[0]] + [v[perm[j]] for j in range(Kv - 1)]
        h_avg += sum((coeff[c] * Wc[c, :] for c in range(Kv)), sp.zeros(1, Kv))
    h_avg /= len(perms)
    coef = v[0] - sum(v[1:]) / (Kv - 1)
    assert sp.simplify(h_avg - coef * Wc[0, :]) == sp.zeros(1, Kv), "averaged feature must be along w_k"
ok("K = 3, 4, 5: averaging any h in span{w_c} over the permutations of the wrong classes gives a multiple of w_k")

z_target = a * g_same
z_other = a * g_other
t_logit = z_target
margin = sp.simplify(z_target - z_other)
assert sp.simplify(margin - K * a * E_W / (K - 1)) == 0, (
    "expected: with h = a w_k: t = a E_W, margin s = a E_W K/(K-1), CE = log(1 + (K-1) e^{-s})")
loss_a = sp.log(sp.exp(z_target) + (K - 1) * sp.exp(z_other)) - z_target
loss_s = sp.log(1 + (K - 1) * sp.exp(-s))
# log is injective: compare the arguments exp(loss)
assert sp.simplify(sp.exp(loss_a) - sp.exp(loss_s.subs(s, margin))) == 0, (
    "expected: with h = a w_k: t = a E_W, margin s = a E_W K/(K-1), CE = log(1 + (K-1) e^{-s})")
ok("with h = a w_k: t = a E_W, margin s = a E_W K/(K-1), CE = log(1 + (K-1) e^{-s})")

dloss = sp.simplify(sp.diff(loss_s, s))
assert sp.simplify(dloss + (K - 1) * sp.exp(-s) / (1 + (K - 1) * sp.exp(-s))) == 0, (
    "expected: d CE/ds = -(K-1)e^{-s}/(1+(K-1)e^{-s}) < 0: the energy constraint on H is active")
k1 = sp.Symbol("k1", positive=True)
assert (-dloss).subs(K, 1 + k1).is_positive, "CE must decrease in the margin"
ok("d CE/ds = -(K-1)e^{-s}/(1+(K-1)e^{-s}) < 0: the energy constraint on H is active")

# ||h||^2 = a^2 E_W; every class/sample is symmetric, so the average constraint gives a^2 E_W = E_H.
a_sol = [r for r in sp.solve(sp.Eq(a**2 * E_W, E_H), a) if r.is_positive is not False]
assert len(a_sol) == 1, a_sol
a_star = a_sol[0]
assert sp.simplify(a_star - LP["h_over_w"]) == 0, (
    "expected: a = ||h||/||w|| = sqrt(E_H/E_W) equals layer_peeled_optimum()['h_over_w']")
ok("a = ||h||/||w|| = sqrt(E_H/E_W) equals layer_peeled_optimum()['h_over_w']")

s_lp = sp.simplify(margin.subs(a, a_star))
assert sp.simplify(t_logit.subs(a, a_star) - sp.sqrt(E_H * E_W)) == 0, (
    "expected: margin s = K sqrt(E_H E_W)/(K-1) equals layer_peeled_optimum()['s']")
assert sp.simplify(s_lp - LP["s"]) == 0, s_lp
ok("margin s = K sqrt(E_H E_W)/(K-1) equals layer_peeled_optimum()['s']")
loss_lp = loss_s.subs(s, s_lp)
assert sp.simplify(loss_lp - LP["loss"]) == 0, (
    "expected: loss log(1 + (K-1) exp(-s)) equals layer_peeled_optimum()['loss']")
ok("loss log(1 + (K-1) exp(-s)) equals layer_peeled_optimum()['loss']")

# The W constraint is active too: the loss is decreasing in E_W at fixed E_H.
dE = sp.diff(LP["loss"], E_W)
assert sp.simplify(dE.subs(K, 1 + k1)).is_negative, (
    "expected: loss decreases in E_W as well, so both energy constraints are tight at the optimum")
ok("loss decreases in E_W as well, so both energy constraints are tight at the optimum")

# --- 3. consistency with the regularized UFM (§1.2) -------------------------------------------
opt = S.ce_optimum()
s_from_energies = LP["s"].subs({E_W: opt["w_sq"], E_H: opt["h_sq"]})
for _ in range(6):
    Kv = RNG.randint(2, 8)
    pt = {K: Kv, n: RNG.randint(1, 5), lam_W: sp.Rational(RNG.randint(1, 50), 10000),
          lam_H: sp.Rational(RNG.randint(1, 50), 10000)}
    assert (Kv * opt["gamma"].subs(pt)) < 1, "sample point must lie in the collapse regime K gamma < 1"
    d = sp.N((s_from_energies - opt["s"]).subs(pt), 40)
    assert abs(d) < 1e-30, f"layer-peeled margin at the regularized energies: {d}"
ok("layer-peeled margin at the energies ||w||^2, ||h||^2 of ce_optimum() equals s* of §1.2")

# --- 4. numeric global check, K = 3, n = 1, d = 3 ----------------------------------------------
Kv, dv, EWv, EHv = 3, 3, 1.7, 0.9


def objective(v):
    W = v[: Kv * dv].reshape(Kv, dv)
    H = v[Kv * dv:].reshape(dv, Kv)
    Z = W @ H
    zmax = Z.max(axis=0)
    lse = zmax + np.log(np.exp(Z - zmax).sum(axis=0))
    return float(np.mean(lse - np.diag(Z)))


cons = [{"type": "ineq", "fun": lambda v: EWv - np.sum(v[: Kv * dv] ** 2) / Kv},
        {"type": "ineq", "fun": lambda v: EHv - np.sum(v[Kv * dv:] ** 2) / Kv}]
rng = np.random.default_rng(0)
best = min(minimize(objective, rng.normal(size=2 * Kv * dv), constraints=cons, method="SLSQP",
                    options={"ftol": 1e-14, "maxiter": 2000}).fun for _ in range(6))
closed = float(LP["loss"].subs({K: Kv, E_W: EWv, E_H: EHv}))
assert abs(best - closed) < 1e-7, f"numeric optimum {best} vs closed form {closed}"
ok(f"K=3 layer-peeled problem solved numerically over all W, H: {best:.10f} = closed form {closed:.10f}")
print("layer_peeled: all identities hold")
