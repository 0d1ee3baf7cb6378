"""The dask engine on a LocalCluster gives the in-memory engine's bits: any parts, any worker,
a worker lost mid-epoch, a run resumed on the other engine; full batch and mini-batch."""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import functools
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from neurocli import engines, neuron
from neurocli.cli import app
from neurocli.engines import SHUFFLE_BLOCK_ROWS, EpochSums, compiled, epoch_order, memory
from neurocli.engines.memory import MemoryEngine
from tests.conftest import QUICKSTART, write

distributed = pytest.importorskip("distributed")
from neurocli.engines import dask_engine  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def client():
    c = dask_engine.local_client(2, "auto")
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


def _data(n: int, d: int, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    full = np.asfortranarray(rng.normal(size=(n + n // 9, d)).astype(dtype))  # a training split's view, as prepare gives
    y = (np.abs(full[:n] @ rng.normal(size=d)) + rng.normal(size=n)).astype(dtype)
    return full[:n], y


@pytest.mark.parametrize("n, d, dtype", [(400_000, 4, np.float64), (700_003, 3, np.float32)])
@pytest.mark.parametrize("part_bytes", [1 << 20, 5 << 20, 64 << 20])
def test_the_full_batch_gradient_is_the_memory_engines_bits_in_any_parts(n, d, dtype, part_bytes, client):
    X, y = _data(n, d, dtype)
    kw = dict(batch_size=n, shuffle=False, seed=0, epochs=1, lr=0.1)
    in_memory = MemoryEngine(X, y, **kw)
    engine = dask_engine.DaskEngine(X, y, client=client, part_bytes=part_bytes, **kw)
    try:
        for w, b in [(np.full(d, 0.3, dtype), dtype(0.1)), (np.linspace(-1, 1, d).astype(dtype), dtype(-0.2))]:
            ref, got = in_memory.loss_and_gradient(w, b), engine.loss_and_gradient(w, b)
            assert got.loss == ref.loss and got.grad_b == ref.grad_b and got.n_active == ref.n_active
            assert got.grad_w.tobytes() == ref.grad_w.tobytes()
            assert engine.any_active(w, b) == in_memory.any_active(w, b)
    finally:
        engine.close()


def test_a_worker_lost_mid_epoch_changes_nothing(client):
    X, y = _data(400_000, 4, np.float64, seed=1)
    kw = dict(batch_size=len(y), shuffle=False, seed=0, epochs=1, lr=0.1)
    in_memory = MemoryEngine(X, y, **kw)
    engine = dask_engine.DaskEngine(X, y, client=client, part_bytes=1 << 20, **kw)
    w, b = np.full(4, 0.2), np.float64(0.3)
    try:
        futures = [client.submit(dask_engine._on_part, dask_engine.part_partials, p, w, b, engine.rows, pure=False)
                   for p in engine._parts]
        victim = sorted(client.scheduler_info()["workers"])[0]
        with contextlib.suppress(Exception):  # the worker dies mid-epoch, without a reply; its nanny restarts it
            client.run(os._exit, 1, workers=[victim])
        client.gather(futures)  # what it held is recomputed from the other copy of each part
        ref = in_memory.loss_and_gradient(w, b)
        got = engine.loss_and_gradient(w, b)  # and every part is still there for the next epoch
        assert got.grad_w.tobytes() == ref.grad_w.tobytes() and got.loss == ref.loss
    finally:
        engine.close()


def test_the_second_copy_of_every_part_stays(client):
    # dask's active memory manager would drop the extra replicas within seconds; the LocalCluster has it off
    assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.extensions["amm"].running) is False
    client.wait_for_workers(2)  # a worker killed by an earlier test is back
    X, y = _data(400_000, 4, np.float64, seed=2)
    engine = dask_engine.DaskEngine(X, y, client=client, batch_size=len(y), shuffle=False, seed=0, epochs=1, lr=0.1,
                                    part_bytes=1 << 20)
    try:
        holders = client.who_has(engine._parts)
        assert len(engine._parts) > 2 and all(len(holders[p.key]) == 2 for p in engine._parts), holders
    finally:
        engine.close()


def _history(root, out: str) -> tuple:
    model = json.loads((root / out / "model.json").read_text())
    return (root / out / "history.csv").read_text(), model["weights_standardized"], model["bias_standardized"]


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory):
    """360,000 rows of 3 features: with 2% held out, 8.5 MB of float64 to train on, many blocks,
    sent to the workers."""
    path = tmp_path_factory.mktemp("data") / "big.csv"
    rng = np.random.default_rng(5)
    X = rng.normal(size=(360_000, 3))
    with open(path, "w") as fh:
        fh.write("a,b,c,y\n")
        np.savetxt(fh, np.column_stack([X, np.abs(X @ [1.0, -2.0, 0.5]) + 1]), delimiter=",", fmt="%.6f")
    return path


def test_parts_read_by_the_workers_from_the_file_of_tiles_survive_a_lost_worker(in_tmp, big_csv, client):
    from neurocli.engines.stream import TiledColumns
    from neurocli.pipeline import load_inputs

    write(in_tmp / "c.yaml", f"data: {{path: {big_csv}, target: y, validation_fraction: 0.02}}\n")
    p = load_inputs(in_tmp / "c.yaml", ["engine.kind=dask"]).prepared  # prepared part by part, in tiles
    assert isinstance(p.X_train, TiledColumns)
    client.wait_for_workers(2)
    kw = dict(batch_size=p.X_train.shape[0], shuffle=False, seed=0, epochs=1, lr=0.1)
    engine = dask_engine.DaskEngine(p.X_train, p.y_train, client=client, part_bytes=1 << 20, **kw)
    reference = MemoryEngine(np.asarray(p.X_train), p.y_train, **kw)
    w, b = np.full(3, 0.2), np.float64(0.3)
    try:
        assert all(key.startswith("_read_part") for key in client.who_has(engine._parts))  # read there, not sent
        victim = sorted(client.scheduler_info()["workers"])[0]
        with contextlib.suppress(Exception):
            client.run(os._exit, 1, workers=[victim])
        got, ref = engine.loss_and_gradient(w, b), reference.loss_and_gradient(w, b)  # its parts read again
        assert got.grad_w.tobytes() == ref.grad_w.tobytes() and got.loss == ref.loss
    finally:
        engine.close()


def test_a_cli_run_on_dask_is_the_same_run_and_resumes_in_memory(in_tmp, big_csv):
    write(in_tmp / "c.yaml", f"data: {{path: {big_csv}, target: y, validation_fraction: 0.02}}\n"
                             "training: {epochs: 6}\n")
    common = ["train", "c.yaml", "-q", "--set", "engine.workers=2"]
    for kind in ("memory", "dask"):
        r = runner.invoke(app, [*common, "--set", f"engine.kind={kind}", "--set", f"output.dir=runs/{kind}"])
        assert r.exit_code == 0, r.output
    assert _history(in_tmp, "runs/memory") == _history(in_tmp, "runs/dask")
    # three epochs on dask, then on in memory: the same six epochs
    r = runner.invoke(app, [*common, "--set", "engine.kind=dask", "--set", "training.epochs=3",
                            "--set", "output.dir=runs/moved"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "runs/moved/config.yaml", "--resume", "runs/moved", "-q",
                            "--set", "training.epochs=6", "--set", "engine.kind=memory"])
    assert r.exit_code == 0, r.output
    assert _history(in_tmp, "runs/moved") == _history(in_tmp, "runs/memory")


# Mini-batch: data of two shuffle blocks and a row (the shuffle's last block is one row, and
# where the order puts it shifts every later block), in parts made to meet the shuffle's
# blocks in each way they can.
N = 2 * SHUFFLE_BLOCK_ROWS + 1
PARTS = {  # grid rows per block, rows per part (None: one part), and the parts' starts that gives
    "one part": (4096, None, [0, N]),
    "whole shuffle blocks, a one-row last part": (4096, 65536, [0, 65536, 131072, N]),
    "shuffle blocks across part ends": (5000, 65000, [0, 65000, 130000, N]),
    "a shuffle block split evenly": (98304, 98304, [0, 98304, N]),
}
CASES = [("one part", np.float64, 32), ("whole shuffle blocks, a one-row last part", np.float32, 48),
         ("shuffle blocks across part ends", np.float64, 13), ("a shuffle block split evenly", np.float32, 100),
         ("whole shuffle blocks, a one-row last part", np.float64, 43691)]  # 3 x 43691 = N: no shorter batch


def _rows(n: int, d: int, dtype, seed: int = 0):
    """Row-major X, as prepare lays out a mini-batch run's rows, and y."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(dtype)
    return X, (np.abs(X @ rng.normal(size=d)) + rng.normal(size=n)).astype(dtype)


def _engines(X, y, client, parts: str, batch_size: int, shuffle: bool, lr: float = 0.01):
    rows, part_rows, starts = PARTS[parts]
    row_bytes = X.shape[1] * X.dtype.itemsize
    kw = dict(batch_size=batch_size, shuffle=shuffle, seed=3, epochs=2, lr=float(X.dtype.type(lr)))
    engine = dask_engine.DaskEngine(X, y, client=client, block_bytes=rows * row_bytes,
                                    part_bytes=(part_rows or 4 * len(y)) * row_bytes, **kw)
    assert engine._bounds.tolist() == starts  # the parts this case is about
    return MemoryEngine(X, y, **kw), engine


def _epoch(engine, w, b, first_batch=0, sums=None, stop_requested=lambda: False):
    engine.start(0)  # the shuffle of epoch 0 drawn anew for each call
    return engine.minibatch_epoch(0, w.copy(), b, first_batch, EpochSums() if sums is None else sums,
                                  stop_requested)


def _stop_after(calls: int):
    asked = []

    def stop_requested() -> bool:
        asked.append(True)
        return len(asked) >= calls
    return stop_requested


def _same(got, ref) -> bool:
    return (got.w.dtype == ref.w.dtype and got.w.tobytes() == ref.w.tobytes() and type(got.b) is type(ref.b)
            and np.array_equal(got.b, ref.b) and got.sums == ref.sums and got.batch == ref.batch
            and got.diverged == ref.diverged)


@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffled", "file order"])
@pytest.mark.parametrize("parts, dtype, batch_size", CASES, ids=[f"{p}, {t.__name__}, batch {b}" for p, t, b in CASES])
def test_a_minibatch_epoch_is_the_memory_engines_bits_in_any_parts(parts, dtype, batch_size, shuffle, client,
                                                                   monkeypatch):
    # runs of 3 batches (the client's setting, sent to the workers with each task): many runs a
    # stretch, runs and batches across part ends
    monkeypatch.setattr(memory, "GATHER_BYTES", 3 * batch_size * 2 * np.dtype(dtype).itemsize)
    X, y = _rows(N, 2, dtype)
    in_memory, engine = _engines(X, y, client, parts, batch_size, shuffle)
    w, b = np.array([0.2, -0.1], dtype), dtype(0.3)
    try:
        ref = _epoch(in_memory, w, b)
        assert not ref.diverged and ref.batch == engine.n_batches and ref.sums.rows == N
        assert _same(_epoch(engine, w, b), ref)
        # resumed on dask in the middle of a run, from the memory engine's state there
        k = engine.n_batches // 6 * 3 + 1  # halfway, a batch into a run
        part = _epoch(in_memory, w, b, stop_requested=_stop_after(k))
        assert part.batch == k
        assert _same(_epoch(engine, part.w, part.b, k, dataclasses.replace(part.sums)), ref)
        # and the full-batch gradient of these row-major parts (the trainer's check of a blow-up)
        full = memory.loss_and_gradient(X, y, w, b, block_bytes=PARTS[parts][0] * 2 * np.dtype(dtype).itemsize)
        got = engine.loss_and_gradient(w, b)
        assert got.grad_w.tobytes() == full.grad_w.tobytes() and (got.loss, got.grad_b) == (full.loss, full.grad_b)
    finally:
        in_memory.close()
        engine.close()


@pytest.mark.parametrize("calls", [1, 3])
def test_a_minibatch_epoch_stopped_on_dask_resumes_in_memory_with_the_same_bits(calls, client, monkeypatch):
    monkeypatch.setattr(memory, "GATHER_BYTES", 3 * 32 * 2 * 8)
    monkeypatch.setattr(dask_engine, "STRETCH_BATCHES", 300)  # stretches of 100 runs: 300 batches
    X, y = _rows(N, 2, np.float64, seed=1)
    in_memory, engine = _engines(X, y, client, "shuffle blocks across part ends", 32, True)
    w, b = np.array([0.2, -0.1]), np.float64(0.3)
    try:
        ref = _epoch(in_memory, w, b)
        stopped = _epoch(engine, w, b, stop_requested=_stop_after(calls))  # stopped between tasks
        assert not stopped.diverged and 0 < stopped.batch <= 300 * calls and stopped.batch % 3 == 0
        assert stopped.sums.rows == stopped.batch * 32
        resumed = _epoch(in_memory, stopped.w, stopped.b, stopped.batch, dataclasses.replace(stopped.sums))
        assert _same(resumed, ref)
    finally:
        in_memory.close()
        engine.close()


# learning rate, initial weights, and a row put into the batch three quarters into the epoch
DIVERGENCES = {
    "a loss that overflows early": (1e4, [0.2, 0.2], None),
    # its residual squared overflows: the run is replayed and stops before that batch
    "a loss that overflows late": (0.01, [0.2, 0.2], [-1e200, 1e200]),
    # its residual squared is finite, X^T g is not: the step is rolled back (the epoch resumed
    # at that very batch, whose parameters are then the initial ones)
    "a step that overflows, resumed at its batch": (0.01, [0.2, 1e-160], [0.0, 1e300]),
}


@pytest.mark.filterwarnings("error")  # overflow is detected and reported, never a numpy warning
@pytest.mark.parametrize("lr, w0, row", DIVERGENCES.values(), ids=DIVERGENCES.keys())
def test_a_minibatch_epoch_that_diverges_on_dask_stops_where_the_memory_engines_does(lr, w0, row, client,
                                                                                     monkeypatch):
    monkeypatch.setattr(memory, "GATHER_BYTES", 3 * 16 * 2 * 8)
    X, y = _rows(N, 2, np.float64, seed=2)
    n_batches = -(-N // 16)
    late = n_batches // 4 * 3 + 1  # a batch into a run, in a later stretch
    first = late if row is not None and row[0] == 0.0 else 0
    if row is not None:
        i = epoch_order(3, 0, N)[late * 16]
        X[i], y[i] = row, 10.0
    in_memory, engine = _engines(X, y, client, "shuffle blocks across part ends", 16, True, lr=lr)
    w, b = np.array(w0), np.float64(0.3)
    try:
        ref = _epoch(in_memory, w, b, first)
        assert ref.diverged and ref.sums.grad_norm == float("inf")
        assert ref.batch == late if row is not None else 0 < ref.batch < 512  # at the row, or in the first stretch
        assert not first or np.array_equal(ref.w, w)  # rolled back to where the epoch was resumed
        assert _same(_epoch(engine, w, b, first), ref)
    finally:
        in_memory.close()
        engine.close()


def _run(root, out: str, *sets: str) -> tuple:
    """A training run's exit code, history, model and checkpoint state."""
    args = ["train", "c.yaml", "-q", "--set", f"output.dir={out}"]
    for s in sets:
        args += ["--set", s]
    r = runner.invoke(app, args)
    model = json.loads((root / out / "model.json").read_text())
    state = json.loads((root / out / "checkpoint.json").read_text())["state"]
    return r.exit_code, (root / out / "history.csv").read_text(), model["weights"], model["bias"], state


@pytest.mark.parametrize("shuffle, lr, exit_code", [(True, 0.01, 0), (False, 0.01, 0), (True, 1e6, 1)],
                         ids=["shuffled", "file order", "diverging"])
def test_a_minibatch_run_on_dask_is_the_memory_engines_run(shuffle, lr, exit_code, in_tmp, big_csv, client):
    # float64 (float32 halves the rows' bytes: one block, computed on the client; the
    # engine-level tests hold float32 on the workers)
    write(in_tmp / "c.yaml", f"data: {{path: {big_csv}, target: y, validation_fraction: 0.02}}\n"
                             f"training: {{epochs: 3, batch_size: 256, learning_rate: {lr}, "
                             f"shuffle: {str(shuffle).lower()}}}\n")
    on_memory = _run(in_tmp, "runs/memory")
    with distributed.get_task_stream(client) as tasks:
        on_dask = _run(in_tmp, "runs/dask", "engine.kind=dask", f"engine.scheduler={client.scheduler.address}")
    assert on_memory == on_dask and on_memory[0] == exit_code
    assert any("step_stretch" in str(t["key"]) for t in tasks.data)  # the epochs ran on the workers
    if exit_code:
        assert on_memory[4]["epoch"] == 0 and on_memory[4]["batch"] > 0  # it diverged inside the first epoch


def test_without_distributed_the_error_names_the_install_command(in_tmp, monkeypatch):
    real_import = builtins.__import__

    def no_distributed(name, *a, **k):
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_distributed)
    r = runner.invoke(app, ["train", str(QUICKSTART), "--set", "engine.kind=dask", "--set", "output.dir=runs/x"])
    assert r.exit_code == 2
    assert 'engine.kind: dask needs dask.distributed, an optional extra: pip install "neurocli[dask]"' in r.stderr
    assert 'engine.kind: engine.kind' not in r.stderr


def test_a_scheduler_that_does_not_answer_is_a_located_config_error(in_tmp, monkeypatch):
    from neurocli.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot reach a dask scheduler at 'tcp://127.0.0.1:1'"):
        dask_engine.connect("tcp://127.0.0.1:1", timeout="1s")
    monkeypatch.setattr(dask_engine, "connect", functools.partial(dask_engine.connect, timeout="1s"))
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\ntraining: {batch_size: 2}\n"
                             "engine:\n  kind: dask\n  scheduler: tcp://127.0.0.1:1\n")
    write(in_tmp / "d.csv", "x1,x2,y\n1,2,3\n2,1,4\n3,5,6\n4,3,9\n")
    r = runner.invoke(app, ["train", "c.yaml"])
    assert r.exit_code == 2 and r.stderr.startswith("error: c.yaml, line 5, column 14: engine.scheduler: "), r.stderr
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_compiled_kernels_on_dask_give_the_memory_engines_bits(dtype, client, monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setattr(compiled, "FAST_MIN_BYTES", 0)  # the workers run what the client chose
    monkeypatch.delenv("NEUROCLI_FAST", raising=False)
    monkeypatch.setattr(memory, "GATHER_BYTES", 3 * 32 * 2 * np.dtype(dtype).itemsize)
    X, y = _rows(N, 2, dtype)
    in_memory, engine = _engines(X, y, client, "shuffle blocks across part ends", 32, True)
    w, b = np.array([0.2, -0.1], dtype), dtype(0.3)
    try:
        assert engine._fast and engine._block_fn is compiled.block_partials
        ref = _epoch(in_memory, w, b)
        assert not ref.diverged and ref.batch == engine.n_batches
        assert _same(_epoch(engine, w, b), ref)
        full = memory.loss_and_gradient(X, y, w, b, block_bytes=PARTS["shuffle blocks across part ends"][0] * 2 *
                                        np.dtype(dtype).itemsize)
        got = engine.loss_and_gradient(w, b)
        assert got.grad_w.tobytes() == full.grad_w.tobytes() and (got.loss, got.grad_b) == (full.loss, full.grad_b)
    finally:
        in_memory.close()
        engine.close()


@pytest.mark.parametrize("dtype, d", [(np.float64, 100), (np.float32, 200)])
def test_wide_data_on_dask_gets_the_row_kernel_and_the_memory_engines_bits(dtype, d, client, monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setattr(compiled, "FAST_MIN_BYTES", 0)
    monkeypatch.delenv("NEUROCLI_FAST", raising=False)
    assert compiled.reads_rows(d, dtype)
    X, y = _rows(6000, d, dtype)  # 1.5 MiB blocks: 1,966 rows of 800 bytes, 4 blocks
    X = np.asfortranarray(X)  # as a run without the row kernel would hold it: the parts go row-major
    w, b = np.linspace(-0.2, 0.2, d).astype(dtype), dtype(0.1)
    engine = dask_engine.DaskEngine(X, y, client=client, batch_size=6000, shuffle=False, seed=3, epochs=1, lr=0.01,
                                    part_bytes=2500 * d * np.dtype(dtype).itemsize)
    try:
        assert engine.rows == engines.rows_per_block(6000, d, dtype) < 6000
        assert engine._fast and engine._block_fn is compiled.block_partials
        full = memory.loss_and_gradient(X, y, w, b)
        got = engine.loss_and_gradient(w, b)
        assert got.grad_w.tobytes() == full.grad_w.tobytes() and (got.loss, got.grad_b) == (full.loss, full.grad_b)
        ref = neuron.loss_and_gradient(X, y, w, b)
        rel = 1e-12 if dtype == np.float64 else 1e-4
        np.testing.assert_allclose(got.grad_w, ref.grad_w, rtol=rel, atol=rel * np.abs(ref.grad_w).max())
    finally:
        engine.close()


def test_workers_without_the_fast_extra_get_the_numpy_kernels(client, monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setattr(compiled, "FAST_MIN_BYTES", 0)
    monkeypatch.delenv("NEUROCLI_FAST", raising=False)
    assert dask_engine._workers_compile(client)  # these workers have numba, as this process does
    monkeypatch.setattr(dask_engine, "_workers_compile", lambda c: False)  # a cluster whose workers do not
    X, y = _rows(N, 2, np.float64)
    _, engine = _engines(X, y, client, "shuffle blocks across part ends", 32, True)
    try:
        assert not engine._fast and engine._block_fn is memory.block_partials
    finally:
        engine.close()
