"""Derive the balanced MSE UFM closed forms with and without bias (THEORY §2.1, §2.2, §4; TV2, TV12).

Problem (Zhu normalization; bias-free case: Tirer & Bruna, "Extended unconstrained
features model for exploring deep neural collapse", arXiv 2202.08087, ICML 2022,
Thm 3.1; with bias: THEORY §2.2 [DER]):

    1/(2N) ||W H + b 1^T - Y||_F^2 + lam_W/2 ||W||^2 + lam_H/2 ||H||^2 [+ lam_b/2 ||b||^2].

By §4 this is  1/(2N)||Z + b 1^T - Y||^2 + mu ||Z||_* (+ bias term),  mu = sqrt(lam_W lam_H),
gamma = sqrt(n) mu. By class-permutation symmetry and convexity the optimum lies in
Z = [alpha P_K + beta J_K/K] (x) 1_n^T, b = c 1_K. This script

* derives the scalar objective from those matrices (explicit small K, n and
  general K through the projector algebra) and checks it against
  ufm.symbolic.mse_scalar_objective();
* minimizes it in every bias case with sympy (stationarity, plus the subgradient
  condition at beta = 0 that selects the regime) and asserts the minimizers and
  values equal ufm.symbolic.mse_optimum();
* derives lam_b* where the high-regime beta vanishes (= mse_bias_threshold()),
  continuity of beta, c, f there, f* = K gamma - (K gamma)^2/2 without bias, the
  singular-value soft-thresholding form of the bias-free optimum, and the
  Tirer-Bruna translation of §2.1; and reproduces the TV2 numbers.
"""

import sympy as sp

from ufm import symbolic as S

K, n, gamma, lam_W, lam_H, lam_b = S.K, S.n, S.gamma, S.lam_W, S.lam_H, S.lam_b
alpha, beta, c = S.alpha, S.beta, S.c
mu = gamma / sp.sqrt(n)
k1 = sp.Symbol("k1", positive=True)   # K = 1 + k1


def ok(msg):
    print(f"OK: {msg}")


def eq(a, b):
    d = sp.simplify(sp.expand(a - b))
    if isinstance(d, sp.MatrixBase):
        return all(e == 0 for e in d)
    return d == 0


# --- 1. scalar objective from the matrix problem ----------------------------------------------
def matrix_objective(Kv, nv):
    """The full objective on the symmetric family for explicit K, n (alpha, beta >= 0)."""
    P = sp.eye(Kv) - sp.ones(Kv, Kv) / Kv
    J = sp.ones(Kv, Kv)
    one_n = sp.ones(1, nv)
    Nv = Kv * nv
    Y = sp.kronecker_product(sp.eye(Kv), one_n)
    Z = sp.kronecker_product(alpha * P + beta * J / Kv, one_n)
    b = c * sp.ones(Kv, 1)
    R = Z + b * sp.ones(1, Nv) - Y
    loss = sum(e**2 for e in R) / (2 * Nv)
    # ||Z||_*: Z Z^T = n (alpha^2 P + beta^2 J/K), eigenvalues n alpha^2 (K-1 times), n beta^2 (once)
    ZZt = (Z * Z.T).expand()
    assert eq(ZZt, nv * (alpha**2 * P + beta**2 * J / Kv)), "Z Z^T must be n(alpha^2 P + beta^2 J/K)"
    ev = (Z * Z.T).subs({alpha: sp.Rational(3, 7), beta: sp.Rational(2, 5)}).eigenvals()
    assert ev == {nv * sp.Rational(3, 7) ** 2: Kv - 1, nv * sp.Rational(2, 5) ** 2: 1} or Kv == 1, ev
    nuc = sp.sqrt(nv) * (alpha * (Kv - 1) + beta)
    return loss + mu * nuc + lam_b / 2 * sum(e**2 for e in b)


f_reg = S.mse_scalar_objective("regularized")
for Kv, nv in [(2, 3), (3, 2), (4, 1)]:
    assert eq(matrix_objective(Kv, nv).subs(n, nv), f_reg.subs(K, Kv)), (Kv, nv)
ok("explicit matrices (K,n) in {(2,3),(3,2),(4,1)}: 1/(2N)||Z + b1^T - Y||^2 + mu||Z||_* + lam_b/2||b||^2 "
   "= mse_scalar_objective('regularized')")

# General K: Z + b1^T - Y = [(alpha-1) P + ((beta + cK - 1)/K) J] (x) 1_n^T with P J = 0,
# tr P = K - 1, ||J||_F^2 = K^2, and the (x) 1_n^T contributes a factor n to the squared norm.
trP = K * (1 - 1 / K)
normJ2 = K * K
loss_general = n * ((alpha - 1) ** 2 * trP + ((beta + c * K - 1) / K) ** 2 * normJ2) / (2 * K * n)
obj_general = loss_general + mu * sp.sqrt(n) * (alpha * (K - 1) + beta) + lam_b / 2 * K * c**2
assert eq(obj_general, f_reg), "expected: general K (projector algebra): same scalar objective"
ok("general K (projector algebra): same scalar objective")
assert eq(f_reg.subs(lam_b, 0), S.mse_scalar_objective("free")), (
    "expected: the 'free' and 'none' objectives are the lam_b = 0 and (c = 0, beta = alpha) "
    "restrictions")
assert eq(f_reg.subs({lam_b: 0, c: 0}).subs(beta, alpha), S.mse_scalar_objective("none")), (
    "expected: the 'free' and 'none' objectives are the lam_b = 0 and (c = 0, beta = alpha) "
    "restrictions")
ok("the 'free' and 'none' objectives are the lam_b = 0 and (c = 0, beta = alpha) restrictions")

# --- 2. alpha (identical in every case) -------------------------------------------------------
f_free = S.mse_scalar_objective("free")
a_sol = sp.solve(sp.diff(f_reg, alpha), alpha)
assert a_sol == [1 - K * gamma], a_sol
# at alpha = 0 the subgradient condition |d loss/d alpha| <= gamma (K-1) reads K gamma >= 1
dloss_a0 = sp.diff(loss_general, alpha).subs(alpha, 0)
assert eq(sp.Abs(dloss_a0).subs(K, 1 + k1) - k1 / (1 + k1), 0), (
    "expected: alpha* = 1 - K gamma (stationarity); alpha = 0 iff (K-1)/K <= (K-1) gamma, i.e. K "
    "gamma >= 1")
ok("alpha* = 1 - K gamma (stationarity); alpha = 0 iff (K-1)/K <= (K-1) gamma, i.e. K gamma >= 1")

# --- 3. no bias: c = 0, minimize over alpha and beta ----------------------------------------
f_nb = f_free.subs(c, 0)
sol_nb = sp.solve([sp.diff(f_nb, alpha), sp.diff(f_nb, beta)], [alpha, beta], dict=True)
assert len(sol_nb) == 1, (
    "expected: no bias: stationarity in (alpha, beta) gives alpha = beta = 1 - K gamma (Z = alpha Y) "
    "= mse_optimum('none')")
sol_nb = sol_nb[0]
opt_none = S.mse_optimum("none")
assert eq(sol_nb[alpha], opt_none["alpha"]) and eq(sol_nb[beta], opt_none["beta"]) and opt_none["c"] == 0, (
    "expected: no bias: stationarity in (alpha, beta) gives alpha = beta = 1 - K gamma (Z = alpha Y) "
    "= mse_optimum('none')")
ok("no bias: stationarity in (alpha, beta) gives alpha = beta = 1 - K gamma (Z = alpha Y) = mse_optimum('none')")
f_none = f_nb.subs(sol_nb)
assert eq(f_none, opt_none["f"]), "expected: no bias: f* = K gamma - (K gamma)^2/2 = mse_optimum('none')['f']"
assert eq(f_none, K * gamma - (K * gamma) ** 2 / 2), (
    "expected: no bias: f* = K gamma - (K gamma)^2/2 = mse_optimum('none')['f']")
ok("no bias: f* = K gamma - (K gamma)^2/2 = mse_optimum('none')['f']")
a_none_1d = sp.solve(sp.diff(S.mse_scalar_objective("none"), alpha), alpha)
assert a_none_1d == [1 - K * gamma], (
    "expected: mse_scalar_objective('none') (beta = alpha imposed) has the same minimizer")
ok("mse_scalar_objective('none') (beta = alpha imposed) has the same minimizer")

# Cross-derivation via §4: prox of mu||.||_* soft-thresholds the singular values of Y
# (all equal to sqrt(n), K of them) at N mu: Z = (1 - N mu/sqrt(n)) Y.
shrink = (sp.sqrt(n) - K * n * mu) / sp.sqrt(n)
assert eq(shrink, 1 - K * gamma), (
    "expected: soft-thresholding Y's singular values sqrt(n) at N mu gives Z = (1 - K gamma) Y, same "
    "alpha = beta")
ok("soft-thresholding Y's singular values sqrt(n) at N mu gives Z = (1 - K gamma) Y, same alpha = beta")

# --- 4. free bias (lam_b = 0) -----------------------------------------------------------------
interior = sp.solve([sp.diff(f_free, v) for v in (alpha, beta, c)], [alpha, beta, c], dict=True)
assert interior == [], f"free bias: interior stationary point should not exist, got {interior}"
# beta = 0 on the boundary; stationarity in alpha, c:
f_fb0 = f_free.subs(beta, 0)
sol_free = sp.solve([sp.diff(f_fb0, alpha), sp.diff(f_fb0, c)], [alpha, c], dict=True)[0]
sol_free[beta] = sp.Integer(0)
# subgradient at beta = 0: |d loss / d beta| <= gamma
dlb = sp.diff(loss_general.subs(lam_b, 0), beta).subs({beta: 0, **sol_free})
assert eq(dlb, 0), (
    "expected: free bias: no interior point; beta = 0 with d loss/d beta = 0 <= gamma, alpha = 1 - K "
    "gamma, c = 1/K, f* = (K-1) gamma (1 - K gamma/2) = mse_optimum('free')")
opt_free = S.mse_optimum("free")
assert all(eq(sol_free[v], opt_free[k]) for v, k in ((alpha, "alpha"), (beta, "beta"), (c, "c"))), (
    "expected: free bias: no interior point; beta = 0 with d loss/d beta = 0 <= gamma, alpha = 1 - K "
    "gamma, c = 1/K, f* = (K-1) gamma (1 - K gamma/2) = mse_optimum('free')")
f_free_val = f_free.subs(sol_free)
assert eq(f_free_val, opt_free["f"]), (
    "expected: free bias: no interior point; beta = 0 with d loss/d beta = 0 <= gamma, alpha = 1 - K "
    "gamma, c = 1/K, f* = (K-1) gamma (1 - K gamma/2) = mse_optimum('free')")
assert eq(f_free_val, (K - 1) * gamma * (1 - K * gamma / 2)), (
    "expected: free bias: no interior point; beta = 0 with d loss/d beta = 0 <= gamma, alpha = 1 - K "
    "gamma, c = 1/K, f* = (K-1) gamma (1 - K gamma/2) = mse_optimum('free')")
ok("free bias: no interior point; beta = 0 with d loss/d beta = 0 <= gamma, alpha = 1 - K gamma, "
   "c = 1/K, f* = (K-1) gamma (1 - K gamma/2) = mse_optimum('free')")

# --- 5. regularized bias ------------------------------------------------------------------------
# high regime: beta > 0, interior stationary point
sol_hi = sp.solve([sp.diff(f_reg, v) for v in (alpha, beta, c)], [alpha, beta, c], dict=True)
assert len(sol_hi) == 1, (
    "expected: regularized bias, high regime: interior stationarity gives beta = 1 - K gamma (1 + "
    "1/lam_b), c = gamma/lam_b = mse_optimum('regularized', 'high')")
sol_hi = sol_hi[0]
opt_hi = S.mse_optimum("regularized", "high")
assert all(eq(sol_hi[v], opt_hi[k]) for v, k in ((alpha, "alpha"), (beta, "beta"), (c, "c"))), (
    "expected: regularized bias, high regime: interior stationarity gives beta = 1 - K gamma (1 + "
    "1/lam_b), c = gamma/lam_b = mse_optimum('regularized', 'high')")
assert eq(f_reg.subs(sol_hi), opt_hi["f"]), (
    "expected: regularized bias, high regime: interior stationarity gives beta = 1 - K gamma (1 + "
    "1/lam_b), c = gamma/lam_b = mse_optimum('regularized', 'high')")
ok("regularized bias, high regime: interior stationarity gives beta = 1 - K gamma (1 + 1/lam_b), "
   "c = gamma/lam_b = mse_optimum('regularized', 'high')")

# threshold: beta_high = 0
lb_star = sp.solve(sp.Eq(sol_hi[beta], 0), lam_b)
assert len(lb_star) == 1, (
    "expected: lam_b* (where the high-regime beta hits 0) = K gamma/(1 - K gamma) = "
    "mse_bias_threshold()")
lb_star = lb_star[0]
assert eq(lb_star, S.mse_bias_threshold()), (
    "expected: lam_b* (where the high-regime beta hits 0) = K gamma/(1 - K gamma) = "
    "mse_bias_threshold()")
ok("lam_b* (where the high-regime beta hits 0) = K gamma/(1 - K gamma) = mse_bias_threshold()")
# beta_high > 0 iff lam_b > lam_b*: beta_high is increasing in lam_b
assert eq(sp.diff(sol_hi[beta], lam_b), K * gamma / lam_b**2), (
    "expected: d beta_high/d lam_b = K gamma/lam_b^2 > 0, so beta_high > 0 exactly for lam_b > lam_b*")
ok("d beta_high/d lam_b = K gamma/lam_b^2 > 0, so beta_high > 0 exactly for lam_b > lam_b*")

# low regime: beta = 0, stationarity in alpha and c, then the subgradient condition at beta = 0
f_lo = f_reg.subs(beta, 0)
sol_lo = sp.solve([sp.diff(f_lo, alpha), sp.diff(f_lo, c)], [alpha, c], dict=True)[0]
sol_lo[beta] = sp.Integer(0)
opt_lo = S.mse_optimum("regularized", "low")
assert all(eq(sol_lo[v], opt_lo[k]) for v, k in ((alpha, "alpha"), (beta, "beta"), (c, "c"))), (
    "expected: regularized bias, low regime: beta = 0, c = 1/(K(1+lam_b)), f* = (K-1) gamma(1 - K "
    "gamma/2) + lam_b/(2K(1+lam_b)) = mse_optimum('regularized', 'low')")
f_lo_val = f_reg.subs(sol_lo)
assert eq(f_lo_val, opt_lo["f"]), (
    "expected: regularized bias, low regime: beta = 0, c = 1/(K(1+lam_b)), f* = (K-1) gamma(1 - K "
    "gamma/2) + lam_b/(2K(1+lam_b)) = mse_optimum('regularized', 'low')")
assert eq(f_lo_val, (K - 1) * gamma * (1 - K * gamma / 2) + lam_b / (2 * K * (1 + lam_b))), (
    "expected: regularized bias, low regime: beta = 0, c = 1/(K(1+lam_b)), f* = (K-1) gamma(1 - K "
    "gamma/2) + lam_b/(2K(1+lam_b)) = mse_optimum('regularized', 'low')")
ok("regularized bias, low regime: beta = 0, c = 1/(K(1+lam_b)), "
   "f* = (K-1) gamma(1 - K gamma/2) + lam_b/(2K(1+lam_b)) = mse_optimum('regularized', 'low')")
grad_beta = sp.diff(loss_general, beta).subs(sol_lo)        # d loss/d beta at beta = 0 (negative)
assert eq(grad_beta, -lam_b / (K * (1 + lam_b))), (
    "expected: subgradient condition at beta = 0, lam_b/(K(1+lam_b)) <= gamma, holds iff lam_b <= "
    "lam_b*")
edge = sp.solve(sp.Eq(-grad_beta, gamma), lam_b)           # |d loss/d beta| <= gamma holds up to here
assert len(edge) == 1 and eq(edge[0], S.mse_bias_threshold()), (
    "expected: subgradient condition at beta = 0, lam_b/(K(1+lam_b)) <= gamma, holds iff lam_b <= "
    "lam_b*")
ok("subgradient condition at beta = 0, lam_b/(K(1+lam_b)) <= gamma, holds iff lam_b <= lam_b*")

# continuity at lam_b*
for key in ("alpha", "beta", "c", "f"):
    assert eq(opt_lo[key].subs(lam_b, lb_star), opt_hi[key].subs(lam_b, lb_star)), key
ok("alpha, beta, c and f are continuous at lam_b = lam_b*")
# limits: lam_b -> 0 gives the free case, lam_b -> oo gives no bias (ETF -> OF)
assert eq(opt_lo["c"].subs(lam_b, 0), opt_free["c"]) and eq(opt_lo["f"].subs(lam_b, 0), opt_free["f"]), (
    "expected: lam_b -> 0 recovers the free-bias optimum; lam_b -> oo recovers the bias-free one "
    "(beta -> alpha)")
assert eq(sp.limit(opt_hi["beta"], lam_b, sp.oo), opt_none["beta"]), (
    "expected: lam_b -> 0 recovers the free-bias optimum; lam_b -> oo recovers the bias-free one "
    "(beta -> alpha)")
assert eq(sp.limit(opt_hi["f"], lam_b, sp.oo), opt_none["f"]), (
    "expected: lam_b -> 0 recovers the free-bias optimum; lam_b -> oo recovers the bias-free one "
    "(beta -> alpha)")
ok("lam_b -> 0 recovers the free-bias optimum; lam_b -> oo recovers the bias-free one (beta -> alpha)")

# --- 6. Tirer-Bruna translation (§2.1) --------------------------------------------------------
lW_TB, lH_TB = sp.symbols("lamW_TB lamH_TB", positive=True)
zhu = {lam_W: lW_TB / K, lam_H: lH_TB / (K * n)}
# (2.1) = 1/(2Kn)||WH - Y||^2 + lW_TB/(2K)||W||^2 + lH_TB/(2Kn)||H||^2 is (0.1)-form with these lam's
Wm, Hm, Rm = sp.symbols("normWsq normHsq normRsq", positive=True)   # ||W||^2, ||H||^2, ||WH - Y||^2
tb = Rm / (2 * K * n) + lW_TB / (2 * K) * Wm + lH_TB / (2 * K * n) * Hm
zh = (Rm / (2 * K * n) + lam_W / 2 * Wm + lam_H / 2 * Hm).subs(zhu)
assert eq(tb, zh), (
    "expected: lam_W(Zhu) = lam_W/K, lam_H(Zhu) = lam_H/(Kn) turn (2.1) into (0.1) form, and c_TB = "
    "sqrt(lam_H lam_W) = K gamma")
gamma_tb = sp.sqrt(n * lam_W * lam_H).subs(zhu)
c_TB = sp.sqrt(lW_TB * lH_TB)
assert eq(K * gamma_tb, c_TB), (
    "expected: lam_W(Zhu) = lam_W/K, lam_H(Zhu) = lam_H/(Kn) turn (2.1) into (0.1) form, and c_TB = "
    "sqrt(lam_H lam_W) = K gamma")
ok("lam_W(Zhu) = lam_W/K, lam_H(Zhu) = lam_H/(Kn) turn (2.1) into (0.1) form, and c_TB = sqrt(lam_H lam_W) = K gamma")
# feature norms: H^T H = sqrt(lam_W/lam_H)(Z^T Z)^{1/2} (§4) gives ||hbar_k||^2 = sqrt(lam_W/lam_H) alpha / sqrt(n)
h_sq = (sp.sqrt(lam_W / lam_H) * opt_none["alpha"] / sp.sqrt(n)).subs(gamma, gamma_tb).subs(zhu)
rho_TB = (1 - c_TB) * sp.sqrt(lW_TB / lH_TB)
assert eq(h_sq, rho_TB), (
    "expected: Tirer-Bruna Thm: ||hbar_k||^2 = (1 - c) sqrt(lam_W/lam_H) and w_k = sqrt(lam_H/lam_W) "
    "hbar_k reproduced")
w_sq = (sp.sqrt(lam_H / lam_W) * sp.sqrt(n) * opt_none["alpha"]).subs(gamma, gamma_tb).subs(zhu)
assert eq(w_sq, lH_TB / lW_TB * rho_TB), (
    "expected: Tirer-Bruna Thm: ||hbar_k||^2 = (1 - c) sqrt(lam_W/lam_H) and w_k = sqrt(lam_H/lam_W) "
    "hbar_k reproduced")
ok("Tirer-Bruna Thm: ||hbar_k||^2 = (1 - c) sqrt(lam_W/lam_H) and w_k = sqrt(lam_H/lam_W) hbar_k reproduced")

# --- 7. TV2 numbers (K=4, n=3, lam_W=0.01, lam_H=0.02) ------------------------------------------
tv2 = {K: 4, n: 3, gamma: sp.sqrt(3 * sp.Rational(1, 100) * sp.Rational(2, 100))}
assert abs(float(tv2[gamma]) - 0.0244949) < 5.1e-8, (
    "expected: TV2 table of THEORY §2.2 (gamma, alpha, lam_b*, five f* values, beta and c at lam_b = "
    "0.2) reproduced")
assert abs(float(opt_none["alpha"].subs(tv2)) - 0.902020) < 5.1e-7, (
    "expected: TV2 table of THEORY §2.2 (gamma, alpha, lam_b*, five f* values, beta and c at lam_b = "
    "0.2) reproduced")
assert abs(float(S.mse_bias_threshold().subs(tv2)) - 0.108622) < 5.1e-7, (
    "expected: TV2 table of THEORY §2.2 (gamma, alpha, lam_b*, five f* values, beta and c at lam_b = "
    "0.2) reproduced")
rows = [("none", "low", None, 0.09317959), ("free", "low", None, 0.06988469),
        ("regularized", "low", sp.Rational(1, 10), 0.08124833),
        ("regularized", "high", sp.Rational(2, 10), 0.08717959),
        ("regularized", "high", sp.Integer(1), 0.09197959)]
for bias, regime, lb, printed in rows:
    if lb is not None:
        assert (lb > S.mse_bias_threshold().subs(tv2)) == (regime == "high"), f"lam_b = {lb} is not in regime {regime}"
    val = float(S.mse_optimum(bias, regime)["f"].subs(tv2).subs(lam_b, lb if lb is not None else 0))
    assert abs(val - printed) < 5.1e-9, (bias, lb, val, printed)
hi2 = S.mse_optimum("regularized", "high")
assert abs(float(hi2["beta"].subs(tv2).subs(lam_b, sp.Rational(2, 10))) - 0.412122) < 5.1e-7, (
    "expected: TV2 table of THEORY §2.2 (gamma, alpha, lam_b*, five f* values, beta and c at lam_b = "
    "0.2) reproduced")
assert abs(float(hi2["c"].subs(tv2).subs(lam_b, sp.Rational(2, 10))) - 0.122474) < 5.1e-7, (
    "expected: TV2 table of THEORY §2.2 (gamma, alpha, lam_b*, five f* values, beta and c at lam_b = "
    "0.2) reproduced")
ok("TV2 table of THEORY §2.2 (gamma, alpha, lam_b*, five f* values, beta and c at lam_b = 0.2) reproduced")
print("mse_balanced: all identities hold")
