"""Everything the user sees, built from plain result objects (dicts and records).

One module per command (this one: train; ``render.gradcheck``, ``render.derive``).
Only this package and cli.py import rich. The live view refreshes at most ``MAX_FPS`` times
a second whatever the epoch rate, so it costs the same on 10 epochs or 100,000.
"""

from __future__ import annotations

import json
import math
import time

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import (
    BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from neurocli.io import json_safe
from neurocli.train import StopReason

# redraws a second at most: about 2% of a run's time (docs/design.md)
MAX_FPS = 5
SPARK = "▁▂▃▄▅▆▇█"

STOP_EXPLAINED = {
    StopReason.COMPLETED: "completed all epochs",
    StopReason.EARLY_STOPPING: "early stopping",
    StopReason.DIVERGED: "diverged",
    StopReason.DEAD_NEURON: "dead neuron",
    StopReason.INTERRUPTED: "interrupted",
}


def fmt(value, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.{digits - 2}e}"
        return f"{value:.{digits}g}"
    return str(value)


def sparkline(values: list[float], width: int = 60, log: bool = True) -> str:
    """A one-line chart of ``values`` (resampled to ``width``), log-scaled by default.

    Resamples before anything else, so drawing costs the same for 100 epochs or 100,000.
    """
    if len(values) > width:
        step = len(values) / width
        values = [values[min(len(values) - 1, int(i * step))] for i in range(width)]
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    if log and min(vals) > 0:
        vals = [math.log10(v) for v in vals]
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] for v in vals)


def epoch_line(rec, total: int) -> str:
    """One plain log line (no control codes) for pipes and CI logs."""
    parts = [f"epoch {rec.epoch}/{total}", f"loss {fmt(rec.loss)}"]
    if rec.val_loss is not None:
        parts.append(f"val_loss {fmt(rec.val_loss)}")
    parts += [f"rmse {fmt(rec.rmse)}", f"mae {fmt(rec.mae)}", f"grad_norm {fmt(rec.grad_norm)}",
              f"active {rec.active_fraction:.1%}"]
    return "  ".join(parts)


def epoch_event(rec, event: str = "epoch") -> str:
    """One epoch's record as NDJSON; ``event`` is "best" for the epoch early stopping restored."""
    return json.dumps({"event": event, **json_safe(rec.as_dict())}, allow_nan=False)


def summary_event(summary: dict) -> str:
    return json.dumps({"event": "summary", **json_safe(summary)}, allow_nan=False)


class ReadingView:
    """The live view of reading the data: bytes read of all, rows so far, speed and time left;
    gone once the reading is done (the epochs' view follows). Call it as load_inputs's
    ``progress``."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=None), DownloadColumn(),
            TextColumn("{task.fields[rows]:,} rows"), TransferSpeedColumn(), TimeRemainingColumn(),
            console=console, transient=True, expand=True,
        )
        self.task = None

    def __enter__(self) -> "ReadingView":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, phase: str, done: int, total: int, rows: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task(phase, total=max(1, total), rows=0)
        self.progress.update(self.task, description=phase, completed=done, rows=rows)


class LiveView:
    """The rich live view of a training run: progress, current metrics, loss curve."""

    def __init__(self, console: Console, total_epochs: int, start_epoch: int = 0):
        self.console = console
        self.total = total_epochs
        self.progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
        )
        self.task = self.progress.add_task("train", total=total_epochs, completed=start_epoch)
        self.live = Live(self._renderable(None, []), console=console, auto_refresh=False, transient=False)
        self._last = 0.0
        self.losses: list[float] = []

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)

    def _renderable(self, rec, losses):
        table = Table.grid(padding=(0, 2))
        for _ in range(4):
            table.add_column()
        if rec is not None:
            table.add_row("epoch", f"{rec.epoch}/{self.total}", "active", f"{rec.active_fraction:.1%}")
            table.add_row("loss (MSE)", fmt(rec.loss), "val loss", fmt(rec.val_loss))
            table.add_row("RMSE", fmt(rec.rmse), "val RMSE", fmt(rec.val_rmse))
            table.add_row("MAE", fmt(rec.mae), "grad norm", fmt(rec.grad_norm))
        curve = Text(sparkline(losses), style="cyan")
        return Group(self.progress, table, Text("loss ", style="dim") + curve)

    def update(self, rec, losses: list[float], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 1.0 / MAX_FPS:
            return
        self._last = now
        self.progress.update(self.task, completed=rec.epoch)
        self.live.update(self._renderable(rec, losses), refresh=True)


def summary_renderable(s: dict, losses: list[float] | None = None):
    """The end-of-run panel: weights by feature, bias, metrics, the loss curve, why it stopped,
    where the files went. ``losses``: the training loss of every epoch, for the curve."""
    parts = []
    wt = Table(title="learned parameters", title_justify="left", box=None, padding=(0, 2))
    wt.add_column("parameter")
    wt.add_column("original units", justify="right")
    if s.get("weights_standardized") is not None and s.get("standardized"):
        wt.add_column("standardized units", justify="right")
    std = s.get("standardized")
    for i, (name, value) in enumerate(s["weights"].items()):
        row = [Text(f"w[{name}]"), fmt(value)]
        if std:
            row.append(fmt(s["weights_standardized"][i]))
        wt.add_row(*row)
    row = ["b", fmt(s["bias"])]
    if std:
        row.append(fmt(s["bias_standardized"]))
    wt.add_row(*row)
    parts.append(wt)

    mt = Table(title="metrics", title_justify="left", box=None, padding=(0, 2))
    mt.add_column("")
    for col in ("MSE", "RMSE", "MAE", "R^2"):
        mt.add_column(col, justify="right")
    mt.add_row(Text(f"train ({s['n_train']} rows)"), fmt(s["loss"]), fmt(s["rmse"]), fmt(s["mae"]), fmt(s["r2"], 4))
    if s.get("val_loss") is not None:
        mt.add_row(Text(f"validation ({s['n_val']} rows)"), fmt(s["val_loss"]), fmt(s["val_rmse"]), fmt(s["val_mae"]),
                   fmt(s["val_r2"], 4))
    parts.append(Text(""))
    parts.append(mt)
    curve = sparkline(losses or [])
    if curve:
        parts.append(Text(""))
        parts.append(Text(f"loss curve (log scale, epoch 1 -> {len(losses)})", style="dim"))
        parts.append(Text(curve, style="cyan"))
    parts.append(Text(""))
    stop = Text("stopped: ", style="bold") + Text(f"{STOP_EXPLAINED.get(s['stopped'], s['stopped'])} after {s['epochs']} epochs",
                                                   style="green" if StopReason(s["stopped"]).succeeded else "red")
    parts.append(stop)
    if s.get("message"):
        parts.append(Text(s["message"], style="yellow"))
    if s.get("run_dir"):
        parts.append(Text(f"files: {s['run_dir']}/ (model.json, history.csv, config.yaml, checkpoint.json)"))
    timing = s.get("timing", {})
    parts.append(Text(f"time: load {timing.get('load_s', 0):.2f} s, train {timing.get('train_s', 0):.2f} s", style="dim"))
    ok = StopReason(s["stopped"]).succeeded
    return Panel(Group(*parts), title="neurocli train", border_style="green" if ok else "red", expand=False)
