"""Renderings of a :class:`neurocli.derive.Derivation` (and of the section 4.5.3 example).

One function per format, each a pure function of the derivation object:
:func:`text_renderables` / :func:`to_text` (rich, Unicode, matrices as aligned bracketed
tables), :func:`to_markdown` (``$$`` LaTeX math), :func:`to_latex` (a standalone document
that compiles with amsmath) and :func:`to_json`. Numbers are shown with 6 significant digits
in text, markdown and LaTeX; JSON carries full precision.
"""

from __future__ import annotations

import io
import json
import math
import re
import unicodedata

import numpy as np
from rich.cells import cell_len
from rich.console import Console, Group
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from neurocli.derive import Derivation, SampleRow, Step, VectorChainRule
from neurocli.render.layout import (Fields, Fitted, Prose, column_widths, fit_fields, fixed_table, if_fits, name_line,
                                    natural_width, stacked, stacked_width)

# Matrices larger than this are shown with their middle rows/columns elided (JSON keeps all).
MATRIX_MAX = 10
MATRIX_EACH_END = 4
LAYOUT = "numerator layout: the Jacobian of f: Rⁿ → Rᵐ is m x n; the gradient of a scalar is a 1 x n row"
KINK = "convention at the kink: ReLU'(0) = 0, so a sample with z = 0 is inactive"


def num(v: float) -> str:
    """6 significant digits, no negative zero, no float noise (0.15000000000000002 -> 0.15)."""
    v = float(v) + 0.0
    if math.isnan(v):
        return "nan"
    return f"{v:.6g}"


def sym(name: str) -> str:
    """``"dC/dw"`` -> ``"∂C/∂w"``."""
    return "/".join("∂" + part[1:] for part in name.split("/"))


def _grid(M: np.ndarray) -> tuple[list[list[str]], list[int | None]]:
    """The matrix as strings, with the middle elided when it is larger than MATRIX_MAX, and the
    column each shown column is (None for the elision)."""
    M = np.atleast_2d(M)
    r, c = M.shape
    k = MATRIX_EACH_END
    rows = list(range(r)) if r <= MATRIX_MAX else list(range(k)) + [None] + list(range(r - k, r))
    cols = list(range(c)) if c <= MATRIX_MAX else list(range(k)) + [None] + list(range(c - k, c))
    out = []
    for i in rows:
        if i is None:
            out.append(["⋮" if j is not None else "⋱" for j in cols])
        else:
            out.append(["⋯" if j is None else num(M[i, j]) for j in cols])
    return out, cols


def _cells(M: np.ndarray) -> list[list[str]]:
    return _grid(M)[0]


# ----------------------------------------------------------------------------- text


def _bracket(cells: list[list[str]]) -> list[str]:
    """Rows of cells as right-aligned columns between brackets: ``[ 1  2 ]`` or ⎡ ⎤ ⎢ ⎥ ⎣ ⎦ rows."""
    widths = [max(cell_len(row[j]) for row in cells) for j in range(len(cells[0]))]
    body = ["  ".join(" " * (wd - cell_len(cell)) + cell for cell, wd in zip(row, widths)) for row in cells]
    if len(body) == 1:
        return [f"[ {body[0]} ]"]
    out = []
    for i, line in enumerate(body):
        left, right = ("⎡", "⎤") if i == 0 else ("⎣", "⎦") if i == len(body) - 1 else ("⎢", "⎥")
        out.append(f"{left} {line} {right}")
    return out


def matrix_lines(M: np.ndarray) -> list[str]:
    """A matrix as right-aligned columns between brackets: ``[ 1  2 ]`` or ⎡ ⎤ ⎢ ⎥ ⎣ ⎦ rows."""
    return _bracket(_cells(M))


def matrix_blocks(M: np.ndarray, width: int) -> list[str]:
    """A matrix too wide for ``width`` columns in blocks of as many whole columns as fit, one
    below the other, each under a line naming its columns (``columns 1-3 of 8``)."""
    cells, cols = _grid(M)
    n = np.atleast_2d(M).shape[1]
    groups: list[list[int]] = []
    for j in range(len(cols)):
        if groups and _width(_bracket([[row[k] for k in groups[-1] + [j]] for row in cells])) <= width:
            groups[-1].append(j)
        else:
            groups.append([j])
    out = []
    for group in groups:
        shown = [cols[k] + 1 for k in group if cols[k] is not None]
        out.append(f"column {shown[0]} of {n}" if len(group) == 1 and shown else
                   f"columns {shown[0]}-{shown[-1]} of {n}")
        out += _bracket([[row[k] for k in group] for row in cells])
    return out


def _width(lines: list[str]) -> int:
    return max((cell_len(line) for line in lines), default=0)


def hstack(blocks: list[list[str]], top: bool = False) -> list[str]:
    """Place blocks of lines side by side, each centred vertically on the tallest (or at the top)."""
    height = max(len(b) for b in blocks)
    out = [""] * height
    for block in blocks:
        width = _width(block)
        first = 0 if top else (height - len(block)) // 2
        for i in range(height):
            j = i - first
            line = block[j] if 0 <= j < len(block) else ""
            out[i] += line + " " * (width - cell_len(line))
    return [line.rstrip() for line in out]


class Equation:
    """``symbol = F1 · F2 = V`` with its matrices side by side, after ``indent`` spaces; on a
    narrower page each further ``· F`` or ``= V`` that does not fit starts a row of its own
    (its sign under the first =), and a matrix wider than the page is shown in blocks of
    columns (:func:`matrix_blocks`)."""

    def __init__(self, indent: int, symbol: str, factors: list[np.ndarray], value: np.ndarray):
        self.indent, self.symbol = indent, symbol
        signs = ["·"] * (len(factors) - 1) + ["="] if factors else []
        self.terms = [("=", m) for m in factors[:1] or [value]] + list(zip(signs, list(factors[1:]) + [value]))

    def lines(self, width: int) -> list[str]:
        first = " " * self.indent + f"{self.symbol} = "
        lead = " " * (self.indent + cell_len(self.symbol) + 1)
        rows: list[list[list[str]]] = []
        for k, (sign, m) in enumerate(self.terms):
            if k and not rows[-1][-1][0].startswith(("columns", "column")):
                joined = rows[-1] + [[f" {sign} "], matrix_lines(m)]
                if _width(hstack(joined)) <= width:
                    rows[-1] = joined
                    continue
            head = first if k == 0 else f"{lead}{sign} "
            body = matrix_lines(m)
            if cell_len(head) + _width(body) > width:
                body = matrix_blocks(m, width - cell_len(head))
            rows.append([[head], body])
        return [line for row in rows for line in hstack(row, top=row[-1][0].startswith(("columns", "column")))]

    def __rich_measure__(self, console, options) -> Measurement:
        widest = _width(self.lines(options.max_width))
        return Measurement(widest, widest)

    def __rich_console__(self, console, options):
        for line in self.lines(options.max_width):
            yield Text(line, overflow="fold", no_wrap=False)


class Formula:
    """A line of formulas joined by ",  " (or a chain of equalities, ``at=" = "``), after
    ``indent`` spaces: whole where it fits, else broken after a comma (or before an =), the
    next lines indented by 4 more and each still wrapped at spaces if too wide; on one line in
    plain output."""

    def __init__(self, text: str, indent: int = 2, at: str = ",  ", style: str = ""):
        self.text, self.indent, self.at, self.style = text, indent, at, style

    def _fields(self) -> list[str]:
        parts = self.text.split(self.at)
        if self.at == ",  ":
            return [part + "," for part in parts[:-1]] + parts[-1:]
        return parts[:1] + [self.at.lstrip() + part for part in parts[1:]]

    def __rich_console__(self, console, options):
        width = options.max_width - self.indent
        if options.no_wrap or cell_len(self.text) <= width:
            yield Prose(self.text, indent=self.indent, hang=4, style=self.style)
            return
        sep = "  " if self.at == ",  " else " "
        for i, line in enumerate(fit_fields(self._fields(), width, sep=sep, indent="    ")):
            yield Prose(line.strip(), indent=self.indent + (4 if i else 0), hang=4, style=self.style)


def _ljust(s: str, width: int) -> str:
    """Pad to ``width`` terminal columns (combining marks, as in 1⃗, take none)."""
    return s + " " * max(0, width - sum(1 for ch in s if not unicodedata.combining(ch)))


def _step_text(step: Step, n: int) -> list:
    shape = step.shape_text if step.shape_text == f"{step.shape[0]} x {step.shape[1]}" else \
        f"{step.shape_text} = {step.shape[0]} x {step.shape[1]}"
    head = Text(step.formula, style="bold")
    head.append(f"    {shape}", style="dim")

    def one_line(console, width):  # the formula and its shape side by side, where they fit
        return Prose(head, indent=2) if 2 + head.cell_len <= width else None

    def two_lines(console, width):  # the formula broken before an = where it must be, then its shape
        return Group(Formula(step.formula, at=" = ", style="bold"), Prose(Text(shape, style="dim"), indent=6))

    parts: list = [Fitted(one_line, two_lines)]
    for value, cond in step.cases:
        parts.append(Prose(f"{_ljust(value.text, 4)} if {cond.text}", indent=6, hang=4))
    if step.note:
        parts.append(Prose(f"({step.note})", indent=6, hang=1, style="dim"))
    if step.value is not None:
        parts.append(Equation(6, step.symbol, list(step.factors or []), step.value))
    parts.append(Text(""))
    return parts


def _vec(v) -> str:
    return "[" + ", ".join(num(x) for x in np.ravel(v)) + "]"


def _row_cells(r: SampleRow) -> list[str]:
    return [str(r.index), r.place or "", num(r.z), "yes" if r.active else "no",
            num(r.error), _vec(r.grad_w), num(r.grad_b)]


# a place as Table.place words it: "line 7", "row 6", "part-0003.csv, line 7"
_PLACE = re.compile(r"(?:(?P<file>.+), )?(?P<unit>line|row) (?P<n>\d+)")


def place_columns(rows: list[SampleRow]) -> tuple[list[str], list[list[str]]]:
    """The per-sample text table's place columns, narrow enough for 80 columns: ``line`` (or
    ``row``) holding the numbers in a data set of one file, ``file`` and ``line`` in one of
    several; no column without places. Returns (the headers, each row's cells)."""
    places = [r.place for r in rows]
    if all(place is None for place in places):
        return [], [[] for _ in rows]
    found = [_PLACE.fullmatch(place or "") for place in places]
    units = {m["unit"] for m in found if m}
    with_file = {m["file"] is not None for m in found if m}
    if not all(found) or len(units) != 1 or len(with_file) != 1:  # any other wording: the places as they are
        return ["place"], [[place or ""] for place in places]
    if with_file == {True}:
        return ["file", units.pop()], [[m["file"], m["n"]] for m in found]
    return [units.pop()], [[m["n"]] for m in found]


def _sample_table(d: Derivation) -> Fitted:
    """Each sample's term of the loss gradient, a row a sample: whole where it fits; on a
    narrower page the vector ∂C/∂w wrapped between its entries; narrower still, the vectors in
    a second table; on a narrow page each value named beside it. A number is never cut."""
    lo = d.loss
    shown = lo.rows_head + (lo.rows_tail if lo.n_omitted else [])
    place_names, place_cells = place_columns(shown)
    k = len(place_names)
    body = [[str(r.index), *cells, num(r.z), "yes" if r.active else "no", num(r.error), _vec(r.grad_w),
             num(r.grad_b)] for r, cells in zip(shown, place_cells)]
    total = ["Σ", *[""] * k, "", f"{lo.n_active}/{lo.n_samples}", "", _vec(lo.grad_w), num(lo.grad_b)]
    headers = ["i", *place_names, "zᵢ", "active", "eᵢ", "term of ∂C/∂w", "term of ∂C/∂b"]
    justify = ["right", *["left" if name == "file" else "right" for name in place_names], "right", "left", "right",
               "left", "right"]
    vec = len(headers) - 2  # the column of ∂C/∂w
    more = f"⋮ ({lo.n_omitted} more rows)"

    def rows(columns: list[int]) -> list[list[Text]]:
        out = [[Text(cells[j]) for j in columns] for cells in body[:len(lo.rows_head)]]
        if lo.n_omitted:  # (how many, in the column of ∂C/∂w: wide enough to say it)
            out.append([Text(more if j == vec else "⋮") for j in columns])
            out += [[Text(cells[j]) for j in columns] for cells in body[len(lo.rows_head):]]
        return out + [[Text(total[j], style="bold") for j in columns]]

    def table(columns: list[int], wrapped_width: int | None = None) -> Table:
        """The table of ``columns``; ∂C/∂w, if among them, wrapped to ``wrapped_width``."""
        cells = rows(columns)
        widths = column_widths([headers[j] for j in columns], cells)
        t = Table(box=None, padding=(0, 2, 0, 0), show_edge=False, pad_edge=False)
        for j, width in zip(columns, widths):
            if j == vec and wrapped_width is not None:
                t.add_column(Text(headers[j]), justify=justify[j], width=wrapped_width, overflow="fold")
            else:
                t.add_column(Text(headers[j]), justify=justify[j], no_wrap=True, min_width=width)
        for row in cells:
            t.add_row(*row)
        return t

    everything = list(range(len(headers)))
    longest_entry = max(cell_len(word) for cells in body + [total] for word in cells[vec].split() + [headers[vec]])

    def whole(console, width):
        return if_fits(console, width, table(everything))

    def wrapped(console, width):
        room = width - (natural_width(console, table([j for j in everything if j != vec])) + 2)
        return table(everything, room) if room >= longest_entry else None

    def split(console, width):
        first = table([j for j in everything if j != vec])
        room = width - (natural_width(console, table([0])) + 2)
        if natural_width(console, first) > width or room < longest_entry:
            return None
        return Group(first, Text(""), table([0, vec], room))

    def listed(console, width):
        out = []
        for cells in body[:len(lo.rows_head)] + ([[more]] if lo.n_omitted else []) + body[len(lo.rows_head):] + [total]:
            if len(cells) == 1:
                out.append(Text(cells[0]))
                continue
            style = "bold" if cells is total else ""
            out.append(Fields([f"{h} {c}" for j, (h, c) in enumerate(zip(headers, cells)) if c and j != vec], style=style))
            out.append(Prose(f"{headers[vec]} {cells[vec]}", indent=2, hang=2, style=style))
        return Group(*out)

    return Fitted(whole, wrapped, split, listed)


CHECK_ROWS = ("Jacobian chain", "vectorized kernel", "central differences")


def _check_table(d: Derivation) -> Fitted:
    """The gradient three ways: a column a parameter where it fits; else a row a parameter; on a
    narrower page each parameter's name on a line of its own above its three values; on a
    narrow page each value named beside it."""
    c = d.check
    values = [[num(v) for v in c.chain], [num(v) for v in c.kernel],
              [num(v) + ("*" if k else "") for v, k in zip(c.numeric, c.kink)]]
    by_parameter = [(label, [values[r][j] for r in range(3)]) for j, label in enumerate(c.labels)]

    def by_columns(console, width):
        rows = [[Text(name), *row] for name, row in zip(CHECK_ROWS, values)]
        return if_fits(console, width, fixed_table(["", *c.labels], rows, ["left"] + ["right"] * len(c.labels), gap=4))

    def by_rows(console, width):
        rows = [[Text(label), *row] for label, row in by_parameter]
        return if_fits(console, width, fixed_table(["parameter", *CHECK_ROWS], rows, ["left", "right", "right", "right"], gap=3))

    def stack(console, width):
        return stacked(CHECK_ROWS, by_parameter, indent=4) if stacked_width(CHECK_ROWS, by_parameter, indent=4) <= width \
            else None

    def listed(console, width):
        return Group(*[part for label, row in by_parameter
                       for part in (name_line(label), Fields([f"{n} {v}" for n, v in zip(CHECK_ROWS, row)], indent=2))])

    return Fitted(by_columns, by_rows, stack, listed)


def check_line(d: Derivation) -> str:
    c = d.check
    verdict = "agree" if c.ok else "DISAGREE"
    if c.n_kink:
        names = ", ".join(label for label, k in zip(c.labels, c.kink) if k)
        return (f"chain = kernel = central differences, except central differences for {names} (*, not "
                f"compared): max relative error {c.max_rel_error:.1e} (tolerance {c.tolerance:.0e}): {verdict}")
    return (f"chain = kernel = central differences: max relative error {c.max_rel_error:.1e} "
            f"(tolerance {c.tolerance:.0e}): {verdict}")


def kink_line(d: Derivation) -> str | None:
    c = d.check
    notes = []
    if c.shrunk is not None and c.shrunk.any():
        names = ", ".join(label for label, k in zip(c.labels, c.shrunk) if k)
        notes.append(f"for {names} the difference step was shrunk below the closest sample's distance to the "
                     f"ReLU kink (as neurocli gradcheck does), so the difference measures the derivative")
    if c.n_kink:
        names = ", ".join(label for label, k in zip(c.labels, c.kink) if k)
        notes.append(f"* the difference step for {names} moves some zᵢ across the ReLU kink at 0 and precision "
                     f"allows no smaller step: there central differences do not measure a derivative, so those "
                     f"entries are not compared (chain and kernel still are); neurocli gradcheck checks them on "
                     f"the samples away from the kink")
    return "; ".join(notes) or None


def _context_lines(d: Derivation) -> list[str]:
    lines = [f"source: {d.source}", f"units: {d.units}", LAYOUT, KINK]
    if d.evaluated:
        where = f" ({d.sample_place})" if d.sample_place is not None else ""
        lines.append(f"parameters: {d.parameters_from}: w = {_vec(d.w)} ({', '.join(d.feature_names)}), b = {num(d.b)}")
        lines.append(f"sample {d.sample_index}{where}: x = {_vec(d.x)}, {d.target} = {num(d.y)}, "
                     f"z = w·x + b = {num(d.z)} ({'active' if d.z > 0 else 'inactive'})")
    return lines


def text_renderables(d: Derivation) -> list:
    """The derivation as rich renderables, top to bottom: prose wrapped at words, formulas
    broken after a comma, matrices and tables laid out for the page (:mod:`neurocli.render.layout`)."""
    out: list = [Prose(Text("The gradient of a = max(0, w·x + b), step by step (Parr & Howard, sections 5 and 6)",
                            style="bold underline"))]
    out += [Prose(line, hang=2, style="dim") for line in _context_lines(d)]
    out.append(Text(""))
    out.append(Text("1. Intermediate variables", style="bold"))
    for f in d.definitions:
        out.append(Prose(f"{f.text:<16} {f.note}", indent=2, hang=17))
    out.append(Text(""))
    title = "2. One Jacobian per step, chained"
    if d.evaluated:
        title += f" (evaluated at sample {d.sample_index})"
    out.append(Prose(Text(title, style="bold")))
    for step in d.steps[:-2]:
        out += _step_text(step, d.n_features)
    out.append(Text("3. The loss", style="bold"))
    for f in d.loss.formulas:
        out.append(Formula(f.text))
        if f.note:
            out.append(Prose(f"({f.note})", indent=6, hang=1, style="dim"))
    out.append(Text(""))
    for step in d.steps[-2:]:
        out += _step_text(step, d.n_features)
    if d.evaluated:
        lo = d.loss
        out.append(Prose(Text(f"Per sample, over all N = {lo.n_samples} rows ({lo.n_active} active), C = {num(lo.loss)}:",
                              style="bold"), indent=2, hang=2))
        out.append(Prose("term = (2/N) vᵢ · (−∂aᵢ/∂w) = (2/N) eᵢ xᵢᵀ when active, 0 when not", indent=2, hang=2,
                         style="dim"))
        out.append(_sample_table(d))
        out.append(Text(""))
        out.append(Text("4. Check", style="bold"))
        out.append(_check_table(d))
        out.append(Prose(check_line(d), style="bold green" if d.check.ok else "bold red"))
        k = kink_line(d)
        if k:
            out.append(Prose(k, style="yellow"))
    else:
        out.append(Prose("(add --show-jacobians to fill each matrix with numbers and check them)", indent=2, hang=1,
                         style="dim"))
    return out


VCR_CHECK = ("∂y₁/∂x", "∂y₂/∂x")


def _vcr_check_table(v: VectorChainRule) -> Fitted:
    """The worked example's derivative three ways: a row each where it fits, else each value named."""
    rows = [(label, [num(x) for x in m.ravel()]) for label, m in
            (("chain product ∂f/∂g · ∂g/∂x", v.step("dy/dx").value), ("closed form [2/x, 3 cos(3x)]ᵀ", v.closed_form),
             ("central differences", v.numeric))]

    def table(console, width):
        return if_fits(console, width, fixed_table(["", *VCR_CHECK], [[Text(label), *cells] for label, cells in rows],
                                                   ["left", "right", "right"], gap=4))

    def listed(console, width):
        return Group(*[part for label, cells in rows
                       for part in (Text(label), Fields([f"{n} {x}" for n, x in zip(VCR_CHECK, cells)], indent=2))])

    return Fitted(table, listed)


def vcr_renderables(v: VectorChainRule) -> list:
    out: list = [Prose(Text("The vector chain rule (Parr & Howard, section 4.5.3)", style="bold underline")),
                 Prose(LAYOUT, hang=2, style="dim"), Text("")]
    for f in v.definitions:
        out.append(Prose(f"{f.text:<32} {f.note}".rstrip(), indent=2, hang=33))
    out.append(Text(""))
    out.append(Text(f"At x = {num(v.x)}", style="bold"))
    for step in v.steps:
        out += _step_text(step, 2)
    out.append(Text("Check", style="bold"))
    out.append(_vcr_check_table(v))
    verdict = "agree" if v.ok else "DISAGREE"
    out.append(Prose(f"chain = closed form = central differences: max relative error {v.max_rel_error:.1e} "
                     f"(tolerance {v.tolerance:.0e}): {verdict}", style="bold green" if v.ok else "bold red"))
    return out


def to_text(obj, width: int = 100) -> str:
    """Plain text (no colour, no control codes) at a fixed width: what the golden tests compare."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False,
                      emoji=False, legacy_windows=False)
    parts = vcr_renderables(obj) if isinstance(obj, VectorChainRule) else text_renderables(obj)
    console.print(Group(*parts))
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


# ----------------------------------------------------------------------------- markdown and LaTeX


def bmatrix(M: np.ndarray) -> str:
    cells = _cells(M)
    tex = {"⋮": r"\vdots", "⋱": r"\ddots", "⋯": r"\cdots"}
    rows = [" & ".join(tex.get(c, c.replace("e", r"\mathrm{e}")) for c in row) for row in cells]
    return r"\begin{bmatrix} " + r" \\ ".join(rows) + r" \end{bmatrix}"


def _step_latex(step: Step) -> str:
    """The step's equation; when evaluated, followed by its factors multiplied out."""
    eq = step.latex
    if step.cases:
        cases = r" \\ ".join(f"{v.latex} & {c.latex}" for v, c in step.cases)
        eq += r" = \begin{cases} " + cases + r" \end{cases}"
    if step.value is not None:
        eq += r" \\ " + step.symbol_latex + " = "
        if step.factors:
            eq += " ".join(bmatrix(f) for f in step.factors) + " = "
        eq += bmatrix(step.value)
    return eq


def _md_escape(s: str) -> str:
    return s.replace("|", r"\|").replace("_", r"\_").replace("*", r"\*")


def _md_steps(steps: list[Step]) -> list[str]:
    out = []
    for s in steps:
        out.append(f"**{s.symbol}**, shape {s.shape_text}"
                   + (f" = {s.shape[0]} x {s.shape[1]}" if s.shape_text != f"{s.shape[0]} x {s.shape[1]}" else "")
                   + (f". {_md_escape(s.note)}" if s.note else ""))
        out.append("")
        body = _step_latex(s)
        if s.value is not None:
            body = body.replace(" = ", " &= ", 1).replace(r" \\ " + s.symbol_latex + " = ", r" \\ " + s.symbol_latex + " &= ")
            out += ["$$", r"\begin{aligned}", body, r"\end{aligned}", "$$", ""]
        else:
            out += ["$$", body, "$$", ""]
    return out


def _clean_md(lines: list[str]) -> str:
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.replace("\n\n\\end{aligned}", "\n\\end{aligned}").rstrip() + "\n"


def to_markdown(obj) -> str:
    """GitHub / notebook markdown: prose, ``$$`` display math, tables."""
    if isinstance(obj, VectorChainRule):
        return _vcr_markdown(obj)
    d = obj
    out = ["# The gradient of a = max(0, w·x + b), step by step", "",
           "Parr & Howard, *The Matrix Calculus You Need For Deep Learning*, sections 5 and 6.", ""]
    out += [f"- {_md_escape(line)}" for line in _context_lines(d)]
    out += ["", "## 1. Intermediate variables", "", "$$", r"\begin{aligned}"]
    out.append(r" \\ ".join(f.latex.replace(" = ", " &= ", 1) for f in d.definitions))
    out += [r"\end{aligned}", "$$", "", "## 2. One Jacobian per step, chained", ""]
    out += _md_steps(d.steps[:-2])
    out += ["## 3. The loss", "", "$$", r"\begin{aligned}"]
    out.append(r" \\ ".join(_align_first(f.latex) for f in d.loss.formulas))
    out += [r"\end{aligned}", "$$", ""]
    out += _md_steps(d.steps[-2:])
    if d.evaluated:
        lo = d.loss
        out.append(f"Per sample, over the {lo.n_samples} rows ({lo.n_active} active), C = {num(lo.loss)}; "
                   f"term = (2/N) vᵢ · (−∂aᵢ/∂w), zero when inactive:")
        out += ["", "| i | place | zᵢ | active | eᵢ | term of ∂C/∂w | term of ∂C/∂b |", "|---:|---:|---:|---|---:|---|---:|"]
        out += ["| " + " | ".join(map(_md_escape, _row_cells(r))) + " |" for r in lo.rows_head]
        if lo.n_omitted:
            out.append(f"| ⋮ | ⋮ | ⋮ | ⋮ | ⋮ | ⋮ ({lo.n_omitted} more rows) | ⋮ |")
            out += ["| " + " | ".join(map(_md_escape, _row_cells(r))) + " |" for r in lo.rows_tail]
        out.append(f"| **Σ** | | | {lo.n_active}/{lo.n_samples} | | **{_vec(lo.grad_w)}** | **{num(lo.grad_b)}** |")
        c = d.check  # a row a parameter: as narrow as three numbers, however many features
        out += ["", "## 4. Check", "", "| parameter | " + " | ".join(CHECK_ROWS) + " |", "|---|---:|---:|---:|"]
        out += [f"| {_md_escape(label)} | {num(a)} | {num(k)} | {num(n)}{chr(92) + '*' if kink else ''} |"
                for label, a, k, n, kink in zip(c.labels, c.chain, c.kernel, c.numeric, c.kink)]
        out += ["", f"**{check_line(d)}**"]
        k = kink_line(d)
        if k:
            out += ["", _md_escape(k)]
    return _clean_md(out)


def _align_first(latex: str) -> str:
    return latex.replace(" = ", " &= ", 1) if " = " in latex else "&" + latex


def _vcr_markdown(v: VectorChainRule) -> str:
    out = ["# The vector chain rule", "", "Parr & Howard, section 4.5.3.", "", f"- {LAYOUT}", "",
           "$$", r"\begin{aligned}", r" \\ ".join(_align_first(f.latex) for f in v.definitions), r"\end{aligned}",
           "$$", "", f"## At x = {num(v.x)}", ""]
    out += _md_steps(v.steps)
    out += ["## Check", "", "| | chain product | closed form | central differences |", "|---|---:|---:|---:|"]
    for i, label in enumerate(("∂y₁/∂x", "∂y₂/∂x")):
        out.append(f"| {label} | {num(v.step('dy/dx').value[i, 0])} | {num(v.closed_form[i, 0])} | {num(v.numeric[i, 0])} |")
    verdict = "agree" if v.ok else "DISAGREE"
    out += ["", f"**max relative error {v.max_rel_error:.1e} (tolerance {v.tolerance:.0e}): {verdict}**"]
    return _clean_md(out)


_TEX_TEXT = {"∂": r"$\partial$", "⊗": r"$\otimes$", "Σ": r"$\Sigma$", "≤": r"$\le$", "→": r"$\to$", "·": r"$\cdot$",
             "−": "-", "ᵢ": r"$_i$", "ᵀ": r"$^T$", "ⁿ": r"$^n$", "ᵐ": r"$^m$", "⃗": "", "—": "---", "₁": r"$_1$",
             "₂": r"$_2$", "²": r"$^2$", "'": "'"}


def tex_text(s: str) -> str:
    """Escape prose for LaTeX (specials, and the few Unicode symbols the notes use)."""
    out = []
    for ch in s:
        if ch in "&%$#_{}":
            out.append("\\" + ch)
        elif ch == "~":
            out.append(r"\textasciitilde{}")
        elif ch == "^":
            out.append(r"\textasciicircum{}")
        elif ch == "\\":
            out.append(r"\textbackslash{}")
        else:
            out.append(_TEX_TEXT.get(ch, ch))
    return "".join(out)


LATEX_PREAMBLE = r"""\documentclass{article}
\usepackage[utf8]{inputenc}
\usepackage[margin=2cm]{geometry}
\usepackage{amsmath,amssymb}
\setcounter{MaxMatrixCols}{20}
\begin{document}
"""


def _tex_steps(steps: list[Step]) -> list[str]:
    out = []
    for s in steps:
        sized = (f" $= {s.shape[0]} \\times {s.shape[1]}$" if s.shape_text != f"{s.shape[0]} x {s.shape[1]}" else "")
        out.append(r"\paragraph{$" + s.symbol_latex + "$} shape " + tex_text(s.shape_text).replace(" x ", r" $\times$ ")
                   + sized
                   + (". " + tex_text(s.note) if s.note else "") + ".")
        body = _step_latex(s)
        if s.value is not None:
            body = body.replace(" = ", " &= ", 1).replace(r" \\ " + s.symbol_latex + " = ", r" \\ " + s.symbol_latex + " &= ")
            out += [r"\begin{align*}", body, r"\end{align*}"]
        else:
            out += [r"\[", body, r"\]"]
    return out


def _tex_table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    out = [r"\begin{center}", r"\begin{tabular}{" + align + "}", r"\hline", " & ".join(header) + r" \\", r"\hline"]
    out += [" & ".join(r) + r" \\" for r in rows]
    out += [r"\hline", r"\end{tabular}", r"\end{center}"]
    return out


def to_latex(obj) -> str:
    """A standalone LaTeX document (article, amsmath) whose math compiles as is."""
    out = [LATEX_PREAMBLE.rstrip("\n")]
    if isinstance(obj, VectorChainRule):
        v = obj
        out += [r"\section*{The vector chain rule (Parr \& Howard, section 4.5.3)}", tex_text(LAYOUT) + ".",
                r"\begin{align*}", r" \\ ".join(_align_first(f.latex) for f in v.definitions), r"\end{align*}",
                r"\subsection*{At $x = " + num(v.x) + "$}"]
        out += _tex_steps(v.steps)
        rows = [[f"$\\partial y_{i + 1}/\\partial x$", num(v.step("dy/dx").value[i, 0]), num(v.closed_form[i, 0]),
                 num(v.numeric[i, 0])] for i in range(2)]
        out += [r"\subsection*{Check}"]
        out += _tex_table(["", "chain product", "closed form", "central differences"], rows, "lrrr")
        out.append(tex_text(f"max relative error {v.max_rel_error:.1e} (tolerance {v.tolerance:.0e}): "
                            f"{'agree' if v.ok else 'DISAGREE'}."))
        out.append(r"\end{document}")
        return "\n".join(out) + "\n"
    d = obj
    out += [r"\section*{The gradient of $a = \max(0, \mathbf{w} \cdot \mathbf{x} + b)$, step by step}",
            r"Parr \& Howard, \emph{The Matrix Calculus You Need For Deep Learning}, sections 5 and 6.",
            r"\begin{itemize}"]
    out += [r"\item " + tex_text(line) for line in _context_lines(d)]
    out += [r"\end{itemize}", r"\subsection*{1. Intermediate variables}", r"\begin{align*}",
            r" \\ ".join(_align_first(f.latex) for f in d.definitions), r"\end{align*}",
            r"\subsection*{2. One Jacobian per step, chained}"]
    out += _tex_steps(d.steps[:-2])
    out += [r"\subsection*{3. The loss}", r"\begin{align*}",
            r" \\ ".join(_align_first(f.latex) for f in d.loss.formulas), r"\end{align*}"]
    out += _tex_steps(d.steps[-2:])
    if d.evaluated:
        lo = d.loss
        out.append(tex_text(f"Per sample, over the {lo.n_samples} rows ({lo.n_active} active), C = {num(lo.loss)}; "
                            f"term = (2/N) vᵢ · (−∂aᵢ/∂w), zero when inactive:"))
        rows = [[tex_text(c) for c in _row_cells(r)] for r in lo.rows_head]
        if lo.n_omitted:
            rows.append([r"$\vdots$"] * 5 + [f"$\\vdots$ ({lo.n_omitted} more rows)", r"$\vdots$"])
            rows += [[tex_text(c) for c in _row_cells(r)] for r in lo.rows_tail]
        rows.append([r"$\Sigma$", "", "", f"{lo.n_active}/{lo.n_samples}", "", _vec(lo.grad_w), num(lo.grad_b)])
        out += _tex_table(["$i$", "place", "$z_i$", "active", "$e_i$", r"term of $\partial C/\partial \mathbf{w}$",
                           r"term of $\partial C/\partial b$"], rows, "rrrlrlr")
        c = d.check
        out.append(r"\subsection*{4. Check}")
        rows = [["Jacobian chain", *map(num, c.chain)], ["vectorized kernel", *map(num, c.kernel)],
                ["central differences", *[num(x) + ("*" if k else "") for x, k in zip(c.numeric, c.kink)]]]
        out += _tex_table([""] + [tex_text(x) for x in c.labels], rows, "l" + "r" * len(c.labels))
        out.append(r"\textbf{" + tex_text(check_line(d)) + "}")
        k = kink_line(d)
        if k:
            out += ["", tex_text(k)]
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- JSON


def _m(M) -> list | None:
    return None if M is None else np.atleast_2d(M).astype(float).tolist()


def _step_json(s: Step) -> dict:
    d = {"name": s.name, "formula": s.formula, "latex": s.latex, "shape": list(s.shape), "value": _m(s.value)}
    if s.factors:
        d["factors"] = {"names": list(s.chain), "values": [_m(f) for f in s.factors]}
    if s.cases:
        d["cases"] = [{"value": v.text, "when": c.text} for v, c in s.cases]
    if s.note:
        d["note"] = s.note
    return d


def _row_json(r: SampleRow) -> dict:
    return {"index": r.index, "line": r.line, "place": r.place, "z": r.z, "active": r.active, "error": r.error,
            "dC/dw": [float(v) for v in r.grad_w], "dC/db": r.grad_b}


def to_json(obj) -> str:
    """The derivation as one JSON object; every matrix in numerator layout, full precision.

    The sample and every row of the per-sample table name where they are in the data set:
    ``place`` as the text shows it ("line 7" in a CSV, "row 6" in a Parquet file,
    "part-0003.csv, line 7" in a data set of several files) and ``line``, the line as an
    integer in a data set of one CSV file (null otherwise); both null for the built-in example.
    """
    if isinstance(obj, VectorChainRule):
        v = obj
        data = {"example": "vector-chain-rule", "x": v.x, "layout": "numerator",
                "definitions": [{"formula": f.text, "latex": f.latex} for f in v.definitions],
                "steps": [_step_json(s) for s in v.steps],
                "check": {"chain": _m(v.step("dy/dx").value), "closed_form": _m(v.closed_form), "numeric": _m(v.numeric),
                          "max_rel_error": v.max_rel_error, "tolerance": v.tolerance, "agree": v.ok}}
        return json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    d = obj
    data = {
        "source": d.source, "units": d.units, "layout": "numerator", "relu_derivative_at_zero": 0,
        "features": d.feature_names, "target": d.target,
        "definitions": [{"formula": f.text, "latex": f.latex} for f in d.definitions],
        "parameters": None, "sample": None,
        "steps": [_step_json(s) for s in d.steps],
        "loss": {"formulas": [{"formula": f.text, "latex": f.latex} for f in d.loss.formulas]},
        "check": None,
    }
    if d.evaluated:
        lo, c = d.loss, d.check
        data["parameters"] = {"from": d.parameters_from, "w": [float(v) for v in d.w], "b": d.b}
        data["sample"] = {"index": d.sample_index, "line": d.sample_line, "place": d.sample_place,
                          "x": [float(v) for v in d.x], "y": d.y, "z": d.z, "active": d.z > 0}
        data["loss"].update({
            "n_samples": lo.n_samples, "n_active": lo.n_active, "value": lo.loss,
            "rows": [_row_json(r) for r in lo.rows_head],
            "rows_omitted": lo.n_omitted,
            "rows_tail": [_row_json(r) for r in lo.rows_tail],
            "sum": {"dC/dw": [float(v) for v in lo.grad_w], "dC/db": lo.grad_b},
        })
        data["check"] = {"labels": c.labels, "chain": c.chain.tolist(), "kernel": c.kernel.tolist(),
                         "numeric": c.numeric.tolist(), "kink": c.kink.tolist(), "step": c.step.tolist(),
                         "max_rel_error": c.max_rel_error, "tolerance": c.tolerance, "agree": c.ok}
    return json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
