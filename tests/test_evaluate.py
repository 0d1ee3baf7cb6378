"""neurocli evaluate, and standard input for predict and evaluate: the metrics against a loop
over predict's own output rows, the JSON keys, the rows left out, the located errors."""

import csv
import io
import json
import math

import pytest
from typer.testing import CliRunner

from neurocli.cache import cache_dir
from neurocli.cli import app
from tests.conftest import PENGUINS, QUICKSTART, write

runner = CliRunner()

FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
TARGET = "body_mass_g"


@pytest.fixture
def model(in_tmp):
    r = runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "training.epochs=60"])
    assert r.exit_code == 0, r.output
    return in_tmp / "runs/quickstart/model.json"


def _held_out(folder):
    """The penguins with a target blanked (features there: left out for the target) and a
    flipper far too short (its prediction is cut to 0 by the ReLU), beside the 2 NA rows."""
    rows = list(csv.DictReader(open(PENGUINS, newline="")))
    rows[5][TARGET] = ""
    rows[7]["flipper_length_mm"] = "20"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write(folder / "held.csv", out.getvalue())


def _by_loop(predicted_csv: str) -> dict:
    """MSE, RMSE, MAE and R^2 over predict's output rows that have a prediction and a target."""
    pairs, skipped = [], 0
    for row in csv.DictReader(io.StringIO(predicted_csv)):
        if row["prediction"] == "" or row[TARGET] in ("", "NA"):
            skipped += 1
            continue
        pairs.append((float(row["prediction"]), float(row[TARGET])))
    n = len(pairs)
    sse = sum((p - y) ** 2 for p, y in pairs)
    sae = sum(abs(p - y) for p, y in pairs)
    mean = sum(y for _, y in pairs) / n
    sst = sum((y - mean) ** 2 for _, y in pairs)
    return {"mse": sse / n, "rmse": math.sqrt(sse / n), "mae": sae / n, "r2": 1 - sse / sst, "rows": n,
            "rows_skipped": skipped}


def test_evaluate_is_the_loop_over_predicts_rows(model, in_tmp):
    held = _held_out(in_tmp)
    predicted = runner.invoke(app, ["predict", str(model), str(held)])
    assert predicted.exit_code == 0, predicted.output
    expected = _by_loop(predicted.stdout)
    assert any(row["prediction"] == "0.0" for row in csv.DictReader(io.StringIO(predicted.stdout)))
    r = runner.invoke(app, ["evaluate", str(model), str(held), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert set(got) == {"mse", "rmse", "mae", "r2", "rows", "rows_skipped"}
    assert (got["rows"], got["rows_skipped"]) == (expected["rows"], expected["rows_skipped"]) == (341, 3)
    for key in ("mse", "rmse", "mae", "r2"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12), key
    assert r.stderr == f"note: left out 3 rows of {held} with an empty or NA cell\n"


def test_the_plain_table_fits_80_columns_and_shows_the_numbers(model, in_tmp):
    r = runner.invoke(app, ["evaluate", str(model), str(PENGUINS)], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)  # the long paths wrap
    assert TARGET in "".join(lines[:-2]) and lines[-2].split() == ["MSE", "RMSE", "MAE", "R^2"]
    got = json.loads(runner.invoke(app, ["evaluate", str(model), str(PENGUINS), "--json"]).stdout)
    cells = lines[-1].split()
    assert cells[:2] == ["342", "rows"] and got["rows"] == 342 and got["rows_skipped"] == 2
    assert float(cells[3]) == pytest.approx(got["rmse"], rel=1e-5)
    assert float(cells[5]) == pytest.approx(got["r2"], abs=1e-4)


def test_a_parquet_file_scores_as_its_csv(model, in_tmp):
    import pandas as pd

    frame = pd.read_csv(PENGUINS)[FEATURES + [TARGET]]
    frame.to_parquet(in_tmp / "p.parquet")
    frame.to_csv(in_tmp / "p.csv", index=False)
    a = runner.invoke(app, ["evaluate", str(model), "p.parquet", "--json"])
    b = runner.invoke(app, ["evaluate", str(model), "p.csv", "--json"])
    assert a.exit_code == b.exit_code == 0, a.output + b.output
    assert json.loads(a.stdout) == json.loads(b.stdout)


def test_evaluate_errors_are_predicts(model, in_tmp):
    write(in_tmp / "no_target.csv", "bill_length_mm,bill_depth_mm,flipper_length_mm\n40,17,200\n")
    r = runner.invoke(app, ["evaluate", str(model), "no_target.csv"])
    assert r.exit_code == 2 and r.stderr.startswith("error: no_target.csv, line 1: target column 'body_mass_g'")
    write(in_tmp / "bad.csv", "bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g\n40,17,200,4000\n"
                              "41,x,201,4100\n")
    r = runner.invoke(app, ["evaluate", str(model), "bad.csv"])
    assert r.exit_code == 2 and "bad.csv, line 3: column 'bill_depth_mm': 'x' is not a number" in r.stderr
    write(in_tmp / "gaps.csv", "bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g\n40,17,200,NA\n")
    r = runner.invoke(app, ["evaluate", str(model), "gaps.csv"])
    assert r.exit_code == 2 and "no row to score: its one row has an empty or NA" in r.stderr
    assert runner.invoke(app, ["evaluate", "nope.json", str(PENGUINS)]).exit_code == 2



def test_a_squared_error_that_overflows_is_refused_at_its_row(model, in_tmp):
    header = "bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g\n"
    # a flipper of 1e300 mm: its prediction, about w * 1e300 / scale, is finite, and its error
    # squared (about 1e600) is past float64's largest, 1.8e308
    write(in_tmp / "far.csv", header + "40,17,200,4000\n41,18,1e300,4100\n")
    assert runner.invoke(app, ["predict", str(model), "far.csv"]).exit_code == 0
    r = runner.invoke(app, ["evaluate", str(model), "far.csv"])
    assert r.exit_code == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1
    assert "far.csv, line 3," in r.stderr and "overflows float64" in r.stderr
    # a flipper of 1e308: the prediction itself overflows, refused as predict refuses it
    write(in_tmp / "inf.csv", header + "40,17,200,4000\n41,18,1e308,4100\n")
    r = runner.invoke(app, ["evaluate", str(model), "inf.csv"])
    predicted = runner.invoke(app, ["predict", str(model), "inf.csv"])
    assert r.exit_code == predicted.exit_code == 2 and r.stderr == predicted.stderr
    assert "inf.csv, line 3, overflows" in r.stderr


def test_the_delimiter_hint_names_the_option_of_evaluate(model, in_tmp):
    write(in_tmp / "semi.csv", "bill_length_mm;bill_depth_mm;flipper_length_mm;body_mass_g\n40;17;200;4000\n")
    r = runner.invoke(app, ["evaluate", str(model), "semi.csv"])
    assert r.exit_code == 2 and "(for predict, evaluate and init: --delimiter ';')" in r.stderr
    assert runner.invoke(app, ["evaluate", str(model), "semi.csv", "--delimiter", ";"]).exit_code == 0

def test_predict_and_evaluate_read_standard_input(model, in_tmp):
    text = PENGUINS.read_text()
    from_file = runner.invoke(app, ["predict", str(model), str(PENGUINS)])
    from_stdin = runner.invoke(app, ["predict", str(model), "-"], input=text)
    assert from_stdin.exit_code == 0, from_stdin.output
    assert from_stdin.stdout == from_file.stdout
    assert "of <stdin>" in from_stdin.stderr
    a = runner.invoke(app, ["evaluate", str(model), str(PENGUINS), "--json"])
    b = runner.invoke(app, ["evaluate", str(model), "-", "--json"], input=text)
    assert b.exit_code == 0, b.output
    assert json.loads(a.stdout) == json.loads(b.stdout)
    assert not any((cache_dir() / "stdin").iterdir())  # the copy is gone


def test_standard_input_errors_are_located_at_stdin(model, in_tmp):
    bad = "bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g\n40,17,200,4000\n\n41,18,big,4100\n"
    for command in ("predict", "evaluate"):
        r = runner.invoke(app, [command, str(model), "-"], input=bad)
        # line 1 the header, 2 a row, 3 blank, 4 the bad cell
        assert r.exit_code == 2, r.output
        assert r.stderr == "error: <stdin>, line 4: column 'flipper_length_mm': 'big' is not a number\n", command
    r = runner.invoke(app, ["predict", str(model), "-"], input="")
    assert r.exit_code == 2 and r.stderr.startswith("error: <stdin>: the data file is empty")
    r = runner.invoke(app, ["evaluate", str(model), "-"], input="PAR1\x00\x00")
    assert r.exit_code == 2 and "Parquet" in r.stderr
    assert not any((cache_dir() / "stdin").iterdir())


def test_scored_on_its_training_rows_a_model_gives_its_summarys_metrics(model, in_tmp):
    import numpy as np
    import pandas as pd

    from neurocli import rowrules

    # the training split, by the split rule (a hash of the seed and the data row), in file order
    frame = pd.read_csv(PENGUINS)
    held_out = rowrules.validation_mask(0, np.arange(len(frame)), 0.2)
    frame[~held_out].to_csv(in_tmp / "train_rows.csv", index=False)
    r = runner.invoke(app, ["evaluate", str(model), "train_rows.csv", "--json"])
    assert r.exit_code == 0, r.output
    got, saved = json.loads(r.stdout), json.loads(model.read_text())["metrics"]
    # train held X by column, evaluate by row: the BLAS may add a row's products in another order
    assert [got[k] for k in ("mse", "rmse", "mae", "r2")] == pytest.approx(
        [saved[k] for k in ("loss", "rmse", "mae", "r2")], rel=1e-12)
    assert got["rows"] == 265 and got["rows_skipped"] == 2  # the 2 rows of NA measurements fall in this split
