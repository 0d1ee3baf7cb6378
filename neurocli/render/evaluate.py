"""What ``neurocli evaluate`` shows: a model's metrics on a data set as one small table, the
columns of the train summary's metrics, or the same numbers as one JSON object."""

from __future__ import annotations

import json

from rich.console import Group
from rich.table import Table
from rich.text import Text

from neurocli.io import json_safe
from neurocli.render import fmt


def evaluation_renderable(ev, model: str, data: str):
    """The line naming the model, the data and the target, then the metrics table."""
    table = Table(box=None, padding=(0, 2), pad_edge=False)
    table.add_column("")
    for col in ("MSE", "RMSE", "MAE", "R^2"):
        table.add_column(col, justify="right")
    m = ev.metrics
    table.add_row(Text(f"  {ev.rows} row{'s' if ev.rows != 1 else ''}"), fmt(m["mse"]), fmt(m["rmse"]), fmt(m["mae"]),
                  fmt(m["r2"], 4))
    return Group(Text(f"{model} on {data} (target: {ev.target})"), table)


def evaluation_json(ev) -> str:
    """One object: mse, rmse, mae, r2 (null where not a number: R^2 of a constant target), rows,
    rows_skipped."""
    return json.dumps(json_safe(ev.as_dict()), allow_nan=False)


def skipped_note(ev, data: str) -> str | None:
    """The one line on the rows left out, or None when every row was scored."""
    n = ev.rows_skipped
    if not n:
        return None
    return f"note: left out {n} row{'s' if n > 1 else ''} of {data} with an empty or NA cell"
