"""The stream engine: the prepared training set in a local binary file, walked part by part.

The file holds X in the layout the in-memory engine would use (column-major for full batch,
row-major for mini-batch) and is mapped, not read into memory; each epoch walks the grid of
the reduction rule a part (a whole number of blocks) at a time and hands each part's pages
back to the kernel once done, so the engine's own memory stays a few parts whatever the data's
size. Every block is computed by the in-memory engine's own block function (which copies the
block before computing, so where X lives does not matter), so the bits are those of
:class:`neurocli.engines.memory.MemoryEngine`.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import weakref
from pathlib import Path
from typing import Callable

import numpy as np

from neurocli import neuron
from neurocli.engines import BatchesDone, EpochSums, combine, rows_per_block
from neurocli.engines import memory
from neurocli.neuron import LossGrad

# Bytes of X per part: the pages one step of the walk holds at a time.
PART_BYTES = 16 << 20


def spill(X: np.ndarray, folder: Path | None = None) -> np.memmap:
    """X written to a binary file (in ``folder``, else the system's temporary folder) in X's own
    layout, and mapped back read-only. The file is unlinked at once: the mapping keeps it
    while it is used, and nothing is left behind however the process ends."""
    order = "F" if X.flags.f_contiguous and not X.flags.c_contiguous else "C"
    fd, name = tempfile.mkstemp(prefix="neurocli-prepared-", suffix=".bin", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(memoryview(np.ascontiguousarray(X.T if order == "F" else X)).cast("B"))
        return np.memmap(name, dtype=X.dtype, mode="r", shape=X.shape, order=order)
    finally:
        os.unlink(name)


class TiledColumns:
    """X of a full-batch run in a file of tiles, one per block of the reduction rule's grid:
    block k's rows, column-major, at byte ``k * rows * n_features * itemsize``. A block is then
    one read, straight into the block function's own buffer (``read_rows``, which
    :func:`neurocli.engines.memory.block_partials` uses when X has it): one copy, as from
    memory, and no page of the file held by the process.

    A column-major file would need a stretch of every column per block; read, that is a call
    per column, twice the time; mapped, the kernel maps the page cache in folios of up to 2 MB,
    so a part would hold about 2 MB per column more than it reads (measured).

    Indexing (``X[lo:hi]``, ``X[rows]``) and ``np.asarray(X)`` give arrays, for the commands
    that look at some rows (a sample, a part for a worker).
    """

    ndim = 2

    def __init__(self, file, shape: tuple[int, int], dtype, rows: int):
        # a descriptor of its own (the file object is closed): let go when the tiles are
        self.fd = os.dup(file.fileno())
        weakref.finalize(self, os.close, self.fd)
        self.shape, self.dtype, self.rows = tuple(shape), np.dtype(dtype), rows
        self.nbytes = self.shape[0] * self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _tile(self, k: int) -> np.ndarray:
        """Block k, (rows in it, n_features), column-major."""
        n, d = self.shape
        n_k = min(self.rows, n - k * self.rows)
        tile = np.empty((d, n_k), dtype=self.dtype)  # its transpose: the tile's bytes in order
        got = os.preadv(self.fd, [tile], k * self.rows * d * self.dtype.itemsize)
        if got != tile.nbytes:
            raise OSError(f"short read of the prepared rows ({got} of {tile.nbytes} bytes)")
        return tile.T

    def read_rows(self, lo: int, hi: int, out: np.ndarray) -> None:
        """Rows lo to hi - 1 into ``out`` (hi - lo, n_features); a whole block in one read."""
        n, d = self.shape
        k = lo // self.rows
        if lo == k * self.rows and hi == min(n, lo + self.rows) and out.T.flags.c_contiguous:
            got = os.preadv(self.fd, [out.T], k * self.rows * d * self.dtype.itemsize)
            if got != out.nbytes:
                raise OSError(f"short read of the prepared rows ({got} of {out.nbytes} bytes)")
            return
        out[:] = self[lo:hi]

    def __getitem__(self, key) -> np.ndarray:
        n, d = self.shape
        if isinstance(key, (int, np.integer)):
            return self[np.array([int(key)])][0]
        if isinstance(key, slice):
            key = np.arange(*key.indices(n))  # the slice's rows only
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        out = np.empty((idx.size, d), dtype=self.dtype, order="F")
        blocks = idx // self.rows
        for k in np.unique(blocks):
            at = np.flatnonzero(blocks == k)
            out[at] = self._tile(int(k))[idx[at] - k * self.rows]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[0:self.shape[0]]
        return whole if dtype is None else whole.astype(dtype, copy=False)


def loss_and_gradient(X: np.ndarray, y: np.ndarray, w: np.ndarray, b, part_bytes: int = PART_BYTES,
                      block_fn=None) -> LossGrad:
    """:func:`neurocli.engines.memory.loss_and_gradient` over X (a mapped file, or an array):
    a file of tiles read block by block (:class:`TiledColumns`), a mapping part by part, each
    part's pages handed back once done, an array at once; the same grid, the same block
    function, the same bits. ``block_fn``: :func:`neurocli.engines.memory.block_errors` for
    the loss and the absolute error only (the metrics); None: the training data's own
    (:func:`neurocli.engines.memory.block_fn_for`)."""
    n, d = X.shape
    rows = rows_per_block(n, d, X.dtype)
    if rows >= n:  # one block: small data, read at once
        result = neuron.loss_and_gradient(np.asarray(X), y, w, b)
        release(X)
        return result
    n_blocks = -(-n // rows)
    block_fn = block_fn or memory.block_fn_for(n, d, X.dtype, rows)
    grad_parts = np.empty((n_blocks, d), dtype=np.result_type(X.dtype, w, y))
    sums = np.empty((n_blocks, 4), dtype=np.float64)
    if isinstance(X, TiledColumns) or not isinstance(X, np.memmap):  # nothing mapped to hand back
        assert not isinstance(X, TiledColumns) or X.rows == rows, "the tiles are the grid's blocks"
        memory.map_blocks(block_fn, X, y, w, b, rows, grad_parts, sums)
        return combine(grad_parts, sums, n)
    per_part = max(1, part_bytes // max(1, rows * d * X.dtype.itemsize))
    for first in range(0, n_blocks, per_part):
        last = min(n_blocks, first + per_part)
        lo, hi = first * rows, min(n, last * rows)
        memory.map_blocks(block_fn, X[lo:hi], y[lo:hi], w, b, rows, grad_parts[first:last], sums[first:last])
        release(X)
    return combine(grad_parts, sums, n)


def release(X: np.ndarray) -> None:
    """Hand a mapping's pages back to the kernel: the file stays (in the page cache, or on
    disk), not in this process's memory; anything else is left as it is."""
    if getattr(X, "_mmap", None) is not None:
        X._mmap.madvise(mmap.MADV_DONTNEED)


class StreamEngine:
    """The :class:`neurocli.engines.Engine` of a training set held in a mapped file (:func:`spill`).

    X : the mapping, (n_samples, n_features); y : (n_samples,) in memory (n floats, a feature's
    worth); the rest as :class:`neurocli.engines.memory.MemoryEngine`. ``part_bytes``: bytes of
    X per step of the walk.
    """

    def __init__(self, X: np.memmap, y: np.ndarray, *, batch_size: int, shuffle: bool, seed: int, epochs: int,
                 lr: float, part_bytes: int = PART_BYTES):
        self.X, self.y = X, y
        self.n_samples, self.n_features = X.shape
        self.dtype = X.dtype
        self.batch_size, self.lr = batch_size, lr
        self.n_batches = -(-self.n_samples // batch_size)
        self.part_bytes = part_bytes
        shuffled = shuffle and batch_size < self.n_samples
        self._shuffles = memory.ShuffleAhead(seed, self.n_samples, epochs) if shuffled else None

    def loss_and_gradient(self, w: np.ndarray, b) -> LossGrad:
        return loss_and_gradient(self.X, self.y, w, b, self.part_bytes)

    def _release(self) -> None:
        release(self.X)

    def any_active(self, w: np.ndarray, b) -> bool:
        rows = max(1, self.part_bytes // max(1, self.n_features * self.dtype.itemsize))
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                for lo in range(0, self.n_samples, rows):
                    if np.any(neuron.active_mask(neuron.pre_activation(self.X[lo:lo + rows], w, b))):
                        return True
                    self._release()
            return False
        finally:
            self._release()

    def start(self, epoch: int) -> None:
        if self._shuffles is not None and epoch < self._shuffles.epochs:
            self._shuffles.draw(epoch)

    def minibatch_epoch(self, epoch: int, w: np.ndarray, b, first_batch: int, sums: EpochSums,
                        stop_requested: Callable[[], bool]) -> BatchesDone:
        """The in-memory engine's mini-batch epoch over the mapped rows (it gathers each run of
        batches from them), so each step is the same bits."""
        order = None if self._shuffles is None else self._shuffles.take(epoch)
        done = memory.minibatch_epoch(self.X, self.y, order, self.batch_size, w, b, self.lr, first_batch, sums,
                                      self._releasing(stop_requested), between=self._release)
        self._release()
        return done

    def _releasing(self, stop_requested: Callable[[], bool]) -> Callable[[], bool]:
        """``stop_requested``, which the epoch asks after each step, also handing the pages
        back after about a part's worth of rows: the epoch's memory stays about a part."""
        per_part = max(1, self.part_bytes // max(1, self.batch_size * self.n_features * self.dtype.itemsize))
        steps = [0]

        def ask() -> bool:
            steps[0] += 1
            if steps[0] % per_part == 0:
                self._release()
            return stop_requested()

        return ask

    def close(self) -> None:
        if self._shuffles is not None:
            self._shuffles.close()
