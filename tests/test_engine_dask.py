"""The dask engine on a LocalCluster gives the in-memory engine's bits: any parts, any worker,
a worker lost mid-epoch, a run resumed on the other engine."""

from __future__ import annotations

import builtins
import contextlib
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from neurocli.cli import app
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
    memory = MemoryEngine(X, y, batch_size=n, shuffle=False, seed=0, epochs=1, lr=0.1)
    engine = dask_engine.DaskEngine(X, y, client=client, batch_size=n, part_bytes=part_bytes)
    try:
        for w, b in [(np.full(d, 0.3, dtype), dtype(0.1)), (np.linspace(-1, 1, d).astype(dtype), dtype(-0.2))]:
            ref, got = memory.loss_and_gradient(w, b), engine.loss_and_gradient(w, b)
            assert got.loss == ref.loss and got.grad_b == ref.grad_b and got.n_active == ref.n_active
            assert got.grad_w.tobytes() == ref.grad_w.tobytes()
            assert engine.any_active(w, b) == memory.any_active(w, b)
    finally:
        engine.close()


def test_a_worker_lost_mid_epoch_changes_nothing(client):
    X, y = _data(400_000, 4, np.float64, seed=1)
    memory = MemoryEngine(X, y, batch_size=len(y), shuffle=False, seed=0, epochs=1, lr=0.1)
    engine = dask_engine.DaskEngine(X, y, client=client, batch_size=len(y), part_bytes=1 << 20)
    w, b = np.full(4, 0.2), np.float64(0.3)
    try:
        futures = [client.submit(dask_engine._on_part, dask_engine.part_partials, p, w, b, engine.rows, pure=False)
                   for p in engine._parts]
        victim = sorted(client.scheduler_info()["workers"])[0]
        with contextlib.suppress(Exception):  # the worker dies mid-epoch, without a reply; its nanny restarts it
            client.run(os._exit, 1, workers=[victim])
        client.gather(futures)  # what it held is recomputed from the other copy of each part
        ref = memory.loss_and_gradient(w, b)
        got = engine.loss_and_gradient(w, b)  # and every part is still there for the next epoch
        assert got.grad_w.tobytes() == ref.grad_w.tobytes() and got.loss == ref.loss
    finally:
        engine.close()


def _history(root, out: str) -> tuple:
    model = json.loads((root / out / "model.json").read_text())
    return (root / out / "history.csv").read_text(), model["weights_standardized"], model["bias_standardized"]


def test_a_cli_run_on_dask_is_the_same_run_and_resumes_in_memory(in_tmp):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(360_000, 3))  # 8.6 MB of float64: many blocks, sent to the workers
    with open(in_tmp / "big.csv", "w") as fh:
        fh.write("a,b,c,y\n")
        np.savetxt(fh, np.column_stack([X, np.abs(X @ [1.0, -2.0, 0.5]) + 1]), delimiter=",", fmt="%.6f")
    write(in_tmp / "c.yaml", "data: {path: big.csv, target: y, validation_fraction: 0.1}\ntraining: {epochs: 6}\n")
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


def test_minibatch_on_dask_is_refused_in_one_line(in_tmp):
    r = runner.invoke(app, ["train", str(QUICKSTART), "--set", "engine.kind=dask", "--set", "engine.workers=1",
                            "--set", "training.batch_size=8", "--set", "output.dir=runs/x"])
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "full batch only" in r.stderr
    assert r.stderr.count("\n") == 1 and not (in_tmp / "runs/x").exists()


def test_without_distributed_the_error_names_the_install_command(in_tmp, monkeypatch):
    real_import = builtins.__import__

    def no_distributed(name, *a, **k):
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_distributed)
    r = runner.invoke(app, ["train", str(QUICKSTART), "--set", "engine.kind=dask", "--set", "output.dir=runs/x"])
    assert r.exit_code == 2
    assert 'engine.kind dask needs dask.distributed, an optional extra: pip install "neurocli[dask]"' in r.stderr


def test_a_scheduler_that_does_not_answer_is_a_located_config_error(in_tmp):
    from neurocli.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot reach a dask scheduler at 'tcp://127.0.0.1:1'"):
        dask_engine.connect("tcp://127.0.0.1:1", timeout="1s")
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\ntraining: {batch_size: 2}\nengine:\n  kind: dask\n")
    write(in_tmp / "d.csv", "x1,x2,y\n1,2,3\n2,1,4\n3,5,6\n4,3,9\n")
    r = runner.invoke(app, ["train", "c.yaml"])
    assert r.exit_code == 2 and r.stderr.startswith("error: c.yaml, line 2, column 24: training.batch_size: "), r.stderr
    assert not (in_tmp / "runs").exists()
