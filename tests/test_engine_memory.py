"""The in-memory engine's blocked gradient against the straightforward reference, and the reduction rule.

"Relative" is measured against the size of the summands (``(2/N) |X|^T |g|`` for grad_w),
which is what reordering a sum can change; a gradient that cancels to ~0 is still checked.
"""

import functools
import operator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neurocli import engines, neuron
from neurocli.engines import memory


def assert_close(fast, ref, X, y, w, b, rel):
    n = X.shape[0]
    z = X.astype(np.float64) @ w.astype(np.float64) + float(b)
    g_abs = np.abs(np.maximum(z, 0) - y) * (z > 0)
    assert fast.n_samples == ref.n_samples == n
    assert fast.n_active == ref.n_active
    assert fast.grad_w.shape == ref.grad_w.shape == (X.shape[1],)
    assert fast.grad_w.dtype == ref.grad_w.dtype
    assert abs(fast.loss - ref.loss) <= rel * abs(ref.loss) + 1e-300
    assert abs(fast.abs_error_sum - ref.abs_error_sum) <= rel * ref.abs_error_sum + 1e-300
    scale_w = (2.0 / n) * (np.abs(X).T @ g_abs)
    assert np.all(np.abs(fast.grad_w - ref.grad_w) <= rel * scale_w + 1e-300)
    assert abs(fast.grad_b - ref.grad_b) <= rel * (2.0 / n) * g_abs.sum() + 1e-300


@st.composite
def problems(draw):
    n = draw(st.integers(1, 200))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    integer = draw(st.booleans())  # small integers: many samples land exactly on z = 0
    rng = np.random.default_rng(seed)
    if integer:
        X = rng.integers(-2, 3, size=(n, d)).astype(np.float64)
        w = rng.integers(-2, 3, size=d).astype(np.float64)
        b = float(rng.integers(-1, 2))
    else:
        X = rng.standard_normal((n, d)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
        w = rng.standard_normal(d)
        b = float(rng.standard_normal())
    y = rng.standard_normal(n) * 3
    block_bytes = draw(st.integers(1, 40)) * d * 8  # 1 to 40 rows per block: many blocks
    return X, y, w, b, block_bytes


@settings(max_examples=150, deadline=None)
@given(problems())
def test_fused_matches_reference_float64(problem):
    X, y, w, b, block_bytes = problem
    ref = neuron.loss_and_gradient(X, y, w, b)
    fast = memory.loss_and_gradient(X, y, w, b, block_bytes=block_bytes)
    assert_close(fast, ref, X, y, w, b, rel=1e-12)
    # column-major X (what full-batch training holds): the same numbers
    Xf = np.asfortranarray(X)
    assert_close(memory.loss_and_gradient(Xf, y, w, b, block_bytes=block_bytes), ref, X, y, w, b, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(problems())
def test_fused_matches_reference_float32(problem):
    X, y, w, b, block_bytes = problem
    X, y, w = X.astype(np.float32), y.astype(np.float32), w.astype(np.float32)
    b = np.float32(b)
    ref = neuron.loss_and_gradient(X, y, w, b)
    fast = memory.loss_and_gradient(X, y, w, b, block_bytes=block_bytes // 2)
    assert fast.grad_w.dtype == np.float32
    # float32 rounding, and the fused form sums its block partials in float64: 1e-4 relative
    # to the summands. n_active may differ only where z rounds across 0, which the integer
    # problems (exact in float32) never do.
    z = X.astype(np.float64) @ w.astype(np.float64) + float(b)
    if np.all((np.abs(z) > 1e-3) | (z == 0)):
        assert_close(fast, ref, X, y, w, b, rel=1e-4)


@pytest.mark.parametrize("block_bytes", [8, 16, 1 << 20])
def test_relu_derivative_at_zero_is_zero_in_every_block(block_bytes):
    # z = [-1, 0, 1]: only the last sample is active, whatever the blocking.
    X = np.array([[-1.0], [0.0], [1.0]])
    y = np.array([2.0, 2.0, 2.0])
    lg = memory.loss_and_gradient(X, y, np.array([1.0]), 0.0, block_bytes=block_bytes)
    assert lg.n_active == 1
    # active sample: a - y = 1 - 2 = -1, so grad_w = (2/3)(-1)(1), grad_b = (2/3)(-1)
    assert lg.grad_w[0] == pytest.approx(-2 / 3) and lg.grad_b == pytest.approx(-2 / 3)
    # loss = (4 + 4 + 1) / 3
    assert lg.loss == pytest.approx(3.0)


def test_block_rows():
    assert engines.block_rows(10, 4, 8, block_bytes=64) == 2
    assert engines.block_rows(10, 4, 8, block_bytes=1) == 1
    assert engines.block_rows(10, 4, 8, block_bytes=1 << 20) == 10


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_default_blocks_on_a_large_array_match_reference(workers, monkeypatch):
    monkeypatch.setattr(memory, "WORKERS", workers)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((140_000, 8))  # 8.5 MiB: past FUSED_MIN_BYTES, six default blocks
    assert engines.uses_blocks(*X.shape, X.dtype)
    y, w = rng.standard_normal(140_000), rng.standard_normal(8)
    ref = neuron.loss_and_gradient(X, y, w, 0.1)
    fast = memory.loss_and_gradient(X, y, w, 0.1)
    assert_close(fast, ref, X, y, w, 0.1, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(problems(), st.sampled_from([np.float64, np.float32]))
def test_one_worker_gives_the_same_bits_as_several(problem, dtype):
    X, y, w, b, block_bytes = problem
    X, y, w = X.astype(dtype), y.astype(dtype), w.astype(dtype)
    results = []
    for workers in (1, 2, 3):
        memory.WORKERS, saved = workers, memory.WORKERS
        try:
            results.append(memory.loss_and_gradient(X, y, w, b, block_bytes=block_bytes))
        finally:
            memory.WORKERS = saved
    one = results[0]
    assert_close(one, neuron.loss_and_gradient(X, y, w, b), X, y, w, b,
                 rel=1e-12 if dtype == np.float64 else 1e-4)
    for other in results[1:]:
        assert other.grad_w.tobytes() == one.grad_w.tobytes()
        assert (other.loss, other.grad_b, other.n_active, other.abs_error_sum) == (
            one.loss, one.grad_b, one.n_active, one.abs_error_sum)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_blocked_sums_follow_the_reduction_rule(dtype):
    # The rule: rows in blocks of block_rows(n, d, itemsize, block_bytes); per block, copied
    # column-major, the fused block's sums in X's dtype (X_k^T g, and r.r, sum |r|, sum g, sum m as float64 numbers);
    # the blocks' partials added one after another in block order in float64, then the 2/N factor.
    rng = np.random.default_rng(8)
    n, d = 1003, 5
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.standard_normal(n).astype(dtype)
    w = rng.standard_normal(d).astype(dtype)
    b = dtype(0.2)
    block_bytes = 100 * d * np.dtype(dtype).itemsize
    rows = engines.block_rows(n, d, np.dtype(dtype).itemsize, block_bytes)
    assert rows == 100
    grads, sq, ab, gs, act = [], [], [], [], []
    for lo in range(0, n, rows):
        Xk, yk = np.asfortranarray(X[lo:lo + rows]), y[lo:lo + rows]  # each block in a column-major copy
        k = len(yk)
        z, r, g, m = np.empty(k, dtype), np.empty(k, dtype), np.empty(k, dtype), np.empty(k, bool)
        grad = np.empty(d, dtype)
        gs.append(memory.fused_block(Xk, yk, w, b, z, r, m, g, grad))
        grads.append(grad)
        sq.append(float(r @ r))
        ab.append(float(np.abs(r).sum()))
        act.append(int(m.sum()))
    got = memory.loss_and_gradient(X, y, w, b, block_bytes=block_bytes)
    expected_w = (np.sum(grads, axis=0, dtype=np.float64) * (2.0 / n)).astype(dtype)
    assert got.grad_w.dtype == dtype and got.grad_w.tobytes() == expected_w.tobytes()
    in_order = functools.partial(functools.reduce, operator.add)
    assert got.grad_b == in_order(gs) * (2.0 / n)
    assert got.loss == in_order(sq) / n and got.abs_error_sum == in_order(ab)
    assert got.n_active == sum(act) and got.n_samples == n


def test_the_blocked_path_starts_at_its_documented_sizes():
    # uses_blocks reads only the shape and dtype
    at_limit = engines.FUSED_MIN_BYTES // (8 * 8)  # rows of 8 float64 features in exactly 8 MiB
    assert engines.uses_blocks(at_limit, 8, np.float64)
    assert not engines.uses_blocks(at_limit - 1, 8, np.float64)
    # 96 float64 features: a 1.5 MiB block holds exactly 2048 rows; 97 holds 2026
    wide = engines.BLOCK_BYTES // (engines.FUSED_MIN_ROWS * 8)
    assert wide == 96
    assert engines.uses_blocks(20_000, wide, np.float64)
    assert not engines.uses_blocks(20_000, wide + 1, np.float64)
    assert engines.uses_blocks(at_limit * 2, 8, np.float32)
    assert not engines.uses_blocks(at_limit * 2 - 1, 8, np.float32)


def test_below_the_blocked_sizes_the_reference_runs_bit_for_bit():
    rng = np.random.default_rng(9)
    X = rng.standard_normal((5000, 8))  # 312 KiB
    y, w = rng.standard_normal(5000), rng.standard_normal(8)
    fast, ref = memory.loss_and_gradient(X, y, w, 0.3), neuron.loss_and_gradient(X, y, w, 0.3)
    assert fast.grad_w.tobytes() == ref.grad_w.tobytes()
    assert (fast.loss, fast.grad_b, fast.abs_error_sum) == (ref.loss, ref.grad_b, ref.abs_error_sum)
    one_block = memory.loss_and_gradient(X, y, w, 0.3, block_bytes=X.nbytes)  # a single block: the reference
    assert one_block.grad_w.tobytes() == ref.grad_w.tobytes() and one_block.loss == ref.loss


def test_default_blocks_on_a_large_column_major_array_with_a_wide_stride_match_reference():
    # a column-major view whose column stride is larger than its row count, as the reader
    # leaves it (rows written into a buffer sized from the file)
    rng = np.random.default_rng(4)
    buffer = np.asfortranarray(rng.standard_normal((300_000, 8)))
    X = buffer[:250_000]  # 15 MiB: fused blocks, shared among the workers
    assert X.strides == (8, 8 * 300_000)
    y, w = rng.standard_normal(250_000), rng.standard_normal(8)
    ref = neuron.loss_and_gradient(np.ascontiguousarray(X), y, w, 0.1)
    assert_close(memory.loss_and_gradient(X, y, w, 0.1), ref, X, y, w, 0.1, rel=1e-12)


@pytest.mark.parametrize("preset, expected", [(None, "4"), ("28", "28")])
def test_openblas_idle_threads_sleep_unless_the_user_chose(preset, expected):
    # The command line imports neurocli before numpy, so OpenBLAS starts with the timeout;
    # a value the user set wins.
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    out = subprocess.run([sys.executable, "-c", "import neurocli, os; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == expected


def test_past_the_blocked_sizes_the_default_is_the_blocked_form():
    rng = np.random.default_rng(10)
    X = rng.standard_normal((140_000, 8))
    y, w = rng.standard_normal(140_000), rng.standard_normal(8)
    default = memory.loss_and_gradient(X, y, w, 0.1)
    blocked = memory.loss_and_gradient(X, y, w, 0.1, block_bytes=engines.BLOCK_BYTES)
    assert default.grad_w.tobytes() == blocked.grad_w.tobytes()
    assert (default.loss, default.grad_b, default.abs_error_sum) == (blocked.loss, blocked.grad_b, blocked.abs_error_sum)


@pytest.mark.parametrize("dx, dw, dy", [(np.float32, np.float64, np.float32), (np.float64, np.float32, np.float32),
                                        (np.float32, np.float32, np.float64), (np.float32, np.float32, np.float32)])
def test_mixed_dtypes_give_the_reference_s_dtype(dx, dw, dy):
    rng = np.random.default_rng(11)
    X, y, w = rng.standard_normal((300, 4)).astype(dx), rng.standard_normal(300).astype(dy), rng.standard_normal(4).astype(dw)
    ref = neuron.loss_and_gradient(X, y, w, 0.1)
    fast = memory.loss_and_gradient(X, y, w, 0.1, block_bytes=64)
    assert fast.grad_w.dtype == ref.grad_w.dtype == np.result_type(dx, dw, dy)


@settings(max_examples=60, deadline=None)
@given(problems())
def test_fused_block_is_the_reference_before_its_2_over_n(problem):
    X, y, w, b, _ = problem
    n, d = X.shape
    z, r, g, m, grad = np.empty(n), np.empty(n), np.empty(n), np.empty(n, dtype=bool), np.empty(d)
    g_sum = memory.fused_block(X, y, w, b, z, r, m, g, grad)
    ref = neuron.loss_and_gradient(X, y, w, b)
    assert int(m.sum()) == ref.n_active
    assert float(r @ r) / n == pytest.approx(ref.loss, rel=1e-12, abs=1e-300)
    assert float(np.abs(r).sum()) == pytest.approx(ref.abs_error_sum, rel=1e-12, abs=1e-300)
    scale = (2.0 / n) * (np.abs(X).T @ np.abs(g))  # the size of the summands
    assert np.all(np.abs(grad * (2.0 / n) - ref.grad_w) <= 1e-12 * scale + 1e-300)
    assert abs(g_sum * (2.0 / n) - ref.grad_b) <= 1e-12 * (2.0 / n) * np.abs(g).sum() + 1e-300


@pytest.mark.parametrize("dtype, rel", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("shuffled", [False, True])
def test_a_minibatch_epoch_is_the_reference_step_batch_after_batch(dtype, rel, shuffled, monkeypatch):
    # 23 rows in batches of 5: four full batches and one of 3; runs of 2 batches per gather
    monkeypatch.setattr(memory, "GATHER_BYTES", 2 * 5 * 3 * np.dtype(dtype).itemsize)
    rng = np.random.default_rng(12)
    X = rng.standard_normal((23, 3)).astype(dtype)
    y = (np.maximum(X @ np.array([1.0, -1.0, 0.5]) + 0.3, 0)).astype(dtype)
    w0, b0, lr = np.array([0.2, 0.1, -0.1], dtype=dtype), dtype(0.4), dtype(0.1)
    order = engines.epoch_order(5, 0, 23) if shuffled else None
    w0_bytes = w0.tobytes()
    done = memory.minibatch_epoch(X, y, order, 5, w0, b0, float(lr), 0, engines.EpochSums(), lambda: False)
    rows = np.arange(23) if order is None else order
    w, b, sq, ab, active = w0, b0, 0.0, 0.0, 0
    for lo in range(0, 23, 5):
        idx = rows[lo:lo + 5]
        lg = neuron.loss_and_gradient(X[idx], y[idx], w, b)
        sq, ab, active = sq + lg.loss * len(idx), ab + lg.abs_error_sum, active + lg.n_active
        w, b = neuron.descent_step(w, b, lg.grad_w, lg.grad_b, lr)
    assert not done.diverged and done.batch == 5 and done.w.dtype == dtype
    np.testing.assert_allclose(done.w, w, rtol=rel)
    assert float(done.b) == pytest.approx(float(b), rel=rel)
    assert done.sums.rows == 23 and done.sums.active == active
    assert done.sums.squared_error == pytest.approx(sq, rel=rel)
    assert done.sums.abs_error == pytest.approx(ab, rel=rel)
    assert w0.tobytes() == w0_bytes  # the caller's parameters are not modified


@pytest.mark.parametrize("n", [1, 7, 12, 13])
def test_batch_error_sums_are_each_batchs_mse_times_its_rows(n):
    # batches of 4: n = 13 is three full batches and one of 1; n = 12 has no short batch
    rng = np.random.default_rng(n)
    a, y = rng.standard_normal(n), rng.standard_normal(n)
    squares, abs_sums = engines.batch_error_sums(a - y, 4, out=np.empty(n))
    assert len(squares) == len(abs_sums) == -(-n // 4)
    for i, (sq, ab) in enumerate(zip(squares, abs_sums)):
        mse, residual = neuron.mse_forward(a[4 * i:4 * i + 4], y[4 * i:4 * i + 4])
        assert sq == pytest.approx(mse * len(residual), rel=1e-14)
        assert ab == pytest.approx(float(np.abs(residual).sum()), rel=1e-14)


def test_the_reduction_of_one_feature_is_the_same_whatever_the_workers():
    # one column of partials: numpy sums it pairwise, the same way for the same grid
    rng = np.random.default_rng(21)
    X, y, w = rng.standard_normal((400, 1)), rng.standard_normal(400), rng.standard_normal(1)
    results = []
    for workers in (1, 2, 3):
        memory.WORKERS, saved = workers, memory.WORKERS
        try:
            results.append(memory.loss_and_gradient(X, y, w, 0.1, block_bytes=10 * 8))  # 40 blocks
        finally:
            memory.WORKERS = saved
    assert len({r.grad_w.tobytes() for r in results}) == 1 and len({r.loss for r in results}) == 1


def test_each_block_runs_once_on_a_worker_with_the_blas_on_one_thread():
    # map_blocks with a block function of our own: which blocks each call got, and the BLAS
    # thread count it saw (two levels of threads would fight for the cores)
    import threading

    from threadpoolctl import threadpool_info

    seen = []

    def recording(X, y, w, b, rows, blocks, grad_parts, sums):
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        seen.append((list(blocks), threading.current_thread().name, blas))

    n_blocks = 7
    memory.map_blocks(recording, None, None, None, 0.0, 10, np.empty((n_blocks, 2)), np.empty((n_blocks, 4)))
    assert sorted(k for blocks, _, _ in seen for k in blocks) == list(range(n_blocks))
    assert all(name.startswith("neurocli-") for _, name, _ in seen)
    assert all(blas and set(blas) == {1} for _, _, blas in seen)


def test_the_default_grid_follows_the_dtype():
    # float32 rows are half as wide: the blocked path starts at twice the rows of float64,
    # and a 1.5 MiB block holds twice as many of them
    at_limit = engines.FUSED_MIN_BYTES // (8 * 4)  # rows of 8 float32 features in exactly 8 MiB
    assert engines.rows_per_block(at_limit - 1, 8, np.float32) == at_limit - 1  # one block
    assert engines.rows_per_block(at_limit, 8, np.float32) == engines.BLOCK_BYTES // (8 * 4)
    assert engines.rows_per_block(at_limit, 8, np.float64) == engines.BLOCK_BYTES // (8 * 8)
    assert engines.rows_per_block(1, 1, np.float64) == 1 and engines.rows_per_block(0, 3, np.float64) == 1


@pytest.mark.parametrize("n, batch_size, expected", [(100, 16, 7), (96, 16, 6), (5, 5, 1), (5, 8, 1)])
def test_an_engine_counts_its_batches(n, batch_size, expected):
    engine = memory.MemoryEngine(np.zeros((n, 2)), np.zeros(n), batch_size=batch_size, shuffle=False, seed=0,
                                 epochs=1, lr=0.1)
    assert engine.n_batches == expected and type(engine.n_batches) is int


def test_the_start_check_warns_of_nothing_when_z_overflows():
    # x = 1e200, w = 1e200: z = inf (an overflow) is active; the first step reports the
    # divergence, the start check only answers whether a row is active
    import warnings

    engine = memory.MemoryEngine(np.array([[1e200], [-1e200]]), np.zeros(2), batch_size=1, shuffle=False, seed=0,
                                 epochs=1, lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert engine.any_active(np.array([1e200]), 0.0) is True
        assert engine.any_active(np.array([1e200]), -np.inf) is False  # inf - inf is NaN: not active


def test_the_seed_streams_are_pinned():
    # A saved run is reproduced from its config and seed, and a checkpoint resumed inside an
    # epoch redraws that epoch's shuffle: the streams (seed, 3, epoch) and (seed, 2) are part of
    # the file formats. These are the first draws of seed 0 (numpy's PCG64, stable across versions).
    from neurocli.config import ModelConfig
    from neurocli.train import initial_parameters

    assert engines.epoch_order(0, 0, 8).tolist() == [1, 3, 0, 6, 2, 5, 4, 7]
    assert engines.epoch_order(0, 1, 8).tolist() == [7, 3, 4, 0, 6, 2, 5, 1]
    w, _ = initial_parameters(ModelConfig(), 4, np.ones(3), 0, np.float64)  # N(0, 1/4): scale 0.5
    assert w.tolist() == [-0.2999252499722477, -0.17525876404553165, -0.5019479359989492, 0.14528245725817168]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_metrics_blocks_give_the_gradient_blocks_errors_bit_for_bit(dtype):
    rng = np.random.default_rng(11)
    X = np.asfortranarray(rng.normal(size=(20_000, 5)).astype(dtype))
    y = np.abs(X @ rng.normal(size=5)).astype(dtype) + dtype(0.5)
    w, b = rng.normal(size=5).astype(dtype), dtype(0.1)
    rows = engines.rows_per_block(20_000, 5, dtype, block_bytes=1 << 14)
    n_blocks = -(-20_000 // rows)
    outs = []
    for fn in (memory.block_partials, memory.block_errors):
        grad_parts, sums = np.empty((n_blocks, 5), dtype=dtype), np.empty((n_blocks, 4))
        fn(X, y, w, b, rows, range(n_blocks), grad_parts, sums)
        outs.append(sums)
    assert n_blocks > 5 and outs[0][:, :2].tobytes() == outs[1][:, :2].tobytes()  # r.r and sum |r| per block
    # and they are the residuals' sums, computed here on their own
    r = (np.maximum(X[:rows] @ w + b, 0) - y[:rows]).astype(np.float64)
    assert outs[1][0, 0] == pytest.approx(float(r @ r), rel=1e-5)
