"""Derive the variational (nuclear-norm) identity behind the convex reformulation (THEORY §4; TV12).

Identity (Srebro, Rennie, Jaakkola, "Maximum-margin matrix factorization",
NIPS 2004; used for the UFM by Zhu et al. arXiv 2105.02375 and THEORY (4.1)):

    min_{W H = Z} lam_W/2 ||W||_F^2 + lam_H/2 ||H||_F^2 = sqrt(lam_W lam_H) ||Z||_*.

This script
* minimizes the one-singular-value split cost of ufm.symbolic.nuclear_split()
  over the split constant and asserts c_opt and the value;
* proves the lower bound for any factorization (AM-GM identity, then
  ||WH||_* <= ||W||_F ||H||_F, spot-checked on random factorizations);
* checks on a concrete rational 3 x 2 matrix (50-digit mpmath SVD) that the
  balanced split W = (lam_H/lam_W)^{1/4} U S^{1/2}, H = (lam_W/lam_H)^{1/4} S^{1/2} V^T
  reproduces Z and attains sqrt(lam_W lam_H)||Z||_* (exact nuclear norm from sympy);
* shows Z* = s P_K (x) 1_n^T has Z Z^T = n s^2 P_K, hence K-1 singular values
  s sqrt(n) (sympy eigenvals for K=4, n=3 as in TV12, general K via P_K^2 = P_K,
  tr P_K = K-1), matching ce_optimum()['sv'], ['nuclear'];
* derives the zero-optimality test ||grad CE(0)||_op = 1/(K sqrt n) <= sqrt(lam_W lam_H),
  i.e. K gamma >= 1 = ce_zero_threshold().
"""

import mpmath as mp
import numpy as np
import sympy as sp

from ufm import symbolic as S

K, n, gamma, lam_W, lam_H, x = S.K, S.n, S.gamma, S.lam_W, S.lam_H, S.x
s = sp.Symbol("s", positive=True)


def ok(msg):
    print(f"OK: {msg}")


# --- 1. the split of one singular value ---------------------------------------------------------
ns = S.nuclear_split()
cs, cost = ns["symbol"], ns["cost"]
# W-factor c sqrt(x), H-factor sqrt(x)/c: product x, squared norms c^2 x and x/c^2
assert sp.simplify((cs * sp.sqrt(x)) * (sp.sqrt(x) / cs) - x) == 0, (
    "expected: nuclear_split()['cost'] is lam_W/2 ||c sqrt(x)||^2 + lam_H/2 ||sqrt(x)/c||^2 for a "
    "split of x")
assert sp.simplify(cost - (lam_W / 2 * (cs * sp.sqrt(x)) ** 2 + lam_H / 2 * (sp.sqrt(x) / cs) ** 2)) == 0, (
    "expected: nuclear_split()['cost'] is lam_W/2 ||c sqrt(x)||^2 + lam_H/2 ||sqrt(x)/c||^2 for a "
    "split of x")
ok("nuclear_split()['cost'] is lam_W/2 ||c sqrt(x)||^2 + lam_H/2 ||sqrt(x)/c||^2 for a split of x")
crit = sp.solve(sp.diff(cost, cs), cs)
assert len(crit) == 1, crit
c_opt = crit[0]
assert sp.simplify(c_opt - ns["c_opt"]) == 0 and sp.simplify(c_opt**4 - lam_H / lam_W) == 0, (
    "expected: d cost/dc = 0 has the single positive root c^4 = lam_H/lam_W = "
    "nuclear_split()['c_opt']^4, a minimum")
assert sp.simplify(sp.diff(cost, cs, 2).subs(cs, c_opt)).is_positive, (
    "expected: d cost/dc = 0 has the single positive root c^4 = lam_H/lam_W = "
    "nuclear_split()['c_opt']^4, a minimum")
ok("d cost/dc = 0 has the single positive root c^4 = lam_H/lam_W = nuclear_split()['c_opt']^4, a minimum")
value = sp.simplify(cost.subs(cs, c_opt))
assert sp.simplify(value - ns["value"]) == 0 and sp.simplify(value - sp.sqrt(lam_W * lam_H) * x) == 0, (
    "expected: min over c of the split cost = sqrt(lam_W lam_H) x = nuclear_split()['value']")
ok("min over c of the split cost = sqrt(lam_W lam_H) x = nuclear_split()['value']")
assert sp.limit(cost, cs, 0) == sp.oo and sp.limit(cost, cs, sp.oo) == sp.oo, (
    "expected: cost -> oo at c -> 0 and c -> oo, so the stationary point is the global minimum over c"
    " > 0")
ok("cost -> oo at c -> 0 and c -> oo, so the stationary point is the global minimum over c > 0")

# --- 2. lower bound for every factorization -------------------------------------------------------
a_, b_ = sp.symbols("normW normH", nonnegative=True)
amgm = lam_W / 2 * a_**2 + lam_H / 2 * b_**2 - sp.sqrt(lam_W * lam_H) * a_ * b_
assert sp.expand(amgm - (sp.sqrt(lam_W) * a_ - sp.sqrt(lam_H) * b_) ** 2 / 2) == 0, (
    "expected: lam_W/2 a^2 + lam_H/2 b^2 - sqrt(lam_W lam_H) a b = (sqrt(lam_W) a - sqrt(lam_H) "
    "b)^2/2 >= 0")
ok("lam_W/2 a^2 + lam_H/2 b^2 - sqrt(lam_W lam_H) a b = (sqrt(lam_W) a - sqrt(lam_H) b)^2/2 >= 0")
rng = np.random.default_rng(1)
for _ in range(200):
    m, d, k = rng.integers(1, 6, size=3)
    Wr, Hr = rng.normal(size=(m, d)), rng.normal(size=(d, k))
    lw, lh = rng.uniform(0.01, 2.0, size=2)
    lhs = lw / 2 * np.sum(Wr**2) + lh / 2 * np.sum(Hr**2)
    nuc = np.linalg.svd(Wr @ Hr, compute_uv=False).sum()
    assert nuc <= np.linalg.norm(Wr) * np.linalg.norm(Hr) * (1 + 1e-12) + 1e-12, (
        "expected: 200 random factorizations: ||WH||_* <= ||W||_F ||H||_F and cost >= sqrt(lam_W "
        "lam_H)||WH||_*")
    assert lhs >= np.sqrt(lw * lh) * nuc * (1 - 1e-12) - 1e-12, (
        "expected: 200 random factorizations: ||WH||_* <= ||W||_F ||H||_F and cost >= sqrt(lam_W "
        "lam_H)||WH||_*")
ok("200 random factorizations: ||WH||_* <= ||W||_F ||H||_F and cost >= sqrt(lam_W lam_H)||WH||_*")

# --- 3. the balanced split attains the bound: concrete 3 x 2 rational matrix ----------------------
Zq = sp.Matrix([[sp.Rational(3, 2), -2], [1, sp.Rational(1, 3)], [-sp.Rational(5, 4), 4]])
ev = list((Zq.T * Zq).eigenvals().keys())
nuc_exact = sum(sp.sqrt(e) for e in ev)
# cross-check the exact value: ||Z||_*^2 = tr(Z^T Z) + 2 sqrt(det(Z^T Z)) for two singular values
assert sp.simplify(sp.expand(nuc_exact**2 - ((Zq.T * Zq).trace() + 2 * sp.sqrt((Zq.T * Zq).det())))) == 0, (
    "expected: 3x2 rational Z: balanced split reproduces Z and costs sqrt(lam_W lam_H)||Z||_*")
lw_q, lh_q = sp.Rational(3, 100), sp.Rational(7, 20)
mp.mp.dps = 50
Zm = mp.matrix([[mp.mpf(sp.Rational(e).p) / sp.Rational(e).q for e in Zq.row(i)] for i in range(3)])
U, Sv, V = mp.svd_r(Zm, full_matrices=False)
r = len(Sv)
lw_m, lh_m = mp.mpf(3) / 100, mp.mpf(7) / 20
Sh = mp.diag([mp.sqrt(Sv[i]) for i in range(r)])
Wb = (lh_m / lw_m) ** mp.mpf(0.25) * U * Sh
Hb = (lw_m / lh_m) ** mp.mpf(0.25) * Sh * V
tol = mp.mpf("1e-12")
assert mp.mnorm(Wb * Hb - Zm, 1) < tol, "balanced split must reproduce Z"
cost_b = lw_m / 2 * mp.mnorm(Wb, "f") ** 2 + lh_m / 2 * mp.mnorm(Hb, "f") ** 2
target = mp.sqrt(lw_m * lh_m) * sum(Sv)
assert abs(sum(Sv) - mp.mpf(sp.N(nuc_exact, 60))) < tol, "mpmath and sympy nuclear norms differ"
assert abs(cost_b - target) < tol, (cost_b, target)
assert abs(cost_b - mp.mpf(sp.N(sp.sqrt(lw_q * lh_q) * nuc_exact, 60))) < tol, (
    "expected: 3x2 rational Z: balanced split reproduces Z and costs sqrt(lam_W lam_H)||Z||_*")
ok(f"3x2 rational Z: balanced split reproduces Z and costs sqrt(lam_W lam_H)||Z||_* = {mp.nstr(target, 15)}")
# each half of the cost is sqrt(lam_W lam_H)||Z||_*/2 and W W^T = sqrt(lam_H/lam_W)(Z Z^T)^{1/2}
assert abs(lw_m * mp.mnorm(Wb, "f") ** 2 - target) < tol and abs(lh_m * mp.mnorm(Hb, "f") ** 2 - target) < tol, (
    "expected: lam_W||W||^2 = lam_H||H||^2 = sqrt(lam_W lam_H)||Z||_*; WW^T = "
    "sqrt(lam_H/lam_W)(ZZ^T)^{1/2}, H^TH = sqrt(lam_W/lam_H)(Z^TZ)^{1/2}")
ZZh = U * mp.diag(Sv) * U.T
assert mp.mnorm(Wb * Wb.T - mp.sqrt(lh_m / lw_m) * ZZh, 1) < tol, (
    "expected: lam_W||W||^2 = lam_H||H||^2 = sqrt(lam_W lam_H)||Z||_*; WW^T = "
    "sqrt(lam_H/lam_W)(ZZ^T)^{1/2}, H^TH = sqrt(lam_W/lam_H)(Z^TZ)^{1/2}")
assert mp.mnorm(Hb.T * Hb - mp.sqrt(lw_m / lh_m) * (V.T * mp.diag(Sv) * V), 1) < tol, (
    "expected: lam_W||W||^2 = lam_H||H||^2 = sqrt(lam_W lam_H)||Z||_*; WW^T = "
    "sqrt(lam_H/lam_W)(ZZ^T)^{1/2}, H^TH = sqrt(lam_W/lam_H)(Z^TZ)^{1/2}")
ok("lam_W||W||^2 = lam_H||H||^2 = sqrt(lam_W lam_H)||Z||_*; WW^T = sqrt(lam_H/lam_W)(ZZ^T)^{1/2}, "
   "H^TH = sqrt(lam_W/lam_H)(Z^TZ)^{1/2}")
# an unbalanced split of the same Z costs more
Wu, Hu = 2 * Wb, Hb / 2
cost_u = lw_m / 2 * mp.mnorm(Wu, "f") ** 2 + lh_m / 2 * mp.mnorm(Hu, "f") ** 2
assert mp.mnorm(Wu * Hu - Zm, 1) < tol and cost_u > target + mp.mpf("1e-3"), (
    "expected: rescaled (unbalanced) split of the same Z costs strictly more")
ok("rescaled (unbalanced) split of the same Z costs strictly more")

# --- 4. singular values of the CE optimum Z* = s P_K (x) 1_n^T -------------------------------------
def etf_logits(Kv, nv):
    P = sp.eye(Kv) - sp.ones(Kv, Kv) / Kv
    return P, s * sp.kronecker_product(P, sp.ones(1, nv))


P4, Z4 = etf_logits(4, 3)
ev4 = (Z4 * Z4.T).eigenvals()
assert ev4 == {3 * s**2: 3, 0: 1}, ev4
ok("K=4, n=3 (TV12): eigenvalues of Z Z^T are {3 s^2 (x3), 0 (x1)}")
for Kv, nv in [(2, 1), (3, 2), (5, 2), (6, 4)]:
    P, Z = etf_logits(Kv, nv)
    assert (Z * Z.T - nv * s**2 * P).expand() == sp.zeros(Kv, Kv), (Kv, nv)
    assert (P * P - P) == sp.zeros(Kv, Kv), (
        "expected: (K,n) in {(2,1),(3,2),(5,2),(6,4)}: Z Z^T = n s^2 P_K (mixed-product rule, 1_n^T "
        "1_n = n)")
ok("(K,n) in {(2,1),(3,2),(5,2),(6,4)}: Z Z^T = n s^2 P_K (mixed-product rule, 1_n^T 1_n = n)")
# general K: P_K entries are 1 - 1/K (diagonal) and -1/K (off-diagonal)
pd, po = 1 - 1 / K, -1 / K
P2_diag = pd**2 + (K - 1) * po**2
P2_off = 2 * pd * po + (K - 2) * po**2
assert sp.simplify(P2_diag - pd) == 0 and sp.simplify(P2_off - po) == 0, (
    "expected: general K: P_K^2 = P_K and tr P_K = K - 1, so Z Z^T = n s^2 P_K has eigenvalue n s^2 "
    "with multiplicity K-1 and 0 once")
trP = sp.simplify(K * pd)
assert trP == K - 1, (
    "expected: general K: P_K^2 = P_K and tr P_K = K - 1, so Z Z^T = n s^2 P_K has eigenvalue n s^2 "
    "with multiplicity K-1 and 0 once")
ok("general K: P_K^2 = P_K and tr P_K = K - 1, so Z Z^T = n s^2 P_K has eigenvalue n s^2 "
   "with multiplicity K-1 and 0 once")
sv = sp.sqrt(n * s**2)
nuclear = trP * sv
opt = S.ce_optimum()
assert sp.simplify(sv.subs(s, opt["s"]) - opt["sv"]) == 0, (
    "expected: singular values s sqrt(n), ||Z||_* = (K-1) s sqrt(n) = ce_optimum()['sv'], ['nuclear']"
    " at s = s*; sqrt(lam_W lam_H)||Z||_* = (K-1) gamma s")
assert sp.simplify(nuclear.subs(s, opt["s"]) - opt["nuclear"]) == 0, (
    "expected: singular values s sqrt(n), ||Z||_* = (K-1) s sqrt(n) = ce_optimum()['sv'], ['nuclear']"
    " at s = s*; sqrt(lam_W lam_H)||Z||_* = (K-1) gamma s")
assert sp.simplify(sp.sqrt(lam_W * lam_H) * nuclear - (K - 1) * sp.sqrt(n * lam_W * lam_H) * s) == 0, (
    "expected: singular values s sqrt(n), ||Z||_* = (K-1) s sqrt(n) = ce_optimum()['sv'], ['nuclear']"
    " at s = s*; sqrt(lam_W lam_H)||Z||_* = (K-1) gamma s")
ok("singular values s sqrt(n), ||Z||_* = (K-1) s sqrt(n) = ce_optimum()['sv'], ['nuclear'] at s = s*; "
   "sqrt(lam_W lam_H)||Z||_* = (K-1) gamma s")

# --- 5. optimality of Z = 0 for the mean CE ---------------------------------------------------------
Kv, nv = 3, 2
Nv = Kv * nv
Zs = sp.Matrix(Kv, Nv, lambda i, j: sp.Symbol(f"z_{i}_{j}", real=True))
ce = sum(sp.log(sum(sp.exp(Zs[c, j]) for c in range(Kv))) - Zs[j // nv, j] for j in range(Nv)) / Nv
G0 = Zs.applyfunc(lambda e: sp.diff(ce, e)).subs({e: 0 for e in Zs})
P3 = sp.eye(Kv) - sp.ones(Kv, Kv) / Kv
Y3 = sp.kronecker_product(sp.eye(Kv), sp.ones(1, nv))
assert sp.simplify(G0 + P3 * Y3 / Nv) == sp.zeros(Kv, Nv), (
    "expected: K=3, n=2: grad of mean CE at Z = 0 is -(1/N) P_K Y and G G^T = (n/N^2) P_K")
assert sp.simplify(G0 * G0.T - sp.Rational(nv, Nv**2) * P3) == sp.zeros(Kv, Kv), (
    "expected: K=3, n=2: grad of mean CE at Z = 0 is -(1/N) P_K Y and G G^T = (n/N^2) P_K")
ok("K=3, n=2: grad of mean CE at Z = 0 is -(1/N) P_K Y and G G^T = (n/N^2) P_K")
op_norm = sp.sqrt(n / (K * n) ** 2)       # largest eigenvalue of (n/N^2) P_K is n/N^2
assert sp.simplify(op_norm - 1 / (K * sp.sqrt(n))) == 0, (
    "expected: ||grad(0)||_op = 1/(K sqrt n) <= sqrt(lam_W lam_H)  <=>  K gamma >= 1 = "
    "ce_zero_threshold()")
cond = sp.simplify(sp.sqrt(lam_W * lam_H) / op_norm)   # Z = 0 optimal iff this is >= 1
assert sp.simplify(cond - S.ce_zero_threshold().subs(gamma, sp.sqrt(n * lam_W * lam_H))) == 0, (
    "expected: ||grad(0)||_op = 1/(K sqrt n) <= sqrt(lam_W lam_H)  <=>  K gamma >= 1 = "
    "ce_zero_threshold()")
ok("||grad(0)||_op = 1/(K sqrt n) <= sqrt(lam_W lam_H)  <=>  K gamma >= 1 = ce_zero_threshold()")
print("nuclear_identity: all identities hold")
