"""The compiled loops of :mod:`neurocli.engines.compiled` (imported only through it: numba
is an optional extra). Each loop is the paper's sum over samples as it reads.

``FAST`` lets the compiler reorder a sum (``reassoc``: vector lanes) and fuse a multiply and an
add (``contract``); nothing lets it assume a value is finite, so an overflow shows as in numpy.
The loop over batches is compiled without them: the epoch's sums are added batch by batch,
in batch order, as the numpy kernel adds them.
"""

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

FAST = {"reassoc", "contract", "nsz"}
# Samples per piece of a block: a piece of X stays in the core's first-level cache between its
# two reads (a fixed number: the bits must not depend on the machine).
PIECE = 512
# Rows ahead of the row loop whose cache lines are asked for (the hardware's prefetch alone
# left the loop at 1.1-1.2x one X @ w on wide X, this at 1.0x)
PREFETCH_ROWS = 8
# Rows ahead of a shuffled gather whose cache lines are asked for: rows in random order wait
# on memory one by one otherwise (1,000,000 x 32: an epoch of 80-99 ms, 50-65 ms with it)
GATHER_AHEAD = 32
_jit = dict(nogil=True, cache=True, error_model="numpy", boundscheck=False)


@numba.njit(fastmath=FAST, **_jit)
def block_sums(XT, k0, k1, y, w, b, zero, z, grad_parts, sums, rows, piece):
    """Blocks ``k0`` to ``k1 - 1`` of ``rows`` samples (block k: columns ``k rows`` on of
    ``XT``, X transposed, and the same entries of y): per block ``z = X_k w + b``,
    ``r = max(0, z) - y``, ``g = r 1[z > 0]``; row k of ``grad_parts`` gets ``X_k^T g`` and
    row k of ``sums`` ``(r.r, sum |r|, sum g, active count)``. ``zero``: 0 in X's dtype. A
    block goes in pieces of ``piece`` samples, each read from memory once, then from cache."""
    d, m = XT.shape
    grad = np.empty(d)
    for kb in range(k0, k1):
        lo = kb * rows
        hi = min(lo + rows, m)
        sq, ab, gs, act = zero, zero, zero, 0
        for c in range(d):
            grad[c] = 0.0
        for p0 in range(lo, hi, piece):
            n = min(piece, hi - p0)
            _piece_z(XT, p0, n, w, z)
            yp = y[p0:p0 + n]
            for i in range(n):
                zi = z[i] + b
                active = zi > zero  # ReLU'(0) = 0
                r = (zi if not zi <= zero else zero) - yp[i]  # max(0, z) - y, NaN kept
                sq += r * r
                ab += abs(r)
                z[i] = r if active else zero  # g_i, in z's place
                gs += z[i]
                act += active
            _piece_grad(XT, p0, n, z, zero, grad)
        for c in range(d):
            grad_parts[kb, c] = grad[c]
        sums[kb, 0], sums[kb, 1], sums[kb, 2], sums[kb, 3] = sq, ab, gs, act


@numba.njit(fastmath=FAST, **_jit)
def row_block_sums(X, k0, k1, y, w, b, zero, grad_parts, sums, rows):
    """Blocks ``k0`` to ``k1 - 1`` of ``rows`` samples of a row-major X (block k: rows ``k rows``
    on), as :func:`block_sums` gives them: row k of ``grad_parts`` gets ``X_k^T g`` and row k of
    ``sums`` ``(r.r, sum |r|, sum g, active count)``. Each row is read once, from memory: its
    ``z_i`` and its share of the gradient while it is in cache (a mini-batch's loop, in file
    order)."""
    n, d = X.shape
    grad = np.empty(d, dtype=grad_parts.dtype)
    no_idx, no_rows, no_y = np.zeros(0, dtype=np.int64), np.empty((0, d), dtype=grad_parts.dtype), np.empty(0, dtype=grad_parts.dtype)
    for kb in range(k0, k1):
        lo = kb * rows
        sq, ab, gs, act = _batch(X, y, no_idx, False, lo, min(rows, n - lo), 0, w, b, zero, no_rows, no_y, grad)
        for c in range(d):
            grad_parts[kb, c] = grad[c]
        sums[kb, 0], sums[kb, 1], sums[kb, 2], sums[kb, 3] = sq, ab, gs, act


# LLVM's prefetch, named for its pointer type: opaque from LLVM 15 on
_PREFETCH = "llvm.prefetch.p0" if llvmlite.binding.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """A hint to load the cache line of ``arr[i, j]`` (a read, kept in every cache level);
    never a fault, whatever the address."""
    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]], wraparound=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32]),
                                            _PREFETCH)
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, i, j), codegen


@numba.njit(fastmath=FAST, inline="always", **_jit)
def _piece_z(XT, p0, n, w, z):
    """``z = X_p w`` over the piece's n samples from ``p0``, four features at a time. (Each
    feature's values are taken as a view indexed from 0: an index the compiler knows is not
    negative needs no wraparound, so the loop reads memory in order, in vector loads.)"""
    d = XT.shape[0]
    d4 = d - d % 4
    for i in range(n):
        z[i] = 0
    for j in range(0, d4, 4):
        w0, w1, w2, w3 = w[j], w[j + 1], w[j + 2], w[j + 3]
        x0, x1, x2, x3 = XT[j, p0:p0 + n], XT[j + 1, p0:p0 + n], XT[j + 2, p0:p0 + n], XT[j + 3, p0:p0 + n]
        for i in range(n):
            z[i] += x0[i] * w0 + x1[i] * w1 + x2[i] * w2 + x3[i] * w3
    for j in range(d4, d):
        wj, x = w[j], XT[j, p0:p0 + n]
        for i in range(n):
            z[i] += x[i] * wj


@numba.njit(fastmath=FAST, inline="always", **_jit)
def _piece_grad(XT, p0, n, g, zero, grad):
    """``grad += X_p^T g`` over the piece's n samples from ``p0``, four features at a time."""
    d = XT.shape[0]
    d4 = d - d % 4
    for j in range(0, d4, 4):
        x0, x1, x2, x3 = XT[j, p0:p0 + n], XT[j + 1, p0:p0 + n], XT[j + 2, p0:p0 + n], XT[j + 3, p0:p0 + n]
        s0, s1, s2, s3 = zero, zero, zero, zero
        for i in range(n):
            gi = g[i]
            s0 += x0[i] * gi
            s1 += x1[i] * gi
            s2 += x2[i] * gi
            s3 += x3[i] * gi
        grad[j] += s0
        grad[j + 1] += s1
        grad[j + 2] += s2
        grad[j + 3] += s3
    for j in range(d4, d):
        s, x = zero, XT[j, p0:p0 + n]
        for i in range(n):
            s += x[i] * g[i]
        grad[j] += s


@numba.njit(fastmath=FAST, **_jit)
def _batch(X, y, idx, use_idx, lo, k, base, w, b, zero, rows_buf, y_buf, grad):
    """One batch's sums: its k rows are the epoch's rows ``lo`` on (X's rows ``idx[i - base]``,
    gathered first into ``rows_buf``, loads with nothing waiting on them, the rows
    :data:`GATHER_AHEAD` on asked of memory meanwhile; or ``i - base``);
    ``grad`` gets ``X_b^T g``; returns ``(r.r, sum |r|, sum g, active)``. Rows go four at a
    time (a quarter of the loop's overhead), then one by one."""
    d = X.shape[1]
    line = max(1, 64 // X.itemsize)  # values a cache line
    src, ys, off = X, y, lo - base
    if use_idx:
        for t in range(k):
            if lo + t + GATHER_AHEAD - base < idx.shape[0]:  # the row gathered a few on, asked for now
                ahead = idx[lo + t + GATHER_AHEAD - base]
                for c in range(0, d, line):
                    _prefetch(X, ahead, c)
                _prefetch(X, ahead, d - 1)  # a row's last line, where a row starts mid-line
            row = idx[lo + t - base]
            for c in range(d):
                rows_buf[t, c] = X[row, c]
            y_buf[t] = y[row]
        src, ys, off = rows_buf, y_buf, 0
    for c in range(d):
        grad[c] = 0
    sq, ab, gs, act = zero, zero, zero, 0  # in X's dtype, as numpy sums a batch: a float32 overflow shows
    k4 = k - k % 4
    for t in range(0, k4, 4):
        if not use_idx and off + t + PREFETCH_ROWS + 4 <= src.shape[0]:  # X's rows a few groups on
            for r in range(4):
                for c in range(0, d, line):
                    _prefetch(src, off + t + PREFETCH_ROWS + r, c)
        s0, s1, s2, s3 = zero, zero, zero, zero
        for c in range(d):
            wc = w[c]
            s0 += src[off + t, c] * wc
            s1 += src[off + t + 1, c] * wc
            s2 += src[off + t + 2, c] * wc
            s3 += src[off + t + 3, c] * wc
        g0, e0, a0 = _residual(s0 + b, ys[off + t], zero)
        g1, e1, a1 = _residual(s1 + b, ys[off + t + 1], zero)
        g2, e2, a2 = _residual(s2 + b, ys[off + t + 2], zero)
        g3, e3, a3 = _residual(s3 + b, ys[off + t + 3], zero)
        sq += (e0 * e0 + e1 * e1) + (e2 * e2 + e3 * e3)
        ab += (abs(e0) + abs(e1)) + (abs(e2) + abs(e3))
        gs += (g0 + g1) + (g2 + g3)
        act += (a0 + a1) + (a2 + a3)
        for c in range(d):
            grad[c] += (g0 * src[off + t, c] + g1 * src[off + t + 1, c]) + (g2 * src[off + t + 2, c] + g3 * src[off + t + 3, c])
    for t in range(k4, k):
        s = zero
        for c in range(d):
            s += src[off + t, c] * w[c]
        g, e, a = _residual(s + b, ys[off + t], zero)
        sq += e * e
        ab += abs(e)
        gs += g
        act += a
        for c in range(d):
            grad[c] += g * src[off + t, c]
    return sq, ab, gs, act


@numba.njit(fastmath=FAST, **_jit)
def _residual(z, y, zero):
    """``(g, r, active)`` of one sample: ``r = max(0, z) - y`` (NaN kept), ``g = r 1[z > 0]``
    and ``1[z > 0]`` as an integer (ReLU'(0) = 0)."""
    r = (z if not z <= zero else zero) - y
    active = 1 if z > zero else 0
    return (r if active else zero), r, active


@numba.njit(**_jit)
def batch_steps(X, y, idx, use_idx, base, n_total, B, first, last, w, b, lr, grad, w_next, acc, rows_buf, y_buf):
    """Batches ``first`` to ``last - 1`` of B rows (the epoch's last may be shorter), each one
    step ``w + dtype(-lr 2/k) X_b^T g`` and ``b - lr (2/k) sum g`` (rounded to the dtype), in
    place on ``w``; ``acc`` gains each batch's ``(r.r, sum |r|, active, rows)``. Returns
    ``(one past the last batch stepped, diverged, b, the last step's dC/db)``; a batch whose
    loss or gradient is not finite, or whose step is not, diverges before its step."""
    d = X.shape[1]
    one = np.zeros(1, dtype=grad.dtype)  # a value rounded to the dtype
    zero = one[0]
    grad_b = 0.0
    for j in range(first, last):
        lo = j * B
        k = min(B, n_total - lo)
        sq, ab, gs, act = _batch(X, y, idx, use_idx, lo, k, base, w, b, zero, rows_buf, y_buf, grad)
        if not (np.isfinite(sq) and np.isfinite(gs)):
            return j, True, b, grad_b
        scale = 2.0 / k
        one[0] = -lr * scale
        for c in range(d):
            grad[c] *= one[0]  # the step -lr dC/dw
            w_next[c] = w[c] + grad[c]
        step_b = gs * scale
        one[0] = lr * step_b
        one[0] = b - one[0]
        finite = np.isfinite(one[0])
        for c in range(d):
            finite = finite and np.isfinite(w_next[c])
        if not finite:
            return j, True, b, grad_b
        for c in range(d):
            w[c] = w_next[c]
        b, grad_b = one[0], step_b
        acc[0] += sq
        acc[1] += ab
        acc[2] += act
        acc[3] += k
    return last, False, b, grad_b
