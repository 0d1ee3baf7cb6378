"""The neuron and its loss, forward and backward, as pure numpy functions.

Notation and layout follow Parr & Howard (see docs/math.md): ``z = X w + b``, ``a = max(0, z)``,
``C = (1/N) ||a - y||^2`` (mean, no 1/2 factor). A gradient of a scalar is a row in the
paper's numerator layout; here it is held as a 1-d array of the same entries, so
``grad_w`` is both the row ``dC/dw`` and the column ``nabla_w C`` that descent subtracts.

Convention at the kink: ReLU'(0) = 0, so a sample with ``z_i == 0`` is *inactive*.
No function here modifies its arguments, prints, or reads files.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

# Bytes of X per block in the fused kernel: inside one core's private L2 cache (2 MiB here;
# the block and the four vectors of its rows stay there for the second pass, X_b^T g, whatever
# other tenants do to the shared cache), big enough that the per-block Python overhead (about
# ten numpy calls) is small. On column-major X, 1.5 MiB measured 1.45x one row-major X @ w
# against 1.52x for 1 MiB, 1.51x for 2 MiB and 1.86x for 512 KiB (side by side, medians of
# 15 interleaved rounds, N = 1e6, d = 32, float64; float32 alike).
BLOCK_BYTES = 3 << 19  # 1.5 MiB
_WORKERS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class LossGrad:
    """Loss and gradient of the MSE of one ReLU neuron over a set of samples.

    loss : float, ``(1/N) sum_i (a_i - y_i)^2``
    grad_w : ndarray of shape (n_features,), ``(2/N) X^T ((a - y) * m)``
    grad_b : float, ``(2/N) 1^T ((a - y) * m)``
    n_active : int, number of samples with ``z_i > 0``
    abs_error_sum : float, ``sum_i |a_i - y_i|`` (for the MAE)
    n_samples : int, N
    """

    loss: float
    grad_w: np.ndarray
    grad_b: float
    n_active: int
    abs_error_sum: float
    n_samples: int


def pre_activation(X: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """``z = X w + b 1``.

    X : ndarray of shape (n_samples, n_features); w : ndarray of shape (n_features,).
    Returns z : ndarray of shape (n_samples,).
    """
    return X @ w + b


def relu(z: np.ndarray) -> np.ndarray:
    """``a = max(0, z)`` element-wise; same shape as z."""
    return np.maximum(z, 0)


def active_mask(z: np.ndarray) -> np.ndarray:
    """``m = 1[z > 0]``: strictly positive, so ReLU'(0) = 0 (a sample at the kink is inactive)."""
    return z > 0


def forward(X: np.ndarray, w: np.ndarray, b: float) -> tuple[np.ndarray, tuple]:
    """Activation of every sample.

    Returns ``(a, cache)``: a of shape (n_samples,); cache = (X, z) for :func:`backward`.
    """
    z = pre_activation(X, w, b)
    return relu(z), (X, z)


def backward(upstream: np.ndarray, cache: tuple) -> tuple[np.ndarray, float]:
    """Gradient of a scalar through the neuron, given ``upstream = dL/da`` of shape (n_samples,).

    ``dL/dw = sum_i upstream_i 1[z_i > 0] x_i^T`` and ``dL/db = sum_i upstream_i 1[z_i > 0]``.
    Returns ``(grad_w of shape (n_features,), grad_b)``.
    """
    X, z = cache
    g = upstream * active_mask(z)
    grad_w = X.T @ g
    assert grad_w.shape == (X.shape[1],)
    return grad_w, float(g.sum())


def mse_forward(a: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """``C = (1/N) ||a - y||^2`` (mean, no 1/2). Returns ``(C, residual a - y)``."""
    residual = a - y
    return float(residual @ residual) / a.shape[0], residual


def mse_backward(residual: np.ndarray) -> np.ndarray:
    """``dC/da = (2/N) (a - y)``, shape (n_samples,)."""
    return (2.0 / residual.shape[0]) * residual


def loss_and_gradient_reference(
    X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float
) -> LossGrad:
    """The straightforward kernel, the reference every faster form is tested against.

    X : ndarray of shape (n_samples, n_features); y : ndarray of shape (n_samples,);
    w : ndarray of shape (n_features,); b : float.
    """
    a, cache = forward(X, w, b)
    loss, residual = mse_forward(a, y)
    grad_w, grad_b = backward(mse_backward(residual), cache)
    return LossGrad(
        loss=loss,
        grad_w=grad_w,
        grad_b=grad_b,
        n_active=int(np.count_nonzero(active_mask(cache[1]))),
        abs_error_sum=float(np.abs(residual).sum()),
        n_samples=X.shape[0],
    )


def block_rows(n_samples: int, n_features: int, itemsize: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Rows per block so that one block of X holds about ``block_bytes``."""
    return max(1, min(n_samples, block_bytes // max(1, n_features * itemsize)))


def fused_block(Xk, yk, w, b, z, r, m, g, grad_out) -> float:
    """The gradient sums of one block (or mini-batch), in caller-owned buffers.

    Xk : (n, n_features); yk, z, r, g : (n,) of X's dtype; m : (n,) bool;
    grad_out : (n_features,). Computes ``z = X_k w + b``, ``m = 1[z > 0]``, the residual
    ``r = max(0, z) - y_k`` and ``g = r * m``, writes ``grad_out = X_k^T g`` and returns
    ``sum g``, before the 2/N factor; r and m are left for the caller's loss and metrics
    (``r.r``, ``sum |r|``, ``sum m``), which a mini-batch loop sums for many batches at once.
    The same math as :func:`loss_and_gradient_reference`, without allocating, so the per-call
    cost stays small for mini-batches.
    """
    np.matmul(Xk, w, out=z)
    z += b
    np.greater(z, 0, out=m)  # ReLU'(0) = 0: a sample at the kink is inactive
    np.maximum(z, 0, out=r)
    r -= yk  # residual a - y
    np.multiply(r, m, out=g)  # (a - y) on active samples, 0 elsewhere
    np.matmul(g, Xk, out=grad_out)  # X_k^T g, while X_k is still in cache
    return float(np.add.reduce(g))  # add.reduce: g.sum() without its Python wrapper


def _block_sums(X, y, w, b, rows: int, blocks, grad_parts: np.ndarray, sums: np.ndarray) -> None:
    """The fused kernel's body: each block of X is read from memory once and reused from cache.

    For every block index k in ``blocks`` (rows ``k*rows`` to ``(k+1)*rows`` of X),
    :func:`fused_block` writes ``grad_parts[k] = X_k^T g`` and ``sums[k] = (r.r, sum |r|,
    sum g, sum m)``. Only rows k of the outputs are written, so the partial sums can be added
    in a fixed order. The 2/N factor is applied by the caller.
    """
    dtype = grad_parts.dtype
    z_buf, r_buf, g_buf = (np.empty(rows, dtype=dtype) for _ in range(3))
    m_buf = np.empty(rows, dtype=bool)
    for k in blocks:
        Xk, yk = X[k * rows:(k + 1) * rows], y[k * rows:(k + 1) * rows]
        n = Xk.shape[0]
        r, m = r_buf[:n], m_buf[:n]
        g_sum = fused_block(Xk, yk, w, b, z_buf[:n], r, m, g_buf[:n], grad_parts[k])
        sums[k] = float(r @ r), float(np.add.reduce(np.abs(r, out=z_buf[:n]))), g_sum, np.count_nonzero(m)


# The fused kernel's workers: one per core (_WORKERS, above). Each runs its share of the
# blocks with the BLAS held to one thread (two levels of threads would fight for the same
# cores). numpy releases the GIL inside BLAS calls and ufuncs, so the workers stream X
# through the cores at once.
_pool: ThreadPoolExecutor | None = None
_blas = None
# Below this size the data fits in cache anyway and the plain form is as fast.
FUSED_MIN_BYTES = 8 * 1024 * 1024
# With many features a block holds few rows (768 at d = 256) and the per-block calls and the
# hundreds of short column runs per block dominate; there the straightforward form was
# faster (d = 256, column-major: 1.8-2.0x one row-major X @ w, fused 2.3-2.4x).
FUSED_MIN_ROWS = 2048


def _run_blocks(X, y, w, b, rows: int, n_blocks: int, grad_parts, sums) -> None:
    """Run :func:`_block_sums` over all blocks, split among the workers (contiguous shares)."""
    global _pool, _blas
    workers = min(_WORKERS, n_blocks)
    if workers <= 1:
        _block_sums(X, y, w, b, rows, range(n_blocks), grad_parts, sums)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="neurocli-kernel")
        _blas = ThreadpoolController()
    bounds = [n_blocks * i // workers for i in range(workers + 1)]
    with _blas.limit(limits=1, user_api="blas"):
        futures = [_pool.submit(_block_sums, X, y, w, b, rows, range(lo, hi), grad_parts, sums)
                   for lo, hi in zip(bounds, bounds[1:])]
        for f in futures:
            f.result()


def uses_blocks(X: np.ndarray) -> bool:
    """Whether :func:`loss_and_gradient` walks X in blocks by default: X of at least
    :data:`FUSED_MIN_BYTES`, with at least :data:`FUSED_MIN_ROWS` rows in a block."""
    n_samples, n_features = X.shape
    rows = block_rows(n_samples, n_features, X.dtype.itemsize, BLOCK_BYTES)
    return X.nbytes >= FUSED_MIN_BYTES and rows >= FUSED_MIN_ROWS


def loss_and_gradient(X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, *,
                      block_bytes: int | None = None) -> LossGrad:
    """The same numbers as :func:`loss_and_gradient_reference`, reading X about once.

    X : ndarray of shape (n_samples, n_features), row- or column-major; y : ndarray of shape
    (n_samples,); w : ndarray of shape (n_features,); b : float.

    The reference reads X twice (``X w``, then ``X^T g``). Here X is walked in row blocks of
    about ``block_bytes`` (default :data:`BLOCK_BYTES`, inside a core's L2 cache) and
    each block serves both products while in cache (:func:`_block_sums`); the blocks are
    shared among one worker per core. Per-block partial sums are added in block order at
    the end, so the result does not depend on the number of workers or their timing, and it
    agrees with the reference to rounding (tested to 1e-12 relative in float64).
    X smaller than :data:`FUSED_MIN_BYTES`, or so wide that a block holds fewer than
    :data:`FUSED_MIN_ROWS` rows, goes to the reference unchanged (unless ``block_bytes`` is
    given, as the tests do).
    """
    n_samples, n_features = X.shape
    if block_bytes is None:
        if not uses_blocks(X):
            return loss_and_gradient_reference(X, y, w, b)
        block_bytes = BLOCK_BYTES
    rows = block_rows(n_samples, n_features, X.dtype.itemsize, block_bytes)
    if rows >= n_samples:
        return loss_and_gradient_reference(X, y, w, b)
    n_blocks = -(-n_samples // rows)
    dtype = np.result_type(X, w, y)
    grad_parts = np.empty((n_blocks, n_features), dtype=dtype)
    sums = np.empty((n_blocks, 4), dtype=np.float64)
    _run_blocks(X, y, w, b, rows, n_blocks, grad_parts, sums)
    sq_sum, abs_sum, g_sum, n_active = sums.sum(axis=0)
    scale = 2.0 / n_samples
    grad_w = (grad_parts.sum(axis=0, dtype=np.float64) * scale).astype(dtype, copy=False)
    assert grad_w.shape == (n_features,)
    return LossGrad(
        loss=float(sq_sum) / n_samples,
        grad_w=grad_w,
        grad_b=float(g_sum) * scale,
        n_active=int(n_active),
        abs_error_sum=float(abs_sum),
        n_samples=n_samples,
    )


def predict(X: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """``max(0, X w + b)``, shape (n_samples,)."""
    return relu(pre_activation(X, w, b))
