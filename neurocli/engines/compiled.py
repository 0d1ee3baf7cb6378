"""The compiled fast path (the ``fast`` extra, numba): the hot loops as loops over samples.

The paper's sums written as they read, ``dC/dw = (2/N) sum_{z_i > 0} e_i x_i^T``, compiled
to machine code. Two kernels, each with the numpy function it must equal to rounding:

- :func:`block_partials`, a block function of the reduction rule (the same signature and
  outputs as :func:`neurocli.engines.memory.block_partials`): per block, ``z = X_k w + b``
  column by column, then ``X_k^T g`` and the sums, on column-major X; or, for data too wide
  for column blocks (:func:`reads_rows`), row by row on row-major X, each row's ``z_i`` and
  its share of the gradient while the row is in cache. The blocks are split among the
  in-memory engine's workers and added by :func:`neurocli.engines.combine` in block order.
- :func:`descend`, the mini-batch epoch (:func:`neurocli.engines.memory.descend`): gather,
  step, update, errors and the overflow check of many batches in one call. (Gathering the
  next call's rows on a helper thread was slower: the shuffled gather is bound by memory's
  latency, and one core overlaps it with the steps better than two threads hand it over.)

Bits: each block's and each batch's arithmetic is fixed by its values, in one compiled
function, so a run gives the same bits run to run, for any number of threads, in every
engine, and resumed from any batch. Against the numpy kernels it agrees to rounding (about
1e-15 relative in float64), not bit for bit: the BLAS adds in an order of its own. The sums
inside a row and a block may be reordered by the compiler for the machine's vector width
(``reassoc``), so two machines of different vector widths agree to rounding too. No flag
lets the compiler assume values are finite: an overflow is found as in numpy.

When: data of at least :data:`FAST_MIN_BYTES` of X (small data never compiles), numba
installed, and ``NEUROCLI_FAST`` not ``off``. Data too wide for the numpy kernel's blocks
(one block, the reference, without the extra) gets the grid of blocks all the same with it,
read row-major by the row kernel (:func:`full_batch_layout`). The machine code is cached on
disk in the cache folder (``compiled/``), so only the first run on a machine compiles.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import warnings
from typing import Callable

import numpy as np

from neurocli.engines import FUSED_MIN_ROWS, EpochSums, block_rows, rows_per_block

# X of at least this many bytes uses the compiled kernels: below it a run is over before a
# compilation (or even a load from the disk cache) would pay for itself.
FAST_MIN_BYTES = 8 * 1024 * 1024
# Bytes of X per piece of a block: a piece stays in the core's first-level cache between its
# two reads. Pieces of fewer than PIECE_MIN_ROWS rows (many features) would read too many
# streams at once: the block then goes whole (it fits the core's second-level cache).
PIECE_BYTES = 32 << 10
PIECE_MIN_ROWS = 128
# Bytes of X per compiled call of a mini-batch epoch: a stop is asked for between calls.
CALL_BYTES = 4 << 20
INSTALL = 'pip install "neurocli[fast]"'

_kernels = None
_unloadable = False  # numba missing, or failed to load: the numpy kernels, for good
_warmed: set[tuple[str, bool, bool]] = set()  # the kernels loaded in this process: (dtype, mini-batch, by rows)


def _to_stderr(line: str) -> None:
    print(f"note: {line}", file=sys.stderr)


_announce: Callable[[str], None] | None = _to_stderr  # the train command says it its own way


def switched_off() -> bool:
    return os.environ.get("NEUROCLI_FAST", "on").strip().lower() in ("off", "0", "no", "false")


def available() -> bool:
    """Whether the compiled path can run here: numba installed, loadable, and not switched off.
    A numba that fails to load (one built for another numpy, say) is told once, as a warning,
    and the numpy kernels train."""
    global _unloadable
    if switched_off() or _unloadable:
        return False
    if _kernels is not None:
        return True
    if importlib.util.find_spec("numba") is None:
        _unloadable = True  # not installed: asked once, not at every epoch
        return False
    try:
        kernels()
    except Exception as exc:  # any failure to import or set up numba: the numpy path is complete
        _unloadable = True
        warnings.warn(f"the fast extra's numba did not load ({type(exc).__name__}: {exc}); training on the "
                      f"numpy kernels (reinstall it with {INSTALL}, or set NEUROCLI_FAST=off to skip it)",
                      RuntimeWarning, stacklevel=2)
        return False
    return True


def may_run() -> bool:
    """Whether the compiled path could run here, asked without loading numba: installed, not
    switched off, and not found unloadable."""
    return not (switched_off() or _unloadable) and (_kernels is not None or importlib.util.find_spec("numba") is not None)


def reads_rows(n_features: int, dtype) -> bool:
    """Whether full-batch data of this width goes to the row kernel: a block of the grid would
    hold fewer than :data:`neurocli.engines.FUSED_MIN_ROWS` rows, so each feature's stretch of
    a column-major block would be too short to stream (d > 96 in float64, 192 in float32)."""
    return block_rows(1 << 62, n_features, np.dtype(dtype).itemsize) < FUSED_MIN_ROWS


def full_batch_layout(n_features: int, dtype) -> str:
    """How a full-batch run of data big enough for the compiled path lays X out: "F"
    (column-major, the numpy kernel's and the column kernel's), or "C" where the row kernel
    will read it (wide data, and the path able to run). Mini-batches always gather rows, "C"."""
    return "C" if reads_rows(n_features, dtype) and may_run() else "F"


def wanted(n_samples: int, n_features: int, dtype) -> bool:
    """Whether training data of this shape and dtype uses the compiled kernels."""
    return n_samples * n_features * np.dtype(dtype).itemsize >= FAST_MIN_BYTES and available()


def used_by(n_samples: int, n_features: int, dtype, batch_size: int) -> str | None:
    """Which compiled kernel a run on data of this shape uses: "mini-batch", "full-batch" (a
    grid of many blocks; one block is the numpy reference itself) or None."""
    if not wanted(n_samples, n_features, dtype):
        return None
    if batch_size < n_samples:
        return "mini-batch"
    return "full-batch" if rows_per_block(n_samples, n_features, dtype) < n_samples else None


def on_compile(announce: Callable[[str], None] | None) -> None:
    """``announce(line)`` is told when a run compiles the kernels (not when it loads them);
    by default the line goes to standard error as a note."""
    global _announce
    _announce = announce


def kernels():
    """The compiled functions, loaded from the disk cache or compiled on first use."""
    global _kernels
    if _kernels is None:
        if "NUMBA_CACHE_DIR" not in os.environ:
            from neurocli.cache import cache_dir

            os.environ["NUMBA_CACHE_DIR"] = str(cache_dir() / "compiled")
        from neurocli.engines import _compiled_loops

        _kernels = _compiled_loops
    return _kernels


def warm(dtype, minibatch: bool, by_rows: bool = False) -> None:
    """Load the kernel a run will use (mini-batch, full batch by rows or by columns) for
    ``dtype`` now, on a few rows, compiling it if it is not on disk yet, and announce a
    compilation with its time: the run's first epoch is then the kernel's own time. Once a
    process: a kernel warmed before returns at once."""
    key = (np.dtype(dtype).name, minibatch, by_rows and not minibatch)
    if key in _warmed:
        return
    k = kernels()
    dtype, zero = np.dtype(dtype), np.dtype(dtype).type(0)
    before = time.perf_counter()
    # a mapped X is read-only (a cache hit's, with its y; the stream engine's file, y in memory)
    for x_writeable, y_writeable in ((True, True), (False, False), (False, True)):
        X, v = np.zeros((2, 2), dtype=dtype), np.zeros(2, dtype=dtype)
        X.flags.writeable, v.flags.writeable = x_writeable, y_writeable
        if minibatch:
            fn = k.batch_steps
            fn(X, v, np.zeros(0, dtype=np.int64), False, 0, 2, 2, 0, 1, np.zeros(2, dtype=dtype), zero, 0.1,
               np.zeros(2, dtype=dtype), np.zeros(2, dtype=dtype), np.zeros(4), np.zeros((2, 2), dtype=dtype),
               np.zeros(2, dtype=dtype))
        elif by_rows:
            fn = k.row_block_sums
            fn(X, 0, 1, v, np.zeros(2, dtype=dtype), zero, zero, np.zeros((1, 2), dtype=dtype), np.zeros((1, 4)), 2)
        else:
            fn = k.block_sums
            XT = np.zeros((2, 2), dtype=dtype)
            XT.flags.writeable = x_writeable
            fn(XT, 0, 1, v, np.zeros(2, dtype=dtype), zero, zero, np.zeros(2, dtype=dtype),
               np.zeros((1, 2), dtype=dtype), np.zeros((1, 4)), 2, 2)
    _warmed.add(key)
    if sum(fn.stats.cache_misses.values()) and _announce is not None:
        _announce(f"compiled the {'mini-batch' if minibatch else 'full-batch'} kernel for {dtype} in "
                  f"{time.perf_counter() - before:.1f} s (kept on disk: later runs load it)")


def piece_rows(rows: int, n_features: int, dtype) -> int:
    """Rows per piece of a block of ``rows`` rows: from the shape and dtype only."""
    piece = PIECE_BYTES // max(1, n_features * np.dtype(dtype).itemsize)
    return max(1, min(rows, piece if piece >= PIECE_MIN_ROWS else rows))


def block_partials(X, y, w, b, rows: int, blocks: range, grad_parts: np.ndarray, sums: np.ndarray) -> None:
    """:func:`neurocli.engines.memory.block_partials` compiled: rows k of ``grad_parts``
    (``X_k^T g_k``) and ``sums`` (``r.r, sum |r|, sum g, active count``) for k in ``blocks``.

    The column kernel reads X's transpose row by row (a feature's values over the block's
    rows), so X column-major (the full-batch layout) is read in place; any other X (a mapped
    file, tiles, a row-major part) has each block copied column-major first, as the numpy
    kernel does. The row kernel (wide data, :func:`reads_rows`) reads a row-major X in place
    and any other block copied row-major first. Either way the kernel gets the same values in
    the same order: the same bits.
    """
    k = kernels()
    n, d = X.shape
    w = np.ascontiguousarray(w, dtype=grad_parts.dtype)
    dtype = grad_parts.dtype
    b, zero = dtype.type(b), dtype.type(0)
    in_memory = isinstance(X, np.ndarray) and not isinstance(X, np.memmap) and len(blocks)
    if reads_rows(d, dtype):
        if in_memory and X.flags.c_contiguous:
            k.row_block_sums(X, blocks.start, blocks.stop, y, w, b, zero, grad_parts, sums, rows)
            return
        from neurocli.engines.memory import _copied_blocks

        for kb, Xk, yk in _copied_blocks(X, y, rows, blocks, order="C"):
            k.row_block_sums(Xk, 0, 1, np.ascontiguousarray(yk), w, b, zero, grad_parts[kb:kb + 1],
                             sums[kb:kb + 1], Xk.shape[0])
        return
    piece = piece_rows(rows, d, dtype)
    z = np.empty(rows, dtype=dtype)
    if in_memory and X.T.flags.c_contiguous:
        k.block_sums(X.T, blocks.start, blocks.stop, y, w, b, zero, z, grad_parts, sums, rows, piece)
        return
    from neurocli.engines.memory import _copied_blocks

    for kb, Xk, yk in _copied_blocks(X, y, rows, blocks):
        XT = Xk.T if Xk.T.flags.c_contiguous else np.ascontiguousarray(Xk.T)  # the buffer's rows
        k.block_sums(XT, 0, 1, yk, w, b, zero, z, grad_parts[kb:kb + 1], sums[kb:kb + 1], Xk.shape[0], piece)


def descend(X: np.ndarray, y: np.ndarray, order: np.ndarray | None, base: int, n_total: int, batch_size: int, p,
            first: int, last: int, sums: EpochSums, stop_requested: Callable[[], bool],
            between: Callable[[], None] | None = None) -> tuple[int, bool]:
    """Batches ``first`` to ``last - 1`` of an epoch, each one descent step, as
    :func:`neurocli.engines.memory.descend` steps them: batch j holds the epoch's rows
    ``j B`` to ``min((j + 1) B, n_total) - 1``, which are X's rows ``order[i - base]`` (or
    ``i - base`` in file order). ``p`` (a :class:`neurocli.engines.memory.Descent`) steps and ``sums``
    gains each batch's errors in batch order. A batch whose loss or gradient is not finite,
    or whose step overflows, ends the epoch before its step. Calls of about
    :data:`CALL_BYTES` of X each, ``stop_requested`` (and ``between``) asked between them.
    Returns one past the last batch stepped and whether a step diverged."""
    k = kernels()
    B, dtype = batch_size, p.dtype
    X = np.asarray(X)  # a mapping's buffer as a plain array
    per_call = max(1, CALL_BYTES // max(1, B * X.shape[1] * dtype.itemsize))
    idx = order if order is not None else np.zeros(0, dtype=np.int64)
    w, b = np.ascontiguousarray(p.w), dtype.type(p.b)
    w_next = np.empty_like(w)
    rows_buf, y_buf = np.empty((B, X.shape[1]), dtype=dtype), np.empty(B, dtype=dtype)
    acc = np.array([sums.squared_error, sums.abs_error, float(sums.active), float(sums.rows)])
    batch, diverged = first, False
    with np.errstate(over="ignore", invalid="ignore"):
        while batch < last and not diverged:
            upto = min(last, batch + per_call)
            done, diverged, b, grad_b = k.batch_steps(X, y, idx, order is not None, base, n_total, B, batch, upto,
                                                      w, b, p.lr, p.grad, w_next, acc, rows_buf, y_buf)
            b = dtype.type(b)  # numba hands a float32 back as a Python float: the next call's b as this one's
            if done > batch:
                p.grad_b = float(grad_b)  # the last step's, for the gradient norm
            batch = done
            if between is not None:
                between()
            if not diverged and batch < last and stop_requested():
                break
    p.w, p.w_prev = w, w.copy()
    p.b = float(b) if dtype == np.float64 else b
    sums.squared_error, sums.abs_error = float(acc[0]), float(acc[1])
    sums.active, sums.rows = int(acc[2]), int(acc[3])
    return batch, diverged
