"""The compiled fast path against the numpy kernels and the loop over samples: the same
numbers to rounding, the same bits for any number of workers, in every engine, run to run and
resumed from any batch; a divergence found where numpy finds it; small data never compiled."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from neurocli import engines, neuron
from neurocli.cli import app
from neurocli.engines import EpochSums, compiled, epoch_order, memory, stream
from neurocli.engines.memory import MemoryEngine
from tests.conftest import ROOT, write

pytest.importorskip("numba")
runner = CliRunner()


@pytest.fixture
def fast(monkeypatch):
    """The compiled path for data of any size (the tests' data is small)."""
    monkeypatch.setattr(compiled, "FAST_MIN_BYTES", 0)
    monkeypatch.delenv("NEUROCLI_FAST", raising=False)


def _data(n, d, dtype, seed=0, layout="F"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(dtype)
    y = (np.abs(X @ rng.normal(size=d)) + rng.normal(size=n)).astype(dtype)
    return (np.asfortranarray(X) if layout == "F" else np.ascontiguousarray(X)), y


def _loop_over_samples(X, y, w, b):
    """The paper's sums as they read, one sample at a time, in float64 (the independent reference)."""
    n, d = X.shape
    sq = ab = g_sum = 0.0
    grad = np.zeros(d)
    active = 0
    for i in range(n):
        x = X[i].astype(np.float64)
        z = float(x @ w) + float(b)
        e = max(z, 0.0) - float(y[i])
        sq, ab = sq + e * e, ab + abs(e)
        if z > 0:  # ReLU'(0) = 0
            active += 1
            g_sum += e
            grad += e * x
    return sq / n, 2 * grad / n, 2 * g_sum / n, active, ab


def _grid_partials(block_fn, X, y, w, b, rows):
    n_blocks = -(-X.shape[0] // rows)
    grad_parts = np.empty((n_blocks, X.shape[1]), dtype=X.dtype)
    sums = np.empty((n_blocks, 4))
    memory.map_blocks(block_fn, X, y, w, b, rows, grad_parts, sums)
    return grad_parts, sums


@pytest.mark.parametrize("layout", ["F", "C"])  # read in place, or each block copied
@pytest.mark.parametrize("dtype, rel", [(np.float64, 1e-12), (np.float32, 2e-5)])
# four features at a time, and the rest; 97 and 256: the row kernel (97 in float32: the column one)
@pytest.mark.parametrize("d", [1, 3, 7, 32, 45, 97, 256])
def test_the_full_batch_kernel_is_the_loop_over_samples_and_the_numpy_kernel(d, dtype, rel, layout):
    X, y = _data(3001, d, dtype, layout=layout)
    w = np.random.default_rng(1).normal(size=d).astype(dtype) * dtype(0.3)
    b = dtype(0.1)
    X[5] = 0.0  # z = b > 0 on this row; and a row exactly at the kink:
    X[6], w_kink = 0.0, w.copy()
    rows = 256  # 12 blocks, the last of 185 rows; pieces of 128 rows and fewer
    grad_parts, sums = _grid_partials(compiled.block_partials, X, y, w, b, rows)
    got = engines.combine(grad_parts, sums, len(y))
    loss, grad_w, grad_b, active, ab = _loop_over_samples(X, y, w_kink, b)
    assert got.loss == pytest.approx(loss, rel=rel) and got.abs_error_sum == pytest.approx(ab, rel=rel)
    np.testing.assert_allclose(got.grad_w, grad_w, rtol=rel, atol=rel * np.abs(grad_w).max())
    assert got.grad_b == pytest.approx(grad_b, rel=rel) and got.n_active == active
    ref = engines.combine(*_grid_partials(memory.block_partials, X, y, w, b, rows), len(y))
    np.testing.assert_allclose(got.grad_w, ref.grad_w, rtol=rel, atol=rel * np.abs(ref.grad_w).max())
    assert got.loss == pytest.approx(ref.loss, rel=rel) and got.n_active == ref.n_active


def test_the_kink_is_inactive_and_nan_is_kept():
    # one feature, w = 1, b = 0: z = x. Rows x = 0 (at the kink), 2, -1:
    # r = (0 - 1, 2 - 1, 0 - 1) = (-1, 1, -1); only x = 2 is active (ReLU'(0) = 0), so
    # X^T g = 2 * 1 = 2, sum g = 1, r.r = 3, sum |r| = 3
    X = np.asfortranarray([[0.0], [2.0], [-1.0]])
    y = np.ones(3)
    grad_parts, sums = np.empty((1, 1)), np.empty((1, 4))
    compiled.block_partials(X, y, np.array([1.0]), 0.0, 3, range(1), grad_parts, sums)
    assert grad_parts.tolist() == [[2.0]] and sums.tolist() == [[3.0, 3.0, 1.0, 1.0]]
    compiled.block_partials(X, y, np.array([np.nan]), 0.0, 3, range(1), grad_parts, sums)
    assert np.isnan(sums[0, 0])  # a NaN weight shows in the loss, as in numpy


# 12 features: the column kernel, 341 rows a block, 147 blocks; 100: the row kernel, 40 rows, 200 blocks
@pytest.mark.parametrize("n, d", [(50_000, 12), (8_000, 100)])
def test_the_full_batch_bits_do_not_depend_on_workers_layout_or_storage(n, d, fast, monkeypatch, tmp_path):
    X, y = _data(n, d, np.float64, seed=4)
    w, b = np.linspace(-0.5, 0.5, d), 0.2
    rows = engines.rows_per_block(n, d, np.float64, block_bytes=1 << 15)
    results = []
    for workers in (1, 2, 3):
        monkeypatch.setattr(memory, "WORKERS", workers)
        monkeypatch.setattr(memory, "_pool", None)
        for Xs in (X, np.ascontiguousarray(X)):  # each kernel's layout in place, the other copied
            results.append(_grid_partials(compiled.block_partials, Xs, y, w, b, rows))
    tiles = _tiles(tmp_path, X, rows)
    results.append(_grid_partials(compiled.block_partials, tiles, y, w, b, rows))
    mapped = stream.spill(np.ascontiguousarray(X), tmp_path)  # a mapped file: each block copied
    results.append(_grid_partials(compiled.block_partials, mapped, y, w, b, rows))
    for grad_parts, sums in results[1:]:
        assert np.array_equal(grad_parts, results[0][0]) and np.array_equal(sums, results[0][1])


def _tiles(tmp_path, X, rows):
    """X as the stream engine's file of tiles, one column-major tile per block."""
    with open(tmp_path / "tiles.bin", "wb") as fh:
        for lo in range(0, X.shape[0], rows):
            fh.write(np.ascontiguousarray(X[lo:lo + rows].T).tobytes())
    with open(tmp_path / "tiles.bin", "rb") as fh:
        return stream.TiledColumns(fh, X.shape, X.dtype, rows)


def test_the_engines_take_the_compiled_kernel_only_where_it_is_wanted(fast, monkeypatch):
    X, y = _data(20_000, 5, np.float64)
    w, b = np.full(5, 0.1), 0.0
    rows = engines.rows_per_block(20_000, 5, np.float64, block_bytes=1 << 14)
    assert memory.block_fn_for(20_000, 5, np.float64, rows) is compiled.block_partials
    assert memory.block_fn_for(20_000, 5, np.float64, 20_000) is memory.block_partials  # one block: the reference
    monkeypatch.setenv("NEUROCLI_FAST", "off")
    assert memory.block_fn_for(20_000, 5, np.float64, rows) is memory.block_partials
    monkeypatch.delenv("NEUROCLI_FAST")
    monkeypatch.setattr(compiled, "FAST_MIN_BYTES", X.nbytes + 1)  # small data: never compiled
    assert memory.block_fn_for(20_000, 5, np.float64, rows) is memory.block_partials
    assert compiled.used_by(20_000, 5, np.float64, 64) is None


def test_wide_data_gets_a_grid_of_blocks_only_on_the_compiled_path(fast, monkeypatch):
    # blocks of 1.5 MiB: 2,048 rows of 96 float64 features, the fewest numpy's blocks take;
    # 97 features make 1,572,864 // 776 = 2,026 rows, too few: the row kernel's
    assert not compiled.reads_rows(96, np.float64) and compiled.reads_rows(97, np.float64)
    assert not compiled.reads_rows(192, np.float32) and compiled.reads_rows(193, np.float32)
    assert engines.rows_per_block(10_000, 97, np.float64) == 2026
    assert memory.block_fn_for(10_000, 97, np.float64, 2026) is compiled.block_partials
    assert memory.errors_fn_for(10_000, 97, np.float64) is compiled.block_partials
    assert compiled.used_by(10_000, 97, np.float64, 10_000) == "full-batch"
    assert compiled.full_batch_layout(97, np.float64) == "C" and compiled.full_batch_layout(96, np.float64) == "F"
    monkeypatch.setenv("NEUROCLI_FAST", "off")  # one block: the numpy reference, on column-major X
    assert engines.rows_per_block(10_000, 97, np.float64) == 10_000
    assert memory.errors_fn_for(10_000, 97, np.float64) is memory.block_errors
    assert compiled.full_batch_layout(97, np.float64) == "F"


def test_the_metrics_on_wide_data_load_the_row_kernel_first(fast, monkeypatch):
    warmed = []
    monkeypatch.setattr(compiled, "warm", lambda dtype, minibatch, by_rows=False: warmed.append((minibatch, by_rows)))
    assert memory.errors_fn_for(10_000, 97, np.float64) is compiled.block_partials
    assert warmed == [(False, True)]  # announced if it compiles, as a run's own kernel is
    assert memory.errors_fn_for(10_000, 96, np.float64) is memory.block_errors and len(warmed) == 1


def _wide_csv(root, n=600, d=100):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, d))
    y = np.abs(X @ rng.normal(size=d) * 0.1) + rng.normal(size=n) * 0.1
    names = ",".join(f"x{j}" for j in range(d))
    np.savetxt(root / "w.csv", np.column_stack([X, y]), fmt="%.17g", delimiter=",", header=names + ",y",
               comments="")


def test_a_full_batch_run_on_wide_data_reads_x_row_major_for_the_row_kernel(fast, in_tmp, monkeypatch):
    from neurocli import pipeline
    from neurocli.config import load_config

    _wide_csv(in_tmp)
    write(in_tmp / "c.yaml", "data: {path: w.csv, target: y}\ntraining: {epochs: 3, learning_rate: 0.01}\n")
    loaded = load_config(in_tmp / "c.yaml")
    files = pipeline._data_files(loaded)
    assert pipeline._layout(loaded, files) == "C"  # 100 features
    few = load_config(in_tmp / "c.yaml", ["data.features=[" + ",".join(f"x{j}" for j in range(96)) + "]"])
    assert pipeline._layout(few, files) == "F"
    monkeypatch.setenv("NEUROCLI_FAST", "off")
    assert pipeline._layout(loaded, files) == "F"
    monkeypatch.delenv("NEUROCLI_FAST")
    # a grid of 20-row blocks (16 KiB of 100 features), 480 training rows: 24 blocks
    monkeypatch.setattr(engines, "BLOCK_BYTES", 1 << 14)
    monkeypatch.setattr(engines, "FUSED_MIN_BYTES", 0)
    runs = {e: _train(in_tmp, f"output.dir={e}", f"engine.kind={e}") for e in ("memory", "stream")}
    monkeypatch.setenv("NEUROCLI_FAST", "off")
    ref = _train(in_tmp, "output.dir=numpy")
    assert runs["memory"]["kernel"] == runs["stream"]["kernel"] == "compiled" and ref["kernel"] == "numpy"
    history = (in_tmp / "memory" / "history.csv").read_bytes()
    assert (in_tmp / "stream" / "history.csv").read_bytes() == history  # the same bits
    np.testing.assert_allclose(runs["memory"]["weights_standardized"], ref["weights_standardized"], rtol=1e-12)
    assert runs["memory"]["loss"] == pytest.approx(ref["loss"], rel=1e-12)


def test_wide_data_too_small_to_compile_gives_the_numpy_paths_bits(in_tmp, monkeypatch):
    # 3,000 x 100 at 17 digits: a 6 MB file, enough that the reader lays X out row-major for the
    # row kernel, but 2,400 training rows are 1.9 MB of X, under FAST_MIN_BYTES: the numpy
    # reference trains, on X as it is laid out without the extra, standardized alike
    monkeypatch.delenv("NEUROCLI_FAST", raising=False)
    _wide_csv(in_tmp, n=3000)
    write(in_tmp / "c.yaml", "data: {path: w.csv, target: y}\ntraining: {epochs: 5, learning_rate: 0.01}\n")
    got = _train(in_tmp, "output.dir=with")
    monkeypatch.setenv("NEUROCLI_FAST", "off")
    ref = _train(in_tmp, "output.dir=without")
    assert got["kernel"] == ref["kernel"] == "numpy"
    assert (in_tmp / "with" / "history.csv").read_bytes() == (in_tmp / "without" / "history.csv").read_bytes()


def _numpy_epoch(X, y, order, B, w, b, lr, first=0, sums=None, monkeypatch=None):
    monkeypatch.setenv("NEUROCLI_FAST", "off")
    try:
        return memory.minibatch_epoch(X, y, order, B, w.copy(), b, lr, first, sums or EpochSums(), lambda: False)
    finally:
        monkeypatch.delenv("NEUROCLI_FAST")


@pytest.mark.parametrize("dtype, rel", [(np.float64, 1e-12), (np.float32, 1e-4)])
@pytest.mark.parametrize("shuffled", [True, False])
def test_a_minibatch_epoch_is_the_numpy_epoch_to_rounding(dtype, rel, shuffled, fast, monkeypatch):
    X, y = _data(10_007, 9, dtype, layout="C")  # 40 batches of 256 and one of 23
    w, b, lr = np.full(9, 0.05, dtype=dtype), dtype(0.1), float(dtype(0.01))
    order = epoch_order(5, 0, len(y)) if shuffled else None
    ref = _numpy_epoch(X, y, order, 256, w, b, lr, monkeypatch=monkeypatch)
    got = memory.minibatch_epoch(X, y, order, 256, w.copy(), b, lr, 0, EpochSums(), lambda: False)
    assert got.batch == ref.batch == 40 and not got.diverged and got.b.dtype == dtype
    np.testing.assert_allclose(got.w, ref.w, rtol=rel)
    assert float(got.b) == pytest.approx(float(ref.b), rel=rel)
    assert got.sums.squared_error == pytest.approx(ref.sums.squared_error, rel=rel)
    assert got.sums.abs_error == pytest.approx(ref.sums.abs_error, rel=rel)
    assert got.sums.grad_norm == pytest.approx(ref.sums.grad_norm, rel=rel * 10)
    assert (got.sums.active, got.sums.rows) == (ref.sums.active, ref.sums.rows)


def test_one_minibatch_step_is_the_reference_step():
    # a batch of 3 rows, w = (1, -1), b = 0.5, lr = 0.1: z = (1.5, -0.5, 2.5) -> active rows 0
    # and 2; r = (1.5 - 1, 0 - 0, 2.5 - 2) = (0.5, 0, 0.5); X_b^T g = 0.5 (1, 0) + 0.5 (2, 0)
    # = (1.5, 0); dC/dw = (2/3)(1.5, 0) = (1, 0); dC/db = (2/3)(1) = 2/3
    X = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    y = np.array([1.0, 0.0, 2.0])
    p = memory.Descent(np.array([1.0, -1.0]), 0.5, 0.1, fast=True)
    sums = EpochSums()
    assert compiled.descend(X, y, None, 0, 3, 3, p, 0, 1, sums, lambda: False) == (1, False)
    lg = neuron.loss_and_gradient(X, y, np.array([1.0, -1.0]), 0.5)
    w, b = neuron.descent_step(np.array([1.0, -1.0]), np.float64(0.5), lg.grad_w, lg.grad_b, 0.1)
    np.testing.assert_allclose(p.w, [0.9, -1.0], rtol=1e-15)
    np.testing.assert_allclose(p.w, w, rtol=1e-15)
    assert p.b == pytest.approx(0.5 - 0.1 * 2 / 3, rel=1e-15) and p.b == pytest.approx(float(b), rel=1e-15)
    assert sums.squared_error == pytest.approx(0.5) and sums.active == 2 and sums.rows == 3


def test_a_stopped_minibatch_epoch_resumes_to_the_same_bits(fast, monkeypatch):
    X, y = _data(30_000, 6, np.float64, layout="C")
    order, w, b = epoch_order(2, 1, 30_000), np.full(6, 0.1), np.float64(0.2)
    whole = memory.minibatch_epoch(X, y, order, 64, w.copy(), b, 0.01, 0, EpochSums(), lambda: False)
    asked = []

    def stop_after_two_calls() -> bool:
        asked.append(True)
        return len(asked) >= 2

    monkeypatch.setattr(compiled, "CALL_BYTES", 64 * 6 * 8 * 37)  # calls of 37 batches
    part = memory.minibatch_epoch(X, y, order, 64, w.copy(), b, 0.01, 0, EpochSums(), stop_after_two_calls)
    assert part.batch == 74 and not part.diverged
    rest = memory.minibatch_epoch(X, y, order, 64, part.w, part.b, 0.01, part.batch,
                                  dataclasses.replace(part.sums), lambda: False)
    assert rest.batch == whole.batch and np.array_equal(rest.w, whole.w) and rest.b == whole.b
    assert dataclasses.asdict(rest.sums) == dataclasses.asdict(whole.sums)


DIVERGENCES = {  # learning rate, initial weights, a row placed three quarters into the epoch
    "a loss that overflows early": (1e4, [0.2, 0.2], None),
    "a loss that overflows late": (0.01, [0.2, 0.2], [1e200, 1e200]),  # r^2 = (4e199)^2
    "a step that overflows at its batch": (0.01, [0.2, 1e-160], [0.0, 1e300]),
}


@pytest.mark.filterwarnings("error")  # overflow is found and reported, never a numpy warning
@pytest.mark.parametrize("lr, w0, row", DIVERGENCES.values(), ids=DIVERGENCES.keys())
def test_a_diverging_minibatch_epoch_stops_where_the_numpy_epoch_does(lr, w0, row, fast, monkeypatch):
    X, y = _data(8000, 2, np.float64, seed=2, layout="C")
    order = epoch_order(3, 0, 8000)
    late = 8000 // 16 // 4 * 3 + 1
    if row is not None:
        i = order[late * 16]
        X[i], y[i] = row, 10.0
    w = np.array(w0)
    ref = _numpy_epoch(X, y, order, 16, w, np.float64(0.3), lr, monkeypatch=monkeypatch)
    got = memory.minibatch_epoch(X, y, order, 16, w.copy(), np.float64(0.3), lr, 0, EpochSums(), lambda: False)
    assert ref.diverged and got.diverged and got.batch == ref.batch
    assert row is None or got.batch == late
    np.testing.assert_allclose(got.w, ref.w, rtol=1e-12)
    assert got.sums.grad_norm == float("inf") and got.sums.rows == ref.sums.rows
    assert got.sums.squared_error == pytest.approx(ref.sums.squared_error, rel=1e-12)


def test_a_checkpoint_moves_between_the_numpy_and_the_compiled_path(fast, monkeypatch):
    # epoch 0 by numpy, epoch 1 compiled: epoch 1 starts from numpy's parameters and ends
    # where an all-numpy run ends, to rounding
    X, y = _data(12_000, 4, np.float64, layout="C")
    kw = dict(batch_size=100, shuffle=True, seed=1, epochs=2, lr=0.01)
    w, b = np.full(4, 0.1), np.float64(0.1)

    def epochs(fast_in: list[bool]):
        e = MemoryEngine(X, y, **kw)
        st_w, st_b = w.copy(), b
        try:
            e.start(0)
            for epoch, on in enumerate(fast_in):
                monkeypatch.setenv("NEUROCLI_FAST", "on" if on else "off")
                done = e.minibatch_epoch(epoch, st_w, st_b, 0, EpochSums(), lambda: False)
                st_w, st_b = done.w, done.b
        finally:
            e.close()
        return st_w, st_b

    ref_w, ref_b = epochs([False, False])
    got_w, got_b = epochs([False, True])
    np.testing.assert_allclose(got_w, ref_w, rtol=1e-12)
    assert float(got_b) == pytest.approx(float(ref_b), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_minibatch_epochs_bits_do_not_depend_on_where_its_calls_end(dtype, fast, monkeypatch):
    # the dask engine's calls end at each of its runs, the memory engine's every CALL_BYTES: the
    # bias handed from one call to the next must keep its dtype (a float32 came back as a float)
    X, y = _data(4000, 7, dtype, layout="C")
    kw = dict(batch_size=32, shuffle=True, seed=2, epochs=1, lr=0.01)
    done = []
    for call_bytes in (1 << 20, 3 * 32 * 7 * np.dtype(dtype).itemsize):  # one call; 3 batches a call
        monkeypatch.setattr(compiled, "CALL_BYTES", call_bytes)
        e = MemoryEngine(X, y, **kw)
        e.start(0)
        done.append(e.minibatch_epoch(0, np.full(7, 0.1, dtype=dtype), dtype(0.1), 0, EpochSums(), lambda: False))
        e.close()
    assert done[0].w.tobytes() == done[1].w.tobytes() and done[0].b == done[1].b
    assert dataclasses.asdict(done[0].sums) == dataclasses.asdict(done[1].sums)


def test_the_stream_engine_steps_the_compiled_epoch_to_the_same_bits(fast, tmp_path):
    X, y = _data(20_000, 5, np.float64, layout="C")
    kw = dict(batch_size=50, shuffle=True, seed=4, epochs=1, lr=0.01)
    mapped = stream.spill(X, tmp_path)
    engines_ = [MemoryEngine(X, y, **kw), stream.StreamEngine(mapped, y, part_bytes=1 << 16, **kw)]
    done = []
    for e in engines_:
        e.start(0)
        done.append(e.minibatch_epoch(0, np.full(5, 0.1), np.float64(0.1), 0, EpochSums(), lambda: False))
        e.close()
    assert np.array_equal(done[0].w, done[1].w) and done[0].b == done[1].b
    assert dataclasses.asdict(done[0].sums) == dataclasses.asdict(done[1].sums)


def _train(root, *sets, env=None):
    args = ["train", "c.yaml", "--json", "-q"]
    for s in sets:
        args += ["--set", s]
    r = runner.invoke(app, args, env=env)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout.splitlines()[-1])  # the summary, after a line per epoch


def test_a_run_says_which_kernel_trained_and_the_two_agree(fast, in_tmp, monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6000, 3))
    y = np.abs(X @ [1.0, -2.0, 0.5]) + rng.normal(size=6000) * 0.1
    np.savetxt(in_tmp / "d.csv", np.column_stack([X, y]), fmt="%.17g", delimiter=",", header="a,b,c,y",
               comments="")
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\n"
                             "training: {epochs: 3, batch_size: 64, learning_rate: 0.01}\n")
    got = _train(in_tmp, "output.dir=fast")
    monkeypatch.setenv("NEUROCLI_FAST", "off")
    ref = _train(in_tmp, "output.dir=numpy")
    assert got["kernel"] == "compiled" and ref["kernel"] == "numpy"
    np.testing.assert_allclose(got["weights_standardized"], ref["weights_standardized"], rtol=1e-12)
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-12)


@pytest.mark.slow
def test_the_quickstart_never_loads_the_compiler(tmp_path):
    code = ("import sys, json; from neurocli.cli import main; sys.argv = ['neurocli', 'train', "
            f"{str(ROOT / 'configs' / 'quickstart.yaml')!r}, '--json', '-q', '--set', "
            f"'output.dir={tmp_path / 'run'}']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('numba' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert json.loads(r.stdout.splitlines()[-1])["kernel"] == "numpy"
    assert r.stderr.strip().splitlines()[-1] == "False", r.stderr


def test_a_numba_that_does_not_load_is_one_warning_and_numpy_trains(monkeypatch):
    def broken():
        raise ImportError("numba built for another numpy")

    monkeypatch.setattr(compiled, "kernels", broken)
    monkeypatch.setattr(compiled, "_kernels", None)
    monkeypatch.setattr(compiled, "_unloadable", False)
    monkeypatch.delenv("NEUROCLI_FAST", raising=False)
    with pytest.warns(RuntimeWarning, match="numba did not load .*numpy kernels"):
        assert not compiled.wanted(10**7, 8, np.float64)
    assert not compiled.wanted(10**7, 8, np.float64)  # told once
    assert memory.block_fn_for(10**7, 8, np.float64, 1000) is memory.block_partials


def test_a_float32_batch_whose_squared_error_overflows_stops_where_numpy_stops(fast, monkeypatch):
    # batch 3 (rows 768-1023) has targets 1.5e18: each residual squared is 2.25e36, below
    # float32's 3.4e38, but the batch's 256 squares add to 5.8e38: inf in float32, as numpy
    # sums a batch, so the epoch diverges before batch 3's step
    X, y = _data(2000, 2, np.float32, layout="C")
    y[768:1024] = np.float32(1.5e18)
    w, b = np.array([0.1, -0.1], dtype=np.float32), np.float32(0.0)
    ref = _numpy_epoch(X, y, None, 256, w, b, 1e-3, monkeypatch=monkeypatch)
    got = memory.minibatch_epoch(X, y, None, 256, w.copy(), b, 1e-3, 0, EpochSums(), lambda: False)
    assert ref.diverged and ref.batch == 3
    assert got.diverged and got.batch == 3
    np.testing.assert_allclose(got.w, ref.w, rtol=1e-5)
