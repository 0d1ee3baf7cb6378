"""The stream engine gives the in-memory engine's bits: per call, per epoch, per run, and for a
run resumed on the other engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from neurocli.cli import app
from neurocli.engines import EpochSums, epoch_order, rows_per_block
from neurocli.engines.memory import MemoryEngine
from neurocli.engines.stream import StreamEngine, spill
from tests.conftest import QUICKSTART, write

runner = CliRunner()


def _data(n: int, d: int, dtype, order: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.asarray(rng.normal(size=(n, d)).astype(dtype), order=order)
    y = (np.abs(X @ rng.normal(size=d)) + rng.normal(size=n)).astype(dtype)
    return X, y


@pytest.mark.parametrize("n, d, dtype", [(400_000, 4, np.float64), (700_000, 3, np.float32), (500, 3, np.float64)])
@pytest.mark.parametrize("part_bytes", [1 << 20, 64 << 20])
def test_the_full_batch_gradient_is_the_memory_engines_bits_in_any_parts(n, d, dtype, part_bytes, tmp_path):
    X, y = _data(n, d, dtype, "F")
    kw = dict(batch_size=n, shuffle=False, seed=0, epochs=1, lr=0.1)
    ref_engine = MemoryEngine(X, y, **kw)
    engine = StreamEngine(spill(X, tmp_path), y, part_bytes=part_bytes, **kw)
    assert not list(tmp_path.iterdir())  # the file is unlinked at once: nothing left behind
    assert (rows_per_block(n, d, dtype) < n) == (n > 1000)  # big data: many blocks, and with 1 MiB parts many parts
    for w, b in [(np.full(d, 0.3, dtype), dtype(0.1)), (np.linspace(-1, 1, d).astype(dtype), dtype(-0.2))]:
        ref, got = ref_engine.loss_and_gradient(w, b), engine.loss_and_gradient(w, b)
        assert got.loss == ref.loss and got.grad_b == ref.grad_b and got.n_active == ref.n_active
        assert got.grad_w.tobytes() == ref.grad_w.tobytes()
        assert engine.any_active(w, b) == ref_engine.any_active(w, b)


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_minibatch_epoch_is_the_memory_engines_bits(shuffle, tmp_path):
    X, y = _data(5000, 3, np.float64, "C")
    kw = dict(batch_size=64, shuffle=shuffle, seed=3, epochs=2, lr=0.01)
    ref_engine, engine = MemoryEngine(X, y, **kw), StreamEngine(spill(X, tmp_path), y, **kw)
    w, b = np.zeros(3), np.float64(0.5)
    for e in (ref_engine, engine):
        e.start(0)
    ref = ref_engine.minibatch_epoch(0, w.copy(), b, 0, EpochSums(), lambda: False)
    got = engine.minibatch_epoch(0, w.copy(), b, 0, EpochSums(), lambda: False)
    assert got.w.tobytes() == ref.w.tobytes() and got.b == ref.b and got.sums == ref.sums and got.batch == ref.batch
    if shuffle:
        assert not np.array_equal(epoch_order(3, 0, 5000), np.arange(5000))
    for e in (ref_engine, engine):
        e.close()


def _train(root, out: str, *sets: str) -> tuple:
    args = ["train", str(QUICKSTART), "-q", "--set", f"output.dir={out}"]
    for s in sets:
        args += ["--set", s]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    model = json.loads((root / out / "model.json").read_text())
    return (root / out / "history.csv").read_text(), model["weights_standardized"], model["bias_standardized"]


@pytest.mark.parametrize("sets", [["training.epochs=60"], ["training.batch_size=16", "training.epochs=20"],
                                  ["training.dtype=float32", "training.batch_size=8", "training.epochs=10"]],
                         ids=["full-batch", "mini-batch", "float32"])
def test_a_run_on_the_stream_engine_is_the_same_run(sets, in_tmp):
    assert _train(in_tmp, "runs/m", *sets) == _train(in_tmp, "runs/s", "engine.kind=stream", *sets)


def test_a_run_resumed_on_the_other_engine_ends_with_the_same_bits(in_tmp):
    straight = _train(in_tmp, "runs/straight", "training.early_stopping=null", "training.epochs=40")
    _train(in_tmp, "runs/moved", "training.early_stopping=null", "training.epochs=20")  # memory, 20 epochs
    r = runner.invoke(app, ["train", "runs/moved/config.yaml", "--resume", "runs/moved", "-q",
                            "--set", "training.epochs=40", "--set", "engine.kind=stream"])
    assert r.exit_code == 0, r.output
    model = json.loads((in_tmp / "runs/moved/model.json").read_text())
    moved = ((in_tmp / "runs/moved/history.csv").read_text(), model["weights_standardized"], model["bias_standardized"])
    assert moved == straight


def test_the_stream_engine_on_data_of_many_blocks_is_the_same_run(in_tmp):
    X, y = _data(360_000, 3, np.float64, "C", seed=5)  # 8.6 MB of float64: the grid has many blocks
    with open(in_tmp / "big.csv", "w") as fh:
        fh.write("a,b,c,y\n")
        np.savetxt(fh, np.column_stack([X, np.abs(y)]), delimiter=",", fmt="%.6f")
    write(in_tmp / "c.yaml", "data: {path: big.csv, target: y, validation_fraction: 0.1}\ntraining: {epochs: 4}\n")
    runs = []
    for kind in ("memory", "stream"):
        r = runner.invoke(app, ["train", "c.yaml", "-q", "--set", f"engine.kind={kind}", "--set", f"output.dir=runs/{kind}"])
        assert r.exit_code == 0, r.output
        runs.append((in_tmp / f"runs/{kind}/history.csv").read_text())
    assert runs[0] == runs[1]
