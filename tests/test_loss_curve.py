"""The loss curve of the live view and the summary: a log scale worth reading, labelled, that
fits the console."""

from __future__ import annotations

import csv
import io

import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from neurocli import render
from neurocli.cli import app
from neurocli.train import EpochRecord
from tests.conftest import QUICKSTART

runner = CliRunner()
BARS = set(render.SPARK) | {render.OFF_SCALE}


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> list[dict]:
    """The quickstart's history, as history.csv holds it (read here with csv)."""
    out = tmp_path_factory.mktemp("q") / "run"
    r = runner.invoke(app, ["train", str(QUICKSTART), "-q", "--set", f"output.dir={out}"])
    assert r.exit_code == 0, r.output
    with open(out / "history.csv", newline="") as fh:
        return [{k: (float(v) if v else None) for k, v in row.items()} for row in csv.DictReader(fh)]


def _rendered(renderable, width: int) -> list[str]:
    buf = io.StringIO()
    Console(width=width, file=buf, force_terminal=False, color_system=None).print(renderable)
    return buf.getvalue().splitlines()


def _curve_line(lines: list[str]) -> str:
    (line,) = [ln for ln in lines if sum(ch in BARS for ch in ln) >= 5]
    return line


def test_hand_worked_scales():
    # log10: 4, 3, 2, 1; the top tenth (4) spans 1, the rest (1 to 3) 2: no clipping.
    # height = round((v - 1) / 3 * 7): 7, 4.67 -> 5, 2.33 -> 2, 0 -> bars 8, 6, 3, 1 of 8
    assert render.sparkline([1e4, 1e3, 1e2, 1e1]) == "█▆▃▁"
    # log10: 6 once, 2 nine times, 1 ten times; sorted, the value at 9/10 of the way (index 17 of
    # 19) is 2: 6 - 2 = 4 spans more than 2 - 1 = 1, so the top is 100 and 1e6 is off the scale
    values = [1e6] + [1e2] * 9 + [1e1] * 10
    assert render.sparkline(values, width=20) == "▲" + "█" * 9 + "▁" * 10
    assert render.bar_scale(values, log=True) == (10.0, 100.0)
    # a value of 0 cannot be on a log scale: linear, (v - 0) / 4 * 7 -> 7, 3.5 -> 4, 0
    assert render.sparkline([4.0, 2.0, 0.0]) == "█▅▁"
    assert render.loss_curve([4.0, 2.0, 0.0], 40) == "loss 4 █▅▁ 0  linear"
    # a 0 that the 60 values setting the (log) scale miss, drawn at some width: at its bottom
    values = [10.0, 1.0] * 40 + [0.0] + [1.0] * 40
    assert all(0 < cell_len(render.loss_curve(values, width)) <= width for width in range(1, 100))


def test_the_quickstarts_curve_has_a_readable_scale_labelled_with_its_ends(history):
    losses = [h["loss"] for h in history]
    assert all(a > b for a, b in zip(losses, losses[1:]))  # full-batch descent: the loss only falls
    line = render.loss_curve(losses, 80)
    bars = line.split()[2]  # loss FIRST BARS LAST ...
    heights = ["▁▂▃▄▅▆▇█▲".index(ch) for ch in bars]
    assert len(set(heights)) > 2
    assert heights == sorted(heights, reverse=True)  # a falling loss never draws a taller bar later
    assert line.startswith(f"loss {losses[0]:.3g} ") and f" {losses[-1]:.3g}  log" in line


@pytest.mark.parametrize("width", [80, 60])
def test_the_live_view_and_the_summary_fit_the_console(width, history):
    losses = [h["loss"] for h in history]
    view = render.LiveView(Console(width=width, file=io.StringIO()), 500)
    live = _rendered(view._renderable(EpochRecord(**{k: (int(v) if k == "epoch" else v) for k, v in history[-1].items()}),
                                      losses), width)
    summary = _rendered(render.summary_renderable(_summary(history), losses), width)
    for lines in (live, summary):
        assert max(cell_len(ln) for ln in lines) <= width
        curve = _curve_line(lines)
        assert len({ch for ch in curve if ch in BARS}) > 2
        assert f"{losses[0]:.3g}" in curve and f"{losses[-1]:.3g}" in curve


@pytest.mark.parametrize("width", [80, 60, 40, 25, 12, 5])
def test_a_narrower_curve_drops_labels_but_never_overflows(width, history):
    losses = [h["loss"] for h in history]
    line = render.loss_curve(losses, width)
    assert 0 < cell_len(line) <= width
    assert sum(ch in BARS for ch in line) >= min(width, render.MIN_BARS)


def _summary(history: list[dict]) -> dict:
    last = history[-1]
    return {"weights": {"x": 1.0}, "bias": 0.5, "weights_standardized": [1.0], "standardized": True,
            "bias_standardized": 0.5, "n_train": 265, "n_val": 77, "loss": last["loss"], "rmse": last["rmse"],
            "mae": last["mae"], "r2": 0.75, "val_loss": last["val_loss"], "val_rmse": last["val_rmse"],
            "val_mae": last["val_mae"], "val_r2": 0.76, "stopped": "early_stopping", "epochs": len(history),
            "message": None, "run_dir": "runs/quickstart", "timing": {"load_s": 0.01, "train_s": 0.01}}
