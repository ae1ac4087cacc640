"""Every numba kernel of ``ufm``, in one file (numba's cache tracks one file per function).

Kernels are compiled lazily on first call (``@njit(cache=True)``, no
signatures), cached on disk, and specialise on the dtype of their arrays
(float64 by default, float32 on request). Each has a plain-numpy twin in
:mod:`ufm.losses` (``state_gradients`` / ``gd_reference``) that tests compare
against to 1e-10.

Layout: a batch of seeds is stacked on axis 0 (``Ws`` is S x K x d, ``Hs`` is
S x d x N, ...). :func:`ufm_gd` and :func:`icm_gd` split the seeds into one
contiguous block per thread (``numba.get_num_threads()`` of them) and run each
block through one serial kernel that releases the GIL; a seed's arithmetic does
not depend on the block it is in, so results are identical whatever
``numba.set_num_threads`` says.

Compile time (a cold cache): there is one GD kernel per model and dtype, no
``parallel=True`` variant, the rare re-evaluation of a state near overflow is
compiled only when it happens, read-only inputs are copied so that they do not
make a second specialization, and the step is inlined into its one caller (LLVM
then optimizes it once, not once more per call level). A line on stderr says
when a kernel compiles (:class:`_CompileNotice`). Small products use the explicit loops
below (no library call overhead, bitwise reproducible); products with more than
``SMALL`` multiply-adds go to BLAS through ``np.dot`` (single-threaded BLAS is
set by :func:`ufm.simulate`).

Speed notes (measured by ``benchmarks/bench_simulate.py``, results in
``benchmarks/RESULTS.md``):

* Every pass over a matrix runs along its rows (C order), so inner loops are
  contiguous and vectorise. The column softmax keeps per-column maxima and sums in
  length-N vectors instead of walking down columns (at K = N = 2048 a column walk
  cost as much as the three matrix products).
* Explicit-loop products never reduce inside the inner loop (LLVM does not
  vectorise a float sum without reassociating it), except :func:`_dot`, the one
  function compiled with ``reassoc``. When ``d > N`` the GD kernel keeps ``H^T``
  (a copy per call) so that all three products run along rows of length d: the
  logits as dot products, both gradients in one sweep over G.
* The softmax uses :func:`_exp`, a branch-free exp (Cody-Waite reduction, a
  degree-11 polynomial, within 1 ulp of numpy's exp) that LLVM vectorises; libm's
  ``exp`` is a scalar call and dominated small steps. Rows shorter than 16 run
  the exp as one flat loop over the matrix (:func:`_softmax_exps`).
* Kernels are compiled with ``fastmath={"contract"}``: LLVM may fuse ``a * b + c``
  into one FMA (one rounding instead of two). No other flag (but ``reassoc`` in
  :func:`_dot`): no assumptions about NaN or inf, so finiteness checks work, and the
  code is the same whatever the thread count, so results are too.
* The GD loop does not evaluate the objective at every step (a log per column and
  sums of squares): a seed stops at the first step whose data loss is non-finite,
  and the objective is evaluated inside the last step only (no extra product).

Loss ids: 0 = mean cross-entropy (stable log-sum-exp), 1 = ``1/(2N)||Z - Y||^2``.
"""

from __future__ import annotations

import math
import sys
import time

import numba
import numpy as np
from numba import njit
from numba.core import event as _event

from . import _threads

class _CompileNotice(_event.Listener):
    """Says on stderr when a kernel of ``ufm`` compiles (a cold numba cache), and how long it took.

    numba fires ``numba:compile`` only when it compiles (not when it loads a cached kernel);
    kernels compiled inside another's compilation are not announced separately.
    """

    def __init__(self):
        self.depth, self.t0 = 0, None

    def on_start(self, event):
        disp = event.data["dispatcher"]
        if self.depth == 0 and getattr(disp.py_func, "__module__", "").startswith("ufm"):
            self.t0 = time.perf_counter()
            print(f"ufm: compiling {disp.py_func.__name__} (first use of these argument types with this numba "
                  "cache; later calls and processes load it) ...", end="", file=sys.stderr, flush=True)
        self.depth += 1

    def on_end(self, event):
        self.depth -= 1
        if self.depth == 0 and self.t0 is not None:
            print(f" done in {time.perf_counter() - self.t0:.1f} s", file=sys.stderr, flush=True)
            self.t0 = None


_event.register("numba:compile", _CompileNotice())

#: Products with at most this many multiply-adds use the explicit loops.
SMALL = 40_000

LOSS_IDS = {"ce": 0, "mse": 1}

#: Floating-point flags of every kernel: FMA contraction only (see the module docstring).
FASTMATH = {"contract"}


# -- a vectorisable exp ----------------------------------------------------------------
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01      # fdlibm's split of log(2): n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_SHIFT = 6755399441055744.0               # 1.5 * 2**52: x + _SHIFT rounds x to an integer
_SHIFT_BITS = int(np.array(_SHIFT).view(np.int64))
# exp(r) = 1 + r + r^2 q(r) on |r| <= log(2)/2 with q of degree 9: a Chebyshev fit (mpmath
# chebyfit, 50 digits) whose error on exp is below 1.3e-17, a tenth of an ulp of exp(r)
_Q = (0.5000000000000001, 0.16666666666666669, 0.041666666666624164, 0.008333333333330065,
      0.001388888891719689, 0.00019841269863040675, 2.480152132210459e-05, 2.7557268480106926e-06,
      2.762007600563138e-07, 2.5100375929185925e-08)
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7, _Q8, _Q9 = _Q

if numba.config.DISABLE_JIT:
    def _exp(x):
        """``exp(x)`` for ``x <= 709`` (plain Python when JIT is disabled)."""
        x = float(x)
        return math.exp(max(x, -708.0)) if x == x else x
else:
    from llvmlite import ir as _ir
    from numba.core import types as _types
    from numba.extending import intrinsic

    @intrinsic
    def _f64_bits(typingctx, x):
        """The bits of a float64 as an int64 (a register reinterpretation)."""
        if x != _types.float64:
            return None

        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], _ir.IntType(64))
        return _types.int64(_types.float64), codegen

    @intrinsic
    def _bits_f64(typingctx, x):
        """The float64 with the bits of an int64."""
        if x != _types.int64:
            return None

        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], _ir.DoubleType())
        return _types.float64(_types.int64), codegen

    @njit(cache=True, fastmath=FASTMATH)
    def _exp(x):
        """``exp(x)`` in float64 for ``x <= 709`` (the softmax calls it with ``x <= 0``).

        ``x = n log 2 + r`` with ``|r| <= log(2)/2`` (Cody-Waite, fdlibm's split of log 2),
        ``exp(r) = 1 + r + r^2 q(r)`` with the degree-9 fit ``q`` (Estrin's scheme), times
        ``2**n`` written into the exponent bits. Below -708 the argument is clamped (the result
        is then 3.3e-308 instead of a subnormal or 0); NaN stays NaN. No branches and no
        calls, so loops over it vectorise. Checked when written against numpy's ``exp`` on
        2.1e6 points of [-708, 709] (at most 1 ulp apart) and against 40-digit values
        (at most 0.64 ulp).
        """
        x = float(x)
        if x < -708.0:
            x = -708.0
        t = x * _LOG2E + _SHIFT
        n = t - _SHIFT
        r = (x - n * _LN2_HI) - n * _LN2_LO
        r2 = r * r
        r4 = r2 * r2
        q = (((_Q0 + _Q1 * r) + (_Q2 + _Q3 * r) * r2) + ((_Q4 + _Q5 * r) + (_Q6 + _Q7 * r) * r2) * r4
             + (_Q8 + _Q9 * r) * (r4 * r4))
        return (1.0 + (r + r2 * q)) * _bits_f64((_f64_bits(t) - _SHIFT_BITS + 1023) << 52)


# -- dense products ------------------------------------------------------------------
# Explicit loops below SMALL multiply-adds, BLAS above. In the loops every inner loop runs
# along a contiguous row: ``A @ B`` and ``A.T @ B`` as axpys along the rows of B and C,
# ``A @ B.T`` as dot products of rows.
@njit(cache=True, fastmath={"contract", "reassoc"})
def _dot(a, b):
    """``sum_q a[q] b[q]`` for contiguous rows.

    The only function compiled with ``reassoc``: LLVM may split the sum into vector lanes
    (a fixed order, set at compile time, the same on every call and thread).
    """
    s = 0.0
    for q in range(a.shape[0]):
        s += a[q] * b[q]
    return s


@njit(cache=True, fastmath=FASTMATH)
def _mm_nn(A, B, C):
    """C = A @ B."""
    m, k = A.shape
    n = B.shape[1]
    if m * k * n > SMALL:
        np.dot(A, B, C)
        return
    for i in range(m):
        a = A[i, 0]
        for j in range(n):
            C[i, j] = a * B[0, j]
        for q in range(1, k):
            a = A[i, q]
            for j in range(n):
                C[i, j] += a * B[q, j]


@njit(cache=True, fastmath=FASTMATH)
def _mm_nt(A, B, C):
    """C = A @ B.T."""
    m, k = A.shape
    n = B.shape[0]
    if m * k * n > SMALL:
        np.dot(A, B.T, C)
        return
    for i in range(m):
        for j in range(n):
            C[i, j] = _dot(A[i], B[j])


@njit(cache=True, fastmath=FASTMATH)
def _mm_tn(A, B, C):
    """C = A.T @ B."""
    k, m = A.shape
    n = B.shape[1]
    if m * k * n > SMALL:
        np.dot(A.T, B, C)
        return
    for i in range(m):
        a = A[0, i]
        for j in range(n):
            C[i, j] = a * B[0, j]
    for q in range(1, k):
        for i in range(m):
            a = A[q, i]
            for j in range(n):
                C[i, j] += a * B[q, j]


@njit(cache=True)
def _transpose(A, AT):
    m, n = A.shape
    for i in range(m):
        for j in range(n):
            AT[j, i] = A[i, j]


# -- the loss in the logits: rows first ------------------------------------------------
#: Rows shorter than this run the softmax's exp as one flat loop over the matrix instead of
#: row by row (LLVM's vector loops take 16 float64 per trip; shorter loops run scalar).
_SHORT_ROW = 16


@njit(cache=True, fastmath=FASTMATH)
def _col_stats(Z, cmax, cacc):
    """``cmax[j]`` = maximum and ``cacc[j]`` = sum of column j of Z, in passes along rows."""
    K, N = Z.shape
    for j in range(N):
        cmax[j] = Z[0, j]
        cacc[j] = Z[0, j]
    for c in range(1, K):
        for j in range(N):
            z = Z[c, j]
            m = cmax[j]
            cacc[j] += z
            cmax[j] = z if z > m else m  # a select, not a branch: vectorises


#: Largest spread of column maxima for which short rows share one shift (see :func:`_softmax_exps`).
_ONE_SHIFT_SPREAD = 300.0


@njit(cache=True, fastmath=FASTMATH)
def _softmax_exps(Z, G, cmax, csum, cacc):
    """The exponentials of the column softmax of Z into G, their column sums into csum.

    On entry ``cmax``/``cacc`` hold the column maxima and sums of Z (:func:`_col_stats`).
    On return ``G[c, j] = exp(z_cj - cmax[j])``, ``csum[j] = 1 / (N s_j)`` with
    ``s_j = sum_c G[c, j]``, and ``cmax[j]`` is the shift that was used. Returns the check
    ``sum_j (cacc[j] + s_j)``: finite exactly when every entry of Z is.

    Rows of length >= ``_SHORT_ROW`` run along rows, each column shifted by its maximum.
    Shorter rows do not vectorise, so the exp runs as one loop over the whole matrix, with one
    shift for all columns (their largest maximum) when the maxima lie within
    ``_ONE_SHIFT_SPREAD`` of each other: then ``s_j >= exp(-300)`` and nothing over- or
    underflows (the softmax is the same up to rounding); otherwise each column is shifted first.
    """
    K, N = Z.shape
    inv_n = 1.0 / N
    for j in range(N):
        csum[j] = 0.0
    if N >= _SHORT_ROW:
        # each trip does two independent halves of the row: twice the work per load of
        # the exp's constants (they do not all fit in vector registers)
        h = N // 2
        for c in range(K):
            for j in range(h):
                e = _exp(Z[c, j] - cmax[j])
                G[c, j] = e
                csum[j] += e
                e = _exp(Z[c, j + h] - cmax[j + h])
                G[c, j + h] = e
                csum[j + h] += e
            for j in range(2 * h, N):
                e = _exp(Z[c, j] - cmax[j])
                G[c, j] = e
                csum[j] += e
    else:
        hi = cmax[0]
        lo = cmax[0]
        for j in range(1, N):
            m = cmax[j]
            hi = m if m > hi else hi
            lo = m if m < lo else lo
        flat = G.reshape(K * N)
        if hi - lo <= _ONE_SHIFT_SPREAD:
            zf = Z.reshape(K * N)
            for t in range(K * N):
                flat[t] = _exp(zf[t] - hi)
            for j in range(N):
                cmax[j] = hi
        else:
            for c in range(K):
                for j in range(N):
                    G[c, j] = Z[c, j] - cmax[j]
            for t in range(K * N):
                flat[t] = _exp(flat[t])
        for c in range(K):
            for j in range(N):
                csum[j] += G[c, j]
    check = 0.0
    for j in range(N):
        check += cacc[j] + csum[j]
        csum[j] = inv_n / csum[j]
    return check


@njit(cache=True, fastmath=FASTMATH)
def _logit_pass(Z, Y, loss_id, G, cmax, csum, cacc):
    """G = grad_Z g(Z) (mean over the N columns), in passes along rows.

    ``G`` must be C-contiguous; ``cmax``, ``csum``, ``cacc`` are length-N workspace, and
    for CE ``cmax``/``cacc`` must already hold the column maxima and sums of Z
    (:func:`_col_stats`); on return they are as :func:`_softmax_exps` leaves them. Returns
    ``check``: a number that is finite exactly when the data loss is: for CE, when every
    entry of ``Z`` is; for MSE, ``sum (z - y)^2``.
    """
    K, N = Z.shape
    inv_n = 1.0 / N
    if loss_id == 0:
        check = _softmax_exps(Z, G, cmax, csum, cacc)
        for c in range(K):
            for j in range(N):
                G[c, j] = G[c, j] * csum[j] - Y[c, j] * inv_n
        return check
    for j in range(N):
        cacc[j] = 0.0
    for c in range(K):
        for j in range(N):
            r = Z[c, j] - Y[c, j]
            cacc[j] += r * r  # the loss itself: finite unless Z is not or it overflows
            G[c, j] = r * inv_n
    check = 0.0
    for j in range(N):
        check += cacc[j]
    return check


@njit(cache=True, fastmath=FASTMATH)
def _data_loss(Z, Y, loss_id, cmax, csum):
    """g(Z) after :func:`_softmax_exps` (which left the shifts in ``cmax`` and ``csum``)."""
    K, N = Z.shape
    total = 0.0
    if loss_id == 0:
        # sum_j [lse_j - y_j . z_j] with lse_j = shift_j + log(s_j) = cmax_j - log(N csum_j)
        for j in range(N):
            total += cmax[j] - np.log(csum[j] * N)
        for c in range(K):
            total -= _dot(Y[c], Z[c])
    else:
        for c in range(K):
            for j in range(N):
                r = Z[c, j] - Y[c, j]
                total += 0.5 * r * r
    return total / N


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _logit_grad(Z, Y, loss_id, G):
    """G = grad_Z g(Z) (mean over the N columns); returns g(Z)."""
    N = Z.shape[1]
    cmax = np.empty(N, dtype=Z.dtype)
    csum = np.empty(N, dtype=Z.dtype)
    cacc = np.empty(N, dtype=Z.dtype)
    _col_stats(Z, cmax, cacc)
    _logit_pass(Z, Y, loss_id, G, cmax, csum, cacc)
    return _data_loss(Z, Y, loss_id, cmax, csum)


@njit(cache=True, fastmath=FASTMATH)
def _sumsq(A):
    """``||A||_F^2`` row by row (each row a vectorised :func:`_dot`)."""
    s = 0.0
    for i in range(A.shape[0]):
        s += _dot(A[i], A[i])
    return s


_BIG = 1e290


@njit(cache=True)
def _bounded(sW, sH, sb):
    """Whether ``||W||^2 = sW``, ``||H||^2 = sH``, ``||b||^2 = sb`` are finite and small
    enough that no logit, loss or weight-decay term can overflow (``|z| <= ||W|| ||H|| + ||b||``)."""
    return sW < _BIG and sH < _BIG and sW * sH < _BIG and sb < _BIG


# -- standard and anchored UFM -------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH)
def _add_decay(X, dX, lam):
    """dX += lam X; returns the halved decay lam/2 ||X||^2."""
    reg = 0.0
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            dX[i, j] += lam * X[i, j]
            reg += 0.5 * lam * X[i, j] * X[i, j]
    return reg


@njit(cache=True, fastmath=FASTMATH, inline="always")
def ufm_grad(W, H, b, Y, Hanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias, Z, G, dW, dH, db):
    """Gradients of the (anchored) UFM objective into dW, dH, db; returns the objective.

    ``Z`` and ``G`` (K x N, C-contiguous) are workspace.
    Twin: :func:`ufm.losses.gradients` / :func:`ufm.losses.objective`.
    """
    K, N = Z.shape
    _mm_nn(W, H, Z)
    if use_bias:
        for c in range(K):
            for j in range(N):
                Z[c, j] += b[c]
    f = _logit_grad(Z, Y, loss_id, G)
    _mm_nt(G, H, dW)
    _mm_tn(W, G, dH)
    reg = _add_decay(W, dW, lam_W) + _add_decay(H, dH, lam_H)
    if beta != 0.0:
        for i in range(H.shape[0]):
            for j in range(H.shape[1]):
                dd = H[i, j] - Hanc[i, j]
                dH[i, j] += beta * dd
                reg += 0.5 * beta * dd * dd
    if use_bias:
        for c in range(K):
            s = 0.0
            for j in range(N):
                s += G[c, j]
            db[c] = s + lam_b * b[c]
            reg += 0.5 * lam_b * b[c] * b[c]
    return f + reg


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _ufm_step(W, F, trans, b, Y, Fanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias, lr, want_f, update,
              Z, G, dW, dF, cmax, csum, cacc):
    """One GD step ``x <- x - lr grad f(x)`` in place, unless the logits are non-finite.

    ``F`` holds the features: ``H`` (d x N), or ``H^T`` (N x d) when ``trans`` (then
    ``Fanc`` is the anchor transposed and ``dF`` the gradient transposed). Returns
    ``(check, f)``: the check of :func:`_logit_pass` (not finite: nothing was changed) and,
    when ``want_f``, the objective at the state the step started from (else NaN). With
    ``update`` False it stops there: the objective only (no gradient products, no change).

    Arithmetic: that of :func:`ufm_grad` followed by the update. With ``H^T`` and sizes
    below ``SMALL`` the loops are fused: the logits as dot products of rows of W and H^T
    with the column statistics of the softmax gathered on the way, and both gradients
    ``G H^T`` and ``G^T W`` in one sweep over the entries of G, every inner loop along a row
    of length d. (Normalising the softmax inside that sweep instead of in its own pass was
    slower: it measured 1.47 against 1.18 us per step at K = N = 10, d = 16.)
    """
    K, N = Z.shape
    d = W.shape[1]
    loops = trans and K * d * N <= SMALL
    if loops:
        for i in range(K):
            bi = b[i] if use_bias else 0.0
            for j in range(N):
                z = _dot(W[i], F[j]) + bi
                Z[i, j] = z
                if i == 0:
                    cmax[j] = z
                    cacc[j] = z
                else:
                    m = cmax[j]
                    cacc[j] += z
                    cmax[j] = z if z > m else m
    else:
        if trans:
            _mm_nt(W, F, Z)
        else:
            _mm_nn(W, F, Z)
        if use_bias:
            for c in range(K):
                for j in range(N):
                    Z[c, j] += b[c]
        if loss_id == 0:
            _col_stats(Z, cmax, cacc)
    check = _logit_pass(Z, Y, loss_id, G, cmax, csum, cacc)
    if not np.isfinite(check):
        return check, np.nan
    f = np.nan
    if want_f:
        f = _data_loss(Z, Y, loss_id, cmax, csum) + 0.5 * lam_W * _sumsq(W) + 0.5 * lam_H * _sumsq(F)
        if beta != 0.0:
            reg = 0.0
            for i in range(F.shape[0]):
                for j in range(F.shape[1]):
                    dd = F[i, j] - Fanc[i, j]
                    reg += dd * dd
            f += 0.5 * beta * reg
        if use_bias:
            for c in range(K):
                f += 0.5 * lam_b * b[c] * b[c]
    if not update:
        return check, f
    if loops:
        for i in range(K):
            for q in range(d):
                dW[i, q] = 0.0
        for j in range(N):
            for q in range(d):
                dF[j, q] = 0.0
        for i in range(K):
            for j in range(N):
                g = G[i, j]
                for q in range(d):
                    dW[i, q] += g * F[j, q]
                    dF[j, q] += g * W[i, q]
    elif trans:
        _mm_nn(G, F, dW)
        _mm_tn(G, W, dF)
    else:
        _mm_nt(G, F, dW)
        _mm_tn(W, G, dF)
    for i in range(K):
        for j in range(d):
            W[i, j] -= lr * (dW[i, j] + lam_W * W[i, j])
    if beta != 0.0:
        for i in range(F.shape[0]):
            for j in range(F.shape[1]):
                F[i, j] -= lr * ((dF[i, j] + lam_H * F[i, j]) + beta * (F[i, j] - Fanc[i, j]))
    else:
        for i in range(F.shape[0]):
            for j in range(F.shape[1]):
                F[i, j] -= lr * (dF[i, j] + lam_H * F[i, j])
    if use_bias:
        for c in range(K):
            s = 0.0
            for j in range(N):
                s += G[c, j]
            b[c] -= lr * (s + lam_b * b[c])
    return check, f


# -- recording inside the GD kernels ---------------------------------------------------
#: Bits of ``rec``, what the GD kernels record themselves (see :class:`Recording`).
REC_LOSS, REC_GRAM_MEANS, REC_GRAM_W, REC_GRAM_H = 1, 2, 4, 8

#: Grams ``X X^T`` with at most this many multiply-adds (``n * n * d``) use explicit loops over
#: the upper triangle; larger ones one BLAS call (measured on 2 Xeon cores: BLAS ``X X^T`` beat
#: both the loops and BLAS on blocks of the upper triangle from n = 32, d = 64 up to n = 2048;
#: the call is now ``dsyrk``, which computes one triangle, see :func:`_syrk_rows`).
GRAM_SMALL = 20_000


def _syrk_rows(X, out):
    """``out = X X^T`` by one BLAS product (the plain-Python version, run under ``NUMBA_DISABLE_JIT=1``).

    Compiled, float64 C-contiguous ``X`` and ``out`` go to BLAS ``dsyrk`` (the overload below), which
    computes one triangle (half the multiply-adds of ``X @ X.T``) that is then mirrored; other dtypes
    and layouts to ``np.dot``.
    """
    out[...] = np.dot(X, X.T)


@njit(cache=True)
def _mirror_lower(out):
    """Copy the lower triangle of the square ``out`` onto its upper triangle, in 64 x 64 tiles
    (a plain column walk misses the cache at every element from n ~ 1000)."""
    n = out.shape[0]
    for ib in range(0, n, 64):
        for jb in range(ib, n, 64):
            for i in range(ib, min(ib + 64, n)):
                for j in range(max(jb, i + 1), min(jb + 64, n)):
                    out[i, j] = out[j, i]


if not numba.config.DISABLE_JIT:
    import llvmlite.binding as _llvm
    from numba.core import cgutils as _cgutils
    from numba.extending import get_cython_function_address, overload

    # The dsyrk of the BLAS that numba's own np.dot calls (scipy.linalg.cython_blas), under a
    # name of ours: compiled code refers to it by that name, so cached kernels link to it in
    # every process (a ctypes pointer would be a constant address, which numba cannot cache).
    _llvm.add_symbol("ufm_cython_blas_dsyrk", get_cython_function_address("scipy.linalg.cython_blas", "dsyrk"))

    @intrinsic
    def _dsyrk_lower(typingctx, X, out):
        """BLAS ``dsyrk``: the lower triangle (row-major) of ``out`` (n x n) = ``X X^T``, X (n x d).

        Both float64 and C-contiguous. In BLAS's column-major terms the rows of X are the columns of
        the d x n matrix ``A`` and ``out`` is ``C = A^T A`` (``trans = 'T'``), upper triangle
        (``uplo = 'U'``), which is the lower triangle read in row-major order.
        """
        ok = all(isinstance(a, _types.Array) and a.ndim == 2 and a.layout == "C" and a.dtype == _types.float64
                 for a in (X, out))
        if not ok:
            return None

        def codegen(context, builder, sig, args):
            xa = context.make_array(sig.args[0])(context, builder, args[0])
            oa = context.make_array(sig.args[1])(context, builder, args[1])
            i8, i32, f64 = _ir.IntType(8), _ir.IntType(32), _ir.DoubleType()
            n = builder.trunc(builder.extract_value(xa.shape, 0), i32)
            d = builder.trunc(builder.extract_value(xa.shape, 1), i32)

            def slot(ty, value):
                ptr = _cgutils.alloca_once(builder, ty)
                builder.store(value, ptr)
                return ptr

            one = i32(1)
            lda = builder.select(builder.icmp_signed(">", d, one), d, one)
            ldc = builder.select(builder.icmp_signed(">", n, one), n, one)
            fnty = _ir.FunctionType(_ir.VoidType(), [i8.as_pointer(), i8.as_pointer(), i32.as_pointer(),
                                                     i32.as_pointer(), f64.as_pointer(), f64.as_pointer(),
                                                     i32.as_pointer(), f64.as_pointer(), f64.as_pointer(),
                                                     i32.as_pointer()])
            fn = _cgutils.get_or_insert_function(builder.module, fnty, "ufm_cython_blas_dsyrk")
            builder.call(fn, [slot(i8, i8(ord("U"))), slot(i8, i8(ord("T"))), slot(i32, n), slot(i32, d),
                              slot(f64, f64(1.0)), xa.data, slot(i32, lda), slot(f64, f64(0.0)), oa.data,
                              slot(i32, ldc)])
            return context.get_dummy_value()
        return _types.none(X, out), codegen

    @overload(_syrk_rows)
    def _syrk_rows_compiled(X, out):
        if all(isinstance(a, _types.Array) and a.layout == "C" and a.dtype == _types.float64 for a in (X, out)):
            def impl(X, out):
                _dsyrk_lower(X, out)
                _mirror_lower(out)
            return impl

        def impl(X, out):
            t = np.dot(X, X.T)
            for i in range(X.shape[0]):
                for j in range(X.shape[0]):
                    out[i, j] = t[i, j]
        return impl


@njit(cache=True, fastmath=FASTMATH)
def _gram_rows(X, out):
    """``out = X X^T`` (float64) from the rows of X.

    Small: one :func:`_dot` per pair of rows of the upper triangle, mirrored. Large: one BLAS
    ``dsyrk`` (:func:`_syrk_rows`: one triangle, mirrored). A Gram of n rows of length d costs
    ``n^2 d / 2`` multiply-adds this way, a sixth of a GD step's products when it is the K x K
    or N x N Gram and K = N (a full product ``X @ X.T`` would cost twice that).
    """
    n, d = X.shape
    if n * n * d <= GRAM_SMALL:
        for i in range(n):
            for j in range(i, n):
                v = _dot(X[i], X[j])
                out[i, j] = v
                out[j, i] = v
        return
    _syrk_rows(X, out)


@njit(cache=True, fastmath=FASTMATH)
def _feature_grams(F, rows, rec, s, row, yidx, inv_cnt, Ft, MT, gm_out, gh_out):
    """The feature Grams ``rec`` asks for, of seed ``s`` into row ``row`` of the records.

    ``F`` holds the features as rows (``H^T``, N x d) when ``rows``, else as ``H`` (d x N; it is
    transposed into ``Ft`` first). Class means: ``MT[c] = inv_cnt[c] * sum_{j: yidx[j] = c} h_j``;
    ``gram_means = MT MT^T`` (uncentred, as ``ufm.simulate`` records it); ``gram_H = H^T H``.
    """
    if rows:
        X = F
    else:
        _transpose(F, Ft)
        X = Ft
    if rec & REC_GRAM_H:
        _gram_rows(X, gh_out[s, row])
    if rec & REC_GRAM_MEANS:
        K, d = MT.shape
        for c in range(K):
            for q in range(d):
                MT[c, q] = 0.0
        for j in range(X.shape[0]):
            c = yidx[j]
            for q in range(d):
                MT[c, q] += X[j, q]
        for c in range(K):
            w = inv_cnt[c]
            for q in range(d):
                MT[c, q] *= w
        _gram_rows(MT, gm_out[s, row])


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _ufm_seeds(Ws, Hs, bs, Y, Hanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias, lr, n_steps,
               rec, rec_off, rec_row, yidx, inv_cnt, loss_out, gm_out, gw_out, gh_out, ran, lo, hi, last, redo):
    """``n_steps`` of GD for seeds ``lo .. hi-1``, one after the other, with one workspace.

    Writes ``last[s]`` as :func:`ufm_gd` returns it; a final state near overflow (``|z|``
    could exceed 1e145) gets ``redo[s] = True`` and is evaluated outside (:func:`ufm_gd`).

    Records (``rec`` bits, :class:`Recording`): at offset ``rec_off[r]`` (sorted, in
    ``0 .. n_steps``) the state after that many steps goes to row ``rec_row[r]``. The loss is
    the objective the step evaluates at its start (no extra work but a log per column); the
    Grams are taken from the state before the step's update; offset ``n_steps`` (the end) runs
    the step once more without its update (the logits only). ``ran[s]`` is the first offset
    whose logits were non-finite (``n_steps + 1`` when none was).
    """
    K, d = Ws.shape[1], Ws.shape[2]
    N = Hs.shape[2]
    trans = d > N
    Z = np.empty((K, N), dtype=Ws.dtype)
    G = np.empty((K, N), dtype=Ws.dtype)
    dW = np.empty((K, d), dtype=Ws.dtype)
    cmax = np.empty(N, dtype=Ws.dtype)
    csum = np.empty(N, dtype=Ws.dtype)
    cacc = np.empty(N, dtype=Ws.dtype)
    feat = (rec & (REC_GRAM_MEANS | REC_GRAM_H)) != 0
    Ft = np.empty((N if feat and not trans else 0, d), dtype=Ws.dtype)
    MT = np.empty((K if rec & REC_GRAM_MEANS else 0, d), dtype=Ws.dtype)
    if trans:
        F = np.empty((N, d), dtype=Ws.dtype)
        dF = np.empty((N, d), dtype=Ws.dtype)
        if beta != 0.0:
            Fanc = np.empty((N, d), dtype=Hanc.dtype)
            _transpose(Hanc, Fanc)
        else:
            Fanc = Hanc
    else:
        F = Hs[lo]
        dF = np.empty((d, N), dtype=Ws.dtype)
        Fanc = Hanc
    nrec = rec_off.shape[0]
    total = n_steps + 1 if nrec > 0 and rec_off[nrec - 1] == n_steps else n_steps
    for s in range(lo, hi):
        W, H, b = Ws[s], Hs[s], bs[s]
        if trans:
            _transpose(H, F)
        else:
            F = H
        check, f, flast = 0.0, np.nan, np.nan
        r = 0
        ran[s] = n_steps + 1
        for it in range(total):
            at = r < nrec and rec_off[r] == it
            if at:
                if rec & REC_GRAM_W:
                    _gram_rows(W, gw_out[s, rec_row[r]])
                if feat:
                    _feature_grams(F, trans, rec, s, rec_row[r], yidx, inv_cnt, Ft, MT, gm_out, gh_out)
            if it < n_steps or rec & REC_LOSS:
                check, f = _ufm_step(W, F, trans, b, Y, Fanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias, lr,
                                     (at and (rec & REC_LOSS) != 0) or it >= n_steps - 1, it < n_steps,
                                     Z, G, dW, dF, cmax, csum, cacc)
            if not np.isfinite(check):
                ran[s] = it
                break
            if at:
                if rec & REC_LOSS:
                    loss_out[s, rec_row[r]] = f
                r += 1
            if it == n_steps - 1:
                flast = f
        if trans:
            _transpose(F, H)
        redo[s] = False
        if not np.isfinite(check):
            last[s] = check
        elif _bounded(_sumsq(W), _sumsq(H), _sumsq(b.reshape((1, K))) if use_bias else 0.0):
            last[s] = flast
        else:
            last[s] = np.nan
            redo[s] = True


class Recording:
    """What a GD kernel call records itself, and where (the records of ``ufm.simulate``).

    ``rec`` is a bit mask of :data:`REC_LOSS`, :data:`REC_GRAM_MEANS`, :data:`REC_GRAM_W`,
    :data:`REC_GRAM_H`; ``objective`` (seeds x T), ``gram_means`` / ``gram_W`` (seeds x T x K x K)
    and ``gram_H`` (seeds x T x N x N) are float64 arrays written in place (``None`` for those
    not recorded); ``y`` / ``counts`` are the hard labels (for the class means). Each call
    records the rows :meth:`at` sets: ``offsets`` (steps after the call's start) and ``rows``.
    After a call ``ran[s]`` is the first offset at which seed ``s`` had non-finite logits
    (``n_steps + 1`` when none).
    """

    _NONE2 = np.full((1, 1), np.nan)
    _NONE4 = np.full((1, 1, 1, 1), np.nan)

    def __init__(self, seeds, rec=0, objective=None, gram_means=None, gram_W=None, gram_H=None, y=None, counts=None):
        self.rec = int(rec)
        self.objective = self._NONE2 if objective is None else objective
        self.gram_means = self._NONE4 if gram_means is None else gram_means
        self.gram_W = self._NONE4 if gram_W is None else gram_W
        self.gram_H = self._NONE4 if gram_H is None else gram_H
        self.y = np.zeros(1, np.int64) if y is None else np.array(y, dtype=np.int64)   # a writable copy: one type
        self.inv_counts = (np.ones(1) if counts is None
                           else 1.0 / np.asarray(counts, dtype=np.float64))
        self.offsets = np.zeros(0, np.int64)
        self.rows = np.zeros(0, np.int64)
        self.ran = np.empty(seeds, np.int64)

    def at(self, offsets, rows):
        """Record the states ``offsets`` steps after the next call's start into ``rows``."""
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self.rows = np.ascontiguousarray(rows, dtype=np.int64)

    def args(self):
        return (self.rec if self.offsets.size else 0, self.offsets, self.rows, self.y, self.inv_counts, self.objective,
                self.gram_means, self.gram_W, self.gram_H, self.ran)


def _writable(a):
    """``a``, or a copy when it is read-only: numba compiles read-only arrays as a separate type
    (a second specialization of every kernel), and problems hand out read-only arrays."""
    return a if a.flags.writeable else a.copy()


_POOL = None


def _in_blocks(kernel, S, *args):
    """Run ``kernel(*args, lo, hi, last, redo)`` over seeds ``0 .. S-1`` in contiguous blocks.

    One block per thread, ``min(ufm._threads.seed_threads(), S)`` threads (``numba.get_num_threads()``
    capped by the thread variables, the usable CPUs and an enclosing worker pool): the calling thread runs
    the first block, a pool of Python threads the others (the kernels release the GIL). Each
    block is one task with one workspace; there is no parallel (``prange``) variant to compile,
    and every seed runs the same compiled code whatever the thread count.
    """
    global _POOL
    last = np.empty(S, dtype=np.float64)
    redo = np.zeros(S, dtype=np.bool_)
    T = min(_threads.seed_threads(), S) if S > 1 else 1
    if T <= 1:
        kernel(*args, 0, S, last, redo)
        return last, redo
    if _POOL is None or _POOL._max_workers < T - 1:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=T - 1, thread_name_prefix="ufm-seeds")
    jobs = [_POOL.submit(kernel, *args, t * S // T, (t + 1) * S // T, last, redo) for t in range(1, T)]
    try:
        kernel(*args, 0, S // T, last, redo)
    finally:
        for job in jobs:
            job.result()
    return last, redo


def ufm_gd(Ws, Hs, bs, Y, Hanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias, lr, n_steps, recording=None):
    """``n_steps`` of plain GD for every seed, in place (recording what ``recording`` asks, see
    :class:`Recording`).

    Returns, per seed, the objective at the start of its last step (evaluated inside that
    step, so it costs no extra matrix product), or a NaN or inf when the run went non-finite:
    a seed stops at the first step whose data loss is not finite (see :func:`_logit_pass`),
    and a final state whose objective is not finite returns that objective (checked through
    ``|z| <= ||W|| ||H|| + ||b||``; only a state near overflow costs an extra evaluation,
    by :func:`ufm_grad`, compiled only if that ever happens).

    Works on ``H^T`` when ``d > N`` (see :func:`_ufm_step`). Seeds run in one contiguous
    block per thread (:func:`_in_blocks`), all through the one compiled kernel
    :func:`_ufm_seeds`, so results do not depend on the thread count.
    """
    S = Ws.shape[0]
    Hanc = _writable(Hanc)
    if recording is None:
        recording = Recording(S)
    last, redo = _in_blocks(_ufm_seeds, S, Ws, Hs, bs, _writable(Y), Hanc, lam_W, lam_H, lam_b, beta, loss_id,
                            use_bias, lr, n_steps, *recording.args())
    for s in np.flatnonzero(redo):   # the final state may be past overflow: its objective, one product more
        K, d, N = Ws.shape[1], Ws.shape[2], Hs.shape[2]
        Z, G = np.empty((K, N), Ws.dtype), np.empty((K, N), Ws.dtype)
        dW, dH, db = np.empty((K, d), Ws.dtype), np.empty((d, N), Ws.dtype), np.zeros(K, Ws.dtype)
        last[s] = ufm_grad(Ws[s], Hs[s], bs[s], Y, Hanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias, Z, G, dW,
                           dH, db)
    return last


@njit(cache=True)
def ufm_flow_rhs(y, data, out):
    """Gradient-flow velocity ``-grad f`` of the (anchored) UFM for a flat state ``y = [W, H, b]``."""
    K, d, N, Y, Hanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias = data
    W = y[:K * d].reshape((K, d))
    H = y[K * d:K * d + d * N].reshape((d, N))
    dW = out[:K * d].reshape((K, d))
    dH = out[K * d:K * d + d * N].reshape((d, N))
    if use_bias:
        b = y[K * d + d * N:]
        db = out[K * d + d * N:]
    else:
        b = np.zeros(K)
        db = np.zeros(K)
    Z = np.empty((K, N))
    G = np.empty((K, N))
    ufm_grad(W, H, b, Y, Hanc, lam_W, lam_H, lam_b, beta, loss_id, use_bias, Z, G, dW, dH, db)
    for i in range(out.shape[0]):
        out[i] = -out[i]


# -- input-coupled UFM ---------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH, inline="always")
def icm_grad(W, A, Phi, Y, lam_W, lam_A, lam_H, loss_id, H, Z, G, T, dW, dA):
    """Gradients of ``g(W A Phi) + lam_W/2||W||^2 + lam_H/2||A Phi||^2 + lam_A/2||A||^2`` into dW, dA;
    returns the objective (THEORY §8.2, §8.2b).

    ``T`` (d x N) is workspace for ``W^T G + lam_H H`` (``dA = T Phi^T + lam_A A``).
    Twin: :func:`ufm.losses.input_coupled_gradients`.
    """
    _mm_nn(A, Phi, H)
    _mm_nn(W, H, Z)
    f = _logit_grad(Z, Y, loss_id, G)
    _mm_nt(G, H, dW)
    _mm_tn(W, G, T)
    if lam_H != 0.0:
        f += _add_decay(H, T, lam_H)
    _mm_nt(T, Phi, dA)
    return f + _add_decay(W, dW, lam_W) + _add_decay(A, dA, lam_A)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _icm_step(W, A, Phi, Y, lam_W, lam_A, lam_H, loss_id, lr, want_f, update, H, Z, G, T, dW, dA, cmax, csum,
              cacc):
    """One GD step on (W, A) in place unless the logits are non-finite; returns ``(check, f)``
    as :func:`_ufm_step` does (``update`` False: the objective only). ``H`` is left holding
    ``A Phi`` of the state the step started from (the recorders read it)."""
    _mm_nn(A, Phi, H)
    _mm_nn(W, H, Z)
    if loss_id == 0:
        _col_stats(Z, cmax, cacc)
    check = _logit_pass(Z, Y, loss_id, G, cmax, csum, cacc)
    if not np.isfinite(check):
        return check, np.nan
    f = np.nan
    if want_f:
        f = _data_loss(Z, Y, loss_id, cmax, csum) + 0.5 * lam_W * _sumsq(W) + 0.5 * lam_A * _sumsq(A)
        if lam_H != 0.0:
            f += 0.5 * lam_H * _sumsq(H)
    if not update:
        return check, f
    _mm_nt(G, H, dW)
    _mm_tn(W, G, T)
    if lam_H != 0.0:                   # the feature penalty: dA = (W^T G + lam_H H) Phi^T + lam_A A
        for i in range(T.shape[0]):
            for j in range(T.shape[1]):
                T[i, j] += lam_H * H[i, j]
    _mm_nt(T, Phi, dA)
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            W[i, j] -= lr * (dW[i, j] + lam_W * W[i, j])
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            A[i, j] -= lr * (dA[i, j] + lam_A * A[i, j])
    return check, f


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _icm_seeds(Ws, As, Phi, Y, lam_W, lam_A, lam_H, loss_id, lr, n_steps, rec, rec_off, rec_row, yidx, inv_cnt,
               loss_out, gm_out, gw_out, gh_out, ran, lo, hi, last, redo):
    """``n_steps`` of GD on (W, A) for seeds ``lo .. hi-1`` with one workspace (see :func:`_ufm_seeds`).

    The feature Grams are taken from the step's own ``H = A Phi`` (the state the step started from).
    """
    K, d = Ws.shape[1], Ws.shape[2]
    p, N = Phi.shape
    H = np.empty((d, N), dtype=Ws.dtype)
    Z = np.empty((K, N), dtype=Ws.dtype)
    G = np.empty((K, N), dtype=Ws.dtype)
    T = np.empty((d, N), dtype=Ws.dtype)
    dW = np.empty((K, d), dtype=Ws.dtype)
    dA = np.empty((d, p), dtype=Ws.dtype)
    cmax = np.empty(N, dtype=Ws.dtype)
    csum = np.empty(N, dtype=Ws.dtype)
    cacc = np.empty(N, dtype=Ws.dtype)
    feat = (rec & (REC_GRAM_MEANS | REC_GRAM_H)) != 0
    Ft = np.empty((N if feat else 0, d), dtype=Ws.dtype)
    MT = np.empty((K if rec & REC_GRAM_MEANS else 0, d), dtype=Ws.dtype)
    nrec = rec_off.shape[0]
    total = n_steps + 1 if nrec > 0 and rec_off[nrec - 1] == n_steps else n_steps
    for s in range(lo, hi):
        W, A = Ws[s], As[s]
        check, f, flast = 0.0, np.nan, np.nan
        r = 0
        ran[s] = n_steps + 1
        for it in range(total):
            at = r < nrec and rec_off[r] == it
            if at and rec & REC_GRAM_W:
                _gram_rows(W, gw_out[s, rec_row[r]])
            check, f = _icm_step(W, A, Phi, Y, lam_W, lam_A, lam_H, loss_id, lr,
                                 (at and (rec & REC_LOSS) != 0) or it >= n_steps - 1, it < n_steps,
                                 H, Z, G, T, dW, dA, cmax, csum, cacc)
            if not np.isfinite(check):
                ran[s] = it
                break
            if at:
                if feat:
                    _feature_grams(H, False, rec, s, rec_row[r], yidx, inv_cnt, Ft, MT, gm_out, gh_out)
                if rec & REC_LOSS:
                    loss_out[s, rec_row[r]] = f
                r += 1
            if it == n_steps - 1:
                flast = f
        redo[s] = False
        if not np.isfinite(check):
            last[s] = check
        elif _bounded(_sumsq(W), _sumsq(A) * _sumsq(Phi), 0.0) and _sumsq(A) < _BIG:
            last[s] = flast
        else:
            last[s] = np.nan
            redo[s] = True


def icm_gd(Ws, As, Phi, Y, lam_W, lam_A, lam_H, loss_id, lr, n_steps, recording=None):
    """``n_steps`` of plain GD on (W, A) for every seed, in place, recording what ``recording``
    asks; returns what :func:`ufm_gd` does (:func:`icm_grad` for a state near overflow).
    ``lam_H`` is the feature penalty ``lam_H/2 ||A Phi||^2`` (THEORY §8.2b; 0 for M2)."""
    S = Ws.shape[0]
    Phi = _writable(Phi)
    if recording is None:
        recording = Recording(S)
    last, redo = _in_blocks(_icm_seeds, S, Ws, As, Phi, _writable(Y), float(lam_W), float(lam_A), float(lam_H),
                            loss_id, lr, n_steps, *recording.args())
    for s in np.flatnonzero(redo):
        K, d = Ws.shape[1], Ws.shape[2]
        p, N = Phi.shape
        H, T = np.empty((d, N), Ws.dtype), np.empty((d, N), Ws.dtype)
        Z, G = np.empty((K, N), Ws.dtype), np.empty((K, N), Ws.dtype)
        dW, dA = np.empty((K, d), Ws.dtype), np.empty((d, p), Ws.dtype)
        last[s] = icm_grad(Ws[s], As[s], Phi, Y, float(lam_W), float(lam_A), float(lam_H), loss_id, H, Z, G, T, dW,
                           dA)
    return last


@njit(cache=True)
def icm_flow_rhs(y, data, out):
    """Gradient-flow velocity ``-grad f`` of the input-coupled UFM for a flat state ``y = [W, A]``
    (``lam_H``: the feature penalty of THEORY §8.2b)."""
    K, d, p, Phi, Y, lam_W, lam_A, lam_H, loss_id = data
    N = Phi.shape[1]
    W = y[:K * d].reshape((K, d))
    A = y[K * d:].reshape((d, p))
    dW = out[:K * d].reshape((K, d))
    dA = out[K * d:].reshape((d, p))
    H = np.empty((d, N))
    Z = np.empty((K, N))
    G = np.empty((K, N))
    T = np.empty((d, N))
    icm_grad(W, A, Phi, Y, lam_W, lam_A, lam_H, loss_id, H, Z, G, T, dW, dA)
    for i in range(out.shape[0]):
        out[i] = -out[i]


# -- input-coupled UFM, Gram-level flows for fitting (ufm.bridge.m2) -----------------------
@njit(cache=True, fastmath=FASTMATH, inline="always")
def _m2_logit_grad(Z, loss_id, G):
    """``G = grad_Z g(Z)`` for distinct labels ``Y = I_K`` (mean over the K columns): CE or MSE."""
    K = Z.shape[0]
    inv = 1.0 / K
    if loss_id == 0:
        for j in range(K):
            m = Z[0, j]
            for i in range(1, K):
                if Z[i, j] > m:
                    m = Z[i, j]
            s = 0.0
            for i in range(K):
                e = math.exp(Z[i, j] - m)
                G[i, j] = e
                s += e
            f = inv / s
            for i in range(K):
                G[i, j] *= f
            G[j, j] -= inv
    else:
        for i in range(K):
            for j in range(K):
                G[i, j] = Z[i, j] * inv
            G[i, i] -= inv


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _m2_kernel_velocity(W, H, Kx, lam_W, lam_A, lam_H, loss_id, G, dW, dH):
    """``dW = -G H^T - lam_W W`` and ``dH = -(W^T G + lam_H H) K_x - lam_A H`` at ``G = grad_Z g(W H)``."""
    K, d = W.shape
    _m2_logit_grad(np.dot(W, H), loss_id, G)
    GH = np.dot(G, H.T)
    T = np.dot(W.T, G)
    if lam_H != 0.0:
        for i in range(d):
            for j in range(K):
                T[i, j] += lam_H * H[i, j]
    WG = np.dot(T, Kx)
    for i in range(K):
        for j in range(d):
            dW[i, j] = -GH[i, j] - lam_W * W[i, j]
    for i in range(d):
        for j in range(K):
            dH[i, j] = -WG[i, j] - lam_A * H[i, j]


@njit(cache=True)
def m2_kernel_flow_rhs(y, data, out):
    """Velocity of the kernel flow of M2 / M2-H with distinct labels, flat state ``y = [W (K x d), H (d x K)]``.

    ``dW/dt = -G H^T - lam_W W``, ``dH/dt = -(W^T G + lam_H H) K_x - lam_A H`` with
    ``G = grad_Z g(W H)``, ``Y = I_K``: the flow of ``(W, A)`` under the halved decays
    ``lam_W/2 ||W||^2 + lam_A/2 ||A||^2 + lam_H/2 ||A Phi||^2`` seen through ``H = A Phi``
    (``K_x = Phi^T Phi``); only ``K_x`` enters (THEORY §8.2, §8.2b).
    ``data = (K, d, K_x, lam_W, lam_A, lam_H, loss_id)``.
    Twin: :func:`ufm.bridge.m2.kernel_flow_rhs_numpy`.
    """
    K, d, Kx, lam_W, lam_A, lam_H, loss_id = data
    W = y[:K * d].reshape((K, d))
    H = y[K * d:].reshape((d, K))
    G = np.empty((K, K))
    _m2_kernel_velocity(W, H, Kx, lam_W, lam_A, lam_H, loss_id, G, out[:K * d].reshape((K, d)),
                        out[K * d:].reshape((d, K)))


@njit(cache=True)
def m2_kernel_gd(y0, data, lr, rec, grams):
    """Plain GD with step ``lr`` of M2 / M2-H seen through ``H = A Phi`` (the map ``H <- H + lr dH``,
    ``W <- W + lr dW`` with the velocities of :func:`m2_kernel_flow_rhs`: exactly GD on ``(W, A)``).

    Records the feature Gram ``H^T H`` after ``rec[i]`` steps into ``grams[i]`` (``rec`` sorted,
    non-negative integers). Returns how many records were written: fewer than ``len(rec)`` when the
    state stopped being finite. ``data`` as for :func:`m2_kernel_flow_rhs`.
    """
    K, d, Kx, lam_W, lam_A, lam_H, loss_id = data
    W = y0[:K * d].copy().reshape((K, d))
    H = y0[K * d:].copy().reshape((d, K))
    G = np.empty((K, K))
    dW = np.empty((K, d))
    dH = np.empty((d, K))
    n = 0
    for i in range(rec.shape[0]):
        while n < rec[i]:
            _m2_kernel_velocity(W, H, Kx, lam_W, lam_A, lam_H, loss_id, G, dW, dH)
            for a in range(K):
                for b in range(d):
                    W[a, b] += lr * dW[a, b]
            for a in range(d):
                for b in range(K):
                    H[a, b] += lr * dH[a, b]
            n += 1
        S = np.dot(H.T, H)
        tot = 0.0
        for a in range(K):
            for b in range(K):
                grams[i, a, b] = S[a, b]
                tot += S[a, b]
        if not math.isfinite(tot):
            return i
    return rec.shape[0]


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _m2_pattern_grad(P, Pinv, valency, z, loss_id, K, gam):
    """Eigenvalues ``gam`` of ``G = grad_Z g(Z)`` for ``Z`` in the pattern algebra with eigenvalues ``z``.

    The softmax is taken on the pattern values ``zeta = P^-1 z`` (every column of ``Z`` holds the
    same values, with multiplicities ``valency``)."""
    R = valency.shape[0]
    zeta = np.dot(Pinv, z)
    g = np.empty(R)
    inv = 1.0 / K
    if loss_id == 0:
        m = zeta[0]
        for r in range(1, R):
            if zeta[r] > m:
                m = zeta[r]
        tot = 0.0
        for r in range(R):
            g[r] = math.exp(zeta[r] - m)
            tot += valency[r] * g[r]
        for r in range(R):
            g[r] = g[r] / tot * inv
    else:
        for r in range(R):
            g[r] = zeta[r] * inv
    g[0] -= inv
    res = np.dot(P, g)
    for r in range(R):
        gam[r] = res[r]


@njit(cache=True)
def m2_pattern_flow_rhs(y, data, out):
    """Velocity of the M2 / M2-H kernel flow inside the pattern algebra, ``y = [z, p, s]`` (eigenvalues, R each).

    ``z, p, s`` are the eigenvalues of ``Z = W H``, ``P = W W^T`` and
    ``S = H^T H`` on the algebra's idempotents (``ufm.bridge.patterns``); with
    ``k`` those of ``K_x`` and ``gamma`` those of ``G = grad_Z g(Z)``, and
    ``a = lam_A + lam_H k`` the feature decay on each idempotent:
    ``dz = -gamma s - p gamma k - (lam_W + a) z``,
    ``dp = -2 gamma z - 2 lam_W p``, ``ds = -2 k gamma z - 2 a s`` (THEORY §8.2, §8.2b).
    ``data = (P, P_inv, valency, k, lam_W, lam_A, lam_H, loss_id, K)``.
    Twin: :func:`ufm.bridge.m2.pattern_flow_rhs_numpy`.
    """
    P, Pinv, valency, k, lam_W, lam_A, lam_H, loss_id, K = data
    R = valency.shape[0]
    gam = np.empty(R)
    _m2_pattern_grad(P, Pinv, valency, y[:R], loss_id, K, gam)
    for j in range(R):
        z, p, s = y[j], y[R + j], y[2 * R + j]
        a = lam_A + lam_H * k[j]
        out[j] = -gam[j] * (s + p * k[j]) - (lam_W + a) * z
        out[R + j] = -2.0 * gam[j] * z - 2.0 * lam_W * p
        out[2 * R + j] = -2.0 * k[j] * gam[j] * z - 2.0 * a * s


@njit(cache=True)
def m2_pattern_gd(y0, data, lr, rec, out):
    """Plain GD with step ``lr`` of M2 / M2-H inside the pattern algebra (exact: GD on ``(W, A)`` keeps
    ``Z``, ``P``, ``S`` in the algebra when it starts there).

    One step, with ``u = 1 - lr lam_W`` and ``v = 1 - lr (lam_A + lam_H k)`` per idempotent::

        z' = u v z - lr u p gam k - lr v gam s + lr^2 gam^2 z k
        p' = u^2 p - 2 lr u gam z + lr^2 gam^2 s
        s' = v^2 s - 2 lr v k gam z + lr^2 k^2 gam^2 p

    Records the state ``[z, p, s]`` after ``rec[i]`` steps into ``out[i]`` (``rec`` sorted,
    non-negative integers). Returns how many records were written: fewer than ``len(rec)`` when the
    state stopped being finite. ``data`` as for :func:`m2_pattern_flow_rhs`.
    """
    P, Pinv, valency, k, lam_W, lam_A, lam_H, loss_id, K = data
    R = valency.shape[0]
    z = y0[:R].copy()
    p = y0[R:2 * R].copy()
    s = y0[2 * R:].copy()
    gam = np.empty(R)
    u = 1.0 - lr * lam_W
    n = 0
    for i in range(rec.shape[0]):
        while n < rec[i]:
            _m2_pattern_grad(P, Pinv, valency, z, loss_id, K, gam)
            for j in range(R):
                v = 1.0 - lr * (lam_A + lam_H * k[j])
                g = gam[j]
                zj, pj, sj = z[j], p[j], s[j]
                z[j] = u * v * zj - lr * u * pj * g * k[j] - lr * v * g * sj + lr * lr * g * g * zj * k[j]
                p[j] = u * u * pj - 2.0 * lr * u * g * zj + lr * lr * g * g * sj
                s[j] = v * v * sj - 2.0 * lr * v * k[j] * g * zj + lr * lr * k[j] * k[j] * g * g * pj
            n += 1
        tot = 0.0
        for j in range(R):
            out[i, j] = z[j]
            out[i, R + j] = p[j]
            out[i, 2 * R + j] = s[j]
            tot += z[j] + p[j] + s[j]
        if not math.isfinite(tot):
            return i
    return rec.shape[0]
