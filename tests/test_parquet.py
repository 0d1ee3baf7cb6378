"""Parquet files as data: the same numbers as the same values in a CSV, the same checks, errors
naming the file and the row, and one line naming the install command without pyarrow."""

from __future__ import annotations

import builtins
import json
import math
import re

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
    (lambda f: f.rename(columns={"y": "z"}), ["c.yaml", "data.target: column 'y' is not in d.parquet", "x1, x2, z"]),
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


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_data_set_cut_into_files_trains_to_the_bits_of_one_file(kind, in_tmp):
    frame = pd.read_csv(PENGUINS)
    (in_tmp / "penguins.csv").write_bytes(PENGUINS.read_bytes())
    (in_tmp / "parts").mkdir()
    cuts = [0, 1, 50, 51, 200, len(frame) - 1, len(frame)]  # uneven parts, a one-row part, a one-row last part
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        part = frame.iloc[a:b]
        if kind == "csv":
            part.to_csv(in_tmp / f"parts/p{i:02d}.csv", index=False)
        else:
            part.to_parquet(in_tmp / f"parts/p{i:02d}.parquet", index=False)
    runs = {}
    for data in ("penguins.csv", "parts", f"parts/p*.{kind}"):
        config = write(in_tmp / "c.yaml", QUICKSTART.read_text().replace("path: ../data/penguins.csv", f"path: '{data}'"))
        r = runner.invoke(app, ["train", str(config), "-q", "--set", "output.dir=runs/r", "--set", "training.epochs=30",
                                "--set", "training.batch_size=8"])
        assert r.exit_code == 0, (data, r.output)
        runs[data] = _run_files(in_tmp, sorted((in_tmp / "runs").iterdir())[-1].relative_to(in_tmp))
    assert runs["penguins.csv"] == runs["parts"] == runs[f"parts/p*.{kind}"]


def test_a_bad_cell_in_the_fifth_file_names_that_file_and_its_line(in_tmp):
    (in_tmp / "d").mkdir()
    for i in range(6):
        rows = "".join(f"{i * 10 + j},{j},{2 * j}\n" for j in range(5))
        if i == 4:
            rows = rows.replace("42,2,4", "42,oops,4")
        write(in_tmp / f"d/part{i}.csv", "x1,x2,y\n" + rows)
    write(in_tmp / "c.yaml", "data: {path: d, target: y}\n")
    r = runner.invoke(app, ["train", "c.yaml"])
    assert r.exit_code == 2 and r.stderr.startswith("error: d/part4.csv, line 4: column 'x2': 'oops'"), r.stderr


def test_files_with_other_columns_or_formats_are_refused_naming_the_file(in_tmp):
    (in_tmp / "d").mkdir()
    write(in_tmp / "d/a.csv", "x1,x2,y\n1,2,3\n2,1,4\n")
    write(in_tmp / "d/b.csv", "x1,x3,y\n1,2,3\n2,1,4\n")
    write(in_tmp / "c.yaml", "data: {path: d, target: y}\n")
    r = runner.invoke(app, ["train", "c.yaml"])
    assert r.exit_code == 2 and "d/b.csv, line 1: its columns (x1, x3, y) are not those of a.csv" in r.stderr
    pd.DataFrame(GOOD).to_parquet(in_tmp / "d/b.parquet", index=False)
    (in_tmp / "d/b.csv").unlink()
    r = runner.invoke(app, ["train", "c.yaml"])
    assert r.exit_code == 2 and "b.parquet: a Parquet file among CSV files" in r.stderr, r.stderr
    write(in_tmp / "g.yaml", "data: {path: 'nothing/*.csv', target: y}\n")
    r = runner.invoke(app, ["train", "g.yaml"])
    assert r.exit_code == 2 and "no file matches this pattern" in r.stderr and "g.yaml, line 1" in r.stderr


def test_a_url_is_fetched_once_and_trains_to_the_bits_of_the_local_file(in_tmp):
    fsspec = pytest.importorskip("fsspec")
    memfs = fsspec.filesystem("memory")
    frame = pd.read_csv(PENGUINS)
    with memfs.open("/bucket/part-0.parquet", "wb") as fh:
        frame.iloc[:100].to_parquet(fh, index=False)
    with memfs.open("/bucket/part-1.parquet", "wb") as fh:
        frame.iloc[100:].to_parquet(fh, index=False)
    frame.to_parquet(in_tmp / "local.parquet", index=False)
    runs = []
    for data in ("local.parquet", "memory://bucket/part-*.parquet", f"file://{in_tmp}/local.parquet"):
        config = write(in_tmp / "c.yaml", QUICKSTART.read_text().replace("path: ../data/penguins.csv", f"path: '{data}'"))
        out = f"runs/{len(runs)}"
        r = runner.invoke(app, ["train", str(config), "-q", "--set", f"output.dir={out}", "--set", "training.epochs=20"])
        assert r.exit_code == 0, (data, r.output)
        runs.append(_run_files(in_tmp, out))
        model = json.loads((in_tmp / out / "model.json").read_text())
        assert model["data"]["path"] == (data if "://" in data else str(in_tmp / data))
    assert runs[0] == runs[1] == runs[2]
    with memfs.open("/bucket/bad.csv", "w") as fh:  # a bad cell in a fetched file names the URL, not the copy
        fh.write("x1,y\n1,2\noops,3\n")
    write(in_tmp / "b.yaml", "data: {path: 'memory://bucket/bad.csv', target: y}\n")
    r = runner.invoke(app, ["train", "b.yaml"])
    url = memfs.unstrip_protocol("/bucket/bad.csv")  # as fsspec names it
    assert r.exit_code == 2 and r.stderr.startswith(f"error: {url}, line 3: column 'x1'"), r.stderr
    write(in_tmp / "n.yaml", "data: {path: 'memory://bucket/none-*.csv', target: y}\n")
    r = runner.invoke(app, ["train", "n.yaml"])
    assert r.exit_code == 2 and "n.yaml, line 1" in r.stderr and "no file at this URL" in r.stderr, r.stderr
    memfs.rm("/bucket", recursive=True)


def test_a_folder_given_as_a_url_trains_to_the_bits_of_the_local_folder(in_tmp):
    fsspec = pytest.importorskip("fsspec")
    memfs = fsspec.filesystem("memory")
    frame = pd.read_csv(PENGUINS)
    (in_tmp / "pq").mkdir()
    for k, part in enumerate((frame.iloc[:100], frame.iloc[100:250], frame.iloc[250:])):
        part.to_parquet(in_tmp / f"pq/p{k}.parquet", index=False)
    write(in_tmp / "pq/README.md", "not data\n")  # the folder's other files are not data
    (in_tmp / "pq/sub").mkdir()
    for f in (in_tmp / "pq").iterdir():
        if f.is_file():
            memfs.pipe(f"/folder-bucket/pq/{f.name}", f.read_bytes())
    memfs.pipe("/folder-bucket/pq/sub/p9.parquet", (in_tmp / "pq/p0.parquet").read_bytes())  # not in the folder
    try:
        runs = []
        for data in ("pq", f"file://{in_tmp}/pq", f"file://{in_tmp}/pq/", "memory://folder-bucket/pq"):
            out = f"runs/{len(runs)}"
            r = runner.invoke(app, ["train", _config(in_tmp, "pq"), "-q", "--set", f"data.path={data}",
                                    "--set", f"output.dir={out}", "--set", "training.epochs=20"])
            assert r.exit_code == 0, (data, r.output)
            sha = json.loads((in_tmp / out / "model.json").read_text())["data"]["sha256"]
            runs.append((*_run_files(in_tmp, out), sha))  # the same data set: its files, their names, their order
        used = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
        assert runs[0][-2] == len(frame.dropna(subset=used))  # every part's rows, none of sub/'s
        assert all(run == runs[0] for run in runs), [run[-2:] for run in runs]
        r = runner.invoke(app, ["evaluate", "runs/0/model.json", "memory://folder-bucket/pq/"])
        local = runner.invoke(app, ["evaluate", "runs/0/model.json", "pq"])
        assert r.exit_code == 0 and r.stdout.splitlines()[1:] == local.stdout.splitlines()[1:], r.output
    finally:
        memfs.rm("/folder-bucket", recursive=True)


def test_an_empty_or_mixed_folder_url_is_one_located_line(in_tmp):
    (in_tmp / "empty").mkdir()
    write(in_tmp / "empty/notes.txt.bak", "no data\n")
    write(in_tmp / "c.yaml", f"data: {{path: 'file://{in_tmp}/empty', target: y}}\n")
    r = runner.invoke(app, ["train", "c.yaml"])
    # the value starts after "data: {path: ", 13 characters: column 14
    assert r.exit_code == 2 and r.stderr == (f"error: c.yaml, line 1, column 14: data.path: file://{in_tmp}/empty: "
                                             "the folder holds no CSV or Parquet file\n"), r.stderr
    (in_tmp / "mixed").mkdir()
    pd.DataFrame(GOOD).to_parquet(in_tmp / "mixed/a.parquet", index=False)
    write(in_tmp / "mixed/b.csv", "x1,x2,y\n1,2,3\n")
    write(in_tmp / "m.json", json.dumps({"format": "neurocli.model/2", "features": ["x1", "x2"],
                                         "weights_standardized": [1.0, 1.0], "bias_standardized": 0.0,
                                         "standardization": None}))
    r = runner.invoke(app, ["predict", "m.json", f"file://{in_tmp}/mixed"])
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: file://{in_tmp}/mixed/b.csv: a CSV file among Parquet files (a.parquet, ...)")


def test_an_overflowing_prediction_on_parquet_names_its_row(in_tmp):
    pd.DataFrame({"x1": [1.0, 2.0, 3.0], "x2": [2.0, 1e300, 1.0]}).to_parquet(in_tmp / "ov.parquet", index=False)
    write(in_tmp / "m.json", json.dumps({"format": "neurocli.model/2", "features": ["x1", "x2"],
                                         "weights_standardized": [1.0, 1e10], "bias_standardized": 0.0,
                                         "standardization": None}))
    r = runner.invoke(app, ["predict", "m.json", "ov.parquet"])
    assert r.exit_code == 2 and "the prediction for ov.parquet, row 2, overflows float64" in r.stderr, r.stderr


def test_a_row_of_a_data_set_of_several_files_is_named_by_its_file(in_tmp):
    from neurocli.sources import data_files, read_data_set

    (in_tmp / "d").mkdir()
    write(in_tmp / "d/a.csv", "x,y\n1,2\n\n3,4\n")  # a blank line: row 1 of a.csv is on line 4
    pd.DataFrame({"x": [5.0, None, 7.0], "y": [1.0, 2.0, 3.0]}).to_csv(in_tmp / "d/b.csv", index=False)
    table, _ = read_data_set(in_tmp / "d", data_files(in_tmp / "d"), target="y", features=None, missing="drop",
                             delimiter=",", layout="C")
    assert [table.place(i) for i in range(len(table.rows))] == ["a.csv, line 2", "a.csv, line 4", "b.csv, line 2",
                                                                "b.csv, line 4"]


def _penguin_parquet_parts(folder) -> list:
    """The penguins data in 3 Parquet files of uneven length, in name order."""
    frame = pd.read_csv(PENGUINS)
    folder.mkdir()
    cuts = [0, 120, 121, len(frame)]  # a one-row file in the middle
    paths = [folder / f"q{i}.parquet" for i in range(3)]
    for path, a, b in zip(paths, cuts, cuts[1:]):
        frame.iloc[a:b].to_parquet(path, index=False)
    return paths


def _derived_sample(config: str, sample: int) -> dict:
    r = runner.invoke(app, ["derive", config, "--show-jacobians", "--sample", str(sample), "--format", "json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["sample"]


FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]


@pytest.mark.parametrize("sample", [0, 90, 91, 264])
def test_derive_names_the_file_and_row_of_the_sample_in_a_data_set_of_parquet_files(sample, in_tmp):
    from neurocli.pipeline import load_inputs

    _penguin_parquet_parts(in_tmp / "parts")
    config = _config(in_tmp, "parts")
    got = _derived_sample(config, sample)
    file, row = got["place"].rsplit(", row ", 1)
    assert got["line"] is None
    found = pd.read_parquet(in_tmp / "parts" / file).iloc[int(row) - 1]  # "row N" counts from 1
    st = load_inputs(config).prepared.standardization
    np.testing.assert_allclose(found[FEATURES].to_numpy(float), np.array(got["x"]) * st.scale + st.mean, rtol=1e-12)
    assert found["body_mass_g"] == got["y"]


def test_derive_names_the_row_of_the_sample_in_one_parquet_file(in_tmp):
    from neurocli.pipeline import load_inputs

    pd.read_csv(PENGUINS).to_parquet(in_tmp / "p.parquet", index=False)
    config = _config(in_tmp, "p.parquet")
    got = _derived_sample(config, 200)
    assert got["line"] is None and got["place"].startswith("row ")
    found = pd.read_parquet(in_tmp / "p.parquet").iloc[int(got["place"][4:]) - 1]
    st = load_inputs(config).prepared.standardization
    np.testing.assert_allclose(found[FEATURES].to_numpy(float), np.array(got["x"]) * st.scale + st.mean, rtol=1e-12)
    # the same sample as in the CSV the file was made from: its line is its row plus the header
    csv_line = _derived_sample(str(QUICKSTART), 200)["line"]
    assert got["place"] == f"row {csv_line - 1}"
    text = runner.invoke(app, ["derive", config, "--show-jacobians", "--sample", "200"]).stdout
    assert f"sample 200 ({got['place']}): x = " in text
    assert re.search(r"^\s*i\s+row\s+zᵢ", text, re.M)  # the per-sample table: a row column


def test_gradcheck_names_samples_by_parquet_file_and_row(in_tmp):
    from neurocli.pipeline import load_inputs

    _penguin_parquet_parts(in_tmp / "parts")
    config = _config(in_tmp, "parts")
    d = json.loads(runner.invoke(app, ["gradcheck", config, "--json"]).stdout)
    closest, place = d["kink"]["closest"], d["kink"]["closest_place"]
    file, row = place.rsplit(", row ", 1)
    found = pd.read_parquet(in_tmp / "parts" / file).iloc[int(row) - 1]
    p = load_inputs(config).prepared
    raw = p.X_train[closest] * p.standardization.scale + p.standardization.mean
    np.testing.assert_allclose(found[FEATURES].to_numpy(float), raw, rtol=1e-12)
    assert found["body_mass_g"] == p.y_train[closest]


def test_predictions_on_parquet_parts_are_the_predictions_on_the_whole_file(in_tmp):
    runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "training.epochs=5", "--set", "output.dir=runs/m"])
    pd.read_csv(PENGUINS).to_parquet(in_tmp / "whole.parquet", index=False)
    _penguin_parquet_parts(in_tmp / "parts")
    one = runner.invoke(app, ["predict", "runs/m/model.json", "whole.parquet"])
    assert one.exit_code == 0, one.output
    for data in ("parts", "parts/q*.parquet"):
        r = runner.invoke(app, ["predict", "runs/m/model.json", data, "-o", "out.csv"])
        assert r.exit_code == 0, r.output
        assert (in_tmp / "out.csv").read_text().split("\n", 1) == one.stdout.split("\n", 1)


def test_a_parquet_file_with_other_columns_is_refused_by_predict_naming_it(in_tmp):
    runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "training.epochs=2", "--set", "output.dir=runs/m"])
    parts = _penguin_parquet_parts(in_tmp / "parts")
    pd.read_parquet(parts[2]).drop(columns=["year"]).to_parquet(parts[2], index=False)
    r = runner.invoke(app, ["predict", "runs/m/model.json", "parts", "-o", "out.csv"])
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: parts/q2.parquet, row 1: its columns (") and not (in_tmp / "out.csv").exists()
