"""What every engine derives from a row's global index alone, so that any engine, any number
of workers and any split of the data into files give the same bits.

- The validation split: row i is a validation row when a counter-based hash of (seed, i)
  falls below the fraction (:func:`validation_mask`), decided part by part with no
  permutation of all N rows (at 5e9 rows that alone would need 40 GB).
- The standardization statistics: per-column moments of fixed blocks of
  :data:`STAT_BLOCK_ROWS` training rows, merged block after block in order by Chan et al.'s
  pairwise update (:func:`column_stats`); a part that holds whole blocks computes them alone.

The mini-batch shuffle, the third such rule, is with the mini-batch rule in
:mod:`neurocli.engines`.
"""

from __future__ import annotations

import numpy as np

STAT_BLOCK_ROWS = 1 << 16
_SPLIT_STREAM = 1  # the seed's streams: 1 the split, 2 the initial weights, 3 the shuffles
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on an array of uint64 (wrapping arithmetic): a bijection whose
    outputs look independent for consecutive inputs."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def validation_mask(seed: int, rows: np.ndarray, fraction: float) -> np.ndarray:
    """Which of the data set's rows ``rows`` (0-based global indices: a row's place among all
    the data rows, dropped ones included) are validation rows: those whose hash of (seed,
    row), as a uniform number in [0, 1), is below ``fraction``."""
    if fraction <= 0 or len(rows) == 0:
        return np.zeros(len(rows), dtype=bool)
    key = _mix64(np.array([seed * 4 + _SPLIT_STREAM], dtype=np.uint64))
    u = (_mix64(np.asarray(rows, dtype=np.uint64) ^ key) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return u < fraction


def moments(X: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(count, mean, sum of squared deviations) of each column of one block, in float64: each
    column on its own, contiguous, by numpy's pairwise sums, so that the bits do not depend
    on X's layout (row-major, column-major, a mapped file's)."""
    n, d = X.shape
    mean, m2 = np.empty(d), np.empty(d)
    for j in range(d):
        col = np.ascontiguousarray(X[:, j], dtype=np.float64)
        mean[j] = np.add.reduce(col) / n
        dev = col - mean[j]
        m2[j] = np.add.reduce(dev * dev)
    return n, mean, m2


def merge(a: tuple[int, np.ndarray, np.ndarray], b: tuple[int, np.ndarray, np.ndarray]):
    """Chan et al.'s pairwise update: the moments of two blocks' rows together."""
    na, mean_a, m2_a = a
    nb, mean_b, m2_b = b
    n = na + nb
    delta = mean_b - mean_a
    return n, mean_a + delta * (nb / n), m2_a + m2_b + delta * delta * (na * nb / n)


def block_moments(X: np.ndarray, block: int = STAT_BLOCK_ROWS) -> list:
    """The moments of each whole block of ``block`` rows in X (and of the last, shorter one)."""
    return [moments(X[start:start + block]) for start in range(0, X.shape[0], block)]


def column_stats(X: np.ndarray, block: int = STAT_BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation of each column: blocks of ``block`` rows,
    merged in order (:func:`merge`). X : (n, n_features) with n >= 1."""
    return stats_of(block_moments(X, block=block))


def stats_of(blocks: list) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation from the blocks' moments, merged in block order."""
    total = blocks[0]
    for m in blocks[1:]:
        total = merge(total, m)
    n, mean, m2 = total
    return mean, np.sqrt(m2 / n)
