"""A progress row that keeps to the page (imported where a progress is shown: a run with
--quiet or --json loads no rich progress)."""

from __future__ import annotations

from typing import Iterable

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.progress import BarColumn, Progress, ProgressColumn
from rich.table import Table

from neurocli.render.layout import natural_width

MIN_BAR = 10  # the narrowest bar worth showing


class FittedProgress(Progress):
    """A rich Progress whose rows fit the page: each column on one line (a number keeps its
    unit), and where the page is too narrow for every column beside a bar of :data:`MIN_BAR`
    columns, the columns of ``droppable`` left out, first ones first; then the bar."""

    def __init__(self, *columns: ProgressColumn, droppable: Iterable[ProgressColumn] = (), **options):
        super().__init__(*columns, **options)
        self.droppable = list(droppable)

    def get_renderables(self) -> Iterable[RenderableType]:
        yield _Fitted(self)

    def fitted_table(self, console: Console, width: int) -> Table:
        """The tasks' rows as a table of the columns that fit ``width``."""
        rows = [[column(task) for column in self.columns] for task in self.tasks if task.visible]
        kept = self._kept(console, width, rows)
        table_columns = []
        for j in kept:
            table_column = self.columns[j].get_table_column().copy()
            table_column.no_wrap = not isinstance(self.columns[j], BarColumn)  # the bar takes what is left
            table_columns.append(table_column)
        table = Table.grid(*table_columns, padding=(0, 1), expand=self.expand)
        for row in rows:
            table.add_row(*(row[j] for j in kept))
        return table

    def _kept(self, console: Console, width: int, rows: list[list]) -> list[int]:
        """The places of the columns shown: those that fit ``width`` beside the bar."""
        bars = {j for j, column in enumerate(self.columns) if isinstance(column, BarColumn)}
        widths = [max((natural_width(console, row[j]) for row in rows), default=0)
                  for j in range(len(self.columns))]
        kept = list(range(len(self.columns)))
        drops = [self.columns.index(column) for column in self.droppable] + sorted(bars)

        def needed() -> int:
            bar = MIN_BAR if bars & set(kept) else 0
            return sum(widths[j] for j in kept if j not in bars) + len(kept) - 1 + bar

        while drops and needed() > width:
            kept.remove(drops.pop(0))
        return kept


class _Fitted:
    """A progress's table, made for the width it is drawn at."""

    def __init__(self, progress: FittedProgress):
        self.progress = progress

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.progress.fitted_table(console, options.max_width)
