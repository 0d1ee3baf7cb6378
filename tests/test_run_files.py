"""A run directory a kill cannot break: the process killed at every write of several saves,
and by a real SIGKILL, leaves a run that --resume continues to the very numbers of a run
never interrupted; SIGHUP stops like SIGTERM; two runs never hold one directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurocli import savedfiles
from neurocli import io as nio
from neurocli import pipeline
from neurocli.cli import app
from neurocli.errors import ConfigError, ModelFileError, OutputError
from tests.conftest import QUICKSTART

# mini-batch, a save after every epoch (an interval of a nanosecond)
runner = CliRunner()
SHORT = ["training.epochs=6", "training.batch_size=64", "training.early_stopping=null", "output.checkpoint_interval=1e-9"]


class Killed(BaseException):
    """What a kill does to the save it cuts short: nothing after it runs."""


def inputs(out_dir: Path, extra=()):
    return pipeline.load_inputs(QUICKSTART, [*SHORT, f"output.dir={out_dir}", *extra])


def finished(run_dir: Path) -> tuple:
    m = json.loads((run_dir / "model.json").read_text())
    return (m["weights_standardized"], m["bias_standardized"], m["epochs"], (run_dir / "history.csv").read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    run = pipeline.TrainRun.start(inputs(out))
    run.run()
    return finished(run.run_dir)


def writes_of_a_run(tmp_path) -> int:
    count = [0]
    real = nio.atomic_write_text

    def counting(path, text):
        count[0] += 1
        real(path, text)
    nio.atomic_write_text, saved = counting, nio.atomic_write_text
    try:
        pipeline.TrainRun.start(inputs(tmp_path / "count")).run()
    finally:
        nio.atomic_write_text = saved
    return count[0]


def test_a_kill_at_any_write_leaves_a_run_that_resumes_to_the_same_numbers(tmp_path, straight, monkeypatch):
    total = writes_of_a_run(tmp_path)
    assert total == 4 * 7  # four files a save: the start, after epochs 1 to 5, the end (after epoch 6)
    real = nio.atomic_write_text
    for kill_at in range(1, total + 1):
        calls = [0]

        def dying(path, text):
            calls[0] += 1
            if calls[0] == kill_at:  # half a temporary file, then nothing more
                Path(path).with_name(f".{Path(path).name}.cut.tmp").write_text(text[: len(text) // 2])
                raise Killed
            real(path, text)
        monkeypatch.setattr(nio, "atomic_write_text", dying)
        out = tmp_path / f"k{kill_at}"
        run = pipeline.TrainRun.start(inputs(out))
        with pytest.raises(Killed):
            run.run()
        run._lock.close()  # the process is gone: so is its lock
        monkeypatch.setattr(nio, "atomic_write_text", real)
        if kill_at <= 4:  # inside the first save: no checkpoint yet, and resume says so
            with pytest.raises(ModelFileError, match="stopped before its first save"):
                pipeline.TrainRun.resume(inputs(out), out)
            continue
        resumed = pipeline.TrainRun.resume(inputs(out), out)
        resumed.run()
        assert finished(out) == straight, kill_at
        assert not list(out.glob(".*.tmp")), kill_at  # the cut writes' leftovers are gone


def test_sigkill_mid_training_loses_at_most_the_interval(tmp_path):
    # a real kill: the last periodic save is complete, and the resumed run ends where an
    # uninterrupted one does
    args = ["--set", "training.epochs=3000", "--set", "training.batch_size=16", "--set", "training.early_stopping=null",
            "--set", "output.checkpoint_interval=0.05"]
    env = dict(os.environ, NO_COLOR="1")
    cmd = [sys.executable, "-m", "neurocli", "train", str(QUICKSTART), "-q", *args]
    proc = subprocess.Popen([*cmd, "--set", "output.dir=runs/killed"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "runs/killed/checkpoint.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists() and json.loads(ckpt.read_text())["state"]["epoch"] >= 20:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    saved_at = json.loads(ckpt.read_text())["state"]["epoch"]
    assert 20 <= saved_at < 3000
    resumed = subprocess.run([sys.executable, "-m", "neurocli", "train", "runs/killed/config.yaml", "--resume",
                              "runs/killed", "-q"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    plain = subprocess.run([*cmd, "--set", "output.dir=runs/plain"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr
    assert finished(tmp_path / "runs/killed") == finished(tmp_path / "runs/plain")


def test_sighup_stops_like_sigterm_with_a_checkpoint(tmp_path):
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "neurocli", "train", str(QUICKSTART), "--json", "--set",
                             "training.epochs=40000", "--set", "training.early_stopping=null", "--set",
                             "training.log_every=500", "--set", "output.dir=runs/hup"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.readline()
    proc.stdout.readline()
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 129, err
    assert "checkpoint saved in runs/hup" in err and "Traceback" not in err
    ckpt = json.loads((tmp_path / "runs/hup/checkpoint.json").read_text())
    assert ckpt["stopped"] == "interrupted" and ckpt["state"]["epoch"] > 0


def test_a_second_run_of_the_same_directory_is_refused(tmp_path):
    first = pipeline.TrainRun.start(inputs(tmp_path / "held", ["training.epochs=1"]))
    first.checkpoint()
    with pytest.raises(OutputError, match="in use by another neurocli train"):
        pipeline.TrainRun.resume(inputs(tmp_path / "held", ["training.epochs=2"]), first.run_dir)
    first._lock.close()
    pipeline.TrainRun.resume(inputs(tmp_path / "held", ["training.epochs=2"]), first.run_dir).run()


def test_a_history_ahead_of_its_checkpoint_is_cut_to_it_and_a_changed_one_refused(tmp_path, straight):
    run = pipeline.TrainRun.start(inputs(tmp_path / "ahead"))
    run.run()
    d = run.run_dir
    ckpt = json.loads((d / "checkpoint.json").read_text())
    # the checkpoint of epoch 3 beside the history of all 6 (a kill between the two writes)
    history = (d / "history.csv").read_text()
    lines = history.splitlines(keepends=True)
    ckpt["stopped"], ckpt["state"]["epoch"] = "interrupted", 3
    ckpt["history_sha256"] = nio.history_sha256(history, 3)
    (d / "checkpoint.json").write_text(json.dumps(ckpt))
    ckpt = savedfiles.load_checkpoint(d / "checkpoint.json")
    kept = pipeline._history_of(d, ckpt, d / "checkpoint.json")
    assert len(kept) == 3 and nio.history_csv(kept) == "".join(lines[:4])
    (d / "history.csv").write_text("".join(lines[:2]) + lines[2].replace(lines[2].split(",")[1], "1.5", 1) + "".join(lines[3:]))
    with pytest.raises(ModelFileError, match="does not hold the 3 epochs"):
        pipeline._history_of(d, ckpt, d / "checkpoint.json")


def test_a_reader_that_goes_away_leaves_a_finished_run_and_exit_74(tmp_path):
    # `neurocli train ... --json | head -1`: the pipe closes after the first line
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "neurocli", "train", str(QUICKSTART), "--json", "--set",
                             "output.dir=runs/pipe", "--set", "training.log_every=1"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert json.loads(proc.stdout.readline())["event"] == "epoch"
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 74, err
    assert err.startswith("error: standard output failed") and "Traceback" not in err and len(err.splitlines()) == 1
    ckpt = json.loads((tmp_path / "runs/pipe/checkpoint.json").read_text())
    assert ckpt["stopped"] in ("completed", "early_stopping") and ckpt["state"]["epoch"] > 1
    assert json.loads((tmp_path / "runs/pipe/model.json").read_text())["epochs"] == ckpt["state"]["epoch"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_full_standard_output_leaves_a_finished_run_and_exit_74(tmp_path):
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "neurocli", "train", str(QUICKSTART), "--set", "output.dir=runs/full"],
                           cwd=tmp_path, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 74 and "No space left on device" in r.stderr and "Traceback" not in r.stderr
    assert json.loads((tmp_path / "runs/full/model.json").read_text())["stopped"] in ("completed", "early_stopping")


# ---- predict -o destroys nothing it does not own ---------------------------------------------

@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    run = pipeline.TrainRun.start(inputs(d / "run", ["training.epochs=2"]))
    run.run()
    data = d / "in.csv"
    data.write_text("bill_length_mm,bill_depth_mm,flipper_length_mm\n39.1,18.7,181\n")
    return run.run_dir / "model.json", data


def predict(model, data, *extra, cwd):
    return subprocess.run([sys.executable, "-m", "neurocli", "predict", str(model), str(data), *extra], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_predict_writes_through_a_symlink_to_its_target(tmp_path, model_and_data):
    model, data = model_and_data
    target, link = tmp_path / "target.csv", tmp_path / "link.csv"
    target.write_text("old\n")
    link.symlink_to(target)
    r = predict(model, data, "-o", str(link), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("bill_length_mm,bill_depth_mm,flipper_length_mm,prediction\n")


def test_predict_streams_into_a_fifo_and_leaves_it_a_fifo(tmp_path, model_and_data):
    import stat
    import threading

    model, data = model_and_data
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    r = predict(model, data, "-o", str(fifo), cwd=tmp_path)
    reader.join(timeout=60)
    assert r.returncode == 0, r.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and got[0].splitlines()[0].endswith(",prediction")


@pytest.mark.parametrize("which", ["input CSV", "model file"])
def test_predict_refuses_to_overwrite_its_own_inputs(tmp_path, model_and_data, which):
    model, data = model_and_data
    victim = data if which == "input CSV" else model
    before = victim.read_bytes()
    link = tmp_path / "sneaky"
    link.symlink_to(victim)
    for out in (victim, link):
        r = predict(model, data, "-o", str(out), cwd=tmp_path)
        assert r.returncode == 2 and f"is the {which}; refusing to overwrite it" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert victim.read_bytes() == before


def test_predict_dash_is_standard_output(tmp_path, model_and_data):
    model, data = model_and_data
    r = predict(model, data, "-o", "-", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.splitlines()[0].endswith(",prediction") and not (tmp_path / "-").exists()


def test_a_run_that_fails_midway_lets_go_of_its_folder(tmp_path):
    run = pipeline.TrainRun.start(inputs(tmp_path / "fails"))

    def fail(record):
        if record.epoch == 2:
            raise RuntimeError("a renderer bug")

    with pytest.raises(RuntimeError):
        run.run(fail)
    # the same process (a notebook, the Python API) can resume it: the lock went with the failure
    pipeline.TrainRun.resume(inputs(tmp_path / "fails"), run.run_dir).run()


def test_output_dir_expands_the_home_folder_like_data_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    run = pipeline.TrainRun.start(pipeline.load_inputs(QUICKSTART, [*SHORT, "output.dir=~/runs/tilde"]))
    assert run.run_dir == tmp_path / "home/runs/tilde"
    run.run()
    assert (tmp_path / "home/runs/tilde/model.json").exists()


@pytest.mark.parametrize("batch_size", ["null", "64"])
def test_resume_with_fewer_epochs_than_done_is_refused(tmp_path, batch_size):
    extra = [f"training.batch_size={batch_size}"]
    run = pipeline.TrainRun.start(inputs(tmp_path / "r", extra))

    class AfterChecks:  # a stop request that arrives at its third check: inside epoch 5 for mini-batch
        checks = 0

        def __bool__(self):
            self.checks += 1
            return self.checks >= 3

    def stop_after_epoch_4(record):
        if record.epoch == 4:  # full batch stops before epoch 5
            run.trainer._stop_requested = AfterChecks() if batch_size == "64" else True

    run.run(stop_after_epoch_4)
    st = run.state
    assert st.epoch == 4 and (st.batch > 0) == (batch_size == "64")
    least = 5 if st.batch else 4

    def resume(epochs):
        return pipeline.TrainRun.resume(inputs(tmp_path / "r", [*extra, f"training.epochs={epochs}"]), run.run_dir)

    with pytest.raises(ConfigError, match=f"training.epochs = {least - 1} is below where the run already is "
                                          f".*: give at least {least}"):
        resume(least - 1)
    assert resume(least).run()["epochs"] == least  # where it is (or the epoch it is inside): it ends there


@pytest.mark.parametrize("args", [["gradcheck"], ["derive"], ["--help"], ["cache", "info"], ["predict", "MODEL", "DATA"]],
                         ids=lambda a: a[0])
@pytest.mark.parametrize("stdout", ["reader-gone", "disk-full"])
def test_every_command_whose_stdout_fails_says_so_in_one_line_and_exits_74(args, stdout, tmp_path, model_and_data):
    model, data = model_and_data
    args = [str(model) if a == "MODEL" else str(data) if a == "DATA" else a for a in args]
    if stdout == "reader-gone":
        read_end, target = os.pipe()
        os.close(read_end)
    else:
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full here")
        target = os.open("/dev/full", os.O_WRONLY)
    r = subprocess.run([sys.executable, "-m", "neurocli", *args], stdout=target, stderr=subprocess.PIPE, text=True,
                       timeout=120, cwd=tmp_path)
    os.close(target)
    assert r.returncode == 74, r.stderr
    assert r.stderr.startswith("error: standard output failed (") and r.stderr.count("\n") == 1, r.stderr


def test_predict_refuses_a_loop_of_symlinks_and_leaves_it(tmp_path, model_and_data):
    model, data = model_and_data
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    r = runner.invoke(app, ["predict", str(model), str(data), "-o", str(tmp_path / "loop1")])
    assert r.exit_code == 2 and "is a loop of symlinks" in r.stderr
    assert (tmp_path / "loop1").is_symlink() and os.readlink(tmp_path / "loop1") == "loop2"
