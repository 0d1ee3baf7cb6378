"""The commands end to end through the CLI: exit codes, files, and the numbers they hold."""

import csv
import io
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from neurocli.cli import app
from tests.conftest import QUICKSTART, write

runner = CliRunner()

SUMMARY_KEYS = {"loss", "val_loss", "rmse", "mae", "r2", "val_r2", "epochs", "stopped", "weights", "bias", "run_dir", "timing"}


def test_quickstart_trains_to_the_promised_r2(in_tmp):
    r = runner.invoke(app, ["train", str(QUICKSTART), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["val_r2"] >= 0.70
    run = in_tmp / "runs" / "quickstart"
    assert summary["run_dir"] == str(run.relative_to(in_tmp))
    model = json.loads((run / "model.json").read_text())
    assert model["features"] == ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
    assert model["data"]["rows_dropped"] == 2 and model["data"]["rows_used"] == 342
    assert len(model["data"]["sha256"]) == 64
    assert set(model["versions"]) >= {"neurocli", "numpy", "python"}
    history = list(csv.DictReader(io.StringIO((run / "history.csv").read_text())))
    assert len(history) == summary["epochs"] == model["epochs"]
    assert float(history[-1]["loss"]) > 0
    assert (run / "config.yaml").exists()


def test_json_stdout_is_ndjson_only(in_tmp):
    r = runner.invoke(app, ["train", str(QUICKSTART), "--json", "--set", "training.epochs=30"])
    assert r.exit_code == 0
    lines = r.stdout.strip().splitlines()
    events = [json.loads(line) for line in lines]  # every line parses
    assert all(e["event"] == "epoch" for e in events[:-1]) and events[-1]["event"] == "summary"
    assert {"epoch", "loss", "val_loss", "rmse", "mae", "grad_norm", "active_fraction"} <= set(events[0])
    assert SUMMARY_KEYS <= set(events[-1])
    assert set(events[-1]["timing"]) >= {"load_s", "train_s"}
    assert events[-1]["epochs"] == 30 and events[-1]["stopped"] == "completed"


def test_json_ends_with_the_last_epoch_and_the_restored_best_one(in_tmp):
    # patience 3 on a learning rate that overshoots: early stopping at an epoch no log_every hits
    args = ["train", str(QUICKSTART), "--json", "--set", "training.epochs=400", "--set", "training.log_every=1000",
            "--set", "training.early_stopping={patience: 3}", "--set", "training.learning_rate=0.9"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.stdout.strip().splitlines()]
    summary, best, last = events[-1], events[-2], events[-3]
    assert summary["stopped"] == "early_stopping" and summary["epochs"] < 400
    history = list(csv.DictReader(open(in_tmp / "runs/quickstart/history.csv")))
    assert last["event"] == "epoch" and last["epoch"] == summary["epochs"] == len(history)
    assert best["event"] == "best" and best["epoch"] == summary["epochs"] - 3
    assert f"(epoch {best['epoch']})" in summary["message"]
    assert repr(best["val_loss"]) == history[best["epoch"] - 1]["val_loss"]
    assert [e["epoch"] for e in events[:-2]] == [1, summary["epochs"]]  # epoch 1 and the last, once each


def test_plain_lines_end_with_the_epoch_the_run_stopped_at(in_tmp):
    r = runner.invoke(app, ["train", str(QUICKSTART), "--set", "training.log_every=1000"])
    assert r.exit_code == 0, r.output
    epochs = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("epoch ")]
    history = (in_tmp / "runs/quickstart/history.csv").read_text().splitlines()
    assert epochs == ["1/500", f"{len(history) - 1}/500"]  # the first, then the last (early stopping)


def test_weights_in_original_units_reproduce_the_standardized_model(in_tmp):
    r = runner.invoke(app, ["train", str(QUICKSTART), "--json", "--set", "training.epochs=50"])
    s = json.loads(r.stdout.strip().splitlines()[-1])
    model = json.loads((in_tmp / "runs/quickstart/model.json").read_text())
    mean = np.array(model["standardization"]["mean"])
    scale = np.array(model["standardization"]["scale"])
    x = np.array([45.0, 17.0, 200.0])
    w_std = np.array(model["weights_standardized"])
    z_std = ((x - mean) / scale) @ w_std + model["bias_standardized"]
    z_orig = x @ np.array(list(s["weights"].values())) + s["bias"]
    assert z_orig == pytest.approx(z_std, rel=1e-12)


def test_existing_run_directory_is_never_overwritten(in_tmp):
    assert runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "training.epochs=5"]).exit_code == 0
    first = (in_tmp / "runs/quickstart/model.json").read_bytes()
    r = runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "training.epochs=7"])
    assert r.exit_code == 0
    assert (in_tmp / "runs/quickstart/model.json").read_bytes() == first
    assert json.loads((in_tmp / "runs/quickstart-2/model.json").read_text())["epochs"] == 7


def test_plain_output_without_a_terminal(in_tmp):
    r = runner.invoke(app, ["train", str(QUICKSTART), "--set", "training.epochs=40"])
    assert r.exit_code == 0
    assert "\x1b[" not in r.stdout
    assert "epoch 1/40" in r.stdout and "epoch 40/40" in r.stdout
    assert "dropped 2 rows with missing values" in r.stdout
    assert "w[flipper_length_mm]" in r.stdout and "R^2" in r.stdout


def test_quiet_prints_only_the_summary(in_tmp):
    r = runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "training.epochs=40"])
    assert "epoch 1/40" not in r.stdout and "learned parameters" in r.stdout


def test_set_overrides_are_validated_like_the_file(in_tmp):
    r = runner.invoke(app, ["train", str(QUICKSTART), "--set", "training.learning_rate=-1"])
    assert r.exit_code == 2
    assert "--set training.learning_rate=-1" in r.stderr and "greater than 0" in r.stderr
    assert not (in_tmp / "runs").exists()


def test_dead_neuron_diagnosed_exit_1(in_tmp):
    r = runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "model.weights_init=zeros", "--set", "model.bias_init=0"])
    assert r.exit_code == 1
    assert "dead neuron" in r.stderr and "bias_init" in r.stderr


def test_divergence_exit_1_with_advice(in_tmp):
    # x ~ 1e100, y = 3x, w = 1, b = 0: e = -2x, the first step sends w to about lr * 4e200 / N,
    # the next z ~ 1e300 and its square overflows: the run must stop as diverged, not print inf.
    write(in_tmp / "big.csv", "x,y\n1e100,3e100\n2e100,6e100\n1.5e100,4.5e100\n")
    cfg = write(in_tmp / "big.yaml", "data: {path: big.csv, target: y, standardize: false}\n"
                "model: {weights_init: [1.0], bias_init: 0}\ntraining: {epochs: 50, learning_rate: 1.0}\n")
    r = runner.invoke(app, ["train", str(cfg), "--json"])
    assert r.exit_code == 1, r.output
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["stopped"] == "diverged" and s["epochs"] < 50
    assert math.isfinite(s["weights"]["x"])
    assert "learning_rate" in r.stderr and "standardize" in r.stderr


def test_minibatch_from_the_cli_is_reproducible(in_tmp):
    args = ["train", str(QUICKSTART), "--json", "--set", "training.batch_size=32", "--set", "training.epochs=20"]
    a = json.loads(runner.invoke(app, args).stdout.strip().splitlines()[-1])
    b = json.loads(runner.invoke(app, args).stdout.strip().splitlines()[-1])
    assert a["weights"] == b["weights"] and a["bias"] == b["bias"] and a["run_dir"] != b["run_dir"]


def test_predict_matches_the_model_by_hand(in_tmp):
    runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "training.epochs=60"])
    model_path = in_tmp / "runs/quickstart/model.json"
    model = json.loads(model_path.read_text())
    data = write(in_tmp / "new.csv", "flipper_length_mm,bill_length_mm,bill_depth_mm,name\n200,45,17,a\n190,,18,b\n")
    r = runner.invoke(app, ["predict", str(model_path), str(data), "-o", "out.csv"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO((in_tmp / "out.csv").read_text())))
    w = model["weights"]
    expected = max(0.0, 45 * w["bill_length_mm"] + 17 * w["bill_depth_mm"] + 200 * w["flipper_length_mm"] + model["bias"])
    assert float(rows[0]["prediction"]) == pytest.approx(expected, rel=1e-9)
    assert rows[0]["name"] == "a" and rows[1]["prediction"] == ""
    assert "1 row" in r.stderr
    r = runner.invoke(app, ["predict", str(model_path), str(data)])
    assert r.stdout.splitlines()[0].endswith(",prediction")


def test_predict_keeps_every_record_exactly_as_written(in_tmp):
    runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "training.epochs=5"])
    model_path = in_tmp / "runs/quickstart/model.json"
    m = json.loads(model_path.read_text())
    # leading zeros, a trailing zero, NA, a quoted field over two lines, a CRLF line, a blank
    # line (not a record: dropped) and a last line without its line end
    records = ['flipper_length_mm,bill_length_mm,bill_depth_mm,id\n', '0200,45.10,17,007\n',
               '190,NA,18,"two\nlines"\r\n', '\n', '201,46,1.7e1,"x,y"']
    write(in_tmp / "in.csv", "".join(records))
    r = runner.invoke(app, ["predict", str(model_path), "in.csv", "-o", "out.csv"])
    assert r.exit_code == 0, r.output
    w, b = m["weights"], m["bias"]

    def by_hand(flipper, length, depth):
        return max(0.0, flipper * w["flipper_length_mm"] + length * w["bill_length_mm"] + depth * w["bill_depth_mm"] + b)

    first, third = by_hand(200, 45.1, 17), by_hand(201, 46, 17)
    out = (in_tmp / "out.csv").read_bytes().decode("utf-8")
    parsed = list(csv.reader(io.StringIO(out, newline="")))
    assert out.startswith('flipper_length_mm,bill_length_mm,bill_depth_mm,id,prediction\n0200,45.10,17,007,')
    assert '\n190,NA,18,"two\nlines",\r\n201,46,1.7e1,"x,y",' in out and out.endswith("\n")
    assert float(parsed[1][4]) == pytest.approx(first, rel=1e-12)
    assert float(parsed[3][4]) == pytest.approx(third, rel=1e-12)
    assert [len(row) for row in parsed] == [5, 5, 5, 5]


def test_a_quoted_field_over_several_lines_does_not_shift_later_error_lines(in_tmp):
    write(in_tmp / "q.csv", 'x1,x2,y\n1,"2",3\n"4\n\n",1,4\n\n2,abc,4\n5,6,7\n')
    write(in_tmp / "q.yaml", "data: {path: q.csv, target: y}\n")
    r = runner.invoke(app, ["train", "q.yaml"])
    # line 1 header, 2 a row, 3-5 one record, 6 blank, 7 the bad cell
    assert r.exit_code == 2 and "q.csv, line 7: column 'x2': 'abc'" in r.stderr, r.stderr
    write(in_tmp / "q.csv", 'x1,x2,y\n1,"2",3\n"4\n\n",1,4\n\n2,3,4\n5,,7\n')
    r = runner.invoke(app, ["train", "q.yaml"])
    assert r.exit_code == 2 and "q.csv, line 8: column 'x2': empty or NA" in r.stderr, r.stderr
    # the errors pandas itself finds count records; they too name the line the record starts on
    write(in_tmp / "q.csv", 'x1,x2,y\n1,"2\n\n",3\n\n\n4,5,6,7\n')  # 1, 2-4, blank 5 and 6, the long row 7
    r = runner.invoke(app, ["train", "q.yaml"])
    assert r.exit_code == 2 and "q.csv, line 7: 4 fields but the header has 3" in r.stderr, r.stderr
    write(in_tmp / "q.csv", 'x1,x2,y\n1,"x\ny",3\n\n4,5,6\n7,"8,9\n10,11,12\n')  # the quote opened on line 6
    r = runner.invoke(app, ["train", "q.yaml"])
    assert r.exit_code == 2 and "q.csv, line 6: a quoted field is never closed" in r.stderr, r.stderr
    # predict refuses a short record: a field added at its end would land in another column
    runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "training.epochs=2", "--set", "output.dir=runs/m"])
    write(in_tmp / "s.csv", "bill_length_mm,bill_depth_mm,flipper_length_mm,note\n40,17,200,a\n41,18,201\n")
    r = runner.invoke(app, ["predict", "runs/m/model.json", "s.csv"])
    assert r.exit_code == 2 and "s.csv, line 3: 3 fields but the header has 4" in r.stderr, r.stderr


def test_predict_bad_cells_and_missing_columns_exit_2(in_tmp):
    runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "training.epochs=5"])
    model_path = str(in_tmp / "runs/quickstart/model.json")
    bad = write(in_tmp / "bad.csv", "flipper_length_mm,bill_length_mm,bill_depth_mm\n200,45,17\n190,big,18\n")
    r = runner.invoke(app, ["predict", model_path, str(bad)])
    assert r.exit_code == 2 and "line 3" in r.stderr and "'big'" in r.stderr and "bill_length_mm" in r.stderr
    few = write(in_tmp / "few.csv", "flipper_length_mm\n200\n")
    r = runner.invoke(app, ["predict", model_path, str(few)])
    assert r.exit_code == 2 and "bill_length_mm" in r.stderr and "it has: flipper_length_mm" in r.stderr


def test_every_command_has_help_text():
    import typer.main

    group = typer.main.get_command(app)
    assert group.commands
    for name, command in group.commands.items():
        assert command.help and len(command.help.strip()) > 20, name
        r = runner.invoke(app, [name, "--help"])
        assert r.exit_code == 0 and "Usage" in r.stdout, name
    r = runner.invoke(app, ["--help"])
    assert "Exit codes" in r.stdout


def test_python_dash_m_works():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "neurocli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("neurocli ")
