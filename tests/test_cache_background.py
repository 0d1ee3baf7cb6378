"""The cache entry a training run writes while it trains (its prepared data): whole or
absent, never in the way."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write

# y = 2a - b + 10 on a small grid: a run that learns something, so it warns of nothing else
ROWS = [(a, b, 2 * a - b + 10) for a in range(12) for b in range(10)]


@pytest.fixture
def project(tmp_path):
    data = write(tmp_path / "d.csv", "a,b,y\n" + "".join(f"{a},{b},{y}\n" for a, b, y in ROWS))
    config = write(tmp_path / "c.yaml", f"data: {{path: {data}, target: y, validation_fraction: 0.25}}\n"
                                        f"training: {{epochs: 20, learning_rate: 0.1}}\n"
                                        f"output: {{dir: {tmp_path / 'runs'}}}\n")
    return config, tmp_path / "cache"


def train(config: Path, cache: Path, *, code: str | None = None, wait: bool = True, **env):
    """`neurocli train --json` as its own process (or ``code`` run before the command line)."""
    start = f"{code or ''}\nimport runpy, sys\nsys.argv = ['neurocli', 'train', {str(config)!r}, '--json']\n" \
            f"runpy.run_module('neurocli', run_name='__main__')"
    p = subprocess.Popen([sys.executable, "-c", start], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "NEUROCLI_CACHE_DIR": str(cache), **env})
    if wait:
        out, err = p.communicate(timeout=120)
        return p.returncode, out, err
    return p


def entries(cache: Path) -> list[Path]:
    return sorted(d for d in cache.iterdir() if d.is_dir() and not d.name.startswith(".")) if cache.exists() else []


def table_entry(cache: Path) -> list[Path]:
    """The entries of the read table (its X, y and row numbers), not of the prepared data."""
    return [d for d in entries(cache) if (d / "y.npy").exists()]


def prepared_entry(cache: Path) -> list[Path]:
    return [d for d in entries(cache) if (d / "y_train.npy").exists()]


def weights(out: str) -> list[float]:
    summary = json.loads(out.strip().splitlines()[-1])
    return json.loads(Path(summary["run_dir"], "model.json").read_text())["weights_standardized"]


def test_the_entry_written_while_training_serves_the_next_run_the_same_bits(project):
    config, cache = project
    code, out, err = train(config, cache)
    assert code == 0, err
    # one entry, whole once the process has ended: the prepared data (a training run on one
    # file caches no table, so its load waits on no entry's writing)
    [prepared] = prepared_entry(cache)
    assert entries(cache) == [prepared] and table_entry(cache) == []
    meta = json.loads((prepared / "meta.json").read_text())
    values = np.array(ROWS, dtype=np.float64)
    rows = np.concatenate([np.load(prepared / "train_rows.npy"), np.load(prepared / "val_rows.npy")])
    assert sorted(rows) == list(range(len(ROWS)))  # training rows first, then the held-out ones
    assert np.array_equal(np.concatenate([np.load(prepared / "y_train.npy"), np.load(prepared / "y_val.npy")]),
                          values[rows, 2])
    code2, out2, err2 = train(config, cache)
    assert code2 == 0, err2
    assert entries(cache) == [prepared] and json.loads((prepared / "meta.json").read_text()) == meta  # not rewritten
    code3, out3, _ = train(config, cache, NEUROCLI_CACHE="off")
    assert weights(out) == weights(out2) == weights(out3)


# The writer stops after X is in the file, as a slow disk would have it.
STALL = """
import pathlib, time
import numpy as np
from neurocli import cache
save = np.save
def stalled(file, array, **kw):
    save(file, array, **kw)
    if str(file).endswith('X.npy'):
        pathlib.Path(file).parent.parent.joinpath('stalled').touch()
        time.sleep(600)
cache.np.save = stalled
"""


def test_a_process_killed_while_it_writes_the_entry_leaves_none_and_the_next_run_parses(project):
    config, cache = project
    p = train(config, cache, code=STALL, wait=False)
    try:
        deadline = time.monotonic() + 60
        while not (cache / "stalled").exists():
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.05)
        assert any(d.name.startswith(".tmp-") and (d / "X.npy").exists() for d in cache.iterdir())
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    assert entries(cache) == []  # the half-written entry never took an entry's name
    code, out, err = train(config, cache)
    assert code == 0, err
    assert len(prepared_entry(cache)) == 1
    assert weights(out) == weights(train(config, cache, NEUROCLI_CACHE="off")[1])


def test_a_cache_folder_that_cannot_be_written_costs_one_warning_line(project, tmp_path):
    config, _ = project
    blocked = write(tmp_path / "a-file", "not a folder") / "cache"  # no folder can be made under a file
    code, out, err = train(config, blocked)
    assert code == 0
    assert err.splitlines() == [f"warning: cannot write the data cache in {blocked} (Not a directory); "
                                f"the next run parses the data again"]
    assert json.loads(out.strip().splitlines()[-1])["epochs"] == 20


def test_a_second_run_maps_the_prepared_data_and_reads_nothing_else(project, tmp_path):
    config, cache = project
    code, out, err = train(config, cache)
    assert code == 0, err
    [prepared] = prepared_entry(cache)
    meta = json.loads((prepared / "meta.json").read_text())
    # 120 rows, a quarter held out by the split rule; X stored training rows first, standardized
    assert meta["n_train"] + meta["n_val"] == 120 and 0 < meta["n_val"] < 60
    X = np.load(prepared / "X.npy").T
    values = np.array(ROWS, dtype=np.float64)
    train_rows = np.load(prepared / "train_rows.npy")
    mean, scale = np.array(meta["mean"]), np.array(meta["scale"])
    assert np.allclose(X[:meta["n_train"]] * scale + mean, values[train_rows, :2], rtol=0, atol=1e-12)
    assert np.array_equal(np.load(prepared / "y_train.npy"), values[train_rows, 2])
    code2, out2, err2 = train(config, cache)
    assert code2 == 0, err2
    assert table_entry(cache) == [] and prepared_entry(cache) == [prepared]  # nothing parsed, nothing written
    assert weights(out2) == weights(out)
    write(config, config.read_text().replace("validation_fraction: 0.25", "validation_fraction: 0.3"))
    code3, out3, _ = train(config, cache)  # another split: prepared anew, beside the first
    assert code3 == 0 and len(prepared_entry(cache)) == 2
