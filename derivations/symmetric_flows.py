"""Derive the symmetric-subspace gradient flows of the balanced MSE and CE UFMs (THEORY §6.4, §6.5; TV5c, TV5d, TV13).

MSE (§6.4; setting of Mixon, Parshall, Pi, "Neural collapse with unconstrained
features", arXiv 2011.11619): loss 1/2 ||W H + b 1^T - Y||_F^2, flow
dW/dt = -R H^T, dH/dt = -W^T R, db/dt = -R 1.
CE (§6.5; the unregularized version of Zhu et al. arXiv 2105.02375, objective (0.1)):
loss (1/N) sum CE(W h_{k,i}, k), optionally with weight decay.

Ansatz: W = a P_K, H = beta (P_K (x) 1_n^T), b = c 1_K (U = P_K, d = K, so W W^T = a^2 P_K).
The gradients are computed with sympy at the ansatz for explicit small K, n
(directional derivatives d/d(eps) L(W + eps e_ij)) and shown to stay in the
ansatz, giving scalar ODEs for a, beta, c. From them the script derives the
conservation of a^2 - n beta^2, the product law for p = a beta on the balanced
manifold a = sqrt(n) beta, and asserts the results equal
ufm.symbolic.mse_symmetric_flow() (rhs and trajectory) and ce_symmetric_flow()
(phi, rhs, early_rate); plus the late-time CE asymptotics and the weight-decay
fixed point p = s* = ce_margin() with the §1.2 norms.
"""

import sympy as sp
from scipy.integrate import solve_ivp

from ufm import symbolic as S

K, n, gamma, lam_W, lam_H, p, p0, t = S.K, S.n, S.gamma, S.lam_W, S.lam_H, S.p, S.p0, S.t
a, bt = sp.symbols("a beta", positive=True)
c = sp.Symbol("c", real=True)
eps = sp.Symbol("eps")


def ok(msg):
    print(f"OK: {msg}")


def zero(M, how=sp.expand):
    return all(how(e) == 0 for e in M)


def grad(Lfun, args, which):
    """Entrywise gradient of Lfun(*args) with respect to args[which], by d/d(eps) at eps = 0."""
    A = args[which]
    G = sp.zeros(*A.shape)
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            E = sp.zeros(*A.shape)
            E[i, j] = eps
            moved = list(args)
            moved[which] = A + E
            G[i, j] = sp.diff(Lfun(*moved), eps).subs(eps, 0)
    return G


def ansatz(Kv, nv):
    P = sp.eye(Kv) - sp.ones(Kv, Kv) / Kv
    PK1 = sp.kronecker_product(P, sp.ones(1, nv))
    Y = sp.kronecker_product(sp.eye(Kv), sp.ones(1, nv))
    return P, PK1, Y


# ================================ MSE (§6.4) ===================================================
for Kv, nv in [(3, 2), (4, 1)]:
    P, PK1, Y = ansatz(Kv, nv)
    Nv = Kv * nv

    def L_mse(W, H, b, Nv=Nv, Y=Y):
        R = W * H + b * sp.ones(1, Nv) - Y
        return sum(e**2 for e in R) / 2

    args = (a * P, bt * PK1, c * sp.ones(Kv, 1))
    dW, dH, db = (-grad(L_mse, args, i) for i in range(3))
    pr = a * bt
    assert zero(dW - nv * bt * (1 - pr) * P), "dW/dt = n beta (1 - p) P_K"
    assert zero(dH - a * (1 - pr) * PK1), "dH/dt = a (1 - p) (P_K (x) 1_n^T)"
    assert zero(db + Kv * nv * (c - sp.Rational(1, Kv)) * sp.ones(Kv, 1)), "db/dt = -K n (c - 1/K) 1"
    # and these are the flow formulas -R H^T, -W^T R, -R 1 of §6.4
    Rm = args[0] * args[1] + args[2] * sp.ones(1, Nv) - Y
    assert zero(dW + Rm * args[1].T) and zero(dH + args[0].T * Rm) and zero(db + Rm * sp.ones(Nv, 1)), (
        "expected: MSE, (K,n) in {(3,2),(4,1)}: the ansatz is invariant with da/dt = n beta (1 - a "
        "beta), dbeta/dt = a (1 - a beta), dc/dt = -K n (c - 1/K) (= -R H^T, -W^T R, -R 1)")
ok("MSE, (K,n) in {(3,2),(4,1)}: the ansatz is invariant with da/dt = n beta (1 - a beta), "
   "dbeta/dt = a (1 - a beta), dc/dt = -K n (c - 1/K) (= -R H^T, -W^T R, -R 1)")

da = n * bt * (1 - a * bt)
dbt = a * (1 - a * bt)
assert sp.expand(2 * a * da - 2 * n * bt * dbt) == 0, "expected: MSE: d/dt (a^2 - n beta^2) = 0"
ok("MSE: d/dt (a^2 - n beta^2) = 0")
assert sp.factor(da - sp.sqrt(n) * dbt).subs(a, sp.sqrt(n) * bt) == 0, (
    "expected: MSE: the balanced manifold a = sqrt(n) beta is invariant")
ok("MSE: the balanced manifold a = sqrt(n) beta is invariant")
dp = bt * da + a * dbt
dp_bal = sp.simplify(dp.subs(a, sp.sqrt(n) * bt).subs(bt, sp.sqrt(p) / n ** sp.Rational(1, 4)))
MS = S.mse_symmetric_flow()
assert sp.simplify(dp_bal - MS["rhs"]) == 0, dp_bal
ok("MSE: p = a beta on a = sqrt(n) beta obeys dp/dt = 2 sqrt(n) p (1 - p) = mse_symmetric_flow()['rhs']")
pt_ = MS["p"]
assert sp.simplify(sp.diff(pt_, t) - MS["rhs"].subs(p, pt_)) == 0 and sp.simplify(pt_.subs(t, 0) - p0) == 0, (
    "expected: MSE: mse_symmetric_flow()['p'] solves the ODE with p(0) = p0 (substitution and dsolve)")
f = sp.Function("f")
r = sp.Symbol("r", positive=True)
sol = sp.dsolve(sp.Eq(f(t).diff(t), r * f(t) * (1 - f(t))), f(t), ics={f(0): p0})
assert sp.simplify(sol.rhs.subs(r, 2 * sp.sqrt(n)) - pt_) == 0, (
    "expected: MSE: mse_symmetric_flow()['p'] solves the ODE with p(0) = p0 (substitution and dsolve)")
ok("MSE: mse_symmetric_flow()['p'] solves the ODE with p(0) = p0 (substitution and dsolve)")
b0 = sp.Symbol("b0", real=True)
c_t = 1 / K + (b0 - 1 / K) * sp.exp(-K * n * t)
assert sp.simplify(sp.diff(c_t, t) + K * n * (c_t - 1 / K)) == 0 and sp.simplify(c_t.subs(t, 0) - b0) == 0, (
    "expected: MSE: bias decouples, b(t) = 1/K + (b0 - 1/K) e^{-K n t}")
ok("MSE: bias decouples, b(t) = 1/K + (b0 - 1/K) e^{-K n t}")
# W W^T = a^2 P_K = sqrt(n) p P_K on the balanced manifold; p -> 1 gives Mixon et al.'s strong NC point
assert sp.simplify((a**2).subs(a, sp.sqrt(n) * bt) - sp.sqrt(n) * (a * bt).subs(a, sp.sqrt(n) * bt)) == 0, (
    "expected: MSE: W W^T = sqrt(n) p P_K -> sqrt(n) P_K (strong NC fixed point) as t -> oo")
assert sp.limit(pt_, t, sp.oo) == 1, (
    "expected: MSE: W W^T = sqrt(n) p P_K -> sqrt(n) P_K (strong NC fixed point) as t -> oo")
ok("MSE: W W^T = sqrt(n) p P_K -> sqrt(n) P_K (strong NC fixed point) as t -> oo")
p_tv5c = float(pt_.subs({n: 4, p0: sp.Rational(1, 1000), t: 2}))
assert abs(p_tv5c - 0.7489923252324207) < 1e-12, p_tv5c
ok("MSE: TV5c closed-form value p(2) = 0.74899 (K=3, n=4, p0 = 1e-3) reproduced")

# ================================ CE (§6.5) ===================================================
CS = S.ce_symmetric_flow()
phi = (K - 1) * sp.exp(-p) / (1 + (K - 1) * sp.exp(-p))
assert sp.simplify(phi - CS["phi"]) == 0, "phi must equal ce_symmetric_flow()['phi']"

# softmax of a column of Z = p P_K (x) 1_n^T (general K): logits p(1 - 1/K) and -p/K
sm_t = sp.exp(p * (1 - 1 / K)) / (sp.exp(p * (1 - 1 / K)) + (K - 1) * sp.exp(-p / K))
sm_o = sp.exp(-p / K) / (sp.exp(p * (1 - 1 / K)) + (K - 1) * sp.exp(-p / K))
assert sp.simplify(1 - sm_t - phi) == 0 and sp.simplify(sm_o - phi / (K - 1)) == 0, (
    "expected: CE, general K: at Z = p P_K (x) 1_n^T, softmax - y = -(phi K/(K-1)) P_K e_k, phi = 1 -"
    " softmax_y")
# so softmax - e_k = -phi K/(K-1) P_K e_k (entries -phi and phi/(K-1))
assert sp.simplify((sm_t - 1) - (-phi * K / (K - 1)) * (1 - 1 / K)) == 0, (
    "expected: CE, general K: at Z = p P_K (x) 1_n^T, softmax - y = -(phi K/(K-1)) P_K e_k, phi = 1 -"
    " softmax_y")
assert sp.simplify(sm_o - (-phi * K / (K - 1)) * (-1 / K)) == 0, (
    "expected: CE, general K: at Z = p P_K (x) 1_n^T, softmax - y = -(phi K/(K-1)) P_K e_k, phi = 1 -"
    " softmax_y")
ok("CE, general K: at Z = p P_K (x) 1_n^T, softmax - y = -(phi K/(K-1)) P_K e_k, phi = 1 - softmax_y")

for Kv, nv in [(3, 2), (4, 1)]:
    P, PK1, Y = ansatz(Kv, nv)
    Nv = Kv * nv

    def L_ce(W, H, Kv=Kv, nv=nv, Nv=Nv):
        Z = W * H
        return sum(sp.log(sum(sp.exp(Z[k, j]) for k in range(Kv))) - Z[j // nv, j] for j in range(Nv)) / Nv

    args = (a * P, bt * PK1)
    dW, dH = (-grad(L_ce, args, i) for i in range(2))
    ph = phi.subs({K: Kv, p: a * bt})
    pred_W = ph * bt / (Kv - 1) * P
    pred_H = ph * a / (nv * (Kv - 1)) * PK1
    assert zero(dW - pred_W, sp.simplify), "dW/dt = phi beta/(K-1) P_K"
    assert zero(dH - pred_H, sp.simplify), "dH/dt = phi a/(n(K-1)) (P_K (x) 1_n^T)"
ok("CE, (K,n) in {(3,2),(4,1)}: the ansatz is invariant with da/dt = phi(p) beta/(K-1), "
   "dbeta/dt = phi(p) a/(n(K-1)), p = a beta")

ph = phi.subs(p, a * bt)
da = ph * bt / (K - 1)
dbt = ph * a / (n * (K - 1))
assert sp.simplify(2 * a * da - 2 * n * bt * dbt) == 0, (
    "expected: CE: a^2 - n beta^2 is conserved and a = sqrt(n) beta is invariant")
assert sp.simplify((da - sp.sqrt(n) * dbt).subs(a, sp.sqrt(n) * bt)) == 0, (
    "expected: CE: a^2 - n beta^2 is conserved and a = sqrt(n) beta is invariant")
ok("CE: a^2 - n beta^2 is conserved and a = sqrt(n) beta is invariant")
dp = bt * da + a * dbt
dp_bal = sp.simplify(dp.subs(a, sp.sqrt(n) * bt).subs(bt, sp.sqrt(p) / n ** sp.Rational(1, 4)))
assert sp.simplify(dp_bal - CS["rhs"]) == 0, dp_bal
ok("CE: dp/dt = 2/(sqrt(n)(K-1)) p phi(p) = ce_symmetric_flow()['rhs']")

early = sp.limit(CS["rhs"] / p, p, 0)
assert sp.simplify(early - CS["early_rate"]) == 0 and sp.simplify(early - 2 / (K * sp.sqrt(n))) == 0, (
    "expected: CE: early rate lim_{p->0} rhs/p = 2/(K sqrt n) = ce_symmetric_flow()['early_rate']")
ok("CE: early rate lim_{p->0} rhs/p = 2/(K sqrt n) = ce_symmetric_flow()['early_rate']")
late = sp.limit(CS["rhs"] / (p * sp.exp(-p)), p, sp.oo)
assert sp.simplify(late - 2 / sp.sqrt(n)) == 0, (
    "expected: CE: late rhs ~ (2/sqrt n) p e^{-p}, so e^p/p ~ 2t/sqrt(n) and p = L + log L + o(1), L "
    "= log(2t/sqrt n)")
Lg = sp.Symbol("L", positive=True)       # L = log(2t/sqrt(n))
pl = Lg + sp.log(Lg)                      # e^p/p ~ 2t/sqrt(n)  <=>  p - log p = L
assert sp.limit(pl - sp.log(pl) - Lg, Lg, sp.oo) == 0, (
    "expected: CE: late rhs ~ (2/sqrt n) p e^{-p}, so e^p/p ~ 2t/sqrt(n) and p = L + log L + o(1), L "
    "= log(2t/sqrt n)")
ok("CE: late rhs ~ (2/sqrt n) p e^{-p}, so e^p/p ~ 2t/sqrt(n) and p = L + log L + o(1), L = log(2t/sqrt n)")

rhs_num = sp.lambdify(p, CS["rhs"].subs({K: 3, n: 4}), "math")
ivp = solve_ivp(lambda _, y: [rhs_num(y[0])], [0.0, 400.0], [1e-3], rtol=1e-11, atol=1e-15)
assert abs(ivp.y[0, -1] - 7.811884823617828) < 1e-6, ivp.y[0, -1]
ok(f"CE: TV5d ODE value p(400) = {ivp.y[0, -1]:.6f} (K=3, n=4, p0 = 1e-3) reproduced")

# weight decay adds -grad(lam_W/2||W||^2 + lam_H/2||H||^2) = -(lam_W W, lam_H H), which stays in the ansatz
P3, PK13, _ = ansatz(3, 2)


def reg(W, H):
    return lam_W / 2 * sum(e**2 for e in W) + lam_H / 2 * sum(e**2 for e in H)


assert zero(grad(reg, (a * P3, bt * PK13), 0) - lam_W * a * P3), (
    "expected: weight decay: da/dt = phi beta/(K-1) - lam_W a, dbeta/dt = phi a/(n(K-1)) - lam_H beta")
assert zero(grad(reg, (a * P3, bt * PK13), 1) - lam_H * bt * PK13), (
    "expected: weight decay: da/dt = phi beta/(K-1) - lam_W a, dbeta/dt = phi a/(n(K-1)) - lam_H beta")
ok("weight decay: da/dt = phi beta/(K-1) - lam_W a, dbeta/dt = phi a/(n(K-1)) - lam_H beta")
F = sp.Symbol("F", positive=True)         # phi at the fixed point
fp = sp.solve([F * bt / (K - 1) - lam_W * a, F * a / (n * (K - 1)) - lam_H * bt], [F, bt], dict=True)
assert len(fp) == 1, (
    "expected: weight decay: a nonzero fixed point needs phi(p) = (K-1) sqrt(n lam_W lam_H) = (K-1) "
    "gamma")
assert sp.simplify(fp[0][F] - (K - 1) * sp.sqrt(n * lam_W * lam_H)) == 0, (
    "expected: weight decay: a nonzero fixed point needs phi(p) = (K-1) sqrt(n lam_W lam_H) = (K-1) "
    "gamma")
ok("weight decay: a nonzero fixed point needs phi(p) = (K-1) sqrt(n lam_W lam_H) = (K-1) gamma")
pr = sp.Symbol("p_r", real=True)
p_fix = sp.solve(sp.Eq(phi.subs(p, pr), (K - 1) * gamma), pr)
assert len(p_fix) == 1, (
    "expected: weight decay: phi(p) = (K-1) gamma gives p = log(1/gamma - (K-1)) = ce_margin()")
assert sp.simplify(sp.exp(p_fix[0]) - sp.exp(S.ce_margin())) == 0, (
    "expected: weight decay: phi(p) = (K-1) gamma gives p = log(1/gamma - (K-1)) = ce_margin()")
ok("weight decay: phi(p) = (K-1) gamma gives p = log(1/gamma - (K-1)) = ce_margin()")
# norms at the fixed point: beta = kappa a from the solve, so lam_W a^2 = n lam_H beta^2, a^2 = p/kappa
kappa = sp.simplify(fp[0][bt] / a)
assert sp.simplify(lam_W * a**2 - n * lam_H * (kappa * a) ** 2) == 0, (
    "expected: weight decay: lam_W a^2 = n lam_H beta^2, i.e. lam_W ||W||^2 = lam_H ||H||^2 at the "
    "fixed point")
ok("weight decay: lam_W a^2 = n lam_H beta^2, i.e. lam_W ||W||^2 = lam_H ||H||^2 at the fixed point")
a_sq = p / kappa
opt = S.ce_optimum()
w_sq = (a_sq * (K - 1) / K).subs(p, opt["s"])            # ||w_k||^2 = a^2 (P_K)_{kk}
assert sp.simplify(w_sq - opt["w_sq"]) == 0, (
    "expected: weight decay: at the fixed point ||w_k||^2, ||h||^2 equal ce_optimum()['w_sq'], "
    "['h_sq']")
h_sq = (p * kappa * (K - 1) / K).subs(p, opt["s"])       # ||h||^2 = beta^2 (P_K)_{kk}, beta^2 = p kappa
assert sp.simplify(h_sq - opt["h_sq"]) == 0, (
    "expected: weight decay: at the fixed point ||w_k||^2, ||h||^2 equal ce_optimum()['w_sq'], "
    "['h_sq']")
ok("weight decay: at the fixed point ||w_k||^2, ||h||^2 equal ce_optimum()['w_sq'], ['h_sq']")
print("symmetric_flows: all identities hold")
