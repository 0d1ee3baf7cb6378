"""Every command's text output at 120, 80 and 60 columns: no line wider than the page, no number
or label cut (rich's "…" never appears), and every number of the same command's --json shown
whole. On a pseudo-terminal as a user sees it, in rich renderings at each width, and piped
(where a message stays on one line, never broken mid-sentence)."""

from __future__ import annotations

import csv
import fcntl
import io
import itertools
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console, Group
from typer.testing import CliRunner
from typer.main import get_command

from neurocli import derive as dv
from neurocli import render
from neurocli.cli import app
from neurocli.problems import derivation, gradcheck_problem
from neurocli.render import cache as rc
from neurocli.render import derive as rd
from neurocli.render import gradcheck as rg
from neurocli.render.layout import show
from tests.conftest import QUICKSTART, ROOT, write

WIDTHS = (120, 80, 60)
QUICKSTART_FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
runner = CliRunner()


# ---- the data: the quickstart, and one of long names and large values -----------------------

def long_names(n: int = 8) -> list[str]:
    names = [f"feature_{k}_measured_in_a_rather_long_unit"[:40] for k in range(n)]
    assert all(len(name) == 40 for name in names) and len(set(names)) == n
    return names


@pytest.fixture
def long_config(in_tmp) -> Path:
    """8 features of 40-character names, values from 1e-3 to 1e7 and a target near 1e9, so that
    both the labels and the numbers are as wide as they get."""
    rng = np.random.default_rng(7)
    scale = np.array([1e6, 1e-3, 5, 1e4, 2, 3, 1e5, 7])
    X = rng.normal(size=(60, 8)) * scale + np.array([5e6, 0, 100, 2e4, 0, 1, 0, 0])
    y = X @ (rng.normal(size=8) / scale) * 3e7 + 4e8
    assert y.min() > 0
    target = "body_mass_of_the_animal_in_milligrams"
    lines = [",".join(long_names() + [target])] + [",".join(repr(float(v)) for v in (*x, t)) for x, t in zip(X, y)]
    write(in_tmp / "data" / "wide.csv", "\n".join(lines) + "\n")
    return write(in_tmp / "wide.yaml", f"data: {{path: data/wide.csv, target: {target}, validation_fraction: 0.2}}\n"
                                       "training: {epochs: 30, learning_rate: 0.1}\noutput: {dir: runs/wide}\n")


@pytest.fixture(params=["quickstart", "long"])
def config(request, in_tmp) -> Path:
    return QUICKSTART if request.param == "quickstart" else request.getfixturevalue("long_config")


def feature_names(config: Path) -> list[str]:
    return QUICKSTART_FEATURES if config == QUICKSTART else long_names()


# ---- what a page shows -------------------------------------------------------------------------

def columns(line: str) -> int:
    """The columns a line takes on a terminal (a combining mark, as in 1⃗, takes none)."""
    return sum(1 for ch in line if not unicodedata.combining(ch))


def assert_fits(text: str, width: int) -> None:
    assert "…" not in text, "a cut number or label"
    wide = [line for line in text.splitlines() if columns(line) > width]
    assert not wide, f"{len(wide)} lines wider than {width}: {wide[:3]}"


NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?")


def _significant(token: str) -> int:
    return len(token.lstrip("+-").lower().split("e")[0].replace(".", "").lstrip("0"))


def _half_unit(token: str) -> float:
    """Half a unit in the last digit shown: the most a correct rounding is off by."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def shown(text: str, value: float, digits: int) -> bool:
    """Whether ``text`` holds ``value`` whole: a number equal to it, or to it rounded to
    ``digits`` or more significant digits (trailing zeros dropped), or one of at least
    ``digits`` significant digits within half a unit of its last digit (a cut one, "-965.",
    is none of these)."""
    roundings = {float(f"{value:.{k}e}") for k in range(digits - 1, 17)}
    for token in NUMBER.findall(text):
        x = float(token)
        if x == value or x in roundings or (_significant(token) >= digits
                                            and abs(x - value) <= _half_unit(token) * (1 + 1e-9)):
            return True
    return False


def assert_shown(text: str, numbers: list[tuple[str, float, int]]) -> None:
    missing = [(what, value) for what, value, digits in numbers if not shown(text, value, digits)]
    assert not missing, f"{len(missing)} of {len(numbers)} numbers not shown whole, e.g. {missing[:4]}"


def on_page(renderable, width: int, terminal: bool = True) -> str:
    """``renderable`` as the commands print it (layout.show) on a page of ``width`` columns:
    a terminal's, or a pipe's (``terminal=False``)."""
    out = io.StringIO()
    show(Console(file=out, width=width, force_terminal=terminal, color_system=None, highlight=False, emoji=False),
         renderable)
    return out.getvalue()


def on_terminal(args: list[str], width: int, cwd: Path) -> str:
    """What the command prints on a pseudo-terminal of ``width`` columns, control codes removed:
    a cursor movement ends a line, so each frame of a live view is lines of its own."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, width, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # the terminal's width, not the tests'
    p = subprocess.Popen([sys.executable, "-m", "neurocli", *args], stdin=slave, stdout=slave, stderr=slave,
                         cwd=cwd, env={**env, "TERM": "xterm-256color"})
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert p.wait() in (0, 3), b"".join(chunks).decode(errors="replace")[-2000:]
    text = b"".join(chunks).decode()
    text = re.sub(r"\x1b\][^\x07]*\x07", "", text)  # window titles, links
    text = re.sub(r"\x1b\[[0-9;?]*m", "", text)  # colours
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "\n", text)  # cursor movements, erasures
    return text


# ---- the numbers each command's --json holds ---------------------------------------------------

def gradcheck_numbers(d: dict) -> list[tuple[str, float, int]]:
    """analytic and numeric in 9 significant digits, the errors, tolerances and steps in 3."""
    out = []
    for p in d["parameters"]:
        out += [(f"{p['name']} {k}", p[k], 9) for k in ("analytic", "numeric")]
        out += [(f"{p['name']} {k}", p[k], 3) for k in ("abs_error", "rel_error", "tolerance", "step")]
    out += [(f"jacobian {k}", d["jacobian"][k], 3) for k in ("max_abs_error", "max_rel_error")]
    for name, errors in d.get("sweep", {}).get("abs_errors", {}).items():
        out += [(f"sweep {name}", e, 3) for e in errors]
    return out


def derive_numbers(d: dict) -> list[tuple[str, float, int]]:
    """Every value of the derivation, in 6 significant digits."""
    out = [("w", v, 6) for v in d["parameters"]["w"]] + [("b", d["parameters"]["b"], 6)]
    out += [("x", v, 6) for v in d["sample"]["x"]] + [("y", d["sample"]["y"], 6), ("z", d["sample"]["z"], 6)]
    for s in d["steps"]:
        matrices = [s["value"]] + (s["factors"]["values"] if "factors" in s else [])
        out += [(s["name"], v, 6) for m in matrices for row in m for v in row]
    lo = d["loss"]
    for r in lo["rows"] + lo["rows_tail"]:
        out += [(f"row {r['index']}", v, 6) for v in (r["z"], r["error"], r["dC/db"], *r["dC/dw"])]
    out += [("sum", v, 6) for v in (*lo["sum"]["dC/dw"], lo["sum"]["dC/db"])] + [("C", lo["value"], 6)]
    for k in ("chain", "kernel", "numeric"):
        out += [(f"check {k}", v, 6) for v in d["check"][k]]
    return out


def train_numbers(s: dict) -> list[tuple[str, float, int]]:
    """The parameters and metrics in at least 5 significant digits (R^2 in 3)."""
    out = [(f"w[{k}]", v, 5) for k, v in s["weights"].items()] + [("b", s["bias"], 5)]
    out += [("w standardized", v, 5) for v in s["weights_standardized"]] + [("b standardized", s["bias_standardized"], 5)]
    out += [(k, s[k], 5) for k in ("loss", "rmse", "mae", "val_loss", "val_rmse", "val_mae")]
    return out + [(k, s[k], 3) for k in ("r2", "val_r2")]


def json_of(args: list[str]) -> dict:
    """The command's JSON object (train's: the last line, its summary); gradcheck's verdict on
    the data of large values is inconclusive (exit 3), which it says in text as well."""
    r = runner.invoke(app, args)
    assert r.exit_code in (0, 3), r.output
    return json.loads(r.stdout.strip().splitlines()[-1] if args[0] == "train" else r.stdout)


def train_json(config: Path, out: str) -> tuple[dict, list[float]]:
    """train --json's summary, and the loss of every epoch read from the run's history.csv."""
    s = json_of(["train", str(config), "--json", "--set", f"output.dir={out}"])
    with open(Path(s["run_dir"]) / "history.csv", newline="") as f:
        return s, [float(row["loss"]) for row in csv.DictReader(f)]


# ---- gradcheck, derive, train: rich renderings at each width -----------------------------------

def test_gradcheck_fits_every_width_and_shows_every_number_whole(config):
    d = json_of(["gradcheck", str(config), "--sweep", "--json"])
    problem = gradcheck_problem(config)
    report = problem.check(sweep=True)
    for width in WIDTHS:
        text = on_page(rg.report_renderable(report, problem), width)
        assert_fits(text, width)
        assert_shown(text, gradcheck_numbers(d))
        for name in feature_names(config):
            assert f"w[{name}]" in text, (width, name)


def test_derive_fits_every_width_and_names_every_row_of_its_check(config):
    d = json_of(["derive", str(config), "--show-jacobians", "--format", "json"])
    text_of = Group(*rd.text_renderables(derivation(config, show_jacobians=True)))
    for width in WIDTHS:
        text = on_page(text_of, width)
        assert_fits(text, width)
        assert_shown(text, derive_numbers(d))
        check = text[text.index("4. Check"):]
        for label in ("Jacobian chain", "vectorized kernel", "central differences", *d["check"]["labels"]):
            assert label in check, (width, label)


def test_derive_as_markdown_shows_every_number_whole(config):
    d = json_of(["derive", str(config), "--show-jacobians", "--format", "json"])
    r = runner.invoke(app, ["derive", str(config), "--show-jacobians", "--format", "markdown"])
    assert r.exit_code == 0 and "…" not in r.stdout
    assert_shown(r.stdout.replace(r"\mathrm{e}", "e"), derive_numbers(d))
    rows = [line for line in r.stdout[r.stdout.index("## 4. Check"):].splitlines() if line.startswith("| w[")]
    escaped = [label.replace("_", r"\_") for label in d["check"]["labels"][:-1]]  # markdown's escape of _
    assert [line.split(" | ")[0] for line in rows] == [f"| {label}" for label in escaped]


def test_a_matrix_of_many_columns_is_elided_and_split_to_the_page():
    # 12 features: past MATRIX_MAX, so the middle rows and columns are elided (⋮ ⋯ ⋱, not …);
    # numbers near 1e9 in 6 digits, 12 characters each: at 60 columns the vectors come in blocks
    rng = np.random.default_rng(3)
    X, w = rng.normal(size=(30, 12)) * 1e9, rng.normal(size=12)
    y = np.abs(X @ w) + 1.0
    d = dv.derive_neuron(n_features=12, feature_names=[f"x{k}" for k in range(12)], source="t", units="t", X=X, y=y,
                         w=w, b=1e9)
    for width in WIDTHS:
        text = on_page(Group(*rd.text_renderables(d)), width)
        assert_fits(text, width)
        assert "⋯" in text and "⋱" in text
    assert "columns 1-" in on_page(Group(*rd.text_renderables(d)), 60)


def test_train_summary_fits_every_width_and_shows_every_number_whole(config):
    s, losses = train_json(config, "runs/json")
    for width in WIDTHS:
        text = on_page(render.summary_renderable(s, losses), width)
        assert_fits(text, width)
        assert_shown(text, train_numbers(s))
        assert all(f"w[{name}]" in text for name in feature_names(config))
        assert "validation (" in text and "rows)" in text


def test_the_summary_piped_keeps_each_message_on_one_line(in_tmp):
    s, losses = train_json(QUICKSTART, "runs/json")
    assert s["message"].startswith("early stopping")
    text = on_page(render.summary_renderable(s, losses), 80, terminal=False)
    lines = text.splitlines()
    assert s["message"] in lines
    assert f"files: {s['run_dir']}/ (model.json, history.csv, config.yaml, checkpoint.json)" in lines
    assert_fits("\n".join(line for line in lines if line not in (s["message"],)), 80)  # the panel fits 80


# ---- piped: a record a line (for grep), messages on one line ------------------------------------

@pytest.mark.parametrize("width", [80, 60])
def test_piped_epoch_lines_are_one_line_each_and_the_start_line_is_one_line(long_config, monkeypatch, width):
    events = [json.loads(line) for line in
              runner.invoke(app, ["train", str(long_config), "--json", "--set", "output.dir=runs/j"]).stdout.splitlines()]
    monkeypatch.setenv("COLUMNS", str(width))
    r = runner.invoke(app, ["train", str(long_config), "--set", "output.dir=runs/plain"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    start = [line for line in lines if line.startswith("training on ")]
    assert len(start) == 1 and ", ".join(long_names()) in start[0] and start[0].endswith("run directory: runs/plain")
    epochs = r.stdout[:r.stdout.index("╭")]
    assert "…" not in epochs
    blocks = [line for line in epochs.splitlines() if line.startswith("epoch ")]  # each record whole on its line
    assert len(blocks) == len([line for line in epochs.splitlines() if line.strip()]) - 1
    logged = [e for e in events if e["event"] == "epoch"]
    assert [b.split()[1] for b in blocks] == [f"{e['epoch']}/30" for e in logged]
    for block, e in zip(blocks, logged):
        assert_shown(block, [(k, e[k], 5) for k in ("loss", "val_loss", "rmse", "mae", "grad_norm")])


def test_gradcheck_and_derive_piped_keep_each_message_on_one_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    r = runner.invoke(app, ["gradcheck", str(QUICKSTART)])
    head = r.stdout.splitlines()[0]
    assert r.exit_code == 0 and head.startswith("gradcheck: ") and head.endswith("rtol 1e-05, atol 1e-08")
    assert r.stdout.splitlines()[-1].startswith("PASS: all 4 gradients agree") and "…" not in r.stdout
    r = runner.invoke(app, ["derive", str(QUICKSTART), "--show-jacobians"])
    assert r.exit_code == 0 and "…" not in r.stdout
    assert re.search(r"^chain = kernel = central differences: .*: agree$", r.stdout, re.M)


# ---- on a pseudo-terminal, as a user sees it ---------------------------------------------------

@pytest.mark.parametrize("command,width", [("gradcheck", 80), ("derive", 80)])
def test_gradcheck_and_derive_on_a_terminal(in_tmp, command, width):
    args = [command, str(QUICKSTART)] + (["--sweep"] if command == "gradcheck" else ["--show-jacobians"])
    d = json_of(args + (["--json"] if command == "gradcheck" else ["--format", "json"]))
    text = on_terminal(args, width, in_tmp)
    assert_fits(text, width)
    assert_shown(text, gradcheck_numbers(d) if command == "gradcheck" else derive_numbers(d))
    assert all(f"w[{name}]" in text for name in QUICKSTART_FEATURES)


@pytest.mark.parametrize("which,width", [("quickstart", 80), ("long", 60)])
def test_train_on_a_terminal_live_view_and_summary(request, in_tmp, which, width):
    config = QUICKSTART if which == "quickstart" else request.getfixturevalue("long_config")
    s, _ = train_json(config, "runs/json")
    text = on_terminal(["train", str(config), "--set", "output.dir=runs/tty"], width, in_tmp)
    assert "training" in text and "neurocli train" in text  # the live view, then the panel
    assert_fits(text, width)
    assert_shown(text[text.index("neurocli train"):], train_numbers(s))
    assert all(f"w[{name}]" in text for name in feature_names(config))


def test_gradchecks_count_of_the_points_left_out_wraps_at_words(in_tmp):
    text = on_terminal(["gradcheck", str(QUICKSTART), "--points", "50"], 60, in_tmp)
    assert_fits(text, 60)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    start = max(i for i, line in enumerate(lines) if line.startswith("shown: "))
    # 20 points are shown: the first and the 19 worst of the 50 random ones; 50 - 19 = 31 left out
    assert re.fullmatch(r"shown: the 19 worst of 50 random points; 31 more \(31 pass\) in --json",
                        " ".join(lines[start:])), lines[start:]


@pytest.mark.parametrize("width", [80, 60])
def test_the_live_view_of_reading_keeps_each_number_with_its_unit(in_tmp, monkeypatch, width):
    rng = np.random.default_rng(3)
    (in_tmp / "parts").mkdir()
    for k in range(3):  # 3 x 40,000 rows: long enough a read for the view to show it going
        X = rng.uniform(1, 2, size=(40_000, 8))
        np.savetxt(in_tmp / f"parts/p{k}.csv", np.c_[X, X.sum(axis=1)], delimiter=",", fmt="%.10g", comments="",
                   header=",".join([f"x{i}" for i in range(8)] + ["y"]))
    config = write(in_tmp / "s.yaml", "data: {path: 'parts/*.csv', target: y}\nengine: {kind: stream}\n"
                                      "training: {epochs: 2}\noutput: {dir: runs/s}\n")
    monkeypatch.setenv("NEUROCLI_CACHE_DIR", str(in_tmp / "cache"))  # empty: the parts are read and prepared
    text = on_terminal(["train", str(config)], width, in_tmp)
    assert_fits(text, width)
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    first = next(i for i, line in enumerate(lines) if line.startswith("reading "))
    frames = list(itertools.takewhile(lambda line: line.startswith(("reading ", "preparing ")), lines[first:]))
    after = lines[first + len(frames)]
    assert after.startswith(("note: ", "warning: ", "training on ")), f"a frame of two lines: {frames[-1]!r}, {after!r}"
    # each frame: what it does, then the bytes with their unit, then the rows so far (0 to 3 x 40,000)
    frame = re.compile(r"(reading|preparing) [━╸╺ ]*\d+\.\d/\d+\.\d MB +[\d,]+ rows( .*)?")
    assert all(frame.fullmatch(line) for line in frames), frames
    assert any(line.startswith("preparing ") and " 120,000 rows" in line for line in frames), frames
    if width == 80:  # room for every column: the speed and the time left too
        speed_and_left = re.compile(r".* rows +(\?|\d+\.\d [kMG]?B/s) +(-:--:--|\d+:\d\d:\d\d)")
        assert all(speed_and_left.fullmatch(line) for line in frames), frames


# ---- --help, cache info, predict's note --------------------------------------------------------

def _command_paths() -> list[list[str]]:
    root = get_command(app)
    paths = [[]]
    for name, cmd in root.commands.items():
        paths.append([name])
        paths += [[name, sub] for sub in getattr(cmd, "commands", {})]
    return paths


@pytest.mark.parametrize("width", WIDTHS)
def test_every_help_fits_and_lists_its_commands_whole(width):
    paths = _command_paths()
    assert ["cache", "info"] in paths and ["train"] in paths
    for path in paths:
        r = runner.invoke(app, [*path, "--help"], terminal_width=width)
        assert r.exit_code == 0, path
        assert_fits(r.stdout, width)
        if "Commands:" in r.stdout:
            listed = r.stdout.split("Commands:")[1].split("\n\n")[0]
            assert "..." not in listed, (path, listed)


def test_cache_info_fits_and_names_each_file_whole():
    long_path = "/data/" + "/".join(f"a_rather_long_folder_name_{k}" for k in range(4)) + "/penguins.csv"
    s = {"dir": "/home/user/.cache/neurocli", "enabled": True, "bytes": 2_500_000,
         "entries": [{"file": long_path, "kind": "table", "rows": 342, "bytes": 1_500_000},
                     {"file": "/d.csv", "kind": "prepared", "rows": 5, "bytes": 10},
                     {"file": None, "kind": None, "rows": None, "bytes": 1_000_000}]}
    for width in WIDTHS:
        text = on_page(rc.info_renderable(s), width)
        assert_fits(text, width)
        joined = "".join(line.strip() for line in text.splitlines())
        assert long_path in joined and "342 rows" in text and "1.5 MB" in text and "unreadable" in text
        assert "table" in text and "prepared" in text
    piped = on_page(rc.info_renderable(s), 60, terminal=False)
    assert f"  {long_path}" in piped.splitlines()  # a pipe gets each file name on one line


def test_predicts_note_is_one_line_when_piped(in_tmp):
    r = runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", "training.epochs=2", "--set", "output.dir=runs/m"])
    assert r.exit_code == 0, r.output
    rows = (ROOT / "data" / "penguins.csv").read_text().splitlines()
    long_name = in_tmp / ("a_data_file_with_a_name_long_enough_to_pass_the_end_of_a_line_of_eighty" + ".csv")
    long_name.write_text("\n".join(rows[:6]) + "\n")  # the data's line 5 has NA measurements
    r = runner.invoke(app, ["predict", "runs/m/model.json", str(long_name)])
    assert r.exit_code == 0, r.output
    notes = [line for line in r.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].endswith("is left empty") and long_name.name in notes[0]


def test_the_preparing_phase_shows_its_own_total_not_the_readings():
    # reading 14 MB of file, then preparing 10 MB of rows: the bar's total follows the phase
    from neurocli.render import ReadingView

    console = Console(file=io.StringIO(), width=80, force_terminal=True)
    with ReadingView(console) as view:
        view("reading", 7_000_000, 14_000_000, 40_000)
        view("preparing", 5_000_000, 10_000_000, 120_000)
        task = view.progress.tasks[0]
        assert (task.description, task.completed, task.total) == ("preparing", 5_000_000, 10_000_000)
