"""Layouts that fit the page, for every command's text output.

A layout here never cuts a number or a label (rich's "…" never appears): a message is
wrapped at words on the page (or kept on one line in plain output, see :func:`show`);
fields are broken between fields; and :class:`Fitted` picks the first of several layouts
of the same content (a full table, fewer columns, stacked rows, a vertical list) that fits
the page, the last one being one that fits any page.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

# wide enough to measure any table at its natural width (no column wrapped)
UNBOUNDED = 100_000


def show(console: Console, renderable) -> None:
    """Print ``renderable``: laid out for the console's width; on a terminal its messages wrap
    at words, elsewhere (a pipe, a file) each message stays on one line, never broken mid-sentence."""
    console.print(renderable, soft_wrap=not console.is_terminal)


class Prose:
    """A message: wrapped at words to the page, each line indented by ``indent`` and the
    lines after the first by ``hang`` more; on one line where the page does not wrap (plain
    output, :func:`show`). A word wider than the page (a long path) folds, whole."""

    def __init__(self, text: str | Text, indent: int = 0, hang: int = 0, style: str = ""):
        self.text = text if isinstance(text, Text) else Text(text, style=style)
        self.indent, self.hang = indent, hang

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        longest = max((cell_len(word) for word in self.text.plain.split()), default=0)
        return Measurement(self.indent + self.hang + longest, self.indent + self.text.cell_len)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if options.no_wrap:
            yield Text(" " * self.indent) + self.text
            return
        width = max(1, options.max_width - self.indent)
        lines = list(self.text.wrap(console, width, overflow="fold"))
        if len(lines) > 1 and self.hang:  # the rest again, in the narrower room of the later lines
            rest = self.text[len(lines[0].plain):]
            rest = rest[len(rest.plain) - len(rest.plain.lstrip()):]
            lines[1:] = rest.wrap(console, max(1, width - self.hang), overflow="fold")
        for i, line in enumerate(lines):
            line.rstrip()
            yield Text(" " * (self.indent + (self.hang if i else 0))) + line


def fit_fields(fields: Sequence[str], width: int, sep: str = "  ", indent: str = "  ") -> list[str]:
    """``fields`` (each one "name value") on as few lines of at most ``width`` columns as they
    need, broken between two fields only; the lines after the first are indented."""
    lines: list[str] = []
    for field in fields:
        if lines and cell_len(lines[-1] + sep + field) <= width:
            lines[-1] += sep + field
        else:
            lines.append((indent if lines else "") + field)
    return lines


class Fields:
    """A row of fields as :func:`fit_fields` lays them out on the page, after an indent."""

    def __init__(self, fields: Sequence[str], indent: int = 0, style: str = ""):
        self.fields, self.indent, self.style = list(fields), indent, style

    def _lines(self, width: int) -> list[str]:
        return fit_fields(self.fields, max(1, width - self.indent))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        longest = max((cell_len(f) for f in self.fields), default=0) + 2
        return Measurement(self.indent + longest, self.indent + max(map(cell_len, self._lines(options.max_width))))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self._lines(options.max_width):
            yield Text(" " * self.indent + line, style=self.style, overflow="fold", no_wrap=False)


def name_line(name: str | Text, indent: int = 0) -> RenderableType:
    """A name on a line of its own after ``indent`` spaces; one longer than the page folds,
    whole (in plain output too: a name is not a message, and a panel would cut it)."""
    text = name.copy() if isinstance(name, Text) else Text(name)
    text.overflow, text.no_wrap = "fold", False
    return Padding(text, (0, 0, 0, indent), expand=False) if indent else text


Layout = Callable[[Console, int], Optional[RenderableType]]


class Fitted:
    """The first of ``layouts`` that fits the page. Each layout is a function of the console and
    the width that returns a renderable, or None when the content does not fit that width; the
    last one must always return one (a layout that fits any page)."""

    def __init__(self, *layouts: Layout):
        self.layouts = layouts

    def choose(self, console: Console, width: int) -> RenderableType:
        for layout in self.layouts:
            chosen = layout(console, width)
            if chosen is not None:
                return chosen
        raise ValueError("the last layout must fit any width")

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.choose(console, options.max_width))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.choose(console, options.max_width)


def natural_width(console: Console, renderable) -> int:
    """The width ``renderable`` takes with nothing wrapped."""
    return Measurement.get(console, console.options.update_width(UNBOUNDED), renderable).maximum


def if_fits(console: Console, width: int, renderable):
    """``renderable`` if it fits ``width`` columns with nothing wrapped, else None."""
    return renderable if natural_width(console, renderable) <= width else None


def _plain(cell: str | Text) -> str:
    return cell.plain if isinstance(cell, Text) else cell


def column_widths(headers: Sequence[str], rows: Sequence[Sequence[str | Text]]) -> list[int]:
    """The width of each column: its widest cell or header line."""
    return [max([*map(cell_len, h.split("\n")), *(cell_len(_plain(row[j])) for row in rows)])
            for j, h in enumerate(headers)]


def fixed_table(headers: Sequence[str], rows: Sequence[Sequence[str | Text]], justify: Sequence[str],
                gap: int = 2, indent: int = 0, **table_options) -> RenderableType:
    """A table whose columns are each as wide as their widest cell, never wrapped, ``gap``
    spaces apart: a layout that either fits the page whole or is not chosen (:func:`if_fits`)."""
    widths = column_widths(headers, rows)
    options = dict(box=None, padding=(0, gap, 0, 0), pad_edge=False, show_edge=False)
    options.update(table_options)
    t = Table(**options)
    for header, width, just in zip(headers, widths, justify):
        t.add_column(Text(header), justify=just, no_wrap=True, min_width=width)
    for row in rows:
        t.add_row(*[cell if isinstance(cell, Text) else Text(cell) for cell in row])
    return Padding(t, (0, 0, 0, indent), expand=False) if indent else t


def stacked(headers: Sequence[str], rows: Sequence[tuple[str | Text, Sequence[str | Text]]], indent: int = 4,
            gap: int = 2) -> Group:
    """Stacked rows: each row's label on a line of its own, its values on the next line, in
    right-aligned columns under one header line; for labels too long to share a line with
    the numbers."""
    widths = column_widths(headers, [values for _, values in rows])

    def line(cells, style=""):
        t = Table.grid(padding=(0, gap, 0, 0), pad_edge=False)
        for width in widths:
            t.add_column(justify="right", no_wrap=True, min_width=width)
        t.add_row(*[c if isinstance(c, Text) else Text(c, style=style) for c in cells])
        return Padding(t, (0, 0, 0, indent), expand=False)

    out: list = [line(headers, "bold")]
    for label, values in rows:
        out += [name_line(label), line(values)]
    return Group(*out)


def stacked_width(headers: Sequence[str], rows: Sequence[tuple[object, Sequence[str]]], indent: int = 4,
                  gap: int = 2) -> int:
    """The width the value lines of :func:`stacked` take (a longer label folds)."""
    widths = column_widths(headers, [values for _, values in rows])
    return indent + sum(widths) + gap * (len(widths) - 1)
