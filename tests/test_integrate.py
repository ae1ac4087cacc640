"""Adaptive Dormand-Prince 5(4) integrator (ufm._integrate): accuracy against closed forms and
scipy, exact output times, status codes, the numpy twin, and kernel reuse through numba's cache.

Runs under NUMBA_DISABLE_JIT=1 too (integrate() then uses the numpy twin; backend="numba" runs
the kernel source as plain Python); the tests that inspect compiled signatures skip there.
"""

import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numba
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from ufm._integrate import TABLEAU, dopri5, dopri5_numpy, integrate
from ufm.results import Status

JIT = not numba.config.DISABLE_JIT
needs_jit = pytest.mark.skipif(not JIT, reason="inspects compiled signatures")


# Right-hand sides: rhs(y, data, out) writes dy/dt. Most take data = (float,), so they share
# one compiled kernel (the kernel is specialised on the type of data, not on rhs).
@numba.njit(cache=True)
def decay(y, data, out):
    for i in range(y.shape[0]):
        out[i] = -data[0] * y[i]


@numba.njit(cache=True)
def logistic(y, data, out):
    out[0] = data[0] * y[0] * (1.0 - y[0])


@numba.njit(cache=True)
def rotation(y, data, out):
    out[0] = -y[1]
    out[1] = y[0]


@numba.njit(cache=True)
def square(y, data, out):
    out[0] = y[0] * y[0]


@numba.njit(cache=True)
def unit_speed(y, data, out):
    for i in range(y.shape[0]):
        out[i] = 1.0


@numba.njit(cache=True)
def van_der_pol(y, data, out):
    out[0] = y[1]
    out[1] = data[0] * (1.0 - y[0] * y[0]) * y[1] - y[0]


@numba.njit(cache=True)
def ce_margin(y, data, out):
    """THEORY §6.5: dp/dt = c p phi(p), phi(p) = (K-1)e^{-p} / (1 + (K-1)e^{-p})."""
    K, c = data
    e = (K - 1.0) * math.exp(-y[0])
    out[0] = c * y[0] * e / (1.0 + e)


@numba.njit(cache=True)
def affine(y, data, out):
    A, c = data
    for i in range(y.shape[0]):
        s = c
        for j in range(y.shape[0]):
            s += A[i, j] * y[j]
        out[i] = s


# ---------------------------------------------------------------------------------------------
def _canon(t):
    return tuple(sorted(_canon(c) for c in t))


def _grow(t):
    """Every tree made from t by attaching one leaf to one of its nodes."""
    yield _canon(t + ((),))
    for i, c in enumerate(t):
        for g in _grow(c):
            yield _canon(t[:i] + (g,) + t[i + 1:])


def _trees(order):
    """Rooted trees with `order` nodes (as nested tuples of children), without repeats."""
    trees = {()}
    for _ in range(order - 1):
        trees = {g for t in trees for g in _grow(t)}
    return sorted(trees)


def _size(t):
    return 1 + sum(_size(c) for c in t)


def _gamma(t):
    return _size(t) * math.prod(_gamma(c) for c in t)


def _weights(t, A, s):
    """g_i(t) = prod over children c of (sum_j a_ij g_j(c)); leaf: 1."""
    g = [Fraction(1)] * s
    for c in t:
        gc = _weights(c, A, s)
        g = [g[i] * sum((A[i][j] * gc[j] for j in range(len(A[i]))), Fraction(0))
             for i in range(s)]
    return g


def test_tableau_satisfies_order_conditions_exactly():
    """Dormand-Prince 1980 coefficients: B has order 5, BS order 4 (but not 5), FSAL, c = A 1."""
    A, C, B, BS = TABLEAU["A"], TABLEAU["C"], TABLEAU["B"], TABLEAU["BS"]
    s = 7
    assert [len(_trees(q)) for q in range(1, 6)] == [1, 1, 2, 4, 9]  # 17 conditions to order 5
    for i in range(s):
        assert sum(A[i], Fraction(0)) == C[i]
    assert tuple(A[6]) + (Fraction(0),) == tuple(B)  # FSAL: last stage = new solution
    for q in range(1, 6):
        for t in _trees(q):
            g = _weights(t, A, s)
            target = Fraction(1, _gamma(t))
            assert sum(B[i] * g[i] for i in range(s)) == target, (q, t)
            if q <= 4:
                assert sum(BS[i] * g[i] for i in range(s)) == target, (q, t)
    order5_bs = [sum(BS[i] * _weights(t, A, s)[i] for i in range(s)) == Fraction(1, _gamma(t))
                 for t in _trees(5)]
    assert not all(order5_bs)


@pytest.mark.parametrize("log_time", [False, True])
def test_exponential_decay(log_time):
    t = np.linspace(0.0, 5.0, 11)
    res = integrate(decay, [1.0], (1.0,), t, log_time=log_time)
    assert res.status is Status.completed and res.success and res.n_ok == t.size
    assert np.max(np.abs(res.y[:, 0] / np.exp(-t) - 1.0)) < 5e-9
    tighter = integrate(decay, [1.0], (1.0,), t, rtol=1e-11, log_time=log_time)
    assert np.max(np.abs(tighter.y[:, 0] / np.exp(-t) - 1.0)) < 1e-10
    assert tighter.nfev > res.nfev


def test_logistic_closed_form():
    z0 = 1e-3
    t = np.linspace(0.0, 10.0, 41)
    res = integrate(logistic, [z0], (2.0,), t)
    exact = 1.0 / (1.0 + (1.0 / z0 - 1.0) * np.exp(-2.0 * t))
    assert res.status is Status.completed
    assert np.max(np.abs(res.y[:, 0] - exact)) < 1e-8
    assert np.max(np.abs(res.y[:, 0] / exact - 1.0)) < 1e-8


def test_ce_margin_log_time_to_1e8_matches_dop853_and_tv13():
    """THEORY §6.5 / TV13 (K=3, n=4): p(0)=1e-3 integrated to t=1e8 in s = log(1+t)."""
    K, n = 3, 4
    c = 2.0 / (math.sqrt(n) * (K - 1))
    T = np.array([0.0, 1e2, 1e4, 1e6, 1e8])
    res = integrate(ce_margin, [1e-3], (float(K), c), T, log_time=True)
    assert res.status is Status.completed and res.n_ok == T.size

    def f(t, p):
        e = (K - 1) * np.exp(-p)
        return c * p * e / (1 + e)

    ref = solve_ivp(f, (0.0, 1e8), [1e-3], method="DOP853", rtol=1e-12, atol=1e-14, t_eval=T)
    assert ref.success
    assert np.max(np.abs(res.y[1:, 0] / ref.y[0, 1:] - 1.0)) < 1e-7
    # TV13 values (THEORY A.13, printed to 5 decimals)
    assert abs(res.y[2, 0] - 11.55196) < 1e-5
    assert abs(res.y[4, 0] - 21.43525) < 1e-5
    # A fixed step of 0.5 would need 2e8 steps; log time needs ~1.4e3 evaluations. (Adaptive
    # steps in plain t also grow with t: that run costs ~1.8e3, so the log-time gain over it is
    # modest, but real.)
    assert res.nfev < 5000
    linear = integrate(ce_margin, [1e-3], (float(K), c), T, log_time=False)
    assert linear.status is Status.completed
    assert res.nfev < linear.nfev


def test_rotation_conserves_norm():
    t = np.linspace(0.0, 50.0, 101)
    res = integrate(rotation, [1.0, 0.0], (0.0,), t, rtol=1e-10)
    assert res.status is Status.completed
    assert np.max(np.abs(np.hypot(res.y[:, 0], res.y[:, 1]) - 1.0)) < 1e-8
    assert np.max(np.abs(res.y[:, 0] - np.cos(t))) < 1e-8


def test_output_times_hit_exactly_and_shape():
    """y' = 1 from y(0) = 0 records the time at which each row was taken: y = t_eval."""
    rng = np.random.default_rng(3)
    t = np.sort(np.concatenate([[0.37, 0.37 + 1e-9], rng.uniform(0.4, 30.0, 40)]))
    res = integrate(unit_speed, [0.0], (0.0,), t)
    assert res.y.shape == (t.size, 1) and res.n_ok == t.size and res.status is Status.completed
    assert np.max(np.abs(res.y[:, 0] - t)) < 1e-13 * t.max()  # first row is t_eval[0] > 0
    # in log time the rows are at t_eval too; y' = 1 becomes dy/ds = e^s, so y = t up to rtol
    res = integrate(unit_speed, np.zeros(3), (0.0,), t, log_time=True)
    assert res.y.shape == (t.size, 3) and res.status is Status.completed
    assert np.max(np.abs(res.y[:, 1] / t - 1.0)) < 1e-8


def test_many_output_times_cost_little():
    """Clipping to an output time does not shrink the steps after it."""
    K, c = 3.0, 0.5
    few = integrate(ce_margin, [1e-3], (K, c), np.array([0.0, 1e8]), log_time=True)
    many = integrate(ce_margin, [1e-3], (K, c), np.concatenate([[0.0], np.logspace(-2, 8, 200)]),
                     log_time=True)
    assert many.status is few.status is Status.completed
    assert abs(many.y[-1, 0] - few.y[-1, 0]) < 1e-7 * few.y[-1, 0]
    assert many.nfev < few.nfev + 6 * 200  # less than one extra step per output time


def test_blow_up_stops_with_rows_before_it():
    """y' = y^2, y(0) = 1 blows up at t = 1: rows t < 1 are filled and exact, the rest NaN."""
    t = np.linspace(0.0, 2.0, 21)
    res = integrate(square, [1.0], (0.0,), t)
    assert res.status in (Status.nonfinite, Status.step_underflow) and not res.success
    assert res.n_ok == 10  # t = 0, 0.1, ..., 0.9
    assert np.all(np.isfinite(res.y[:10]))
    assert np.max(np.abs(res.y[:10, 0] * (1.0 - t[:10]) - 1.0)) < 1e-8
    assert np.all(np.isnan(res.y[10:]))
    assert "rows 10.. are NaN" in res.message


def test_max_steps_status():
    t = np.linspace(0.0, 5.0, 6)
    res = integrate(decay, [1.0], (1.0,), t, max_steps=3)
    assert res.status is Status.max_steps and res.n_ok < t.size
    assert np.all(np.isnan(res.y[res.n_ok:])) and np.all(np.isfinite(res.y[:res.n_ok]))
    assert "max_steps" in res.message
    assert res.nfev <= 2 + 6 * 3


@numba.njit(cache=True)
def still_but_nan_at_call(y, data, out):
    """y' = 0, except NaN on right-hand-side call number data[1] (data[0][0] counts the calls)."""
    calls = data[0]
    calls[0] += 1
    v = np.nan if calls[0] == data[1] else 0.0
    for i in range(y.shape[0]):
        out[i] = v


@pytest.mark.parametrize("log_time", [False, True])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("bad_call", [2, 3, 7])   # stage k2 (weight 0 in y_new and the error), k3, k7
def test_trial_step_with_a_nonfinite_stage_is_rejected(bad_call, backend, log_time):
    """A NaN stage makes the trial step fail, even k2, which enters neither the new state nor the error
    estimate (the kernel checks it where it forms stage 3's argument). The right-hand side ignores y, so
    the later stages stay finite (zero error otherwise): only the finiteness rule can reject the step.
    Call 1 is k1 at t = 0, calls 2-7 the first trial step's stages k2..k7 (h0 given: no starting-step
    calls)."""
    h0 = math.log1p(1.0) if log_time else 1.0          # one step to t = 1 when nothing goes wrong
    clean = integrate(still_but_nan_at_call, [0.0], (np.zeros(1, np.int64), 0), [0.0, 1.0], h0=h0,
                      log_time=log_time, backend=backend)
    hit = integrate(still_but_nan_at_call, [0.0], (np.zeros(1, np.int64), bad_call), [0.0, 1.0], h0=h0,
                    log_time=log_time, backend=backend)
    assert clean.success and clean.nfev == 7
    assert hit.success and hit.nfev > 7 + 6      # the first trial step was rejected and retried smaller
    assert hit.y[1, 0] == 0.0 and clean.y[1, 0] == 0.0


def test_nonfinite_derivative_at_start_is_status_2():
    res = integrate(logistic, [1.0], (np.inf,), np.array([0.0, 1.0]))
    # 1 * (1 - 1) * inf = nan at y0: the derivative is not finite
    assert res.status is Status.nonfinite and res.n_ok == 1 and res.nfev == 1


@pytest.mark.parametrize("log_time", [False, True])
def test_compiled_kernel_matches_numpy_twin(log_time):
    t = np.linspace(0.0, 20.0, 9)
    y0 = np.array([2.0, 0.0])
    Y, n_ok, nfev, status = dopri5_numpy(van_der_pol, y0, (1.5,), t, 1e-9, 1e-12, log_time,
                                         10**6, 0.0)
    res = integrate(van_der_pol, y0, (1.5,), t, log_time=log_time, backend="numba")
    assert status == 0 and res.status is Status.completed and n_ok == res.n_ok == t.size
    assert nfev == res.nfev
    assert np.max(np.abs(res.y - Y)) < 1e-12 * np.max(np.abs(Y))
    # the solution itself is right (Van der Pol has no closed form: compare with scipy)
    ref = solve_ivp(lambda s, y: [y[1], 1.5 * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, 20.0), y0,
                    method="DOP853", rtol=1e-12, atol=1e-14, t_eval=t)
    assert np.max(np.abs(res.y - ref.y.T)) < 1e-6


def test_tuple_data_with_matrix_matches_expm():
    """y' = A y + c 1 with data = (A, c): y(t) from the exponential of the augmented matrix."""
    rng = np.random.default_rng(7)
    A = -np.eye(3) + 0.6 * rng.standard_normal((3, 3))
    c = 0.25
    y0 = np.array([1.0, -0.5, 2.0])
    t = np.linspace(0.0, 4.0, 5)
    res = integrate(affine, y0, (A, c), t)
    M = np.zeros((4, 4))
    M[:3, :3], M[:3, 3] = A, c
    exact = np.array([(expm(M * ti) @ np.append(y0, 1.0))[:3] for ti in t])
    assert res.status is Status.completed
    assert np.max(np.abs(res.y - exact)) < 1e-8 * np.max(np.abs(exact))


@pytest.mark.parametrize("kwargs, match", [
    (dict(t_eval=[0.0, 1.0, 1.0]), "t_eval must be strictly increasing"),
    (dict(t_eval=[0.0, 2.0, 1.0]), "t_eval must be strictly increasing"),
    (dict(t_eval=[-1.0, 1.0]), "t_eval must be >= 0"),
    (dict(t_eval=[0.0, np.nan]), "t_eval must be finite"),
    (dict(y0=[1.0, np.nan]), "y0 must be finite"),
    (dict(y0=[[1.0]]), "y0 must be a non-empty 1-D"),
    (dict(rtol=0.0), "rtol"),
    (dict(rtol=-1e-6), "rtol"),
    (dict(rtol=1e-17), "rtol"),
    (dict(atol=0.0), "atol"),
    (dict(atol=np.inf), "atol"),
    (dict(data=[1.0]), "data must be a tuple"),
    (dict(max_steps=0), "max_steps"),
    (dict(log_time="yes"), "log_time"),
    (dict(h0=-1.0), "h0"),
    (dict(backend="cuda"), "backend"),
])
def test_bad_input_names_the_argument(kwargs, match):
    args = dict(rhs=decay, y0=[1.0], data=(1.0,), t_eval=[0.0, 1.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        integrate(**args)


@needs_jit
def test_plain_python_rhs_needs_numpy_backend():
    def rhs(y, data, out):
        out[:] = -y

    with pytest.raises(ValueError, match="rhs must be a numba.njit function"):
        integrate(rhs, [1.0], (), [0.0, 1.0])
    res = integrate(rhs, [1.0], (), [0.0, 1.0], backend="numpy")
    assert abs(res.y[1, 0] - math.exp(-1.0)) < 1e-9


@needs_jit
def test_one_kernel_per_data_layout_shared_by_every_rhs():
    """rhs enters as a first-class function type, never as a per-function Dispatcher type."""
    t = np.array([0.0, 1.0])
    integrate(decay, [1.0], (1.0,), t)
    integrate(logistic, [0.5], (1.0,), t)
    integrate(square, [0.1], (1.0,), t)
    sigs = [s for s in dopri5.signatures if s[2] == numba.typeof((1.0,))]
    assert len(sigs) == 1
    assert isinstance(sigs[0][0], numba.types.FunctionType)
    assert not any(isinstance(s[0], numba.types.Dispatcher) for s in dopri5.signatures)


@needs_jit
@pytest.mark.slow
def test_kernel_is_loaded_from_disk_cache_by_a_new_process_and_a_new_rhs():
    integrate(decay, [1.0], (1.0,), np.array([0.0, 1.0]))  # compiled (and saved) or loaded
    code = (
        "import numba, numpy as np\n"
        "from ufm._integrate import integrate, dopri5\n"
        "@numba.njit\n"
        "def g(y, data, out):\n"
        "    out[0] = -data[0] * y[0] * y[0]\n"
        "r = integrate(g, [1.0], (1.0,), np.array([0.0, 1.0]))\n"
        "print(sum(dopri5.stats.cache_hits.values()), sum(dopri5.stats.cache_misses.values()),"
        " r.status.name, repr(float(r.y[1, 0])))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in [env.get("PYTHONPATH")] if p])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=root, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    hits, misses, status, y1 = out.stdout.split()
    assert (int(hits), int(misses), status) == (1, 0, "completed")
    assert abs(float(y1) - 0.5) < 1e-9  # y' = -y^2, y(0) = 1: y(1) = 1/2


@pytest.mark.parametrize("log_time", [False, True])
@pytest.mark.parametrize("budget", [1, 7, 10**6])
def test_stepper_in_pieces_equals_one_call_to_the_last_bit(log_time, budget):
    """Stepper (what ufm.simulate's flow uses, so Ctrl-C is seen between pieces) continues exactly where it
    stopped: same states, same number of evaluations as one integrate() call, whatever the budget per call."""
    from ufm._integrate import Stepper

    y0 = np.array([2.0, 0.0])
    t = np.concatenate([[0.0], np.logspace(-1, 1.5, 12)])
    one = integrate(van_der_pol, y0, (1.5,), t, rtol=1e-8, atol=1e-10, log_time=log_time)
    st = Stepper(van_der_pol, y0, (1.5,), t[-1], rtol=1e-8, atol=1e-10, log_time=log_time)
    Y = np.full_like(one.y, np.nan)
    Y[0] = y0
    j, calls = 1, 0
    while j < len(t) and st.status is None:
        j = st.advance(t, Y, j, budget)
        calls += 1
    assert st.status is None and j == len(t) and (calls > 10 if budget == 1 else True)
    np.testing.assert_array_equal(Y, one.y)
    assert st.nfev == one.nfev
    capped = Stepper(van_der_pol, y0, (1.5,), t[-1], max_steps=3)
    assert capped.advance(t, Y, 1, 100) < len(t) and capped.status == 1 and capped.nsteps == 3
