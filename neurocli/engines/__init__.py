"""How the neuron's math (neurocli.neuron) runs over a data set: the engines.

An engine holds a training set and computes, for the trainer, the loss and gradient over
all of it (:meth:`Engine.loss_and_gradient`) and one mini-batch epoch
(:meth:`Engine.minibatch_epoch`). ``memory`` holds the data as arrays. Every engine
computes the same bits, because each follows the reduction rule below.

The reduction rule (full batch)
-------------------------------
1. The rows are cut into a fixed grid of blocks: :func:`rows_per_block` rows each (the last
   may be shorter), a number that depends on the data's shape and dtype only, never on the
   machine, the number of workers or how the data is stored. (One exception: data too wide
   for the numpy kernel's blocks is one block without the ``fast`` extra and a grid with it,
   for the compiled row kernel, which reads it row-major; the two paths agree to rounding
   only anyway.)
2. A grid of one block is computed by :func:`neurocli.neuron.loss_and_gradient` itself.
3. Otherwise each block k, copied into a column-major buffer (so that the BLAS sees the same
   layout and alignment wherever X is held), yields its partials: ``X_k^T g_k`` (in the data's dtype) and, in
   float64, ``r_k.r_k``, ``sum |r_k|``, ``sum g_k`` and the active count, where
   ``r = max(0, X_k w + b) - y_k`` and ``g = r 1[z > 0]``
   (:func:`neurocli.engines.memory.fused_block`).
4. :func:`combine` adds the partials over the block axis in float64 (one numpy sum, whose
   order depends on the grid's shape only), then applies the 2/N factor once.

Any engine that walks the same grid and combines with :func:`combine` gets the same bits,
whichever worker computed which block and when.

The mini-batch rule
-------------------
Batch j of an epoch holds rows ``order[j B:(j+1) B]`` (the rows in file order without a
shuffle, else :func:`epoch_order`; the last batch may be shorter, k rows). Its step is
``w + dtype(-lr 2/k) X_b^T g`` and ``b - lr (2/k) sum g`` (in float64 the bias in Python
floats; in float32 each operation rounded to float32), with the sums of
:func:`neurocli.engines.memory.fused_block` on the batch. Each batch's squared and absolute
error come from :func:`batch_error_sums` and are added to the epoch's sums in batch order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from neurocli.neuron import LossGrad

# Bytes of X per block: inside one core's private L2 cache, so that the block serves both
# products (X_k w, then X_k^T g) from cache; measurements in docs/design.md.
BLOCK_BYTES = 3 << 19  # 1.5 MiB
# Below this size the data fits in cache anyway and the plain form is as fast.
FUSED_MIN_BYTES = 8 * 1024 * 1024
# With many features a block holds few rows, and the per-block calls dominate; below this
# many rows per block the straightforward form was faster.
FUSED_MIN_ROWS = 2048


def block_rows(n_samples: int, n_features: int, itemsize: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Rows per block so that one block of X holds about ``block_bytes``."""
    return max(1, min(n_samples, block_bytes // max(1, n_features * itemsize)))


def uses_blocks(n_samples: int, n_features: int, dtype) -> bool:
    """Whether the default grid has more than one block: X of at least
    :data:`FUSED_MIN_BYTES`, with at least :data:`FUSED_MIN_ROWS` rows in a block."""
    itemsize = np.dtype(dtype).itemsize
    rows = block_rows(n_samples, n_features, itemsize, BLOCK_BYTES)
    return n_samples * n_features * itemsize >= FUSED_MIN_BYTES and rows >= FUSED_MIN_ROWS


def rows_per_block(n_samples: int, n_features: int, dtype, block_bytes: int | None = None) -> int:
    """The grid of the reduction rule: rows per block (``n_samples``: one block).

    From the shape and dtype, and, for data too wide for the numpy kernel's blocks, whether
    the compiled path trains it (its row kernel reads blocks of any width:
    :func:`neurocli.engines.compiled.reads_rows`). ``block_bytes`` overrides the default
    block size and the size thresholds (the tests use it to make many blocks of small data).
    """
    if block_bytes is None:
        if not (uses_blocks(n_samples, n_features, dtype) or compiled_rows(n_samples, n_features, dtype)):
            return max(1, n_samples)
        block_bytes = BLOCK_BYTES
    return block_rows(n_samples, n_features, np.dtype(dtype).itemsize, block_bytes)


def compiled_rows(n_samples: int, n_features: int, dtype) -> bool:
    """Whether the compiled row kernel trains data of this shape (wide, and big enough)."""
    from neurocli.engines import compiled  # it imports this module

    return compiled.reads_rows(n_features, dtype) and compiled.wanted(n_samples, n_features, dtype)


def combine(grad_parts: np.ndarray, sums: np.ndarray, n_samples: int) -> LossGrad:
    """The one reduction: block partials summed over the blocks in float64, then the 2/N factor.

    grad_parts : (n_blocks, n_features), row k = ``X_k^T g_k``, of the gradient's dtype;
    sums : (n_blocks, 4) float64, row k = ``(r.r, sum |r|, sum g, active count)``.
    numpy adds the rows of a C-ordered array one after another in block order; a single
    column it sums pairwise, the same way for the same number of blocks.
    """
    sq_sum, abs_sum, g_sum, n_active = sums.sum(axis=0)
    scale = 2.0 / n_samples
    grad_w = (grad_parts.sum(axis=0, dtype=np.float64) * scale).astype(grad_parts.dtype, copy=False)
    return LossGrad(
        loss=float(sq_sum) / n_samples,
        grad_w=grad_w,
        grad_b=float(g_sum) * scale,
        n_active=int(n_active),
        abs_error_sum=float(abs_sum),
        n_samples=n_samples,
    )


# Rows per block of the mini-batch shuffle's first level (see :func:`epoch_order`).
SHUFFLE_BLOCK_ROWS = 1 << 16


def epoch_order(seed: int, epoch: int, n: int, block: int = SHUFFLE_BLOCK_ROWS) -> np.ndarray:
    """The shuffle of epoch ``epoch`` (0-based) over ``n`` training rows, in two levels: the
    blocks of ``block`` consecutive rows in an order drawn from ``(seed, 4, epoch)``, then the
    rows of each block k in an order drawn from ``(seed, 3, epoch, k)``. It can be drawn ahead;
    a run resumed inside an epoch redraws it from the epoch's number alone; and an engine
    that holds the data in parts draws a block's rows when it reaches that block. (numpy's
    seed sequences ignore trailing zeros: block 0's stream is ``(seed, 3, epoch)``, so data
    of one block is shuffled as by a plain permutation of that stream.)"""
    blocks = np.random.default_rng([seed, 4, epoch]).permutation(-(-n // block))
    return np.concatenate([block_order(seed, epoch, int(k), n, block) for k in blocks] or [np.arange(0)])


def block_order(seed: int, epoch: int, k: int, n: int, block: int = SHUFFLE_BLOCK_ROWS) -> np.ndarray:
    """The rows of shuffle block ``k`` in the order epoch ``epoch`` visits them."""
    start = k * block
    return start + np.random.default_rng([seed, 3, epoch, k]).permutation(min(block, n - start))


@dataclass
class EpochSums:
    """The running sums of one epoch, batch by batch: squared error, absolute error, active
    samples and rows so far, and the norm of the last step's gradient."""

    squared_error: float = 0.0
    abs_error: float = 0.0
    active: int = 0
    rows: int = 0
    grad_norm: float = 0.0

    _KEYS = {"sq": "squared_error", "abs": "abs_error", "active": "active", "rows": "rows",
             "grad_norm": "grad_norm"}  # the names in a checkpoint

    def to_dict(self) -> dict:
        return {key: getattr(self, name) for key, name in self._KEYS.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "EpochSums":
        return cls(**{name: d[key] for key, name in cls._KEYS.items()})


@dataclass
class BatchesDone:
    """Where a mini-batch epoch got to: the parameters after its last good step, the number of
    batches done in the epoch, its sums, and whether it stopped because a step diverged."""

    w: np.ndarray
    b: np.floating
    batch: int
    sums: EpochSums
    diverged: bool


def batch_error_sums(r: np.ndarray, batch_size: int, out: np.ndarray) -> tuple[list[float], list[float]]:
    """``sum r^2`` and ``sum |r|`` of each batch of ``batch_size`` consecutive residuals (the
    last may be shorter), in order, using ``out`` as scratch: ``neurocli.neuron.mse_forward``'s
    loss times k, and its ``sum |r|``, per batch. Full batches are the rows of one reshape, so
    every batch is summed alike wherever its run started (a resumed epoch gets the same bits).
    r, out : shape (m,)."""
    n_full = len(r) // batch_size

    def per_batch(a: np.ndarray) -> list[float]:
        sums = a[:n_full * batch_size].reshape(n_full, batch_size).sum(axis=1).tolist()
        if n_full * batch_size < len(a):
            sums.append(float(a[n_full * batch_size:].sum()))
        return sums

    squares = per_batch(np.multiply(r, r, out=out))
    return squares, per_batch(np.abs(r, out=out))


class Engine(Protocol):
    """What the trainer asks of the data, whichever way it is held.

    n_samples, n_features : the training set's shape; dtype : its numpy dtype;
    batch_size : rows per step (n_samples: full batch); n_batches : steps per epoch.
    """

    n_samples: int
    n_features: int
    dtype: np.dtype
    batch_size: int
    n_batches: int

    def loss_and_gradient(self, w: np.ndarray, b) -> LossGrad:
        """Loss and gradient over every training row, by the reduction rule."""

    def any_active(self, w: np.ndarray, b) -> bool:
        """Whether some training row has ``w.x + b > 0``."""

    def start(self, epoch: int) -> None:
        """Training starts (or resumes) at ``epoch``; an engine may prepare its shuffle."""

    def minibatch_epoch(self, epoch: int, w: np.ndarray, b, first_batch: int, sums: EpochSums,
                        stop_requested: Callable[[], bool]) -> BatchesDone:
        """The batches of epoch ``epoch`` from ``first_batch`` on, each one descent step."""

    def close(self) -> None:
        """Release threads and buffers."""
