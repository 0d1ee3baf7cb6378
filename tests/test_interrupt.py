"""Real subprocesses, real signals: SIGINT/SIGTERM stop after the current step with a
checkpoint, and a resumed run ends bit-identical to the same run never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neurocli.errors import EXIT_SIGINT
from tests.conftest import QUICKSTART

pytestmark = pytest.mark.slow

FULL_BATCH = ["--set", "training.epochs=40000", "--set", "training.early_stopping=null", "--set", "training.log_every=500"]
MINI_BATCH = ["--set", "training.epochs=4000", "--set", "training.early_stopping=null", "--set", "training.batch_size=16",
              "--set", "training.log_every=50"]


def neurocli(*args, cwd):
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "neurocli", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)


def interrupted_run(cwd: Path, overrides: list[str], sig: int, out_dir: str) -> subprocess.CompletedProcess:
    """Start a run, wait until it has logged a few epochs, then send ``sig``."""
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "neurocli", "train", str(QUICKSTART), "--json", *overrides, "--set", f"output.dir={out_dir}"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if len(lines) >= 3:  # a few logged epochs: training is well under way
            proc.send_signal(sig)
            break
    rest, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines) + rest, err)


def model_numbers(run: Path) -> tuple:
    m = json.loads((run / "model.json").read_text())
    return m["weights_standardized"], m["bias_standardized"], m["metrics"], m["epochs"]


@pytest.mark.parametrize("overrides", [FULL_BATCH, MINI_BATCH], ids=["full-batch", "mini-batch"])
def test_sigint_then_resume_is_bit_identical(overrides, tmp_path):
    r = interrupted_run(tmp_path, overrides, signal.SIGINT, "runs/cut")
    assert r.returncode == 130, r.stderr
    assert "checkpoint saved in runs/cut" in r.stderr and "--resume runs/cut" in r.stderr
    assert "Traceback" not in r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["stopped"] == "interrupted"
    ckpt = json.loads((tmp_path / "runs/cut/checkpoint.json").read_text())
    stopped_at = ckpt["state"]["epoch"]
    assert ckpt["stopped"] == "interrupted" and 0 < stopped_at

    resumed = neurocli("train", "runs/cut/config.yaml", "--resume", "runs/cut", "-q", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    straight = neurocli("train", str(QUICKSTART), "-q", *overrides, "--set", "output.dir=runs/straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr

    assert model_numbers(tmp_path / "runs/cut") == model_numbers(tmp_path / "runs/straight")
    assert (tmp_path / "runs/cut/history.csv").read_text() == (tmp_path / "runs/straight/history.csv").read_text()


def test_sigterm_exits_143_with_a_checkpoint(tmp_path):
    r = interrupted_run(tmp_path, FULL_BATCH, signal.SIGTERM, "runs/term")
    assert r.returncode == 143, r.stderr
    ckpt = json.loads((tmp_path / "runs/term/checkpoint.json").read_text())
    assert ckpt["stopped"] == "interrupted"
    json.loads((tmp_path / "runs/term/model.json").read_text())


def test_resume_refuses_a_changed_config(tmp_path):
    r = interrupted_run(tmp_path, FULL_BATCH, signal.SIGINT, "runs/cut")
    assert r.returncode == 130
    other = neurocli("train", "runs/cut/config.yaml", "--resume", "runs/cut", "--set", "training.learning_rate=0.3", cwd=tmp_path)
    assert other.returncode == 2 and "differs from the run's" in other.stderr
    missing = neurocli("train", "runs/cut/config.yaml", "--resume", "runs/nothere", cwd=tmp_path)
    assert missing.returncode == 2 and "runs/nothere" in missing.stderr


def test_double_sigint_exits_at_once_without_corrupt_files(tmp_path):
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "neurocli", "train", str(QUICKSTART), "--json", *FULL_BATCH, "--set", "output.dir=runs/x"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    for f in (tmp_path / "runs/x").iterdir():
        if f.suffix == ".json":
            json.loads(f.read_text())  # whatever was written is whole


def test_a_ctrl_c_while_the_cli_loads_exits_130_in_one_line():
    # the console script's first line of neurocli code takes SIGINT; a signal then, while the
    # CLI's modules load, is one line and 130, not a KeyboardInterrupt traceback
    code = ("import os, signal, time\nimport neurocli.entry\nos.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(0.5)\nimport neurocli.cli\nprint('survived')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_SIGINT and r.stderr == "error: interrupted; nothing was written\n" and not r.stdout


def test_once_a_command_runs_a_ctrl_c_is_its_own():
    # after the hand-over the command's own handling applies: the message and 130 of handle_errors
    code = ("import os, signal, sys\nimport neurocli.entry\nfrom neurocli.cli import handle_errors\n"
            "import typer\ntry:\n    with handle_errors(False):\n        os.kill(os.getpid(), signal.SIGINT)\n"
            "except typer.Exit as e:\n    sys.exit(e.exit_code + 1)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_SIGINT + 1 and r.stderr == "error: interrupted; nothing was written\n"
