"""neurocli plot: the pictures of a run, checked against the run's own files and numbers
recomputed here (history.csv read with csv, the loss by a loop over rows, the first descent
step by hand)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurocli import neuron
from neurocli.cli import app
from neurocli.pipeline import load_inputs
from tests.conftest import QUICKSTART, ROOT

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _train(root: Path, name: str, *sets: str) -> Path:
    args = ["train", str(QUICKSTART), "-q", "--set", f"output.dir={root / name}"]
    for s in sets:
        args += ["--set", s]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three short quickstart runs: completed; stopped early (a step that overshoots, patience 3);
    and one started at b = 0, whose surface has rows crossing z = 0."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "completed": _train(root, "completed", "training.epochs=12"),
        "early": _train(root, "early", "training.epochs=400", "training.early_stopping={patience: 3}",
                        "training.learning_rate=0.9"),
        "b0": _train(root, "b0", "model.bias_init=0", "training.epochs=15"),
    }


@pytest.fixture(scope="module")
def figures(runs):
    from neurocli import plot

    return {name: plot.run_figures(run) for name, run in runs.items()}


def _model(run: Path) -> dict:
    return json.loads((run / "model.json").read_text())


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ---- the command and its files ---------------------------------------------------------------

def test_plot_writes_three_pngs_and_prints_their_paths(runs):
    run = runs["completed"]
    r = runner.invoke(app, ["plot", str(run)])
    assert r.exit_code == 0, r.output
    expected = [run / "plots" / f"{name}.png" for name in ("loss", "predicted", "surface")]
    assert r.stdout.splitlines() == [str(p) for p in expected]
    first = [p.read_bytes() for p in expected]
    assert all(data[:8] == PNG_SIGNATURE for data in first)
    r = runner.invoke(app, ["plot", str(run)])  # again: the same names replaced, nothing else left
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["loss.png", "predicted.png", "surface.png"]
    assert [p.read_bytes() for p in expected] == first  # the same run draws the same files


def test_svg_files_parse_as_xml(runs):
    run = runs["early"]
    r = runner.invoke(app, ["plot", str(run), "--format", "svg", "--config", str(run / "config.yaml")])
    assert r.exit_code == 0, r.output
    first = {}
    for name in ("loss", "predicted", "surface"):
        root = ET.parse(run / "plots" / f"{name}.svg").getroot()
        assert root.tag.endswith("svg")
        first[name] = (run / "plots" / f"{name}.svg").read_bytes()
    assert runner.invoke(app, ["plot", str(run), "--format", "svg"]).exit_code == 0
    assert {name: (run / "plots" / f"{name}.svg").read_bytes() for name in first} == first


def test_neither_the_cli_nor_its_help_loads_matplotlib():
    code = ("import sys; import neurocli.cli as cli; sys.argv = ['neurocli', '--help']\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.splitlines()[-1] == "False" and "plot" in out.stdout


# ---- the replayed descent is the run ---------------------------------------------------------

@pytest.mark.parametrize("name", ["completed", "early", "b0"])
def test_the_replayed_path_ends_at_the_models_weights_bit_for_bit(name, runs, figures):
    model, descent = _model(runs[name]), figures[name].descent
    assert descent.final_w.tobytes() == np.asarray(model["weights_standardized"]).tobytes()
    assert descent.final_b == model["bias_standardized"]
    assert len(descent.w) == model["epochs"] + 1  # the initial point, then one per epoch
    assert figures[name].warnings == []


def test_the_path_starts_at_the_initial_point_and_takes_the_runs_first_step(runs, figures):
    inputs = load_inputs(runs["completed"] / "config.yaml")
    p, descent = inputs.prepared, figures["completed"].descent
    assert descent.w[0].tobytes() == inputs.w0.tobytes()
    # full batch: w1 = w0 - lr * grad_w(w0, b0), b1 = b0 - lr * grad_b, with the quickstart's lr 0.1
    g = neuron.loss_and_gradient(p.X_train, p.y_train, inputs.w0, inputs.b0)
    np.testing.assert_allclose(descent.w[1], inputs.w0 - 0.1 * g.grad_w, rtol=1e-12)
    np.testing.assert_allclose(descent.b[1], inputs.b0 - 0.1 * g.grad_b, rtol=1e-12)


def test_early_stopping_ends_at_the_start_of_its_best_epoch(runs, figures):
    model, descent = _model(runs["early"]), figures["early"].descent
    best = json.loads((runs["early"] / "checkpoint.json").read_text())["state"]["best_epoch"]
    assert model["stopped"] == "early_stopping" and 1 <= best < model["epochs"]
    # epoch t's numbers are measured at the parameters it started from: row t - 1 of the path
    assert descent.w[best - 1].tobytes() == descent.final_w.tobytes()


# ---- the pictures' data ----------------------------------------------------------------------

def _line(fig, label: str):
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == label]
    return line


@pytest.mark.parametrize("name", ["completed", "early"])
def test_the_loss_curve_is_history_csvs_columns(name, runs, figures):
    history, fig = _history(runs[name]), figures[name].figures["loss"]
    train, val = _line(fig, "training loss"), _line(fig, "validation loss")
    assert list(train.get_xdata()) == [int(h["epoch"]) for h in history]
    assert list(train.get_ydata()) == [float(h["loss"]) for h in history]
    assert list(val.get_ydata()) == [float(h["val_loss"]) for h in history]
    assert fig.axes[0].get_yscale() == "log"


def test_the_loss_curve_marks_the_epoch_early_stopping_restored(runs, figures):
    best = json.loads((runs["early"] / "checkpoint.json").read_text())["state"]["best_epoch"]
    labels = [ln.get_label() for ln in figures["early"].figures["loss"].axes[0].get_lines()]
    assert f"best epoch {best} (restored by early stopping)" in labels
    labels = [ln.get_label() for ln in figures["completed"].figures["loss"].axes[0].get_lines()]
    assert not any(label.startswith("best epoch") for label in labels)


def test_predicted_against_actual_is_the_validation_rows_with_the_runs_r2(runs, figures):
    run = runs["completed"]
    model, fig = _model(run), figures["completed"].figures["predicted"]
    ax = fig.axes[0]
    assert f"R\u00b2 = {model['metrics']['val_r2']:.4f}" in ax.get_title()
    p = load_inputs(run / "config.yaml").prepared
    w, b = np.asarray(model["weights_standardized"]), model["bias_standardized"]
    expected = [max(0.0, float(x @ w) + b) for x in p.X_val]  # the neuron, row by row
    points = ax.collections[0].get_offsets()
    np.testing.assert_array_equal(points[:, 0], p.y_val)
    np.testing.assert_allclose(points[:, 1], expected, rtol=1e-12)


def _loop_loss(X, y, w, b) -> float:
    """C = (1/N) sum_i (max(0, x_i . w + b) - y_i)^2, one row at a time."""
    return sum((max(0.0, float(x @ w) + b) - t) ** 2 for x, t in zip(X, y)) / len(y)


def test_the_surface_at_the_trained_point_is_the_models_training_loss(runs, figures):
    from neurocli.plot import GRID

    run, s = runs["completed"], figures["completed"].surface
    model, p = _model(run), load_inputs(run / "config.yaml").prepared
    w, b = np.asarray(model["weights_standardized"]), model["bias_standardized"]
    mid = GRID // 2
    assert (s.u[mid], s.v[mid]) == (w[s.axes[0]], w[s.axes[1]])
    expected = neuron.loss_and_gradient(p.X_train, p.y_train, w, b).loss
    assert s.loss[mid, mid] == pytest.approx(expected, rel=1e-12)
    # another grid point, by a loop over the rows: loss[l, k] is C at (u[k], v[l])
    k, l = 7, GRID - 20
    moved = w.copy()
    moved[s.axes[0]], moved[s.axes[1]] = s.u[k], s.v[l]
    assert s.loss[l, k] == pytest.approx(_loop_loss(p.X_train, p.y_train, moved, b), rel=1e-12)


def test_the_surface_spans_the_two_largest_weights_and_the_whole_descent(runs, figures):
    for name in ("completed", "b0"):
        s, d = figures[name].surface, figures[name].descent
        w = np.asarray(_model(runs[name])["weights_standardized"])
        assert list(s.axes) == sorted(range(len(w)), key=lambda k: -abs(w[k]))[:2]  # standardized: |w_k|
        for axis, grid in zip(s.axes, (s.u, s.v)):
            assert grid[0] <= d.w[:, axis].min() and d.w[:, axis].max() <= grid[-1]  # the initial point too


def test_the_creases_are_the_rows_that_cross_z_0_in_the_window(runs, figures):
    for name in ("completed", "b0"):
        s = figures[name].surface
        model = _model(runs[name])
        p = load_inputs(runs[name] / "config.yaml").prepared
        w, b = np.asarray(model["weights_standardized"]), model["bias_standardized"]
        crossing = 0
        for x in p.X_train:  # the row's z at every grid point: positive somewhere and negative somewhere
            rest = float(x @ w) + b - x[s.axes[0]] * w[s.axes[0]] - x[s.axes[1]] * w[s.axes[1]]
            z = rest + x[s.axes[0]] * s.u[None, :] + x[s.axes[1]] * s.v[:, None]
            crossing += bool(z.min() < 0 < z.max())
        assert len(s.creases) == crossing
    assert len(figures["completed"].surface.creases) == 0 and len(figures["b0"].surface.creases) > 0
    assert "no crease" in figures["completed"].figures["surface"].axes[0].get_title()


# ---- what is refused -------------------------------------------------------------------------

def _refused(args, where: str):
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    err = r.stderr
    assert err.count("\n") == 1 and err.startswith("error: ") and where in err and "Traceback" not in r.output
    return err


def test_a_folder_that_is_not_a_run_dir_is_refused(tmp_path):
    err = _refused(["plot", str(tmp_path)], str(tmp_path))
    assert "not a run directory" in err and "history.csv" in err
    _refused(["plot", str(tmp_path / "absent")], "absent")
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize("damage, says", [
    (lambda lines: lines[:2] + [lines[2].replace(lines[2].split(",")[1], "", 1)] + lines[3:], "line 3"),
    (lambda lines: lines[:3] + ["9" + lines[3][lines[3].index(","):]] + lines[4:], "line 4"),
    (lambda lines: [lines[0].replace("val_loss", "validation_loss")] + lines[1:], "val_loss"),
    (lambda lines: lines[:4], "holds 3 epochs"),
], ids=["empty-loss", "wrong-epoch", "renamed-column", "rows-missing"])
def test_a_damaged_history_is_refused_in_one_located_line(damage, says, runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["completed"], run, ignore=shutil.ignore_patterns("plots"))
    lines = (run / "history.csv").read_text().splitlines(keepends=True)
    (run / "history.csv").write_text("".join(damage(lines)))
    err = _refused(["plot", str(run)], "history.csv")
    assert says in err
    assert not (run / "plots").exists()


def test_a_run_of_0_epochs_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a dead neuron at the start: the run stops before its first epoch
    r = runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "model.weights_init=zeros",
                            "--set", "model.bias_init=0", "--set", "output.dir=runs/dead"])
    assert r.exit_code == 1
    err = _refused(["plot", "runs/dead"], "history.csv")
    assert "0 epochs" in err
