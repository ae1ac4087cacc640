"""Derive the mode dynamics behind ufm.dynamics (THEORY §5.3, §6.1, §6.3, §6.5, §7.4).

The input-coupled UFM with distinct labels, Z = W A Phi, Y = I_N, mean losses
(ufm conventions, THEORY §0.1). Five results, each asserted against the sympy
expressions of ufm.symbolic that ufm.dynamics evaluates (its tests compare the
numbers):

1. random_init_mode: the linear (small-logit) phase of one mode from an arbitrary
   start, its growing coefficient z_grow = d |w0 + v0|^2/4 (the z0 of ufm.dynamics
   for a given run) and its Gaussian expectation z_mean = d dim sigma0^2/2 (the z0
   for init_scale = sigma0).
2. ce_linearized_mode: softmax(z) = 1/K + P_K z/K + O(z^2), so the CE gradient is
   (1/N)(P_K Y - P_K Z/K) and a centred mode obeys dz/dt = (2 d/N) z (1 - z/K):
   the MSE early rate. Checked on the factorial(2, 2) encoding with symbolic sigma.
3. The mode-restricted CE flow of ufm.dynamics is the gradient flow of the loss on
   the aligned family W = Q diag(a) R^T, A = R diag(b) P^T (dL/da = -b c,
   dL/db = -a c, c = q^T (1/N)(Y - softmax Z) Phi^T p), and on symmetric states
   (Phi = I, all z equal) it is THEORY §6.5's margin ODE (ce_symmetric_flow, n = 1).
4. mse_decay_mode: with lam_W = lam_A = lam the balanced mode obeys
   dz/dt = (2d/N) z (1 - lam N/d - z), a logistic solved in closed form.
5. two_level_peak: for a Gram with two centred levels (factorial settings) the
   semantic gap is increasing in rho = w_s/w_i, so it peaks where
   d_s (1 - z_s) = d_i (1 - z_i).
"""

import itertools
import random

import sympy as sp

from ufm import symbolic as S

t, z0, d, N, K, lam = S.t, S.z0, S.d_alpha, S.N, S.K, S.lam


def ok(msg):
    print(f"OK: {msg}")


def zero(e):
    return sp.simplify(e) == 0


# ============ 1. linear phase from an arbitrary start (random_init_mode) ==========================
RI = S.random_init_mode()
w0sq, v0sq, wv0, sig0, dim = RI["symbols"]
sr = d / N                                                  # s = d/N (THEORY §6.3: Sigma_yx = Q D P^T/N)
w1, w2, v1, v2 = sp.symbols("w1 w2 v1 v2", real=True)    # two components suffice (the flow is componentwise)
x = sr * t
w_t = [sp.cosh(x) * wi + sp.sinh(x) * vi for wi, vi in ((w1, v1), (w2, v2))]
v_t = [sp.sinh(x) * wi + sp.cosh(x) * vi for wi, vi in ((w1, v1), (w2, v2))]
for wt, vt in zip(w_t, v_t):
    assert zero(sp.diff(wt, t) - sr * vt) and zero(sp.diff(vt, t) - sr * wt), "dw/dt = s v, dv/dt = s w"
    assert wt.subs(t, 0) in (w1, w2) and vt.subs(t, 0) in (v1, v2)
ok("linear phase: w(t) = cosh(st) w0 + sinh(st) v0, v(t) = sinh(st) w0 + cosh(st) v0 solve dw/dt = s v, "
   "dv/dt = s w (s = d/N)")
sub = {w0sq: w1**2 + w2**2, v0sq: v1**2 + v2**2, wv0: w1 * v1 + w2 * v2}
z_lin = d * (w_t[0] * v_t[0] + w_t[1] * v_t[1])
g_lin = d**2 * (v_t[0] ** 2 + v_t[1] ** 2)
assert zero((z_lin - RI["z"].subs(sub)).rewrite(sp.exp)), "z = d w.v"
assert zero((g_lin - RI["gram"].subs(sub)).rewrite(sp.exp)), "Gram weight = d^2 |v|^2"
ok("random_init_mode: z(t) = d w.v and gram(t) = d^2 |v|^2 as stated")
E = sp.exp(2 * sr * t)
zg = sp.expand((RI["z"].rewrite(sp.exp)))
assert zero(zg.coeff(E) - RI["z_grow"]) and zero(zg.coeff(1 / E) + RI["z_decay"]), zg
gg = sp.expand(RI["gram"].rewrite(sp.exp))
assert zero(gg.coeff(E) - d * RI["z_grow"]) and zero(gg.coeff(1 / E) - d * RI["z_decay"])
rest = sp.simplify(gg - d * RI["z_grow"] * E - d * RI["z_decay"] / E)
assert zero(rest - d**2 * (v0sq - w0sq) / 2), rest
ok("z = z_grow e^{2st} - z_decay e^{-2st}, gram = d (z_grow e^{2st} + z_decay e^{-2st}) + d^2 (|v0|^2 - |w0|^2)/2, "
   "z_grow = d |w0 + v0|^2/4, z_decay = d |w0 - v0|^2/4")
# Gaussian expectation: E|w0|^2 = E|v0|^2 = dim sigma0^2, E w0.v0 = 0
gauss = {w0sq: dim * sig0**2, v0sq: dim * sig0**2, wv0: 0}
assert zero((RI["z"].subs(gauss) - RI["Ez"]).rewrite(sp.exp)), "E z"
assert zero((RI["gram"].subs(gauss) - RI["Egram"]).rewrite(sp.exp)), "E gram"
assert zero(RI["z_grow"].subs(gauss) - RI["z_mean"]) and zero(RI["z_decay"].subs(gauss) - RI["z_mean"])
ok("Gaussian init of std sigma0 in dimension dim: E z_grow = E z_decay = d dim sigma0^2/2 = z_mean, "
   "E z = z_mean (e^{2st} - e^{-2st}), E gram = d z_mean (e^{2st} + e^{-2st}) (= d^2 dim sigma0^2 at t = 0)")
# with weight decays (ufm.dynamics._LinearPhase): d/dt (w, v) = M (w, v), M = [[-lam_W, s], [s, -lam_A]]
lW, lA = sp.symbols("lam_W lam_A", positive=True)
m_, dl = -(lW + lA) / 2, (lW - lA) / 2
om = sp.sqrt(sr**2 + dl**2)
Nm = sp.Matrix([[-dl, sr], [sr, dl]])
Mm = m_ * sp.eye(2) + Nm
Et = sp.exp(m_ * t) * (sp.cosh(om * t) * sp.eye(2) + sp.sinh(om * t) / om * Nm)
assert zero((Et.diff(t) - Mm * Et).applyfunc(lambda e: sp.simplify(e.rewrite(sp.exp))).norm()) and Et.subs(t, 0) == \
    sp.eye(2), "exp(M t) = e^{mt} (cosh(omega t) I + sinh(omega t)/omega N)"
Pp, Pm_ = (sp.eye(2) + Nm / om) / 2, (sp.eye(2) - Nm / om) / 2
assert zero((Pp * Pp - Pp).applyfunc(sp.simplify).norm()) and zero((Pp + Pm_ - sp.eye(2)).norm())
assert zero((Et - sp.exp((m_ + om) * t) * Pp - sp.exp((m_ - om) * t) * Pm_).applyfunc(
    lambda e: sp.simplify(e.rewrite(sp.exp))).norm())
assert zero((Pp.subs({lW: 0, lA: 0}) - sp.ones(2, 2) / 2).norm()), "no decay: the growing direction is w = v"
ok("with decays lam_W, lam_A the linear phase is exp(M t) = e^{(m+omega)t} Pi_+ + e^{(m-omega)t} Pi_-, "
   "m = -(lam_W+lam_A)/2, omega = sqrt(s^2 + (lam_W-lam_A)^2/4), Pi_+ = (I + N/omega)/2 (= 11^T/2 without decay)")
# the logistic started at z_grow agrees with the linear phase while z << 1
zl = S.logistic_mode()["z"]
assert sp.limit(zl / (z0 * sp.exp(2 * d * t / N)), z0, 0) == 1, "logistic ~ z0 e^{2dt/N} for small z0"
ok("logistic_mode started at z0 = z_grow matches the growing linear phase z_grow e^{2dt/N} as z0 -> 0 "
   "(so the peak time depends on log(1/z0))")


# ============ 2. linearized CE on the centred modes (ce_linearized_mode) ==========================
Kv = 3
zz = sp.symbols("y1:4", real=True)
eps = sp.Symbol("eps")
den = sum(sp.exp(eps * zi) for zi in zz)
PK = sp.eye(Kv) - sp.ones(Kv, Kv) / Kv
lin = PK * sp.Matrix(zz) / Kv
for k in range(Kv):
    soft = sp.exp(eps * zz[k]) / den
    ser = sp.series(soft, eps, 0, 2).removeO()
    assert zero(ser - (sp.Rational(1, Kv) + eps * lin[k])), ser
ok("softmax(eps z) = 1/K + eps P_K z/K + O(eps^2)  (K = 3): -grad_Z CE = (1/N)(P_K Y - P_K Z/K)")

CL = S.ce_linearized_mode()
sig = sp.Symbol("sigma", positive=True)
items = list(itertools.product([0, 1], repeat=2))           # factorial(2, 2): N = K = 4
Nv = len(items)
Phi_attr = sp.Matrix([[1 if it[f] == lv else 0 for it in items] for f in range(2) for lv in (0, 1)])
Phi = Phi_attr.col_join(sig * sp.eye(Nv))
Kx = Phi.T * Phi
walsh = [sp.Matrix([(-1) ** it[0] for it in items]) / 2, sp.Matrix([(-1) ** it[1] for it in items]) / 2,
         sp.Matrix([(-1) ** (it[0] + it[1]) for it in items]) / 2]
dvals = [sp.sqrt(sig**2 + 2), sp.sqrt(sig**2 + 2), sig]
for q, dv in zip(walsh, dvals):
    assert zero((Kx * q - dv**2 * q).norm()), "Walsh vectors are the centred eigenvectors of K_x"
    assert sum(q) == 0
assert zero((Kx * sp.ones(Nv, 1) - (sig**2 + 4) * sp.ones(Nv, 1)).norm()), "1 is an eigenvector of K_x"
Qm = sp.Matrix.hstack(*walsh)
Pm = sp.Matrix.hstack(*[Phi * q / dv for q, dv in zip(walsh, dvals)])
assert zero((Pm.T * Pm - sp.eye(3)).norm()), "p_a = Phi q_a/d_a are orthonormal"
zeta = sp.symbols("zeta1:4", positive=True)
Z = Qm * sp.diag(*[zeta[a] / dvals[a] for a in range(3)]) * Pm.T * Phi      # Z(u) = Q diag(u) P^T Phi, u = z/d
assert zero((Z - Qm * sp.diag(*zeta) * Qm.T).norm()), "on these modes Z = Q diag(z) Q^T"
PN = sp.eye(Nv) - sp.ones(Nv, Nv) / Nv
G_lin = PN * (sp.eye(Nv) - Z / Nv) / Nv                      # (1/N)(P_K Y - P_K Z/K) with Y = I, K = N
zs = CL["z_sym"]
for a in range(3):
    c_a = (Qm[:, a].T * G_lin * Phi.T * Pm[:, a])[0, 0]
    dz = sp.simplify(2 * zeta[a] * c_a)
    assert zero(dz - CL["rhs"].subs({zs: zeta[a], d: dvals[a], N: Nv, K: Nv})), dz
ok("factorial(2, 2), Phi = [attributes; sigma I]: on each centred mode the linearized CE flow is "
   "dz/dt = (2 d/N) z (1 - z/K) = ce_linearized_mode()['rhs'], modes decoupled")
assert zero(sp.diff(CL["z"], t) - CL["rhs"].subs(zs, CL["z"])) and zero(CL["z"].subs(t, 0) - z0)
assert zero(sp.diff(CL["rhs"], zs).subs(zs, 0) - CL["early_rate"])
assert zero(CL["early_rate"] - sp.diff(S.logistic_mode()["rhs"], S.logistic_mode()["z_sym"]).subs(
    S.logistic_mode()["z_sym"], 0))
ok("ce_linearized_mode()['z'] solves its ODE; its early rate 2d/N equals the MSE rate of logistic_mode")


# ============ 3. the mode-restricted CE flow ==========================================================
def ce_loss(Zm):
    n_cols = Zm.shape[1]
    return sum(sp.log(sum(sp.exp(Zm[i, j]) for i in range(Zm.shape[0]))) - Zm[j, j] for j in range(n_cols)) / n_cols


sigv = sp.Integer(1)
Phin = Phi.subs(sig, sigv)
dn = [dv.subs(sig, sigv) for dv in dvals]
Pn = sp.Matrix.hstack(*[Phin * q / dv for q, dv in zip(walsh, dn)])
a_s = sp.symbols("a1:4", positive=True)
b_s = sp.symbols("b1:4", positive=True)
Zab = Qm * sp.diag(*[a_s[i] * b_s[i] for i in range(3)]) * Pn.T * Phin
L = ce_loss(Zab)
rng = random.Random(3)
point = {**{a_s[i]: sp.Rational(rng.randint(1, 9), 7) for i in range(3)},
         **{b_s[i]: sp.Rational(rng.randint(1, 9), 5) for i in range(3)}}
Zp = Zab.subs(point)
Sm = sp.Matrix(Nv, Nv, lambda i, j: sp.exp(Zp[i, j]) / sum(sp.exp(Zp[k, j]) for k in range(Nv)))
Gp = (sp.eye(Nv) - Sm) / Nv
for i in range(3):
    c_i = (Qm[:, i].T * Gp * Phin.T * Pn[:, i])[0, 0]
    for var, other in ((a_s[i], b_s[i]), (b_s[i], a_s[i])):
        lhs = sp.diff(L, var).subs(point)
        assert abs(sp.N(lhs + other.subs(point) * c_i, 30)) < 1e-25, (var, sp.N(lhs), sp.N(c_i))
ok("mode-restricted CE flow: dL/da_a = -b_a c_a and dL/db_a = -a_a c_a with c_a = q_a^T (1/N)(Y - softmax Z) "
   "Phi^T p_a (checked at a rational point, factorial(2, 2), sigma = 1): it is gradient flow on (a, b)")
# symmetric states: Phi = I_N (d_a = 1, n = 1, K = N), all modes z: Z = z P_N, dz/dt = 2 z c
CS = S.ce_symmetric_flow()
pz = sp.Symbol("pz", positive=True)
for Kv in (3, 4):
    P_ = sp.eye(Kv) - sp.ones(Kv, Kv) / Kv
    Zs = pz * P_
    Ss = sp.Matrix(Kv, Kv, lambda i, j: sp.exp(Zs[i, j]) / sum(sp.exp(Zs[k, j]) for k in range(Kv)))
    Gs = (sp.eye(Kv) - Ss) / Kv
    q = sp.Matrix([1, -1] + [0] * (Kv - 2)) / sp.sqrt(2)      # any unit q orthogonal to 1
    c_q = sp.simplify((q.T * Gs * q)[0, 0])
    target = CS["rhs"].subs({S.K: Kv, S.n: 1, S.p: pz})
    assert abs(sp.N((2 * pz * c_q - target).subs(pz, sp.Rational(7, 3)), 30)) < 1e-25
    assert zero(2 * pz * c_q - target), (Kv, sp.simplify(2 * pz * c_q), target)
ok("on the symmetric states Z = p P_N of the plain UFM (Phi = I) the mode-restricted flow is "
   "dp/dt = 2/(N-1) p phi(p) = ce_symmetric_flow()['rhs'] with K = N, n = 1 (K = 3, 4)")


# ============ 4. MSE with equal weight decays (mse_decay_mode) ======================================
MD = S.mse_decay_mode()
a, b = sp.symbols("a b", positive=True)
loss_mode = (1 - a * b * d) ** 2 / (2 * N) + lam / 2 * (a**2 + b**2)
da, db = -sp.diff(loss_mode, a), -sp.diff(loss_mode, b)
assert zero((da - db).subs(b, a)), "balanced a = b stays balanced when lam_W = lam_A"
zm = MD["z_sym"]
dz = sp.simplify((d * (da * b + a * db)).subs(b, a).subs(a, sp.sqrt(zm / d)))
assert zero(dz - MD["rhs"]), dz
ok("mode loss 1/(2N)(1 - a b d)^2 + lam/2 (a^2 + b^2), a = b: dz/dt = (2d/N) z (1 - lam N/d - z) = "
   "mse_decay_mode()['rhs']")
assert zero(sp.diff(MD["z"], t) - MD["rhs"].subs(zm, MD["z"])) and zero(MD["z"].subs(t, 0) - z0)
assert zero(MD["z"].subs(lam, 0) - S.logistic_mode()["z"])
ok("mse_decay_mode()['z'] solves it with z(0) = z0, tends to z_inf = 1 - lam N/d, and is logistic_mode at lam = 0")


# ============ 5. two-level peak condition (two_level_peak) ==========================================
def gap_sym(G, attrs):
    """THEORY §7.4 semantic gap of a (centred) Gram, symbolically."""
    n_items = G.shape[0]
    C = sp.Matrix(n_items, n_items, lambda i, j: G[i, j] / sp.sqrt(G[i, i] * G[j, j]))
    gaps = []
    for f in range(len(attrs[0])):
        same = [C[i, j] for i in range(n_items) for j in range(n_items) if i != j and attrs[i][f] == attrs[j][f]]
        diff = [C[i, j] for i in range(n_items) for j in range(n_items) if attrs[i][f] != attrs[j][f]]
        gaps.append(sum(same) / len(same) - sum(diff) / len(diff))
    return sum(gaps) / len(gaps)


rho = sp.Symbol("rho", positive=True)
for F in (2, 3):
    attrs = list(itertools.product([0, 1], repeat=F))
    n_items = len(attrs)
    sv = [sp.Matrix([(-1) ** it[f] for it in attrs]) for f in range(F)]
    Pi_s = sum((v * v.T for v in sv), sp.zeros(n_items, n_items)) / n_items
    Pc = sp.eye(n_items) - sp.ones(n_items, n_items) / n_items
    Pi_i = Pc - Pi_s                                              # the other centred directions
    gap = sp.simplify(gap_sym(rho * Pi_s + Pi_i, attrs))
    dg = sp.factor(sp.diff(gap, rho))
    num, den_ = sp.fraction(sp.together(dg))
    assert all(cf > 0 for cf in sp.Poly(sp.expand(num), rho).coeffs()) and \
        all(cf > 0 for cf in sp.Poly(sp.expand(den_), rho).coeffs()), dg
    assert gap.subs(rho, 1) == 0
    ok(f"factorial(2^{F}): gap(rho Pi_s + Pi_i) = {gap}, increasing in rho > 0 (0 at rho = 1, the ETF)")
TP = S.two_level_peak()
ds, di, zs0, zi0 = TP["symbols"]
logrho = sp.log(ds * TP["z_s"]) - sp.log(di * TP["z_i"])
assert zero(sp.diff(logrho, t) - 2 * TP["condition"] / N), sp.simplify(sp.diff(logrho, t))
ok("with logistic modes, d log(rho)/dt = (2/N)[d_s (1 - z_s) - d_i (1 - z_i)]: the gap peaks where "
   "two_level_peak()['condition'] = 0")
print("mode_dynamics: all identities hold")
