"""Failed and poor runs name their likely cause, through the CLI: unscaled features behind a
dead neuron, a loss that blows up while staying finite, and a completed run far worse than
predicting the mean. The shipped quickstart run is untouched by these rules."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from neurocli import diagnoses, train
from neurocli.cli import app
from neurocli.errors import EXIT_TRAINING_FAILED
from tests.conftest import QUICKSTART, write

runner = CliRunner()


def _summary(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def _history(summary: dict) -> list[dict]:
    with open(f"{summary['run_dir']}/history.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(io.StringIO(fh.read())))


def _quickstart(*sets: str) -> list[str]:
    args = ["train", str(QUICKSTART), "--json"]
    for s in sets:
        args += ["--set", s]
    return args


@pytest.fixture
def large_scale(in_tmp):
    """A target of about 15 from x1 in the thousands and x2 of size 1, not standardized."""
    rng = np.random.default_rng(1)
    x1, x2 = rng.uniform(1000, 9000, 200), rng.normal(0, 1, 200)
    y = 0.002 * x1 + 3 * x2 + 5 + rng.normal(0, 0.5, 200)
    rows = "".join(f"{a:.2f},{b:.4f},{c:.4f}\n" for a, b, c in zip(x1, x2, y))
    write(in_tmp / "big.csv", "x1,x2,y\n" + rows)
    return write(in_tmp / "big.yaml", "data: {path: big.csv, target: y, standardize: false}\n"
                                      "training: {epochs: 200, learning_rate: 0.01}\n")


def test_dead_at_the_start_on_unscaled_features_names_the_scale(large_scale):
    # w ~ N(0, 1/2) times x1 ~ 5000 outweighs the bias (the target's mean, about 15)
    r = runner.invoke(app, ["train", str(large_scale), "-q"])
    assert r.exit_code == EXIT_TRAINING_FAILED, r.output
    assert "dead neuron at the start" in r.stderr
    assert "features are unscaled" in r.stderr and "data.standardize: true" in r.stderr
    assert "mostly <= 0" not in r.stderr  # the target is positive: not the cause


def test_dead_after_steps_on_unscaled_features_names_the_scale(large_scale):
    # zero weights: alive at the start (z = b > 0), then steps of 1e-7 on x1 ~ 5000 overshoot
    r = runner.invoke(app, ["train", str(large_scale), "-q", "--set", "model.weights_init=zeros",
                            "--set", "training.learning_rate=1e-7"])
    assert r.exit_code == EXIT_TRAINING_FAILED, r.output
    assert "dead neuron at epoch" in r.stderr and "dead neuron at the start" not in r.stderr
    assert "features are unscaled" in r.stderr and "typical size of" in r.stderr
    assert "data.standardize: true" in r.stderr and "training.learning_rate (now 1e-07)" in r.stderr
    assert "mostly <= 0" not in r.stderr and "bias_init" not in r.stderr


def test_the_same_data_standardized_trains(large_scale):
    r = runner.invoke(app, ["train", str(large_scale), "--json", "--set", "data.standardize=true"])
    assert r.exit_code == 0, r.output
    s = _summary(r)
    assert s["stopped"] == "completed" and s["r2"] > 0.9 and s["message"] is None


def test_a_finite_blow_up_stops_as_diverged_with_the_advice(in_tmp):
    r = runner.invoke(app, _quickstart("training.learning_rate=5", "training.early_stopping=null"))
    assert r.exit_code == EXIT_TRAINING_FAILED, r.output
    s = _summary(r)
    assert s["stopped"] == "diverged" and s["epochs"] < 20
    assert "training diverged at epoch" in r.stderr and "the loss grew to" in r.stderr
    assert "training.learning_rate (now 5)" in r.stderr
    # the epoch that tripped the rule is kept, and its loss is past the limit
    losses = [float(h["loss"]) for h in _history(s)]
    assert len(losses) == s["epochs"] and losses[-1] > train.LOSS_GROWTH_LIMIT * losses[0]


def test_the_growth_rule_only_stops_never_changes_the_numbers(in_tmp, monkeypatch):
    args = _quickstart("training.learning_rate=5", "training.early_stopping=null", "training.epochs=30")
    stopped = _history(_summary(runner.invoke(app, args)))
    monkeypatch.setattr(train, "LOSS_GROWTH_LIMIT", float("inf"))
    unstopped = _history(_summary(runner.invoke(app, args)))
    assert len(stopped) < len(unstopped)  # without the rule it runs on (until it dies or ends)
    assert stopped == unstopped[:len(stopped)]


def test_a_resumed_run_diverges_at_the_same_epoch(in_tmp):
    whole = _summary(runner.invoke(app, _quickstart("training.learning_rate=5", "training.early_stopping=null",
                                                    "output.dir=runs/whole")))
    first = _summary(runner.invoke(app, _quickstart("training.learning_rate=5", "training.early_stopping=null",
                                                    "training.epochs=2", "output.dir=runs/part")))
    assert first["stopped"] == "completed" and first["epochs"] == 2
    r = runner.invoke(app, ["train", "runs/part/config.yaml", "--resume", "runs/part", "--json",
                            "--set", "training.epochs=500"])
    assert r.exit_code == EXIT_TRAINING_FAILED, r.output
    resumed = _summary(r)
    assert resumed["stopped"] == whole["stopped"] == "diverged"
    assert resumed["epochs"] == whole["epochs"] and resumed["message"] == whole["message"]


def test_a_completed_run_far_worse_than_the_mean_warns(in_tmp):
    r = runner.invoke(app, _quickstart("training.learning_rate=1", "training.early_stopping=null"))
    assert r.exit_code == 0, r.output
    s = _summary(r)
    assert s["stopped"] == "completed" and s["r2"] < diagnoses.WORSE_THAN_MEAN_R2
    assert s["message"].startswith("warning: the run completed but R^2 on the training data is ")
    assert f"is {s['r2']:.3g}," in s["message"]  # the summary's own R^2
    assert "worse than predicting the mean" in s["message"]
    assert "lower training.learning_rate (now 1)" in s["message"]
    assert s["message"] == f"warning: {s['warning']}"  # its own key in the summary, and one line on stderr
    assert r.stderr == f"warning: {s['warning']}\n"


def test_the_warning_is_in_the_summary_panel(in_tmp):
    r = runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "training.learning_rate=1",
                            "--set", "training.early_stopping=null"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())  # the panel wraps lines
    assert "warning: the run completed but R^2" in text


def test_an_undertrained_run_is_told_to_train_longer(in_tmp):
    # the bias starts at 0, far below the target (about 4200 g): 20 small steps do not get there
    r = runner.invoke(app, _quickstart("model.bias_init=0", "training.learning_rate=0.001", "training.epochs=20"))
    assert r.exit_code == 0, r.output
    s = _summary(r)
    assert s["r2"] < diagnoses.WORSE_THAN_MEAN_R2
    assert "warning:" in s["message"] and "raise training.epochs (now 20)" in s["message"]


def test_a_step_too_large_on_standardized_data_is_named(in_tmp):
    r = runner.invoke(app, _quickstart("training.learning_rate=1.5"))
    assert r.exit_code == EXIT_TRAINING_FAILED, r.output
    assert "dead neuron at epoch" in r.stderr and "a step too large" in r.stderr
    assert "training.learning_rate (now 1.5)" in r.stderr
    assert "mostly <= 0" not in r.stderr and "unscaled" not in r.stderr


@pytest.mark.parametrize("sets", [(), ("training.batch_size=32",), ("training.early_stopping=null",)],
                         ids=["shipped", "mini-batch", "all epochs"])
def test_the_quickstart_run_is_unaffected(in_tmp, monkeypatch, sets):
    r = runner.invoke(app, _quickstart(*sets))
    assert r.exit_code == 0, r.output
    s = _summary(r)
    assert s["stopped"] in ("completed", "early_stopping") and s["r2"] > 0.7
    assert s["message"] is None or not ("warning" in s["message"] or "diverged" in s["message"])
    history = _history(s)
    monkeypatch.setattr(train, "LOSS_GROWTH_LIMIT", float("inf"))
    monkeypatch.setattr(diagnoses, "WORSE_THAN_MEAN_R2", -float("inf"))
    without_rules = runner.invoke(app, _quickstart(*sets))
    assert _history(_summary(without_rules)) == history
    assert _summary(without_rules)["message"] == s["message"]


def test_early_stopping_that_kept_the_first_epoch_warns_that_nothing_was_learned(in_tmp):
    # learning rate 1 on the quickstart overshoots: the loss climbs, early stopping restores epoch 1
    r = runner.invoke(app, _quickstart("training.learning_rate=1"))
    assert r.exit_code == 0, r.output
    s = _summary(r)
    history = _history(s)
    assert s["stopped"] == "early_stopping" and "(epoch 1)" in s["message"]
    rose = max(float(h["loss"]) for h in history) / float(history[0]["loss"])
    assert s["warning"] == (f"early stopping kept epoch 1's parameters: no later epoch improved on them while "
                            f"the loss rose to {rose:.3g} times its first epoch's; the steps overshoot: lower "
                            f"training.learning_rate (now 1)")


def test_a_minibatch_step_that_kills_the_neuron_on_a_positive_target_is_named(in_tmp):
    r = runner.invoke(app, _quickstart("training.batch_size=1", "training.learning_rate=1"))
    assert r.exit_code == EXIT_TRAINING_FAILED, r.output
    assert "likely cause: a step too large: the target is positive (mean 4.2" in r.stderr
    assert "mostly <= 0" not in r.stderr
