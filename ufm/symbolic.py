"""Sympy expressions behind every closed form in :mod:`ufm.closed_form`.

One function per closed form returns sympy expressions in the symbols defined
here. ``derivations/`` re-derives each of them from its defining problem and
asserts the identities; :mod:`ufm.closed_form` evaluates the *same* expressions
through :func:`numeric` (``sympy.lambdify``, cached), so the numbers a user
gets are the formulas a derivation checked.

Conventions: halved regularizers and means over the N examples (THEORY §0.1);
``gamma = sqrt(n lam_W lam_H)`` for balanced classes (THEORY §1.2).
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

__all__ = [
    "K", "n", "gamma", "lam_W", "lam_H", "lam_b", "s", "t", "alpha", "beta", "c",
    "E_W", "E_H", "z0", "d_alpha", "N", "x", "p", "p0", "lam",
    "ce_scalar_objective", "ce_margin", "ce_zero_threshold", "ce_optimum",
    "layer_peeled_optimum", "mse_scalar_objective", "mse_optimum", "mse_bias_threshold",
    "nuclear_split", "logistic_mode", "mse_symmetric_flow", "ce_symmetric_flow",
    "mse_decay_mode", "random_init_mode", "ce_linearized_mode", "two_level_peak",
    "lam_A", "k_x", "sigma_i", "feature_penalty_encoding", "feature_penalty_mode",
    "numeric",
]

# Symbols. All positive unless a closed form needs otherwise.
K = sp.Symbol("K", positive=True)            # number of classes
n = sp.Symbol("n", positive=True)            # samples per class
N = sp.Symbol("N", positive=True)            # number of examples (items)
gamma = sp.Symbol("gamma", positive=True)    # sqrt(n lam_W lam_H)
lam_W = sp.Symbol("lam_W", positive=True)
lam_H = sp.Symbol("lam_H", positive=True)
lam_b = sp.Symbol("lam_b", positive=True)
s = sp.Symbol("s", nonnegative=True)         # logit margin z_y - z_c
t = sp.Symbol("t", nonnegative=True)         # time
alpha = sp.Symbol("alpha", real=True)        # centred (ETF) coefficient of the MSE optimum
beta = sp.Symbol("beta", real=True)          # J/K coefficient of the MSE optimum
c = sp.Symbol("c", real=True)                # bias level b = c 1_K
E_W = sp.Symbol("E_W", positive=True)        # layer-peeled energy of W
E_H = sp.Symbol("E_H", positive=True)        # layer-peeled energy of H
z0 = sp.Symbol("z0", positive=True)          # initial mode strength
d_alpha = sp.Symbol("d_alpha", positive=True)  # input singular value of a mode
x = sp.Symbol("x", positive=True)            # a nuclear norm (variational identity)
p = sp.Symbol("p", positive=True)            # symmetric-subspace product a*beta
p0 = sp.Symbol("p0", positive=True)          # its initial value
lam = sp.Symbol("lam", positive=True)        # a common weight decay lam_W = lam_A
lam_A = sp.Symbol("lam_A", positive=True)    # weight decay of the input map A (M2, THEORY §8.2)
k_x = sp.Symbol("k_x", positive=True)        # an eigenvalue of the input kernel K_x = Phi^T Phi
sigma_i = sp.Symbol("sigma_i", positive=True)  # a singular value of the input encodings Phi


# -- balanced cross-entropy UFM (THEORY §1.2) ---------------------------------
def ce_scalar_objective():
    """phi(s) = log(1 + (K-1) e^{-s}) + (K-1) gamma s, THEORY (1.1).

    The regularized balanced CE objective restricted to the ETF family, as a
    function of the logit margin ``s``; convex in ``s``.
    """
    return sp.log(1 + (K - 1) * sp.exp(-s)) + (K - 1) * gamma * s


def ce_margin():
    """s* = log(1/gamma - (K-1)), the optimal margin when K gamma < 1 (THEORY §1.2)."""
    return sp.log(1 / gamma - (K - 1))


def ce_zero_threshold():
    """K gamma: the optimum is W = H = 0 iff this is >= 1 (THEORY §1.2, §4)."""
    return K * gamma


def ce_optimum():
    """All closed-form quantities of the collapse regime (K gamma < 1), THEORY §1.2.

    Returns a dict of expressions in ``K, n, lam_W, lam_H`` (``gamma`` substituted):
    ``s`` (margin), ``t`` (correct-class logit; not the time symbol :data:`t`), ``w_sq`` (||w_k||^2), ``h_sq``
    (||h_{k,i}||^2), ``W_F2``, ``H_F2``, ``ce`` (cross-entropy at the optimum),
    ``f`` (objective (0.1)), ``sv`` (the K-1 nonzero singular values of Z*),
    ``nuclear`` (||Z*||_*), ``h_over_w`` (||h|| / ||w||).
    """
    g = sp.sqrt(n * lam_W * lam_H)
    s_star = ce_margin().subs(gamma, g)
    t_star = (K - 1) * s_star / K
    return {
        "gamma": g,
        "s": s_star,
        "t": t_star,
        "w_sq": t_star * sp.sqrt(n * lam_H / lam_W),
        "h_sq": t_star * sp.sqrt(lam_W / (n * lam_H)),
        "W_F2": K * t_star * sp.sqrt(n * lam_H / lam_W),
        "H_F2": K * t_star * sp.sqrt(n * lam_W / lam_H),
        "ce": -sp.log(1 - (K - 1) * g),
        "f": -sp.log(1 - (K - 1) * g) + (K - 1) * g * s_star,
        "sv": s_star * sp.sqrt(n),
        "nuclear": (K - 1) * s_star * sp.sqrt(n),
        "h_over_w": sp.sqrt(lam_W / (n * lam_H)),
    }


def layer_peeled_optimum():
    """Balanced layer-peeled model with energies E_W, E_H (THEORY §1.3).

    Returns ``s`` (margin K sqrt(E_H E_W)/(K-1)) and ``loss``
    (log(1 + (K-1) exp(-s))), and ``h_over_w`` (sqrt(E_H/E_W)).
    """
    s_lp = K * sp.sqrt(E_H * E_W) / (K - 1)
    return {"s": s_lp, "loss": sp.log(1 + (K - 1) * sp.exp(-s_lp)), "h_over_w": sp.sqrt(E_H / E_W)}


# -- balanced MSE UFM (THEORY §2.2) -------------------------------------------
def mse_scalar_objective(bias: str = "none"):
    """The MSE objective on the symmetric family Z = [alpha P_K + beta J_K/K] (x) 1_n^T, b = c 1.

    ``(1/(2K))[(alpha-1)^2 (K-1) + (beta + c K - 1)^2] + gamma (alpha (K-1) + beta) + lam_b K c^2 / 2``
    (THEORY §2.2), valid for ``alpha, beta >= 0``. ``bias`` is ``"none"`` (c = 0,
    restricted to beta = alpha, i.e. Z = alpha Y, where the minimum over beta lies anyway;
    ``derivations/mse_balanced.py`` shows it), ``"free"`` (lam_b = 0) or ``"regularized"``.

    Parameters
    ----------
    bias : {"none", "free", "regularized"}
        How the bias enters.

    Returns
    -------
    sympy.Expr
        The objective in ``alpha``, ``beta``, ``c`` and the problem's symbols.
    """
    loss = ((alpha - 1) ** 2 * (K - 1) + (beta + c * K - 1) ** 2) / (2 * K)
    reg = gamma * (alpha * (K - 1) + beta)
    if bias == "none":
        return (loss + reg).subs({c: 0, beta: alpha})
    if bias == "free":
        return loss + reg
    if bias == "regularized":
        return loss + reg + lam_b * K * c**2 / 2
    raise ValueError(f"bias must be 'none', 'free' or 'regularized', got {bias!r}.")


def mse_optimum(bias: str = "none", regime: str = "low"):
    """Optimal (alpha, beta, c) and objective f* of the balanced MSE UFM, collapse regime K gamma < 1.

    ``bias``: ``"none"``, ``"free"`` or ``"regularized"``. For a regularized bias
    ``regime`` selects ``"low"`` (lam_b <= lam_b*, ETF, beta = 0) or ``"high"``
    (lam_b > lam_b*, beta > 0, drifting to an orthogonal frame). THEORY §2.2 table.

    Parameters
    ----------
    bias : {"none", "free", "regularized"}
        How the bias enters.
    regime : {"low", "high"}
        For a regularized bias: below or above ``lam_b*``.

    Returns
    -------
    dict of sympy.Expr
        ``alpha``, ``beta``, ``c`` and ``f``.
    """
    a = 1 - K * gamma
    if bias == "none":
        sol = {alpha: a, beta: a, c: sp.Integer(0)}
    elif bias == "free":
        sol = {alpha: a, beta: sp.Integer(0), c: 1 / K}
    elif bias == "regularized" and regime == "low":
        sol = {alpha: a, beta: sp.Integer(0), c: 1 / (K * (1 + lam_b))}
    elif bias == "regularized" and regime == "high":
        sol = {alpha: a, beta: 1 - K * gamma * (1 + 1 / lam_b), c: gamma / lam_b}
    else:
        raise ValueError(f"unknown MSE case bias={bias!r}, regime={regime!r}.")
    f = mse_scalar_objective("free" if bias == "none" else bias).subs(sol)
    return {"alpha": sol[alpha], "beta": sol[beta], "c": sol[c], "f": f}


def mse_bias_threshold():
    """lam_b* = K gamma / (1 - K gamma): the regularized bias keeps the ETF iff lam_b <= lam_b* (THEORY §2.2)."""
    return K * gamma / (1 - K * gamma)


# -- convex reformulation (THEORY §4) -----------------------------------------
def nuclear_split():
    """The variational identity behind (4.1), for one singular value ``x`` of Z.

    Splitting ``x = (c sqrt(x)) (sqrt(x)/c)`` costs
    ``lam_W/2 c^2 x + lam_H/2 x / c^2``; returns ``{"cost": ..., "c_opt": (lam_H/lam_W)^{1/4},
    "value": sqrt(lam_W lam_H) x}``.
    """
    cc = sp.Symbol("c_split", positive=True)
    return {"symbol": cc, "cost": lam_W / 2 * cc**2 * x + lam_H / 2 * x / cc**2,
            "c_opt": (lam_H / lam_W) ** sp.Rational(1, 4), "value": sp.sqrt(lam_W * lam_H) * x}


# -- dynamics (THEORY §6) -----------------------------------------------------
def logistic_mode():
    """Mode law of §6.3: dz/dt = (2 d_alpha / N) z (1 - z), solved from z(0) = z0.

    Returns ``{"rhs": ..., "z": 1/(1 + (1/z0 - 1) exp(-2 d_alpha t / N)), "z_sym": z}``
    with ``z_sym`` the function symbol used in ``rhs``.
    """
    z = sp.Symbol("z", positive=True)
    rate = 2 * d_alpha / N
    return {"z_sym": z, "rhs": rate * z * (1 - z), "z": 1 / (1 + (1 / z0 - 1) * sp.exp(-rate * t))}


def mse_symmetric_flow():
    """Balanced symmetric MSE-UFM flow (THEORY §6.4): dp/dt = 2 sqrt(n) p (1 - p) and its solution."""
    return {"rhs": 2 * sp.sqrt(n) * p * (1 - p),
            "p": 1 / (1 + (1 / p0 - 1) * sp.exp(-2 * sp.sqrt(n) * t))}


def ce_symmetric_flow():
    """Balanced symmetric CE-UFM flow (THEORY §6.5): dp/dt = 2/(sqrt(n)(K-1)) p phi(p).

    ``phi(p) = (K-1) e^{-p} / (1 + (K-1) e^{-p})``; ``early_rate`` is the
    linear growth rate 2/(K sqrt n) at p -> 0.
    """
    phi = (K - 1) * sp.exp(-p) / (1 + (K - 1) * sp.exp(-p))
    rhs = 2 / (sp.sqrt(n) * (K - 1)) * p * phi
    return {"phi": phi, "rhs": rhs, "early_rate": 2 / (K * sp.sqrt(n))}


def mse_decay_mode():
    """Mode law of §6.3 with equal weight decays lam_W = lam_A = lam (halved, THEORY §0.1).

    The balanced mode ``a = b`` of ``1/(2N)(1 - a b d)^2 + lam/2 (a^2 + b^2)`` gives
    ``dz/dt = (2 d/N) z (z_inf - z)`` with ``z_inf = 1 - lam N/d``: a logistic with
    carrying capacity ``z_inf``. Returns ``{"z_sym", "rhs", "z_inf", "z"}``,
    ``z = z_inf / (1 + (z_inf/z0 - 1) exp(-2 d z_inf t/N))``.
    """
    z = sp.Symbol("z", positive=True)
    zinf = 1 - lam * N / d_alpha
    rate = 2 * d_alpha / N
    return {"z_sym": z, "rhs": rate * z * (zinf - z), "z_inf": zinf,
            "z": zinf / (1 + (zinf / z0 - 1) * sp.exp(-rate * zinf * t))}


def random_init_mode():
    """Linear phase of one mode from an arbitrary (e.g. random) start (THEORY §6.1, §6.3).

    With ``w = W^T q_a`` and ``v = A p_a`` (vectors in R^d) and ``s = d_alpha/N``,
    the small-logit flow is ``dw/dt = s v, dv/dt = s w``. In terms of
    ``w0sq = |w0|^2``, ``v0sq = |v0|^2``, ``wv0 = w0.v0`` the mode output
    ``z = d_alpha w.v`` and the Gram weight ``d_alpha^2 |v|^2`` are::

        z(t)      = d_alpha [ sinh(2st)(w0sq + v0sq)/2 + cosh(2st) wv0 ]
        gram(t)   = d_alpha^2 [ cosh(2st)(w0sq + v0sq)/2 + sinh(2st) wv0 + (v0sq - w0sq)/2 ]

    ``z_grow = d_alpha |w0 + v0|^2/4`` is the coefficient of ``exp(2st)`` in ``z``
    (the initial strength of the matching aligned run). For Gaussian blocks of std
    ``sigma0`` in dimension ``dim``: ``E z(t) = z_mean (e^{2st} - e^{-2st})`` and
    ``E gram(t) = d_alpha z_mean (e^{2st} + e^{-2st})``, ``z_mean = d_alpha dim sigma0^2/2``.
    """
    w0sq, v0sq, wv0, sig0, dim = sp.symbols("w0sq v0sq wv0 sigma0 dim", positive=True)
    st = 2 * d_alpha * t / N
    z_t = d_alpha * (sp.sinh(st) * (w0sq + v0sq) / 2 + sp.cosh(st) * wv0)
    gram_t = d_alpha**2 * (sp.cosh(st) * (w0sq + v0sq) / 2 + sp.sinh(st) * wv0 + (v0sq - w0sq) / 2)
    z_mean = d_alpha * dim * sig0**2 / 2
    return {"symbols": (w0sq, v0sq, wv0, sig0, dim), "z": z_t, "gram": gram_t,
            "z_grow": d_alpha * (w0sq + v0sq + 2 * wv0) / 4, "z_decay": d_alpha * (w0sq + v0sq - 2 * wv0) / 4,
            "z_mean": z_mean, "Ez": z_mean * (sp.exp(st) - sp.exp(-st)),
            "Egram": d_alpha * z_mean * (sp.exp(st) + sp.exp(-st))}


def ce_linearized_mode():
    """Linearized CE (softmax(z) = 1/K + P_K z/K + O(z^2)) on a centred mode (THEORY §5.3, §6.3).

    ``-grad_Z CE = (1/N)(P_K Y - P_K Z/K)``: the Saxe flow with target ``K P_K Y``.
    A mode orthogonal to ``1`` obeys ``dz/dt = (2 d_alpha/N) z (1 - z/K)``: the early
    rate ``2 d_alpha/N`` of MSE, with carrying capacity ``K`` (far outside the
    linear regime; the softmax saturates first). Returns ``{"z_sym", "rhs",
    "early_rate", "z"}``.
    """
    z = sp.Symbol("z", positive=True)
    rate = 2 * d_alpha / N
    return {"z_sym": z, "rhs": rate * z * (1 - z / K), "early_rate": rate,
            "z": K / (1 + (K / z0 - 1) * sp.exp(-rate * t))}


def two_level_peak():
    """Peak of the semantic gap for a Gram with two centred levels (THEORY §6.3, §7.4).

    With ``P_N G P_N = w_s Pi_s + w_i Pi_i`` (semantic and item eigenspaces) the
    gap is an increasing function of ``rho = w_s/w_i`` (shown for factorial
    settings in ``derivations/mode_dynamics.py``), and with logistic modes
    ``w = z d``::

        d log(rho)/dt = (2/N) [ d_s (1 - z_s) - d_i (1 - z_i) ],

    so the peak is where ``d_s (1 - z_s(t)) = d_i (1 - z_i(t))``. Returns
    ``{"symbols": (d_s, d_i, z0_s, z0_i), "condition": d_s (1 - z_s(t)) - d_i (1 - z_i(t))}``
    with the logistic ``z(t)`` of :func:`logistic_mode`.
    """
    ds, di, zs0, zi0 = sp.symbols("d_s d_i z0_s z0_i", positive=True)
    zl = logistic_mode()["z"]
    zs = zl.subs({d_alpha: ds, z0: zs0})
    zi = zl.subs({d_alpha: di, z0: zi0})
    return {"symbols": (ds, di, zs0, zi0), "z_s": zs, "z_i": zi, "condition": ds * (1 - zs) - di * (1 - zi)}


# -- input-coupled UFM with a feature penalty (THEORY §8.2b) -------------------------
def feature_penalty_encoding():
    """Row weight of the reduced encoding of the convex form with a feature penalty (THEORY §8.2b).

    With the thin SVD ``Phi = U diag(sigma_i) V^T``, the objective
    ``g(W A Phi) + lam_W/2 ||W||^2 + lam_H/2 ||A Phi||^2 + lam_A/2 ||A||^2`` equals
    ``min_M g(M Phi_c) + sqrt(lam_W) ||M||_*`` with ``Phi_c = diag(weight_i) V^T``. Returns
    ``{"weight": sigma_i / sqrt(lam_A + lam_H sigma_i^2), "lift": 1/sqrt(lam_A + lam_H sigma_i^2)}``
    (``A = B diag(lift) U^T`` from the split ``M = W B``).
    """
    c_i = sp.sqrt(lam_A + lam_H * sigma_i**2)
    return {"weight": sigma_i / c_i, "lift": 1 / c_i}


def feature_penalty_mode():
    """The early (small-logit) flow of one input mode with a feature penalty (THEORY §8.2b).

    CE with distinct labels (``Y = I_K``, mean over the K items) has ``grad_Z g(0) = -P_K/K``;
    along an eigenvector ``q`` of ``K_x`` with eigenvalue ``k_x`` and ``q^T 1 = 0`` the amplitudes
    ``w = W^T q`` (classifier) and ``h = H q`` (features) obey ``d/dt (w, h) = M (w, h)`` with
    ``M = [[-lam_W, 1/K], [k_x/K, -(lam_H k_x + lam_A)]]`` (MSE, ``grad_Z g(0) = -I/K``: the same
    along every eigenvector). Returns ``{"matrix": M, "rate": its largest eigenvalue (the logit
    w.h and the Gram weight |h|^2 grow at twice it), "rate_limit": 1/(K^2 lam_H) - lam_W (its
    limit as k_x -> infinity), "order": K^2 lam_H (lam_W - lam_A)}``. Below ``order = 1`` the
    rate increases with ``k_x`` for every ``k_x`` (shared-attribute directions grow first),
    above it the rate decreases and is negative for every ``k_x`` (nothing grows).
    """
    c_k = lam_H * k_x + lam_A
    M = sp.Matrix([[-lam_W, 1 / K], [k_x / K, -c_k]])
    rate = (-(lam_W + c_k) + sp.sqrt((lam_W - c_k) ** 2 + 4 * k_x / K**2)) / 2
    return {"matrix": M, "rate": rate, "rate_limit": 1 / (K**2 * lam_H) - lam_W,
            "order": K**2 * lam_H * (lam_W - lam_A)}


# -- numeric evaluation --------------------------------------------------------
@lru_cache(maxsize=None)
def _lambdified(expr, names: tuple[str, ...]):
    symbols = [sp.Symbol(nm, **_ASSUMPTIONS.get(nm, {})) for nm in names]
    return sp.lambdify(symbols, expr, modules="numpy")


_ASSUMPTIONS = {sym.name: sym.assumptions0 for sym in
                (K, n, N, gamma, lam_W, lam_H, lam_b, s, t, alpha, beta, c, E_W, E_H, z0, d_alpha, x, p, p0, lam,
                 lam_A, k_x, sigma_i)}


def numeric(expr, **values) -> float:
    """Evaluate ``expr`` at ``values`` (symbol name -> number) with a cached ``lambdify``.

    Every free symbol of ``expr`` must be given (extra names are ignored, so
    one parameter dict serves several expressions).

    Parameters
    ----------
    expr : sympy.Expr
        An expression of this module.
    **values
        Numbers for its symbols, by name (``K=4, gamma=0.01, ...``).

    Returns
    -------
    float
        The value.
    """
    free = sorted(sym.name for sym in expr.free_symbols)
    missing = set(free) - set(values)
    if missing:
        raise ValueError(f"numeric(): expression needs {free}; missing {sorted(missing)}.")
    fn = _lambdified(expr, tuple(free))
    return float(fn(*(values[nm] for nm in free)))
