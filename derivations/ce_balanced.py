"""Derive the balanced cross-entropy UFM closed form (THEORY §1.2, §0.1, §4; TV1, TV12).

Problem (Zhu normalization, THEORY (0.1); Zhu, Ding, Zhou, Li, You, Sulam, Qu,
"A geometric analysis of neural collapse with unconstrained features",
arXiv 2105.02375, NeurIPS 2021):

    f(W, H) = (1/N) sum_{k,i} CE(W h_{k,i}, k) + lam_W/2 ||W||_F^2 + lam_H/2 ||H||_F^2,   N = K n.

Starting from the minimizer structure of Zhu et al. Thm 3.1 (simplex-ETF rows
w_k with ||w_k||^2 = A, collapsed self-dual features h_{k,i} = rho w_k) this
script derives, with sympy,

* the logits z = t e_k - t/(K-1) (1 - e_k), t = rho A, and the margin s = t K/(K-1);
* the per-example CE log(1 + (K-1) e^{-s}) and the mean over the N examples;
* the regularizer at the best (balanced) split of t into A and rho, = K gamma t
  = (K-1) gamma s, once by direct minimization and once through the nuclear-norm
  identity of §4 (K-1 singular values s sqrt(n));
* phi(s), phi'(s), its root s*, phi'(0) (zero threshold K gamma >= 1), phi'' > 0;
* the optimal value, the CE at the optimum, and every norm in ufm.symbolic.ce_optimum();

and asserts that each derived expression equals the one in ufm.symbolic.
"""

import random

import sympy as sp

from ufm import symbolic as S

K, n, gamma, lam_W, lam_H = S.K, S.n, S.gamma, S.lam_W, S.lam_H
A = sp.Symbol("A", positive=True)      # ||w_k||^2
rho = sp.Symbol("rho", positive=True)  # h_{k,i} = rho w_k
tl = sp.Symbol("t_logit", positive=True)  # correct-class logit t (S.t is time)
s = sp.Symbol("s", positive=True)
GAMMA = sp.sqrt(n * lam_W * lam_H)
RNG = random.Random(12)


def ok(msg):
    print(f"OK: {msg}")


def rand_point(collapse=True):
    """Random rational parameters with K >= 2 integer, lam's > 0 and (optionally) K gamma < 1."""
    while True:
        Kv = RNG.randint(2, 9)
        nv = RNG.randint(1, 6)
        lw = sp.Rational(RNG.randint(1, 400), 10000)
        lh = sp.Rational(RNG.randint(1, 400), 10000)
        g = sp.sqrt(nv * lw * lh)
        if not collapse or Kv * g < 1:
            return {K: Kv, n: nv, lam_W: lw, lam_H: lh, gamma: g}


def assert_same(lhs, rhs, what, points=8, collapse=True):
    """Exact check with simplify / expand_log; if sympy cannot close it, numeric spot checks."""
    diff = lhs - rhs
    if sp.simplify(diff) == 0 or sp.simplify(sp.expand_log(diff, force=True)) == 0:
        ok(f"{what} (exact)")
        return
    for _ in range(points):
        pt = rand_point(collapse)
        val = sp.N(diff.subs(pt), 40)
        assert abs(val) < sp.Float("1e-30"), f"{what}: differs by {val} at {pt}"
    ok(f"{what} (spot-checked at {points} random rational points, |diff| < 1e-30)")


# --- 1. ETF ansatz -> logits and margin --------------------------------------------------
# ETF Gram of the classifier rows: w_c^T w_k = A for c = k, -A/(K-1) otherwise.
gram_same, gram_other = A, -A / (K - 1)
z_target = rho * gram_same            # z_k of h_{k,i} = rho w_k
z_other = rho * gram_other            # z_c, c != k
assert sp.simplify(z_other + z_target / (K - 1)) == 0, "non-target logit must be -t/(K-1)"
ok("ETF ansatz gives logits z = t e_k - t/(K-1)(1 - e_k) with t = rho*||w_k||^2")
margin = sp.simplify((z_target - z_other).subs(rho * A, tl))
margin = sp.simplify(margin.subs(rho, tl / A))
assert sp.simplify(margin - tl * K / (K - 1)) == 0, f"margin {margin}"
ok("margin s = z_y - z_c = t K/(K-1)")

# Concrete matrices for small K, n: W = sqrt(A K/(K-1)) P_K (rows = ETF), H = rho W^T (x) 1_n^T.
for Kv, nv in [(2, 3), (3, 2), (4, 3)]:
    P = sp.eye(Kv) - sp.ones(Kv, Kv) / Kv
    W = sp.sqrt(A * sp.Rational(Kv, Kv - 1)) * P
    H = rho * sp.kronecker_product(W.T, sp.ones(1, nv))
    Z = sp.simplify(W * H)
    tv = rho * A
    sv = tv * sp.Rational(Kv, Kv - 1)
    assert sp.simplify(Z - sv * sp.kronecker_product(P, sp.ones(1, nv))) == sp.zeros(Kv, Kv * nv), \
        "Z must be s P_K (x) 1_n^T"
    assert all(sp.simplify((W * W.T)[i, i] - A) == 0 for i in range(Kv)), "||w_k||^2 = A"
    # objective (0.1): mean CE over the N = K n columns + halved regularizers (not averaged)
    Nv = Kv * nv
    ce_sum = sum(sp.log(sum(sp.exp(Z[c, j]) for c in range(Kv))) - Z[j // nv, j] for j in range(Nv))
    f_conc = ce_sum / Nv + lam_W / 2 * sum(e**2 for e in W) + lam_H / 2 * sum(e**2 for e in H)
    f_pred = (sp.log(1 + (Kv - 1) * sp.exp(-sv))
              + lam_W / 2 * Kv * A + lam_H / 2 * Nv * rho**2 * A)
    for _ in range(4):
        pt = {A: sp.Rational(RNG.randint(1, 50), 7), rho: sp.Rational(RNG.randint(1, 50), 13),
              lam_W: sp.Rational(RNG.randint(1, 99), 1000), lam_H: sp.Rational(RNG.randint(1, 99), 1000)}
        d = sp.N((f_conc - f_pred).subs(pt), 40)
        assert abs(d) < 1e-30, f"objective bookkeeping fails for K={Kv}, n={nv}: {d}"
ok("explicit K x N matrices (K,n) in {(2,3),(3,2),(4,3)}: Z = s P_K(x)1_n^T and "
   "f = (1/N) sum CE + lam_W/2 K A + lam_H/2 N rho^2 A (CE is a mean, regularizers are not)")

# --- 2. CE per example (identical for all N examples, so the mean is the same) -----------
ce_one = sp.log(sp.exp(z_target) + (K - 1) * sp.exp(z_other)) - z_target
ce_one = ce_one.subs(rho, tl / A)
# all N = K n examples have this same CE, so (1/N) * (N * ce_one) = ce_one (checked on explicit
# matrices above); the regularizers are not divided by N.
ce_of_s = sp.log(1 + (K - 1) * sp.exp(-s))
assert_same(ce_one.subs(tl, (K - 1) * s / K), ce_of_s, "per-example (= mean) CE = log(1 + (K-1) e^{-s})")

# Invariance under a constant bias b = c 1_K (why b* = 0 / is free, §1.1), K = 3.
cb = sp.Symbol("c_b", real=True)
zs = sp.symbols("z0:3", real=True)
ce3 = sp.log(sum(sp.exp(z) for z in zs)) - zs[0]
ce3b = sp.log(sum(sp.exp(z + cb) for z in zs)) - (zs[0] + cb)
assert sp.simplify(sp.expand_log(ce3b - ce3, force=True)) == 0, (
    "expected: CE(z + c 1) = CE(z): a bias along 1_K never changes the loss")
ok("CE(z + c 1) = CE(z): a bias along 1_K never changes the loss")

# --- 3. regularizer at the best split ------------------------------------------------------
# ||W||^2 = K A, ||H||^2 = N rho^2 A with rho = t/A: minimize over A at fixed t.
reg_A = lam_W / 2 * K * A + lam_H / 2 * K * n * (tl / A) ** 2 * A
A_crit = sp.solve(sp.diff(reg_A, A), A)
assert len(A_crit) == 1, A_crit
A_star = A_crit[0]
assert sp.simplify(A_star - tl * sp.sqrt(n * lam_H / lam_W)) == 0, A_star
assert sp.simplify(sp.diff(reg_A, A, 2).subs(A, A_star)).is_positive, "split must be a minimum"
reg_star = sp.simplify(reg_A.subs(A, A_star))
assert sp.simplify(reg_star - K * GAMMA * tl) == 0, reg_star
W_F2 = K * A_star
H_F2 = K * n * (tl / A_star) ** 2 * A_star
assert sp.simplify(lam_W * W_F2 - K * GAMMA * tl) == 0, (
    "expected: best split ||w_k||^2 = t sqrt(n lam_H/lam_W); lam_W||W||^2 = lam_H||H||^2 = K gamma t")
assert sp.simplify(lam_H * H_F2 - K * GAMMA * tl) == 0, (
    "expected: best split ||w_k||^2 = t sqrt(n lam_H/lam_W); lam_W||W||^2 = lam_H||H||^2 = K gamma t")
ok("best split ||w_k||^2 = t sqrt(n lam_H/lam_W); lam_W||W||^2 = lam_H||H||^2 = K gamma t")
reg_s = sp.simplify(reg_star.subs(tl, (K - 1) * s / K))
assert sp.simplify(reg_s - (K - 1) * GAMMA * s) == 0, (
    "expected: regularizer at the balanced split = K gamma t = (K-1) gamma s")
ok("regularizer at the balanced split = K gamma t = (K-1) gamma s")

# Same value from §4: sqrt(lam_W lam_H) ||Z||_*, Z = s P_K (x) 1_n^T has K-1 singular values s sqrt(n).
ns = S.nuclear_split()
value_per_sv = ns["value"].subs(S.x, s * sp.sqrt(n))
assert sp.simplify((K - 1) * value_per_sv - reg_s) == 0, (
    "expected: nuclear identity: (K-1) * nuclear_split value at x = s sqrt(n) equals (K-1) gamma s")
ok("nuclear identity: (K-1) * nuclear_split value at x = s sqrt(n) equals (K-1) gamma s")

# --- 4. the scalar problem phi(s) ------------------------------------------------------------
phi = ce_of_s + (K - 1) * gamma * s
assert sp.simplify(phi - S.ce_scalar_objective().subs(S.s, s)) == 0, (
    "expected: phi(s) = log(1+(K-1)e^{-s}) + (K-1) gamma s equals symbolic.ce_scalar_objective()")
ok("phi(s) = log(1+(K-1)e^{-s}) + (K-1) gamma s equals symbolic.ce_scalar_objective()")

dphi = sp.diff(phi, s)
dphi_expected = -(K - 1) * sp.exp(-s) / (1 + (K - 1) * sp.exp(-s)) + (K - 1) * gamma
assert sp.simplify(dphi - dphi_expected) == 0, (
    "expected: phi'(s) = -(K-1)e^{-s}/(1+(K-1)e^{-s}) + (K-1) gamma")
ok("phi'(s) = -(K-1)e^{-s}/(1+(K-1)e^{-s}) + (K-1) gamma")

d2phi = sp.simplify(sp.diff(phi, s, 2))
d2_expected = (K - 1) * sp.exp(-s) / (1 + (K - 1) * sp.exp(-s)) ** 2
assert sp.simplify(d2phi - d2_expected) == 0, d2phi
k1 = sp.Symbol("k1", positive=True)  # K = 1 + k1 > 1
assert d2_expected.subs(K, 1 + k1).is_positive, "phi'' must be > 0 for K > 1"
ok("phi''(s) = (K-1)e^{-s}/(1+(K-1)e^{-s})^2 > 0: phi is strictly convex")

dphi0 = sp.simplify(dphi.subs(s, 0))
assert sp.simplify(dphi0 - (K - 1) * (K * gamma - 1) / K) == 0, dphi0
assert sp.simplify(dphi0 - (K - 1) * (S.ce_zero_threshold() - 1) / K) == 0, (
    "expected: phi'(0) = (K-1)(K gamma - 1)/K: s* = 0 (W = H = 0, f* = log K) iff K gamma >= 1 = "
    "ce_zero_threshold()")
assert sp.simplify(phi.subs(s, 0) - sp.log(K)) == 0, "expected: phi(0) = log K (the value at W = H = 0)"
ok("phi'(0) = (K-1)(K gamma - 1)/K: s* = 0 (W = H = 0, f* = log K) iff K gamma >= 1 = ce_zero_threshold()")

sr = sp.Symbol("s_r", real=True)
roots = sp.solve(sp.Eq(dphi.subs(s, sr), 0), sr)
assert len(roots) == 1, roots
s_star = roots[0]
assert_same(s_star, S.ce_margin(), "root of phi'(s) = 0 equals symbolic.ce_margin() = log(1/gamma - (K-1))")
assert sp.simplify(sp.exp(S.ce_margin()) - 1 - (1 - K * gamma) / gamma) == 0, (
    "expected: e^{s*} - 1 = (1 - K gamma)/gamma: s* > 0 exactly in the collapse regime K gamma < 1")
ok("e^{s*} - 1 = (1 - K gamma)/gamma: s* > 0 exactly in the collapse regime K gamma < 1")

# --- 5. optimum values and norms ---------------------------------------------------------------
opt = S.ce_optimum()
assert sp.simplify(opt["gamma"] - GAMMA) == 0, "ce_optimum()['gamma'] must be sqrt(n lam_W lam_H)"
s_star_n = s_star.subs(gamma, GAMMA)
assert_same(s_star_n, opt["s"], "s* (in K, n, lam_W, lam_H) equals ce_optimum()['s']")
f_star = phi.subs(s, s_star).subs(gamma, GAMMA)
ce_star = ce_of_s.subs(s, s_star).subs(gamma, GAMMA)
arg = (1 + (K - 1) * sp.exp(-s_star)).subs(gamma, GAMMA)
assert sp.simplify(arg - 1 / (1 - (K - 1) * GAMMA)) == 0, "1 + (K-1)e^{-s*} = 1/(1 - (K-1) gamma)"
ok("1 + (K-1) e^{-s*} = 1/(1 - (K-1) gamma) (exact), so CE(s*) = -log(1 - (K-1) gamma)")
assert_same(ce_star, opt["ce"], "CE at s* equals ce_optimum()['ce'] = -log(1 - (K-1) gamma)")
assert_same(f_star, opt["f"], "phi(s*) equals ce_optimum()['f']")

t_star = (K - 1) * s_star_n / K
assert_same(t_star, opt["t"], "t* = (K-1) s*/K equals ce_optimum()['t']")
A_opt = A_star.subs(tl, t_star)
h_sq = ((tl / A_star) ** 2 * A_star).subs(tl, t_star)
assert_same(A_opt, opt["w_sq"], "||w_k||^2 = t* sqrt(n lam_H/lam_W) equals ce_optimum()['w_sq']")
assert_same(h_sq, opt["h_sq"], "||h_{k,i}||^2 = rho^2 ||w_k||^2 equals ce_optimum()['h_sq']")
assert_same(W_F2.subs(tl, t_star), opt["W_F2"], "||W||_F^2 = K ||w_k||^2 equals ce_optimum()['W_F2']")
assert_same(H_F2.subs(tl, t_star), opt["H_F2"], "||H||_F^2 = N ||h||^2 equals ce_optimum()['H_F2']")
assert_same(lam_W * opt["W_F2"], lam_H * opt["H_F2"], "lam_W ||W||^2 = lam_H ||H||^2 at the optimum")
assert_same(lam_W * opt["W_F2"], K * GAMMA * opt["t"], "lam_W ||W||^2 = K gamma t*")
assert_same(sp.sqrt(h_sq / A_opt), opt["h_over_w"], "||h||/||w|| = sqrt(lam_W/(n lam_H)) = ce_optimum()['h_over_w']")
assert_same(s_star_n * sp.sqrt(n), opt["sv"], "singular values of Z* = s* sqrt(n) = ce_optimum()['sv']")
assert_same((K - 1) * s_star_n * sp.sqrt(n), opt["nuclear"], "||Z*||_* = (K-1) s* sqrt(n) = ce_optimum()['nuclear']")
assert_same(sp.sqrt(lam_W * lam_H) * opt["nuclear"], lam_W * opt["W_F2"],
            "sqrt(lam_W lam_H)||Z*||_* = lam_W||W||^2 (each half of the regularizer, §4)")

# --- 6. the TV1 numbers of THEORY §1.2 (K=4, n=3, lam_W = lam_H = 0.01) ------------------------
tv1 = {K: 4, n: 3, lam_W: sp.Rational(1, 100), lam_H: sp.Rational(1, 100)}
table = {"gamma": 0.0173205, "s": 4.002504, "t": 3.001878, "w_sq": 5.199405, "h_sq": 1.733135,
         "W_F2": 20.79762, "H_F2": 20.79762, "f": 0.2613364}
for key, printed in table.items():
    val = float(opt[key].subs(tv1))
    digits = len(str(printed).split(".")[1])
    assert abs(val - printed) <= 0.51 * 10.0 ** (-digits), f"TV1 {key}: {val} vs printed {printed}"
ok("TV1 table of THEORY §1.2 reproduced to the printed digits")
print("ce_balanced: all identities hold")
