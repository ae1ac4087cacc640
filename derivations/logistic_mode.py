"""Derive the per-mode logistic law of distinct one-hot labels with structured inputs (THEORY §6.1, §6.3; TV5b).

Setting (THEORY §6.3 [DER], built on Saxe, McClelland, Ganguli, "Exact solutions
to the nonlinear dynamics of learning in deep linear neural networks",
arXiv 1312.6120, ICLR 2014): Y = I_N, inputs X = P D Q^T, two-layer linear
network trained by gradient flow (tau = 1) on

    L(W1, W2) = 1/(2N) ||Y - W2 W1 X||_F^2.

This script differentiates L with sympy for an explicit N = 3 instance with
rational orthogonal P, Q, R and symbolic mode strengths a_i and input singular
values d_i, and shows that the aligned ansatz W1 = R diag(a) P^T,
W2 = Q diag(a) R^T is preserved with da/dt = a (s - lambda a^2), s = d/N,
lambda = d^2/N. Hence u = a^2 obeys du/dt = 2u(s - lambda u) and z = u d obeys
dz/dt = (2d/N) z (1 - z), which is asserted equal to ufm.symbolic.logistic_mode()['rhs'];
its solution (direct substitution and sympy dsolve) is asserted equal to
logistic_mode()['z'], together with the generalized Saxe formula for u(t) and the
item Gram H^T H = Q diag(z d) Q^T -> (X^T X)^{1/2}.
"""

import random

import sympy as sp

from ufm import symbolic as S

t, z0, d, N = S.t, S.z0, S.d_alpha, S.N
LM = S.logistic_mode()
zs = LM["z_sym"]


def ok(msg):
    print(f"OK: {msg}")


def is_zero_matrix(M):
    """Entries here are polynomials (or rational functions) in the symbols: expand/cancel decides."""
    return all(sp.cancel(sp.expand(e)) == 0 for e in M)


# --- 1. gradient flow of the two-layer linear network, explicit N = 3 --------------------------------
Nv = 3
P = sp.Matrix([[1, 2, 2], [2, 1, -2], [2, -2, 1]]) / 3          # rational orthogonal matrices
Q = sp.Matrix([[1, 4, 8], [4, 7, -4], [8, -4, 1]]) / 9
R = sp.Matrix([[2, 3, 6], [3, -6, 2], [6, 2, -3]]) / 7
for M in (P, Q, R):
    assert M.T * M == sp.eye(3), "P, Q, R must be orthogonal"
dv = sp.symbols("d1:4", positive=True)
av = sp.symbols("a1:4", positive=True)


def ex(M):
    return M.applyfunc(sp.expand)


# gradient of L by sympy matrix calculus ...
W1m, W2m, Xm = (sp.MatrixSymbol(nm, 3, 3) for nm in ("W1", "W2", "X"))
Em = sp.Identity(Nv) - W2m * W1m * Xm
Lm = sp.trace(Em.T * Em) / (2 * Nv)
g1, g2 = sp.diff(Lm, W1m), sp.diff(Lm, W2m)


def grad_formula(W1, W2, X):
    """-dL/dW1 = W2^T E X^T/N, -dL/dW2 = E X^T W1^T/N with E = Y - W2 W1 X (expanded products)."""
    E = ex(sp.eye(Nv) - ex(ex(W2 * W1) * X))
    return ex(ex(W2.T * E) * X.T) / Nv, ex(ex(E * X.T) * W1.T) / Nv


# ... checked against the closed formula and entrywise against d/d(eps) L(W + eps e_ij) at a
# random rational point
rng = random.Random(5)
eps = sp.Symbol("eps")
A1, A2, A3 = (sp.Matrix(3, 3, lambda i, j: sp.Rational(rng.randint(-9, 9), rng.randint(1, 5))) for _ in range(3))
pt = {W1m: A1, W2m: A2, Xm: A3}
G1, G2 = (g.subs(pt).doit().as_explicit() for g in (g1, g2))
F1, F2 = grad_formula(A1, A2, A3)
assert G1 == -F1 and G2 == -F2, "matrix-calculus gradient must equal the closed formula"


def L_at(W1, W2):
    return sum(e**2 for e in (sp.eye(Nv) - W2 * W1 * A3)) / (2 * Nv)


for i in range(3):
    for j in range(3):
        Eij = sp.zeros(3, 3)
        Eij[i, j] = eps
        assert sp.diff(L_at(A1 + Eij, A2), eps).subs(eps, 0) == G1[i, j], (
            "expected: sympy matrix calculus: -dL/dW1 = W2^T (Y - W2 W1 X) X^T/N, -dL/dW2 = (Y - W2 "
            "W1 X) X^T W1^T/N (checked entrywise at a random rational point)")
        assert sp.diff(L_at(A1, A2 + Eij), eps).subs(eps, 0) == G2[i, j], (
            "expected: sympy matrix calculus: -dL/dW1 = W2^T (Y - W2 W1 X) X^T/N, -dL/dW2 = (Y - W2 "
            "W1 X) X^T W1^T/N (checked entrywise at a random rational point)")
ok("sympy matrix calculus: -dL/dW1 = W2^T (Y - W2 W1 X) X^T/N, -dL/dW2 = (Y - W2 W1 X) X^T W1^T/N "
   "(checked entrywise at a random rational point)")

X = ex(P * sp.diag(*dv) * Q.T)
Y = sp.eye(Nv)
W1a = ex(R * sp.diag(*av) * P.T)
W2a = ex(Q * sp.diag(*av) * R.T)
dW1, dW2 = grad_formula(W1a, W2a, X)
adot = [av[i] * (dv[i] / Nv - dv[i] ** 2 * av[i] ** 2 / Nv) for i in range(3)]
assert is_zero_matrix(dW1 - R * sp.diag(*adot) * P.T), "dW1/dt must stay of the form R diag(a') P^T"
assert is_zero_matrix(dW2 - Q * sp.diag(*adot) * R.T), "dW2/dt must stay of the form Q diag(a') R^T"
ok("-grad L on W1 = R diag(a) P^T, W2 = Q diag(a) R^T is R diag(a') P^T, Q diag(a') R^T "
   "with a' = a (d/N - d^2 a^2/N): the aligned ansatz is invariant")
# the same thing through the correlations of §6.1: Sigma_yx = Q D P^T/N, Sigma_xx = P D^2 P^T/N
Syx = Y * X.T / Nv
Sxx = X * X.T / Nv
assert is_zero_matrix(Syx - Q * sp.diag(*dv) * P.T / Nv), (
    "expected: Sigma_yx = Q D P^T/N and Sigma_xx = P D^2 P^T/N share P: s_alpha = d_alpha/N, "
    "lambda_alpha = d_alpha^2/N")
assert is_zero_matrix(Sxx - P * sp.diag(*[e**2 for e in dv]) * P.T / Nv), (
    "expected: Sigma_yx = Q D P^T/N and Sigma_xx = P D^2 P^T/N share P: s_alpha = d_alpha/N, "
    "lambda_alpha = d_alpha^2/N")
ok("Sigma_yx = Q D P^T/N and Sigma_xx = P D^2 P^T/N share P: s_alpha = d_alpha/N, lambda_alpha = d_alpha^2/N")

# --- 2. from a to u = a^2 to z = u d ---------------------------------------------------------------
a1 = sp.Symbol("a", positive=True)
u = sp.Symbol("u", positive=True)
s_a, lam_a = d / N, d**2 / N
da = a1 * (s_a - lam_a * a1**2)
du = sp.simplify((2 * a1 * da).subs(a1, sp.sqrt(u)))
assert sp.simplify(du - 2 * u * (s_a - lam_a * u)) == 0, (
    "expected: u = a^2: du/dt = 2u (s - lambda u)  (tau = 1)")
ok("u = a^2: du/dt = 2u (s - lambda u)  (tau = 1)")
dz = sp.simplify((d * du).subs(u, zs / d))
assert sp.simplify(dz - LM["rhs"]) == 0, dz
assert sp.simplify(dz - 2 * d / N * zs * (1 - zs)) == 0, (
    "expected: z = u d: dz/dt = (2 d/N) z (1 - z) = logistic_mode()['rhs']")
ok("z = u d: dz/dt = (2 d/N) z (1 - z) = logistic_mode()['rhs']")

# --- 3. the trajectory ------------------------------------------------------------------------------
z_t = LM["z"]
residual = sp.diff(z_t, t) - LM["rhs"].subs(zs, z_t)
assert sp.simplify(residual) == 0, (
    "expected: logistic_mode()['z'] satisfies dz/dt = rhs and z(0) = z0 (direct substitution)")
assert sp.simplify(z_t.subs(t, 0) - z0) == 0, (
    "expected: logistic_mode()['z'] satisfies dz/dt = rhs and z(0) = z0 (direct substitution)")
ok("logistic_mode()['z'] satisfies dz/dt = rhs and z(0) = z0 (direct substitution)")
f = sp.Function("f")
r = sp.Symbol("r", positive=True)           # the rate 2 d/N as one symbol (keeps dsolve off log branches)
assert sp.simplify(LM["rhs"] - (r * zs * (1 - zs)).subs(r, 2 * d / N)) == 0, "rhs must be r z (1 - z), r = 2d/N"
sol = sp.dsolve(sp.Eq(f(t).diff(t), r * f(t) * (1 - f(t))), f(t), ics={f(0): z0})
sols = sol if isinstance(sol, list) else [sol]
assert any(sp.simplify(sl.rhs.subs(r, 2 * d / N) - z_t) == 0 for sl in sols), sols
ok("sympy dsolve of dz/dt = r z(1-z), z(0) = z0, r = 2d/N returns logistic_mode()['z']")
assert sp.limit(z_t, t, sp.oo) == 1, (
    "expected: z -> 1 as t -> oo; z = 1/2 at t = (N/(2d)) ln(1/z0 - 1): large d_alpha is learned "
    "first")
t_half = N / (2 * d) * sp.log(1 / z0 - 1)
assert sp.simplify(z_t.subs(t, t_half) - sp.Rational(1, 2)) == 0, (
    "expected: z -> 1 as t -> oo; z = 1/2 at t = (N/(2d)) ln(1/z0 - 1): large d_alpha is learned "
    "first")
ok("z -> 1 as t -> oo; z = 1/2 at t = (N/(2d)) ln(1/z0 - 1): large d_alpha is learned first")

# generalized Saxe formula of §6.1, u(t) = (s/lam) e^{2st}/(e^{2st} - 1 + s/(lam u0))
u0 = sp.Symbol("u0", positive=True)
sS, lS = sp.symbols("s_S lambda_S", positive=True)
e2 = sp.exp(2 * sS * t)
u_t = (sS / lS) * e2 / (e2 - 1 + sS / (lS * u0))
assert (sp.simplify(sp.diff(u_t, t) - 2 * u_t * (sS - lS * u_t)) == 0
        and sp.simplify(u_t.subs(t, 0) - u0) == 0), (
    "expected: Saxe u(t) with lambda solves du/dt = 2u(s - lambda u), and d u(t) is "
    "logistic_mode()['z'] with z0 = d u0")
assert sp.simplify((d * u_t).subs({sS: s_a, lS: lam_a, u0: z0 / d}) - z_t) == 0, (
    "expected: Saxe u(t) with lambda solves du/dt = 2u(s - lambda u), and d u(t) is "
    "logistic_mode()['z'] with z0 = d u0")
ok("Saxe u(t) with lambda solves du/dt = 2u(s - lambda u), and d u(t) is logistic_mode()['z'] with z0 = d u0")

# --- 4. the item Gram -------------------------------------------------------------------------------
Hf = W1a * X                               # features of the N items
G = (Hf.T * Hf).applyfunc(sp.expand)
zd = [av[i] ** 2 * dv[i] for i in range(3)]          # z_i = u_i d_i
assert is_zero_matrix(G - Q * sp.diag(*[zd[i] * dv[i] for i in range(3)]) * Q.T), (
    "expected: item Gram H^T H = X^T W1^T W1 X = sum_alpha z_alpha d_alpha q_alpha q_alpha^T")
ok("item Gram H^T H = X^T W1^T W1 X = sum_alpha z_alpha d_alpha q_alpha q_alpha^T")
G_inf = G.subs({av[i]: 1 / sp.sqrt(dv[i]) for i in range(3)})      # z = 1
assert is_zero_matrix(G_inf * G_inf - X.T * X) and is_zero_matrix(G_inf - Q * sp.diag(*dv) * Q.T), (
    "expected: at z = 1 the Gram is Q D Q^T = (X^T X)^{1/2}")
ok("at z = 1 the Gram is Q D Q^T = (X^T X)^{1/2}")
print("logistic_mode: all identities hold")
