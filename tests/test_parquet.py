"""Parquet files as data: the same numbers as the same values in a CSV, the same checks, errors
naming the file and the row, and one line naming the install command without pyarrow."""

from __future__ import annotations

import builtins
import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from neurocli.cli import app
from tests.conftest import PENGUINS, QUICKSTART, write

pytest.importorskip("pyarrow")
runner = CliRunner()


def _config(root, data: str, extra: str = "") -> str:
    text = QUICKSTART.read_text().replace("path: ../data/penguins.csv", f"path: {data}")
    assert f"path: {data}" in text
    return str(write(root / f"{data}.yaml", text + extra))


def _run_files(root, out: str) -> tuple:
    model = json.loads((root / out / "model.json").read_text())
    return ((root / out / "history.csv").read_text(), model["weights_standardized"], model["bias_standardized"],
            model["standardization"], model["data"]["rows_used"])


def test_the_same_values_in_parquet_train_to_the_same_bits_as_the_csv(in_tmp):
    frame = pd.read_csv(PENGUINS)
    frame.to_parquet(in_tmp / "penguins.parquet", index=False)
    (in_tmp / "penguins.csv").write_bytes(PENGUINS.read_bytes())
    for data in ("penguins.csv", "penguins.parquet"):
        args = ["train", _config(in_tmp, data), "-q", "--set", f"output.dir=runs/{data}",
                "--set", "training.epochs=40", "--set", "training.batch_size=16"]
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    assert _run_files(in_tmp, "runs/penguins.csv") == _run_files(in_tmp, "runs/penguins.parquet")


def test_predict_reads_parquet_and_gives_the_csv_predictions(in_tmp):
    runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "training.epochs=5", "--set", "output.dir=runs/m"])
    frame = pd.read_csv(PENGUINS).head(20)
    frame.to_csv(in_tmp / "in.csv", index=False)
    frame.to_parquet(in_tmp / "in.parquet", index=False)
    outs = []
    for name in ("in.csv", "in.parquet"):
        r = runner.invoke(app, ["predict", "runs/m/model.json", name])
        assert r.exit_code == 0, r.output
        outs.append(pd.read_csv(pd.io.common.StringIO(r.stdout)))
    np.testing.assert_array_equal(outs[0]["prediction"].to_numpy(), outs[1]["prediction"].to_numpy())


def test_gradcheck_and_derive_run_on_parquet(in_tmp):
    pd.read_csv(PENGUINS).to_parquet(in_tmp / "p.parquet", index=False)
    config = _config(in_tmp, "p.parquet")
    assert runner.invoke(app, ["gradcheck", config]).exit_code == 0
    r = runner.invoke(app, ["derive", config, "--show-jacobians", "--sample", "3"])
    assert r.exit_code == 0, r.output


GOOD = {"x1": [1.0, 2.0, 3.0, 4.0], "x2": [2.0, 1.0, 5.0, 3.0], "y": [3.0, 4.0, 6.0, 9.0]}


@pytest.mark.parametrize("change, fragments", [
    (lambda f: f.assign(x2=["2", "1", "abc", "3"]), ["row 3", "'x2'", "'abc'"]),
    (lambda f: f.assign(x2=[2.0, None, 5.0, 3.0]), ["row 2", "'x2'", "empty or NA", "missing: drop"]),
    (lambda f: f.assign(y=[3.0, 4.0, math.inf, 9.0]), ["row 3", "'y'", "infinite"]),
    (lambda f: f.assign(x2=[True, False, True, False]), ["row 1", "'x2'", "true/false"]),
    (lambda f: f.rename(columns={"y": "z"}), ["row 1", "'y' not in the file", "x1, x2, z"]),
], ids=["text", "null", "infinity", "boolean", "no-target"])
def test_a_bad_parquet_value_is_one_line_naming_file_and_row(change, fragments, in_tmp):
    change(pd.DataFrame(GOOD)).to_parquet(in_tmp / "d.parquet", index=False)
    write(in_tmp / "c.yaml", "data: {path: d.parquet, target: y}\n")
    r = runner.invoke(app, ["train", "c.yaml"])
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "d.parquet" in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (in_tmp / "runs").exists()


def test_a_file_that_is_not_parquet_is_one_line(in_tmp):
    (in_tmp / "d.parquet").write_bytes(b"x1,x2,y\n1,2,3\n")
    write(in_tmp / "c.yaml", "data: {path: d.parquet, target: y}\n")
    r = runner.invoke(app, ["train", "c.yaml"])
    assert r.exit_code == 2 and r.stderr.startswith("error: d.parquet: not a readable Parquet file")
    assert len(r.stderr.splitlines()) == 1


def test_without_pyarrow_the_error_names_the_install_command(in_tmp, monkeypatch):
    pd.DataFrame(GOOD).to_parquet(in_tmp / "d.parquet", index=False)
    write(in_tmp / "c.yaml", "data: {path: d.parquet, target: y}\n")
    real_import = builtins.__import__

    def no_pyarrow(name, *a, **k):
        if name.startswith("pyarrow"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    r = runner.invoke(app, ["train", "c.yaml"])
    assert r.exit_code == 2
    assert r.stderr == 'error: d.parquet: reading Parquet needs pyarrow, an optional extra: pip install "neurocli[parquet]"\n'
