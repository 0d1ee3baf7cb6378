"""The Python API (neurocli.train, load_model, evaluate, gradcheck, derive): the objects the
commands render, the numbers of the commands bit for bit, neurocli's own exceptions."""

import csv
import io
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import neurocli
from neurocli.cli import app
from neurocli.errors import ConfigError, DataError, ModelFileError
from tests.conftest import PENGUINS, QUICKSTART

runner = CliRunner()

FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]


@pytest.fixture
def run(in_tmp):
    return neurocli.train(QUICKSTART, {"training.epochs": 40, "output.dir": "runs/api"})


def test_train_returns_the_run_its_files_hold(run, in_tmp):
    model = json.loads((in_tmp / "runs/api/model.json").read_text())
    assert run.run_dir == (in_tmp / "runs/api").resolve()
    assert run.weights == model["weights"] and run.bias == model["bias"]
    assert list(run.weights) == FEATURES and run.stopped == "completed" and run.summary["epochs"] == 40
    history = list(csv.DictReader(io.StringIO((in_tmp / "runs/api/history.csv").read_text())))
    assert len(run.history) == len(history) == 40
    assert [float(h["loss"]) for h in history] == run.history["loss"].tolist()


def test_a_dict_config_trains_as_its_yaml_file(run, in_tmp):
    config = yaml.safe_load(QUICKSTART.read_text())
    config["data"]["path"] = str(PENGUINS)  # a dict's relative paths are the current folder's
    same = neurocli.train(config, {"training.epochs": 40, "output.dir": "runs/dict"})
    assert same.weights == run.weights and same.bias == run.bias
    assert same.run_dir != run.run_dir


def test_load_model_predicts_the_bits_predict_writes(run, in_tmp):
    r = runner.invoke(app, ["predict", str(run.run_dir / "model.json"), str(PENGUINS)])
    assert r.exit_code == 0, r.output
    written = [float(row["prediction"]) if row["prediction"] else math.nan
               for row in csv.DictReader(io.StringIO(r.stdout))]
    model = neurocli.load_model(run.run_dir / "model.json")
    frame = pd.read_csv(PENGUINS)
    got = model.predict(frame)
    assert np.array_equal(got, np.array(written), equal_nan=True)  # bit for bit, NaN where a feature is NA
    assert np.isnan(got).sum() == 2
    # an array takes its columns in the model's feature order; the frame's other columns are ignored
    assert np.array_equal(model.predict(frame[model.features].to_numpy()), got, equal_nan=True)
    assert model.features == FEATURES and model.weights == run.weights and model.bias == run.bias


def test_evaluate_from_python_is_the_commands(run, in_tmp):
    model_path = run.run_dir / "model.json"
    r = runner.invoke(app, ["evaluate", str(model_path), str(PENGUINS), "--json"])
    assert r.exit_code == 0, r.output
    from_cli = json.loads(r.stdout)
    assert neurocli.evaluate(model_path, PENGUINS) == from_cli
    assert neurocli.evaluate(neurocli.load_model(model_path), pd.read_csv(PENGUINS)) == from_cli
    assert from_cli["rows"] == 342 and from_cli["rows_skipped"] == 2


def test_gradcheck_and_derive_return_the_commands_objects(in_tmp):
    assert neurocli.gradcheck().verdict == "pass"  # the built-in problem
    report = neurocli.gradcheck(QUICKSTART, {"seed": 3}, points=1)
    assert report.verdict == "pass" and "seed 3" in report.points[1].label
    config = yaml.safe_load(QUICKSTART.read_text())
    config["data"]["path"] = str(PENGUINS)
    derivation = neurocli.derive(config, show_jacobians=True, sample=2)
    assert derivation.check.ok and derivation.source.startswith("the config dict")
    assert type(neurocli.derive(example="vector-chain-rule", x=2.0)).__name__ == "VectorChainRule"


def test_errors_raise_neuroclis_exceptions_with_the_located_message(run, in_tmp):
    with pytest.raises(ConfigError, match=r"^--set training.epochs=0: training.epochs must be greater"):
        neurocli.train(QUICKSTART, {"training.epochs": 0})
    with pytest.raises(ConfigError, match="key training.learning_rate: .*greater than 0"):
        neurocli.train({"data": {"path": str(PENGUINS), "target": "body_mass_g"},
                        "training": {"learning_rate": -1.0}})
    with pytest.raises(ModelFileError, match="model file not found"):
        neurocli.load_model(in_tmp / "nope.json")
    model = neurocli.load_model(run.run_dir / "model.json")
    with pytest.raises(DataError, match="feature column 'bill_depth_mm' not in the DataFrame"):
        model.predict(pd.DataFrame({"bill_length_mm": [40.0], "flipper_length_mm": [200.0]}))
    with pytest.raises(DataError, match=r"^DataFrame, row 2: column 'bill_depth_mm': 'x' is not a number"):
        model.predict(pd.DataFrame({"bill_length_mm": [40, 41], "bill_depth_mm": ["17", "x"],
                                    "flipper_length_mm": [200, 201]}))
    with pytest.raises(DataError, match="3 columns"):
        model.predict(np.zeros((2, 2)))


def test_import_neurocli_loads_neither_numpy_nor_pandas():
    code = "import neurocli, sys; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "False\n"
    code = "import neurocli, sys; neurocli.load_model; print('numpy' in sys.modules, callable(neurocli.train))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "True True\n"  # loaded on first use


def test_a_run_that_diverges_is_returned_with_a_warning(in_tmp):
    # x ~ 1e100, y = 3x, w = 1, b = 0: the first step sends w to about 4e200 / N, the next z
    # overflows: the run stops as diverged (the command exits 1; Python gets the run)
    config = {"data": {"path": "big.csv", "target": "y", "standardize": False},
              "model": {"weights_init": [1.0], "bias_init": 0.0}, "training": {"epochs": 50, "learning_rate": 1.0}}
    (in_tmp / "big.csv").write_text("x,y\n1e100,3e100\n2e100,6e100\n1.5e100,4.5e100\n")
    with pytest.warns(RuntimeWarning, match="learning_rate"):
        run = neurocli.train(config)
    assert run.stopped == "diverged" and run.summary["epochs"] < 50 and math.isfinite(run.weights["x"])


def test_quiet_false_prints_the_plain_lines_and_the_summary(in_tmp, capsys):
    neurocli.train(QUICKSTART, {"training.epochs": 5, "output.dir": "runs/loud"}, quiet=False)
    out = capsys.readouterr().out
    assert out.startswith("epoch 1/5  loss ") and "\nepoch 5/5  loss " in out
    assert "neurocli train" in out and "runs/loud" in out
