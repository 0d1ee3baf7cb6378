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
from rich.measure import Measurement
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from neurocli.io import json_safe
from neurocli.render.layout import (Fields, Fitted, Prose, fit_fields, fixed_table, if_fits, name_line, stacked,
                                    stacked_width)
from neurocli.train import StopReason

# redraws a second at most: about 2% of a run's time (docs/design.md)
MAX_FPS = 5
SPARK = "▁▂▃▄▅▆▇█"
OFF_SCALE = "▲"  # a bar above the scale's top
CURVE_BARS = 60  # bars of a loss curve at most
MIN_BARS = 10  # a loss curve keeps its labels while this many bars fit beside them

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
    """A one-line chart of ``values`` (resampled to ``width``), log-scaled by default, its
    scale as :func:`bar_scale` sets it (bars above the scale's top are drawn ``▲``).

    Resamples before anything else, so drawing costs the same for 100 epochs or 100,000.
    """
    vals = _finite(resample(values, width))
    if not vals:
        return ""
    t = _on_axis(vals, log and min(vals) > 0)
    return _bars(t, _bounds(t))


def resample(values: list, width: int) -> list:
    """At most ``width`` of ``values``, evenly spaced, the first and the last among them."""
    n = len(values)
    if n <= width:
        return list(values)
    if width <= 1:
        return [values[-1]]
    return [values[round(i * (n - 1) / (width - 1))] for i in range(width)]


def _finite(values: list) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _on_axis(values: list[float], log: bool) -> list[float]:
    """The values as the bars' axis holds them: log10 if ``log`` (0 and below at minus infinity)."""
    return [math.log10(v) if v > 0 else -math.inf for v in values] if log else list(values)


def _bounds(t: list[float]) -> tuple[float, float]:
    """(bottom, top) of the bars, on the axis: the smallest value and the largest, unless the
    largest tenth of the values spans more than the other nine tenths together (the first
    epochs of a descent, which dwarf the rest); then the top is the largest of the nine tenths."""
    t = sorted(t)
    lo, hi, nine_tenths = t[0], t[-1], t[(len(t) - 1) * 9 // 10]
    return (lo, nine_tenths) if hi - nine_tenths > nine_tenths - lo else (lo, hi)


def bar_scale(vals: list[float], log: bool) -> tuple[float, float]:
    """(bottom, top) of the bars of ``vals`` in their own units (:func:`_bounds`, on a log
    axis if ``log``); a value above the top is drawn off the scale."""
    lo, hi = _bounds(_on_axis(vals, log))
    return (10 ** lo, 10 ** hi) if log else (lo, hi)


def _bars(t: list[float], bounds: tuple[float, float]) -> str:
    """One bar a value on the axis: its height between ``bounds``, ``▲`` above the top."""
    lo, hi = bounds
    span, top = hi - lo or 1.0, len(SPARK) - 1
    return "".join(OFF_SCALE if v > hi else SPARK[0] if v <= lo else SPARK[min(top, int((v - lo) / span * top + 0.5))]
                   for v in t)


def loss_curve(values: list[float], width: int, name: str = "loss") -> str:
    """The loss per epoch as one line of at most ``width`` characters, labelled with its first
    and last values and its scale: ``loss 6.23e+05 ▲▲█▇▅▃▂▁ 1.5e+05  log, ▲ > 1.9e+05``.

    The bars' scale is :func:`bar_scale`'s (log, unless a value is 0 or less), set on at most
    :data:`CURVE_BARS` of the values. A narrower line drops the note on ``▲`` first, then
    the name and the scale, then the labels; below :data:`MIN_BARS` bars only bars are left.
    """
    sample = _finite(resample(values, CURVE_BARS))
    if not sample:
        return ""
    log = min(sample) > 0
    bounds = _bounds(_on_axis(sample, log))
    kind = "log" if log else "linear"
    first, last = f"{sample[0]:.3g}", f"{sample[-1]:.3g}"
    top = f"{10 ** bounds[1] if log else bounds[1]:.3g}"
    clipped = max(_on_axis(sample, log)) > bounds[1]
    layouts = [(f"{name} {first} ", f" {last}  {kind}, {OFF_SCALE} > {top}" if clipped else f" {last}  {kind}"),
               (f"{name} {first} ", f" {last}  {kind}"),
               (f"{first} ", f" {last}")]
    for head, tail in layouts:
        room = min(CURVE_BARS, width - len(head) - len(tail))
        if room >= min(MIN_BARS, len(sample)):
            return head + _bars(_on_axis(_finite(resample(values, room)), log), bounds) + tail
    return sparkline(values, max(1, width))


class LossCurve:
    """:func:`loss_curve` as a rich renderable: as wide as the room it is given, never wider."""

    def __init__(self, losses: list[float], style: str = "cyan"):
        self.losses, self.style = list(losses), style

    def __rich_console__(self, console, options):
        yield Text(loss_curve(self.losses, options.max_width), style=self.style, no_wrap=True, overflow="crop")

    def __rich_measure__(self, console, options):
        widest = len(loss_curve(self.losses, options.max_width))
        return Measurement(min(widest, MIN_BARS), widest)


def epoch_line(rec, total: int, width: int | None = 80) -> str:
    """One epoch as plain text (no control codes) for pipes and CI logs: one line when it fits
    ``width`` columns (or ``width`` is None: piped, a record a line for grep), else broken
    between two fields, the next lines indented."""
    parts = [f"epoch {rec.epoch}/{total}", f"loss {fmt(rec.loss)}"]
    if rec.val_loss is not None:
        parts.append(f"val_loss {fmt(rec.val_loss)}")
    parts += [f"rmse {fmt(rec.rmse)}", f"mae {fmt(rec.mae)}", f"grad_norm {fmt(rec.grad_norm)}",
              f"active {rec.active_fraction:.1%}"]
    return "  ".join(parts) if width is None else "\n".join(fit_fields(parts, width))


def epoch_event(rec, event: str = "epoch") -> str:
    """One epoch's record as NDJSON; ``event`` is "best" for the epoch early stopping restored."""
    return json.dumps({"event": event, **json_safe(rec.as_dict())}, allow_nan=False)


def summary_event(summary: dict) -> str:
    return json.dumps({"event": "summary", **json_safe(summary)}, allow_nan=False)


class ReadingView:
    """The live view of reading the data: bytes read of all, rows so far, speed and time left;
    gone once the reading is done (the epochs' view follows). On a narrow page the speed goes
    first, then the time left, then the rows. Call it as load_inputs's ``progress``."""

    def __init__(self, console: Console):
        from rich.progress import (BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)  # here: a run with --quiet or --json shows no progress

        from neurocli.render.progress import FittedProgress

        rows, speed, left = TextColumn("{task.fields[rows]:,} rows"), TransferSpeedColumn(), TimeRemainingColumn()
        self.progress = FittedProgress(
            TextColumn("{task.description}"), BarColumn(bar_width=None), DownloadColumn(), rows, speed, left,
            droppable=(speed, left, rows), console=console, transient=True, expand=True,
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
        self.progress.update(self.task, description=phase, completed=done, total=max(1, total), rows=rows)


class LiveView:
    """The rich live view of a training run: progress, current metrics, loss curve."""

    def __init__(self, console: Console, total_epochs: int, start_epoch: int = 0):
        from rich.live import Live  # here, as ReadingView's progress
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

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
        return Group(self.progress, table, LossCurve(losses))

    def update(self, rec, losses: list[float], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 1.0 / MAX_FPS:
            return
        self._last = now
        self.progress.update(self.task, completed=rec.epoch)
        self.live.update(self._renderable(rec, losses), refresh=True)


def _parameter_rows(s: dict) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The learned parameters' headers and (label, values) rows: original units, and
    standardized units when the features were standardized."""
    std = s.get("standardized") and s.get("weights_standardized") is not None
    headers = ["original units"] + (["standardized units"] if std else [])
    rows = [(f"w[{name}]", [fmt(value)] + ([fmt(s["weights_standardized"][i])] if std else []))
            for i, (name, value) in enumerate(s["weights"].items())]
    rows.append(("b", [fmt(s["bias"])] + ([fmt(s["bias_standardized"])] if std else [])))
    return headers, rows


def _parameters(s: dict) -> Fitted:
    """The learned parameters: a table (its headers on two lines if that makes it fit); on a
    narrower page each name on a line of its own above its values (stacked rows); narrower
    still, each value named beside it."""
    headers, rows = _parameter_rows(s)
    title = Text("learned parameters")

    def table(console, width, headers=headers):
        body = [[Text(label), *values] for label, values in rows]
        table = fixed_table(["parameter", *headers], body, ["left"] + ["right"] * len(headers), gap=4, indent=2)
        return if_fits(console, width, Group(title, table))

    def two_line_headers(console, width):  # "original units" over two lines, and so on
        return table(console, width, [h.replace(" ", "\n") for h in headers])

    def stack(console, width):
        if stacked_width(headers, rows, indent=6, gap=4) > width:
            return None
        return Group(title, Padding(stacked(headers, rows, indent=4, gap=4), (0, 0, 0, 2), expand=False))

    def listed(console, width):
        named = [(label, [f"{h.split()[0]} {v}" for h, v in zip(headers, values)]) for label, values in rows]
        return Group(title, *[part for label, fields in named for part in (name_line(label, 2), Fields(fields, indent=4))])

    return Fitted(table, two_line_headers, stack, listed)


def _metrics(s: dict) -> Fitted:
    """The metrics of each split: a table, splits by rows (closer together if that makes it
    fit); on a narrower page, splits by columns; narrower still, each value named beside it."""
    names = ["MSE", "RMSE", "MAE", "R^2"]
    splits = [(f"train ({s['n_train']} rows)", [fmt(s["loss"]), fmt(s["rmse"]), fmt(s["mae"]), fmt(s["r2"], 4)])]
    if s.get("val_loss") is not None:
        splits.append((f"validation ({s['n_val']} rows)",
                       [fmt(s["val_loss"]), fmt(s["val_rmse"]), fmt(s["val_mae"]), fmt(s["val_r2"], 4)]))
    title = Text("metrics")

    def by_rows(console, width, gap=4):
        body = [[Text(label), *values] for label, values in splits]
        return if_fits(console, width, Group(title, fixed_table(["", *names], body, ["left"] + ["right"] * 4, gap=gap,
                                                               indent=2)))

    def by_rows_closer(console, width):
        return by_rows(console, width, gap=2)

    def by_columns(console, width):
        body = [[name, *(values[j] for _, values in splits)] for j, name in enumerate(names)]
        return if_fits(console, width, Group(title, fixed_table(["", *(label for label, _ in splits)], body,
                                                               ["left"] + ["right"] * len(splits), gap=4, indent=2)))

    def listed(console, width):
        return Group(title, *[part for label, values in splits
                              for part in (name_line(label, 2), Fields([f"{n} {v}" for n, v in zip(names, values)], indent=4))])

    return Fitted(by_rows, by_rows_closer, by_columns, listed)


def summary_renderable(s: dict, losses: list[float] | None = None):
    """The end-of-run panel (the parameters by feature, the metrics, the loss curve, why it
    stopped), then the messages: the warning or advice, where the files went, the time taken.
    ``losses``: the training loss of every epoch, for the curve. Print it with
    :func:`neurocli.render.layout.show`: the panel fits the page, each message wraps at words
    on a terminal and stays on one line elsewhere."""
    parts = [_parameters(s), Text(""), _metrics(s)]
    if _finite(losses or []):
        parts.append(Text(""))
        parts.append(Text(f"loss curve (epoch 1 -> {len(losses)})", style="dim"))
        parts.append(LossCurve(losses))
    parts.append(Text(""))
    stop = Text("stopped: ", style="bold") + Text(f"{STOP_EXPLAINED.get(s['stopped'], s['stopped'])} after {s['epochs']} epochs",
                                                   style="green" if StopReason(s["stopped"]).succeeded else "red")
    parts.append(stop)
    ok = StopReason(s["stopped"]).succeeded
    notes = []
    if s.get("message"):
        notes.append(Prose(s["message"], style="yellow"))
    if s.get("run_dir"):
        notes.append(Prose(f"files: {s['run_dir']}/ (model.json, history.csv, config.yaml, checkpoint.json)"))
    timing = s.get("timing", {})
    notes.append(Prose(f"time: load {timing.get('load_s', 0):.2f} s, train {timing.get('train_s', 0):.2f} s", style="dim"))
    # the title as Text: a str would be read as markup, which loads rich's table of emoji codes
    return Group(Panel(Group(*parts), title=Text("neurocli train"), border_style="green" if ok else "red",
                       expand=False), *notes)
