"""The in-memory engine: the data as numpy arrays, the full-batch gradient in row blocks on
one worker per core, and the mini-batch epoch as a tight loop over caller-owned buffers.

Each function here names the :mod:`neurocli.neuron` function it must equal; the tests hold
each pair together. The reduction rule is in :mod:`neurocli.engines`.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np
from threadpoolctl import ThreadpoolController

from neurocli import neuron
from neurocli.engines import BatchesDone, EpochSums, batch_error_sums, combine, compiled, epoch_order, rows_per_block
from neurocli.neuron import LossGrad

# One worker per core, each with the BLAS held to one thread (two levels of threads would
# fight for the same cores); numpy releases the GIL inside BLAS calls and ufuncs.
WORKERS = max(1, min(4, os.cpu_count() or 1))
# A mini-batch epoch gathers its shuffled rows a run of whole batches at a time, about this
# many bytes of X per call: one call's overhead serves many steps.
GATHER_BYTES = 1 << 20

_pool: ThreadPoolExecutor | None = None
_blas: ThreadpoolController | None = None

BlockFn = Callable[[np.ndarray, np.ndarray, np.ndarray, float, int, range, np.ndarray, np.ndarray], None]


def fused_block(Xk, yk, w, b, z, r, m, g, grad_out) -> float:
    """The gradient sums of one block (or mini-batch), in caller-owned buffers.

    Equals :func:`neurocli.neuron.loss_and_gradient` on the block before its 2/N factor:
    Xk : (n, n_features); yk, z, r, g : (n,) of X's dtype; m : (n,) bool;
    grad_out : (n_features,). Computes ``z = X_k w + b``, ``m = 1[z > 0]``, the residual
    ``r = max(0, z) - y_k`` and ``g = r * m``, writes ``grad_out = X_k^T g`` and returns
    ``sum g``; r and m are left for the caller's loss and metrics (``r.r``, ``sum |r|``,
    ``sum m``). Nothing is allocated, so the per-call cost stays small for mini-batches.
    """
    np.matmul(Xk, w, out=z)
    z += b
    np.greater(z, 0, out=m)  # ReLU'(0) = 0: a sample at the kink is inactive
    np.maximum(z, 0, out=r)
    r -= yk  # residual a - y
    np.multiply(r, m, out=g)  # (a - y) on active samples, 0 elsewhere
    np.matmul(g, Xk, out=grad_out)  # X_k^T g, while X_k is still in cache
    return float(np.add.reduce(g))  # add.reduce: g.sum() without its Python wrapper


def block_partials(X, y, w, b, rows: int, blocks: range, grad_parts: np.ndarray, sums: np.ndarray) -> None:
    """The partials of the reduction rule for the blocks ``blocks`` of ``rows`` rows each: per
    block, :func:`neurocli.neuron.loss_and_gradient` before its 2/N factor (by :func:`fused_block`).

    Writes only rows k of ``grad_parts`` (``X_k^T g_k``) and ``sums`` (``r.r, sum |r|,
    sum g, active count``) for k in ``blocks``, so workers can share the outputs.

    Each block is first copied into a buffer of this call's own, column-major: the BLAS then
    sees the same layout, strides and alignment wherever X lives (an array, a mapped file, a
    part on a dask worker), so the bits never depend on how X is stored. The copy is the
    block's one read from memory; both products then use it from cache.
    """
    dtype = grad_parts.dtype
    z_buf, r_buf, g_buf = (np.empty(rows, dtype=dtype) for _ in range(3))
    m_buf = np.empty(rows, dtype=bool)
    for k, Xk, yk in _copied_blocks(X, y, rows, blocks):
        n = Xk.shape[0]
        r, m = r_buf[:n], m_buf[:n]
        g_sum = fused_block(Xk, yk, w, b, z_buf[:n], r, m, g_buf[:n], grad_parts[k])
        sums[k] = float(r @ r), float(np.add.reduce(np.abs(r, out=z_buf[:n]))), g_sum, np.count_nonzero(m)


def block_errors(X, y, w, b, rows: int, blocks: range, grad_parts: np.ndarray, sums: np.ndarray) -> None:
    """:func:`block_partials` without the gradient, for metrics: each block's ``r.r`` and
    ``sum |r|`` from the same copy and the same operations as :func:`fused_block` (so the
    same bits), and no ``X_k^T g``; ``grad_parts`` rows and the other sums are zeros."""
    dtype = grad_parts.dtype
    z_buf, r_buf = np.empty(rows, dtype=dtype), np.empty(rows, dtype=dtype)
    for k, Xk, yk in _copied_blocks(X, y, rows, blocks):
        n = Xk.shape[0]
        z, r = z_buf[:n], r_buf[:n]
        np.matmul(Xk, w, out=z)  # as fused_block: z = X_k w + b, r = max(0, z) - y_k
        z += b
        np.maximum(z, 0, out=r)
        r -= yk
        grad_parts[k] = 0
        sums[k] = float(r @ r), float(np.add.reduce(np.abs(r, out=z))), 0.0, 0


def errors_fn_for(n_samples: int, n_features: int, dtype):
    """The block function of the metrics on data of this shape: :func:`block_errors`; or, for
    wide data on the compiled path (a grid of short blocks, where numpy's calls a block would
    cost more than the epoch), the compiled row kernel, whose sums hold the same two errors."""
    from neurocli.engines import compiled_rows

    if not compiled_rows(n_samples, n_features, dtype):
        return block_errors
    compiled.warm(dtype, minibatch=False, by_rows=True)  # a mini-batch run or a scoring warmed no row kernel
    return compiled.block_partials


def _copied_blocks(X, y, rows: int, blocks: range, order: str = "F"):
    """``(k, X_k, y_k)`` for k in ``blocks``, X_k copied into a buffer of this call's own,
    column-major (``order`` "F") or row-major ("C"), read straight into it from a file that has
    ``read_rows`` (engines/stream.py)."""
    x_buf = np.empty((rows, X.shape[1]), dtype=X.dtype, order=order)
    read_rows = getattr(X, "read_rows", None)
    for k in blocks:
        n = min(rows, X.shape[0] - k * rows)
        Xk = x_buf[:n]
        if read_rows is None:
            np.copyto(Xk, X[k * rows:k * rows + n])
        else:
            read_rows(k * rows, k * rows + n, Xk)
        yield k, Xk, y[k * rows:k * rows + n]


def block_fn_for(n_samples: int, n_features: int, dtype, rows: int) -> BlockFn:
    """The block function of training data of this shape on a grid of ``rows`` rows:
    :func:`neurocli.engines.compiled.block_partials` where the compiled path is wanted and the
    grid has many blocks, else :func:`block_partials` (one block: the reference itself)."""
    if rows < n_samples and compiled.wanted(n_samples, n_features, dtype):
        return compiled.block_partials
    return block_partials


def map_blocks(block_fn: BlockFn, X, y, w, b, rows: int, grad_parts, sums) -> None:
    """Run ``block_fn`` (like :func:`block_partials`) over every block of the grid, the
    blocks split among the workers in contiguous shares, the BLAS on one thread each."""
    global _pool, _blas
    n_blocks = grad_parts.shape[0]
    workers = min(WORKERS, n_blocks)
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="neurocli-kernel")
        _blas = ThreadpoolController()
    bounds = [n_blocks * i // workers for i in range(workers + 1)]
    with _blas.limit(limits=1, user_api="blas"):
        futures = [_pool.submit(block_fn, X, y, w, b, rows, range(lo, hi), grad_parts, sums)
                   for lo, hi in zip(bounds, bounds[1:])]
        for f in futures:
            f.result()


def loss_and_gradient(X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, *,
                      block_bytes: int | None = None) -> LossGrad:
    """:func:`neurocli.neuron.loss_and_gradient` by the reduction rule, reading X about once.

    X : ndarray of shape (n_samples, n_features), row- or column-major; y : ndarray of shape
    (n_samples,); w : ndarray of shape (n_features,); b : float. Each block of the grid
    serves both products while in a core's cache; the result does not depend on the number
    of workers or their timing, and agrees with the reference to rounding (1e-12 relative
    in float64). ``block_bytes``: see :func:`neurocli.engines.rows_per_block`.
    """
    n_samples, n_features = X.shape
    rows = rows_per_block(n_samples, n_features, X.dtype, block_bytes)
    if rows >= n_samples:
        return neuron.loss_and_gradient(X, y, w, b)
    n_blocks = -(-n_samples // rows)
    grad_parts = np.empty((n_blocks, n_features), dtype=np.result_type(X, w, y))
    sums = np.empty((n_blocks, 4), dtype=np.float64)
    map_blocks(block_fn_for(n_samples, n_features, X.dtype, rows), X, y, w, b, rows, grad_parts, sums)
    return combine(grad_parts, sums, n_samples)


def _finite(w: np.ndarray, b) -> bool:
    """Whether every weight and the bias are finite (not w.w: it overflows for a finite
    weight above 1.3e154)."""
    return bool(np.isfinite(w).all()) and math.isfinite(b)


def batches_per_run(n_batches: int, batch_size: int, n_features: int, dtype) -> int:
    """Batches in a run: whole batches of about :data:`GATHER_BYTES` of X (at least one, at
    most the epoch's)."""
    return min(n_batches, max(1, GATHER_BYTES // (batch_size * n_features * np.dtype(dtype).itemsize)))


class BatchRun:
    """The buffers of a run of consecutive batches, reused run after run.

    Batches go in runs of ``batches_per_run``; batch j is in run ``j // batches_per_run``
    and always uses the same slot of the buffers, so an epoch resumed in the middle of a run
    computes, batch by batch, exactly what an uninterrupted one does. ``X_rows`` and
    ``y_rows`` hold the run's rows, row-major, from the epoch's row ``first_row`` (slot 0)
    on; how they get there is :meth:`load`'s, the one thing an engine defines. ``z``,
    ``residual``, ``active`` and ``g`` hold what :func:`fused_block` leaves for each batch.
    """

    def __init__(self, n: int, n_features: int, dtype, batch_size: int, batches_per_run: int):
        B, dtype = batch_size, np.dtype(dtype)
        self.B, self.n, self.n_features, self.dtype = B, n, n_features, dtype
        self.n_batches = -(-n // B)
        self.batches_per_run = batches_per_run
        self.size = batches_per_run * B  # rows of a whole run
        self.X_rows: np.ndarray | None = None
        self.y_rows: np.ndarray | None = None
        self.z, self.residual, self.g = (np.empty(self.size, dtype=dtype) for _ in range(3))
        self.active = np.empty(self.size, dtype=bool)
        # per slot, the views fused_block writes into (made once: a view costs a call)
        self.slots = [tuple(a[k * B:(k + 1) * B] for a in (self.z, self.residual, self.active, self.g))
                      for k in range(self.batches_per_run)]
        self.first_row = 0  # the epoch's row held in slot 0

    def end(self, batch: int) -> int:
        """One past the last batch of the run that holds ``batch``."""
        return min((batch // self.batches_per_run + 1) * self.batches_per_run, self.n_batches)

    def start_row(self, batch: int) -> int:
        """The epoch's row in slot 0 of the run that holds ``batch``."""
        return (batch // self.batches_per_run) * self.size

    def load(self, first: int, last: int) -> None:
        """Make batches ``first`` to ``last - 1`` (of one run) readable in their slots, and set
        :attr:`first_row`."""
        raise NotImplementedError

    def span(self, first: int, done: int) -> slice:
        """The slots of batches ``first`` to ``done - 1``."""
        return slice(first * self.B - self.first_row, min(done * self.B, self.n) - self.first_row)

    def error_sums(self, first: int, done: int) -> tuple[list[float], list[float]]:
        """Squared and absolute error of each batch ``first`` to ``done - 1``, in order."""
        s = self.span(first, done)
        return batch_error_sums(self.residual[s], self.B, out=self.z[s])


class ArrayRun(BatchRun):
    """A run whose rows come from arrays X and y: in file order (``order`` None) a view of X's
    rows, else the rows ``order`` names gathered in one call into a buffer of the run's own."""

    def __init__(self, X: np.ndarray, y: np.ndarray, order: np.ndarray | None, batch_size: int):
        n, d = X.shape
        super().__init__(n, d, X.dtype, batch_size, batches_per_run(-(-n // batch_size), batch_size, d, X.dtype))
        self.X, self.y, self.order = X, y, order
        if order is not None:
            self.X_rows = np.empty((self.size, d), dtype=X.dtype)
            self.y_rows = np.empty(self.size, dtype=X.dtype)

    def load(self, first: int, last: int) -> None:
        B = self.B
        self.first_row = self.start_row(first)
        lo, hi = first * B, min(last * B, self.n)
        if self.order is None:
            self.X_rows, self.y_rows = self.X[self.first_row:hi], self.y[self.first_row:hi]
            return
        idx, at = self.order[lo:hi], lo - self.first_row
        # mode="clip": a permutation's indices are in range, and "raise" copies through a temporary
        np.take(self.X, idx, axis=0, out=self.X_rows[at:at + hi - lo], mode="clip")
        np.take(self.y, idx, out=self.y_rows[at:at + hi - lo], mode="clip")


class Descent:
    """The parameters of a mini-batch epoch as it steps, with the one before for a rollback.

    Equals :func:`neurocli.neuron.descent_step` per batch to rounding: the step is
    ``w + (-lr 2/k) X_b^T g``, the factor rounded once to the dtype. In float64 the bias is
    a Python float (the same IEEE arithmetic without numpy's scalar overhead); float32 keeps
    numpy's float32 rounding.
    """

    def __init__(self, w: np.ndarray, b, lr: float, fast: bool = False):
        self.dtype, self.fast = w.dtype, fast  # fast: stepped by the compiled loop (:func:`descend`)
        self.w, self.w_prev = w.copy(), w.copy()
        self.b = float(b) if self.dtype == np.float64 else b
        self.lr = lr
        self.grad = np.zeros_like(w)  # X_b^T g, then the step, of the last batch
        self.grad_b = 0.0

    def saved(self) -> tuple[np.ndarray, float]:
        return self.w.copy(), self.b

    def restore(self, saved: tuple[np.ndarray, float]) -> None:
        w, self.b = saved
        self.w, self.w_prev = w, w.copy()

    def grad_norm(self) -> float:
        """``|(dC/dw, dC/db)|`` of the last batch, from its step (``-lr`` times the gradient)."""
        with np.errstate(over="ignore"):  # a huge last step's norm is inf, not a warning
            step = self.grad.astype(np.float64)
            return math.hypot(math.sqrt(float(step @ step) / self.lr ** 2), self.grad_b)


def _steps(run: BatchRun, p: Descent, first: int, last: int, checked: bool, stop_before: int | None,
           stop_requested: Callable[[], bool]) -> tuple[int, bool, bool]:
    """Descend on batches ``first`` to ``last - 1`` of a loaded run.

    Returns ``(done, diverged, stopped)``: one past the last batch stepped, whether a batch's
    gradient was not finite (or ``stop_before`` was reached), and whether a stop was requested.
    ``checked``: test the parameters after every step and roll back a step that overflowed.
    """
    B, n, n_batches, dtype = run.B, run.n, run.n_batches, p.dtype
    X_rows, y_rows, grad, lr, slots = run.X_rows, run.y_rows, p.grad, p.lr, run.slots
    first_row, first_slot = run.first_row, run.first_row // B
    w, w_prev, b, grad_b = p.w, p.w_prev, p.b, p.grad_b
    float64 = dtype == np.float64
    full_factor = dtype.type(-lr * (2.0 / B))  # the step -lr dC/dw of a full batch is this times X_b^T g
    done, diverged, stopped = first, False, False
    for j in range(first, last):
        if j == stop_before:  # its loss overflowed: diverged before its step
            diverged = True
            break
        lo = j * B - first_row
        z, r, m, g = slots[j - first_slot]
        k = min(B, n - j * B)
        if k < B:  # the epoch's last, shorter batch
            z, r, m, g = z[:k], r[:k], m[:k], g[:k]
        g_sum = fused_block(X_rows[lo:lo + k], y_rows[lo:lo + k], w, b, z, r, m, g, grad)
        # sum g is finite only if every g is, and then so is X^T g (|x| is bounded at load)
        if not math.isfinite(g_sum):
            diverged = True
            break
        scale = 2.0 / k  # the batch's own N in the mean
        grad *= full_factor if k == B else dtype.type(-lr * scale)
        np.add(w, grad, out=w_prev)  # the new w; the old one stays for a rollback
        w, w_prev = w_prev, w
        grad_b = g_sum * scale
        b, b_prev = (b - lr * grad_b if float64 else dtype.type(b - dtype.type(lr * grad_b))), b
        if checked and not _finite(w, b):  # the step overflowed: keep what it started from
            w, w_prev, b = w_prev, w, b_prev
            diverged = True
            break
        done = j + 1
        if not checked and done < n_batches and stop_requested():
            stopped = True
            break
    p.w, p.w_prev, p.b, p.grad_b = w, w_prev, b, grad_b
    return done, diverged, stopped


def _descend_run(run: BatchRun, p: Descent, first: int, last: int, sums: EpochSums,
                 stop_requested: Callable[[], bool]) -> tuple[int, bool, bool]:
    """Descend on batches ``first`` to ``last - 1`` of a loaded run and add their errors to
    ``sums``; returns ``(done, diverged, stopped)`` as :func:`_steps`.

    A step can overflow (a finite loss does not bound lr * grad), and a non-finite weight
    stays non-finite, so one check at the end of the run tells whether any step of it did; so
    does the run's loss, for a residual whose square overflows. Then the run is replayed
    from its start with a check after every step, which stops at the step that overflowed,
    or before the batch whose loss did.
    """
    at_start = p.saved()
    done, diverged, stopped = _steps(run, p, first, last, False, None, stop_requested)
    squares, abs_sums = run.error_sums(first, done)
    if not (_finite(p.w, p.b) and all(map(math.isfinite, squares))):
        p.restore(at_start)
        bad = next((first + i for i, v in enumerate(squares) if not math.isfinite(v)), None)
        done, diverged, _ = _steps(run, p, first, last, True, bad, stop_requested)
        assert diverged, "a replayed run ends where it overflowed"
        stopped = False
        squares, abs_sums = run.error_sums(first, done)
    for v, a in zip(squares, abs_sums):
        sums.squared_error += v
        sums.abs_error += a
    sums.rows += min(done * run.B, run.n) - first * run.B
    sums.active += int(np.count_nonzero(run.active[run.span(first, done)]))
    return done, diverged, stopped


def descend(run: BatchRun, p: Descent, first_batch: int, last_batch: int, sums: EpochSums,
            stop_requested: Callable[[], bool]) -> tuple[int, bool]:
    """Batches ``first_batch`` to ``last_batch - 1`` run by run, each run loaded
    (:meth:`BatchRun.load`), then stepped (by :func:`neurocli.engines.compiled.descend` when
    ``p.fast``); returns one past the last batch stepped and whether a step diverged. ``p``
    steps and ``sums`` gains each batch's errors, in batch order."""
    batch, diverged, stopped = first_batch, False, False
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected, not warned
        while batch < last_batch and not (diverged or stopped):
            first, last = batch, min(run.end(batch), last_batch)
            run.load(first, last)
            if p.fast:
                batch, diverged = compiled.descend(run.X_rows, run.y_rows, None, run.first_row, run.n, run.B, p,
                                                   first, last, sums, stop_requested)
                stopped = batch < last and not diverged
            else:
                batch, diverged, stopped = _descend_run(run, p, first, last, sums, stop_requested)
    return batch, diverged


def batches_done(p: Descent, batch: int, sums: EpochSums, diverged: bool, dtype) -> BatchesDone:
    """Where an epoch got to, the last step's gradient norm in ``sums`` (inf after a divergence)."""
    sums.grad_norm = math.inf if diverged else p.grad_norm()
    return BatchesDone(w=p.w, b=np.dtype(dtype).type(p.b), batch=batch, sums=sums, diverged=diverged)


def minibatch_epoch(X: np.ndarray, y: np.ndarray, order: np.ndarray | None, batch_size: int,
                    w: np.ndarray, b, lr: float, first_batch: int, sums: EpochSums,
                    stop_requested: Callable[[], bool], between: Callable[[], None] | None = None) -> BatchesDone:
    """The batches of one epoch from ``first_batch`` on: a descent step per batch of X (rows
    ``order`` when shuffled), the batch's own N in its mean, run by run (:func:`descend`).

    Equals, batch by batch, :func:`neurocli.neuron.loss_and_gradient` and
    :func:`neurocli.neuron.descent_step` on each batch, to rounding. X : (n, n_features);
    y : (n,); w : (n_features,) of X's dtype; lr : float. ``sums`` gains each batch's errors.
    A step that overflows is found and rolled back (:func:`_descend_run`).

    Data of at least :data:`neurocli.engines.compiled.FAST_MIN_BYTES`, where the compiled path
    is wanted, goes by :func:`neurocli.engines.compiled.descend`, which reads the rows straight
    from X and calls ``between()`` between its calls.
    """
    n, d = X.shape
    if compiled.wanted(n, d, X.dtype):
        p = Descent(w, b, lr, fast=True)
        batch, diverged = compiled.descend(X, y, order, 0, n, batch_size, p, first_batch, -(-n // batch_size), sums,
                                           stop_requested, between)
        return batches_done(p, batch, sums, diverged, X.dtype)
    run, p = ArrayRun(X, y, order, batch_size), Descent(w, b, lr)
    batch, diverged = descend(run, p, first_batch, run.n_batches, sums, stop_requested)
    return batches_done(p, batch, sums, diverged, X.dtype)


class ShuffleAhead:
    """Draws the next epoch's shuffle on a helper thread while this epoch runs (numpy draws
    it outside the GIL). Gathering rows on a helper too was slower (docs/design.md)."""

    def __init__(self, seed: int, n: int, epochs: int):
        self.seed, self.n, self.epochs = seed, n, epochs
        self._drawer: ThreadPoolExecutor | None = None
        self._next: tuple[int, Future] | None = None

    def draw(self, epoch: int) -> None:
        """Start drawing the shuffle of ``epoch``."""
        if self._drawer is None:
            self._drawer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neurocli-shuffle")
        self._next = (epoch, self._drawer.submit(epoch_order, self.seed, epoch, self.n))

    def take(self, epoch: int) -> np.ndarray:
        """The shuffle of ``epoch`` (drawn ahead), and the next one set drawing."""
        drawn, future = self._next
        assert drawn == epoch
        order = future.result()
        self._next = None
        if epoch + 1 < self.epochs:
            self.draw(epoch + 1)
        return order

    def close(self) -> None:
        if self._drawer is not None:
            self._drawer.shutdown(wait=True, cancel_futures=True)
        self._drawer, self._next = None, None


class MemoryEngine:
    """The :class:`neurocli.engines.Engine` of a training set held as arrays.

    X : (n_samples, n_features), y : (n_samples,), of one float dtype; batch_size : rows per
    step (n_samples: full batch); shuffle : reshuffle every epoch from ``seed``.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, *, batch_size: int, shuffle: bool, seed: int,
                 epochs: int, lr: float):
        self.X, self.y = X, y
        self.n_samples, self.n_features = X.shape
        self.dtype = X.dtype
        self.batch_size, self.lr = batch_size, lr
        self.n_batches = -(-self.n_samples // batch_size)
        shuffled = shuffle and batch_size < self.n_samples
        self._shuffles = ShuffleAhead(seed, self.n_samples, epochs) if shuffled else None

    def loss_and_gradient(self, w: np.ndarray, b) -> LossGrad:
        """:func:`neurocli.neuron.loss_and_gradient` over the training set, by the reduction rule."""
        return loss_and_gradient(self.X, self.y, w, b)

    def any_active(self, w: np.ndarray, b) -> bool:
        """Whether :func:`neurocli.neuron.active_mask` holds for some training row."""
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is found by the first step
            return bool(np.any(neuron.active_mask(neuron.pre_activation(self.X, w, b))))

    def start(self, epoch: int) -> None:
        if self._shuffles is not None and epoch < self._shuffles.epochs:
            self._shuffles.draw(epoch)

    def minibatch_epoch(self, epoch: int, w: np.ndarray, b, first_batch: int, sums: EpochSums,
                        stop_requested: Callable[[], bool]) -> BatchesDone:
        order = None if self._shuffles is None else self._shuffles.take(epoch)
        return minibatch_epoch(self.X, self.y, order, self.batch_size, w, b, self.lr, first_batch, sums,
                               stop_requested)

    def close(self) -> None:
        if self._shuffles is not None:
            self._shuffles.close()
