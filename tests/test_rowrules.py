"""The rules every engine derives from a row's global index: the split, the statistics, the
shuffle. Each must give the same bits whatever parts the rows arrive in."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neurocli import engines, rowrules


def _cuts(draw_cuts, n: int) -> list[int]:
    return sorted({0, n, *[c for c in draw_cuts if 0 < c < n]})


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), seed=st.integers(0, 2**32), fraction=st.floats(0.01, 0.99),
       cuts=st.lists(st.integers(0, 5000), max_size=6))
def test_the_split_of_a_row_does_not_depend_on_the_part_it_is_read_in(n, seed, fraction, cuts):
    rows = np.arange(n)
    whole = rowrules.validation_mask(seed, rows, fraction)
    bounds = _cuts(cuts, n)
    parts = [rowrules.validation_mask(seed, rows[a:b], fraction) for a, b in zip(bounds, bounds[1:])]
    assert np.array_equal(np.concatenate(parts), whole)


def test_the_split_takes_about_the_fraction_and_depends_on_the_seed():
    rows = np.arange(200_000)
    a = rowrules.validation_mask(7, rows, 0.2)
    # binomial(200000, 0.2): standard deviation 179 rows; 0.2 +- 0.005 is 5.6 of them
    assert abs(a.mean() - 0.2) < 0.005
    b = rowrules.validation_mask(8, rows, 0.2)
    assert abs((a & b).mean() - 0.04) < 0.003  # independent seeds: P(both) = 0.2 * 0.2, sd 0.00044
    assert not rowrules.validation_mask(7, rows, 0.0).any()
    # a row's fate is its own: the first 1000 rows of a longer file split as they would alone
    assert np.array_equal(rowrules.validation_mask(7, rows[:1000], 0.2), a[:1000])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 700), d=st.integers(1, 4), block=st.sampled_from([1, 7, 64, 1000]),
       data=st.data())
def test_statistics_from_blocks_computed_anywhere_are_the_same_bits(n, d, block, data):
    X = np.asarray(data.draw(st.lists(st.floats(-1e6, 1e6), min_size=n * d, max_size=n * d))).reshape(n, d)
    mean, std = rowrules.column_stats(X, block)
    # a part that holds whole blocks computes their moments alone; the moments are merged in order
    n_blocks = -(-n // block)
    cut = data.draw(st.integers(0, n_blocks)) * block
    moments = rowrules.block_moments(X[:cut], block) + rowrules.block_moments(X[cut:], block)
    mean2, std2 = rowrules.stats_of(moments)
    assert mean.tobytes() == mean2.tobytes() and std.tobytes() == std2.tobytes()
    # and they are the column statistics, to rounding
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(std, X.std(axis=0), rtol=1e-9, atol=1e-6)


def test_statistics_of_one_block_are_the_two_pass_ones():
    # mean, then the squared deviations from it: exactly what a single block computes
    X = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]])
    mean, std = rowrules.column_stats(X)
    assert mean.tolist() == [7 / 3, 70 / 3]
    # deviations -4/3, -1/3, 5/3: squares 16/9 + 1/9 + 25/9 = 42/9, over 3 rows: 14/9
    assert std[0] == pytest.approx(np.sqrt(14 / 9), rel=1e-15)


@pytest.mark.parametrize("n, d", [(1, 1), (7, 3), (70_001, 5), (1000, 130)])
def test_statistics_do_not_depend_on_the_layout_of_x(n, d):
    # the reader lays X out row- or column-major by the run's kernel; its standardization is one
    X = np.random.default_rng(n).normal(3.0, 50.0, size=(n, d))
    C, F = np.ascontiguousarray(X), np.asfortranarray(X)
    for a, b in zip(rowrules.column_stats(C), rowrules.column_stats(F)):
        assert a.tobytes() == b.tobytes()
    mean, std = rowrules.column_stats(F)
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(std, X.std(axis=0), rtol=1e-12)


@pytest.mark.parametrize("n, block", [(8, 3), (10, 10), (1, 4), (23, 5), (100, 7)])
def test_the_two_level_shuffle_visits_blocks_whole_each_in_its_own_order(n, block):
    order = engines.epoch_order(3, 2, n, block)
    assert sorted(order.tolist()) == list(range(n))
    # the order is a sequence of whole blocks, each block's rows drawn from its own stream
    blocks = np.random.default_rng([3, 4, 2]).permutation(-(-n // block))
    at = 0
    for k in blocks:
        rows = engines.block_order(3, 2, int(k), n, block)
        size = min(block, n - k * block)
        assert sorted(rows.tolist()) == list(range(k * block, k * block + size))
        assert order[at:at + size].tolist() == rows.tolist()
        at += size
    assert np.array_equal(engines.epoch_order(3, 2, n, block), order)  # redrawn from the epoch alone
    assert not np.array_equal(engines.epoch_order(3, 3, n, block), order) or n == 1


def test_data_of_one_shuffle_block_is_shuffled_by_a_plain_permutation():
    # a training set of at most SHUFFLE_BLOCK_ROWS rows is shuffled as before the two levels
    order = engines.epoch_order(0, 5, 1000)
    assert order.tolist() == np.random.default_rng([0, 3, 5]).permutation(1000).tolist()
