"""What ``neurocli gradcheck`` shows: a table sorted worst first, the kink report, a verdict line,
the step sweep, and the same content as one JSON object. Built from a plain GradcheckReport and
the problem it was run on (what the data is, and where each of its rows is in the data set).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from rich import box
from rich.console import Group
from rich.text import Text

from neurocli.derive import line_number
from neurocli.gradcheck import DEFAULT_EPS, GradcheckReport, ParameterResult, PointReport
from neurocli.render.layout import (Fields, Fitted, Prose, fixed_table, if_fits, name_line, natural_width, stacked,
                                    stacked_width)

if TYPE_CHECKING:
    from neurocli.problems import GradcheckProblem

VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "inconclusive": "bold yellow"}


def _num(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _g(v, digits: int = 9) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}g}"


def _e(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.2e}"


@dataclass(frozen=True)
class SampleNames:
    """How a report names checked sample k (a position in the rows checked): by its index in the
    data given (the training split), not in the sample, and by its place in the data set
    ("line 7", "row 6", "part-0003.csv, line 7") when the problem has places."""

    report: GradcheckReport
    place_of: Callable[[int], str] | None = None

    @classmethod
    def of(cls, report: GradcheckReport, problem: GradcheckProblem | None) -> "SampleNames":
        return cls(report, problem.place_of if problem is not None else None)

    def index(self, k: int) -> int:
        return self.report.row(k)

    def place(self, k: int) -> str | None:
        return self.place_of(self.index(k)) if self.place_of else None

    def text(self, k: int) -> str:
        """``224 (line 295)``, or ``224`` without places."""
        place = self.place(k)
        return f"{self.index(k)} ({place})" if place else str(self.index(k))

    def json(self, indices: list[int]) -> dict:
        """``indices``; with places, ``places`` and ``lines`` (each one's line in a data set of one
        CSV file, else null)."""
        named = {"indices": [self.index(k) for k in indices]}
        if self.place_of:
            named["places"] = [self.place(k) for k in indices]
            named["lines"] = [line_number(place) for place in named["places"]]
        return named


def _indices(indices: list[int], total: int, names: SampleNames) -> str:
    shown = [names.text(k) for k in indices]
    more = f", ... ({total - len(indices)} more)" if total > len(indices) else ""
    return ", ".join(shown) + more


def action_text(p: ParameterResult) -> str:
    """One sentence: what the check did about the kink for this parameter."""
    if p.action == "shrunk_step":
        text = f"step shrunk from {_e(p.requested_step)} to {_e(p.step)}, below every nonzero margin"
    elif p.action == "excluded":
        text = (f"{p.excluded} straddling sample{'s' if p.excluded != 1 else ''} excluded from both sides "
                f"(precision allows no step below the margin); checked on the other {p.n_used} at step {_e(p.step)}")
    elif p.straddling:
        text = f"step {_e(p.step)}"
    else:
        text = f"no sample straddles at step {_e(p.step)}"
    t = p.tie_check
    if t is not None:
        text += (f"; {t.n_ties} exact tie{'s' if t.n_ties != 1 else ''} (z = 0): analytic {_g(t.analytic, 8)} "
                 f"{'lies' if t.within else 'does NOT lie'} between the one-sided differences "
                 f"[{_g(t.lo, 8)}, {_g(t.hi, 8)}] (left {_g(t.left, 8)}, right {_g(t.right, 8)})")
    return text


def _sorted(params: list[ParameterResult]) -> list[ParameterResult]:
    return sorted(params, key=lambda p: (p.status != "fail", -p.badness))


def _kink_cell(p: ParameterResult) -> str:
    if not p.straddling:
        return "-"
    what = {"shrunk_step": "step shrunk", "excluded": f"{p.excluded} excluded", "none": ""}[p.action]
    ties = f" ({p.tie_check.n_ties} tie)" if p.tie_check else ""
    return f"{p.straddling} straddle{'s' if p.straddling == 1 else ''}{ties}" + (f"; {what}" if what else "")


PARAMETER_COLUMNS = ("analytic", "numeric", "abs error", "rel error", "tolerance", "step", "kink", "result")


def _status(p: ParameterResult) -> Text:
    return Text(p.status.upper(), style={"pass": "green", "fail": "bold red", "inconclusive": "yellow"}[p.status])


def _parameter_cells(p: ParameterResult) -> list:
    return [_g(p.analytic), _g(p.numeric), _e(p.abs_error), _e(p.rel_error), _e(p.tolerance), _e(p.step),
            _kink_cell(p), _status(p)]


def parameter_table(point: PointReport) -> Fitted:
    """One row a parameter, worst first: a boxed table where it fits, then the same without the
    box, then each parameter's name on a line of its own above its values (stacked rows), and
    on a narrow page each value named beside it."""
    rows = [(Text(p.name), _parameter_cells(p)) for p in _sorted(point.parameters)]
    headers = ["parameter", *PARAMETER_COLUMNS]
    justify = ["left", "right", "right", "right", "right", "right", "right", "left", "left"]
    body = [[name, *cells] for name, cells in rows]

    def boxed(console, width):
        return if_fits(console, width, fixed_table(headers, body, justify, box=box.HEAVY_HEAD, padding=(0, 1),
                                                   pad_edge=True, show_edge=True))

    def plain(console, width):
        return if_fits(console, width, fixed_table(headers, body, justify))

    def stack(console, width):
        return stacked(PARAMETER_COLUMNS, rows, indent=2) if stacked_width(PARAMETER_COLUMNS, rows, indent=2) <= width \
            else None

    def listed(console, width):
        out = []
        for name, cells in rows:
            out.append(name_line(Text.assemble(name, "  ", cells[-1])))
            out.append(Fields([f"{h} {c}" for h, c in zip(PARAMETER_COLUMNS[:-1], cells[:-1])], indent=2))
        return Group(*out)

    return Fitted(boxed, plain, stack, listed)


def roundoff_notes(point: PointReport) -> list[Prose]:
    """Passes with a large relative error: both values are rounding residues of a zero gradient."""
    out = []
    for p in point.parameters:
        if p.status == "pass" and p.rel_error > 1e-3 and p.abs_error <= p.roundoff + p.tolerance:
            out.append(Prose(f"{p.name}: the gradient is zero up to rounding (|analytic|, |numeric| <= {_e(max(abs(p.analytic), abs(p.numeric)))}); "
                             f"the relative error compares two rounding residues, the absolute error {_e(p.abs_error)} "
                             f"is within the estimated round-off {_e(p.roundoff)}", style="dim"))
    return out


def kink_lines(point: PointReport, names: SampleNames) -> list[Prose]:
    k = point.kink
    if not k.straddling:
        closest = ""
        if k.closest is not None:
            closest = (f"; the closest sample, {_indices([k.closest], 1, names)}, is {_e(k.closest_margin)} away "
                       f"(in parameter units)")
        return [Prose(f"kink: no sample straddles z = 0 at the requested step for any parameter{closest}; "
                      f"nothing to correct")]
    margin = "0 (an exact tie)" if k.min_margin == 0 else _e(k.min_margin)
    out = [Prose(f"kink: {k.straddling} sample{'s' if k.straddling != 1 else ''} straddle z = 0 at the requested step: "
                 f"{_indices(k.indices, k.straddling, names)}; smallest margin {margin}")]
    for p in point.parameters:
        if p.straddling or p.tie_check:
            out.append(Prose(f"{p.name}: {action_text(p)}", indent=2, hang=2))
    if k.ties:
        out.append(Prose("convention at a tie: ReLU'(0) = 0, so a sample with z = 0 is inactive; its reference is the "
                         "one-sided difference on the side where z decreases", indent=2, hang=2))
    return out


def verdict_text(report: GradcheckReport) -> Text:
    return Text(f"{report.verdict.upper()}: ", style=VERDICT_STYLE[report.verdict]) + Text(report.reason)


SWEEP_TITLE = ("step sweep: |analytic - central difference| with no kink handling, h_j = step x max(1, |theta_j|), "
               "samples straddling the kink in brackets. Between kinks each loss term is quadratic, so central "
               "differences have no truncation error: the left arm of the V is rounding, the right arm is straddling.")


def sweep_table(point: PointReport) -> Fitted:
    """The error at each step, a column a parameter (the smallest error in bold), and the step
    used: as many parameters side by side as the page holds, the rest in tables below; on a
    page too narrow for one, each parameter's errors named by their steps."""
    params = point.parameters
    best = [min(range(len(point.sweep)), key=lambda r: point.sweep[r].abs_errors[j]) for j in range(len(params))]
    steps = [f"{row.step:.0e}" for row in point.sweep]
    columns = []  # each parameter's cells, top to bottom
    for j, p in enumerate(params):
        cells = [Text(f"{row.abs_errors[j]:.2e} [{row.straddling[j]}]", style="bold" if best[j] == r else "")
                 for r, row in enumerate(point.sweep)]
        columns.append(cells + [Text(f"{_e(p.step)} ({p.action.replace('_', ' ')})", style="cyan")])
    labels = [*steps, Text("used (h)", style="bold cyan")]

    def table(group: list[int]):
        rows = [[label, *(columns[j][r] for j in group)] for r, label in enumerate(labels)]
        return fixed_table(["step", *(params[j].name for j in group)], rows, ["right"] * (len(group) + 1))

    def side_by_side(console, width):
        groups: list[list[int]] = []
        for j in range(len(params)):
            if groups and natural_width(console, table(groups[-1] + [j])) <= width:
                groups[-1].append(j)
            elif natural_width(console, table([j])) <= width:
                groups.append([j])
            else:
                return None
        return Group(*[part for i, g in enumerate(groups) for part in ([Text("")] if i else []) + [table(g)]])

    def listed(console, width):
        out = []
        for j, p in enumerate(params):
            out.append(name_line(p.name))
            out.append(Fields([f"{step} {cell.plain}" for step, cell in zip(steps, columns[j])]
                              + [f"used (h) {columns[j][-1].plain}"], indent=2))
        return Group(*out)

    return Fitted(side_by_side, listed)


def source_text(report: GradcheckReport, problem: GradcheckProblem | None) -> str:
    """What the check ran on: "configs/c.yaml, training split, all 265 rows, standardized", or
    "configs/c.yaml, a seeded sample of 100,000 of 52,000,000 training rows (seed 0), standardized"."""
    where = problem.source if problem is not None else "built-in problem"
    split = problem.split if problem is not None else None
    n = report.n_samples
    if report.sampled:
        what = f"{split} rows" if split else "rows"
        rows = f"a seeded sample of {n:,} of {report.rows_total:,} {what} (seed {report.sample_seed})"
    else:
        rows = f"{split} split, all {n:,} rows" if split else f"all {n:,} rows"
    return f"{where}, {rows}" + (", standardized" if problem is not None and problem.standardized else "")


def report_renderable(report: GradcheckReport, problem: GradcheckProblem | None = None) -> Group:
    """The report as text; ``problem`` (None: the built-in one) names the data and its rows.
    Its tables fit the page (fewer columns, stacked rows or a list on a narrow one); print it
    with :func:`neurocli.render.layout.show`, so that a message stays on one line in plain output."""
    eps = f"{report.eps:g}" if report.eps is not None else f"{DEFAULT_EPS:.3g} (default)"
    names = SampleNames.of(report, problem)
    parts: list = [Prose(f"gradcheck: {source_text(report, problem)}; {len(report.feature_names)} features, "
                         f"analytic in {report.dtype}, central differences in float64; relative step eps {eps} "
                         f"(h_j = eps x max(1, |theta_j|)); rtol {report.rtol:g}, atol {report.atol:g}", style="dim")]
    for point in report.points:
        parts.append(Text(""))
        parts.append(Prose(f"gradients at {point.label}: {point.n_active} of {point.n_samples} samples active",
                           style="italic"))
        parts.append(parameter_table(point))
        parts.extend(roundoff_notes(point))
        jac = point.jacobian
        parts.append(Prose(Text(f"Jacobian d a / d (w, b): {jac.detail}; max abs error {_e(jac.max_abs_error)}, "
                                f"max rel error {_e(jac.max_rel_error)}: ")
                           + Text("PASS" if jac.passed else "FAIL", style="green" if jac.passed else "bold red")))
        parts.append(Prose("determinism: two calls of the analytic gradient " +
                           ("are bit-identical" if point.deterministic else "DIFFER"),
                           style="" if point.deterministic else "bold red"))
        parts.extend(kink_lines(point, names))
        if point.n_active == 0:
            parts.append(Prose("vacuous: no sample is active, both gradients are zero and their agreement proves nothing",
                               style="yellow"))
        if len(report.points) > 1:
            parts.append(Prose(f"{point.label}: {point.verdict}", style=VERDICT_STYLE[point.verdict]))
        if point.sweep:
            parts.append(Text(""))
            parts.append(Prose(SWEEP_TITLE, style="italic"))
            parts.append(sweep_table(point))
    parts.append(Text(""))
    parts.append(Prose(verdict_text(report)))
    return Group(*parts)


def _parameter_dict(p: ParameterResult, label: str | None, names: SampleNames) -> dict:
    d = {
        "name": p.name,
        "analytic": _num(p.analytic),
        "numeric": _num(p.numeric),
        "abs_error": _num(p.abs_error),
        "rel_error": _num(p.rel_error),
        "tolerance": _num(p.tolerance),
        "roundoff": _num(p.roundoff),
        "passed": p.passed,
        "status": p.status,
        "step": p.step,
        "requested_step": p.requested_step,
        "kink": {
            "straddling": p.straddling,
            **names.json(p.indices),
            "min_margin": _num(p.min_margin),
            "action": p.action,
            "excluded": p.excluded,
            "n_used": p.n_used,
            "explanation": action_text(p),
        },
    }
    if p.tie_check is not None:
        t = p.tie_check
        d["kink"]["ties"] = {"count": t.n_ties, "left": _num(t.left), "right": _num(t.right), "lo": _num(t.lo),
                             "hi": _num(t.hi), "within": t.within, "convention": "ReLU'(0) = 0"}
    if label is not None:
        d["point"] = label
    return d


def _point_dict(point: PointReport, names: SampleNames, with_label: bool) -> dict:
    k, j = point.kink, point.jacobian
    kink = {"straddling": k.straddling, **names.json(k.indices), "min_margin": _num(k.min_margin), "ties": k.ties,
            "action": k.action, "closest": None if k.closest is None else names.index(k.closest),
            "closest_margin": _num(k.closest_margin)}
    if names.place_of:
        kink["closest_place"] = None if k.closest is None else names.place(k.closest)
    return {
        "label": point.label,
        "verdict": point.verdict,
        "reason": point.reason,
        "w": [float(v) for v in point.w],
        "b": float(point.b),
        "n_samples": point.n_samples,
        "n_active": point.n_active,
        "vacuous": point.n_active == 0,
        "deterministic": point.deterministic,
        "parameters": [_parameter_dict(p, point.label if with_label else None, names) for p in _sorted(point.parameters)],
        "jacobian": {"max_abs_error": _num(j.max_abs_error), "max_rel_error": _num(j.max_rel_error), "mode": j.mode,
                     "entries": j.entries, "excluded": j.excluded, "passed": j.passed, "how": j.detail},
        "kink": kink,
    }


def report_dict(report: GradcheckReport, problem: GradcheckProblem | None = None) -> dict:
    """The ``--json`` object. Top-level ``jacobian``, ``kink`` describe the first point;
    ``parameters`` lists every point's rows (worst first, each naming its ``point``).

    The rows checked: ``rows_checked`` (also ``n_samples``) of ``rows_total``, ``sampled`` (a
    seeded sample of them, drawn from ``sample_seed``; null when every row is checked). A sample
    named in a ``kink`` (``indices``, ``closest``) is named by its index in the data given (the
    training split), whether or not the rows were sampled, and, for a config's data, by its
    place in the data set (``places``, ``closest_place``: "line 7", "row 6",
    "part-0003.csv, line 7"); ``lines`` keeps each one's line as a number in a data set of one
    CSV file (null otherwise).
    """
    many = len(report.points) > 1
    names = SampleNames.of(report, problem)
    points = [_point_dict(p, names, many) for p in report.points]
    base = points[0]
    rows = [row for pt in points for row in pt["parameters"]]
    if many:
        flat = [(p, row) for pt, d in zip(report.points, points) for p, row in zip(_sorted(pt.parameters), d["parameters"])]
        rows = [row for p, row in sorted(flat, key=lambda pr: (pr[0].status != "fail", -pr[0].badness))]
    out = {
        "verdict": report.verdict,
        "reason": report.reason,
        "eps": report.eps if report.eps is not None else DEFAULT_EPS,
        "eps_is_default": report.eps is None,
        "step_rule": "h_j = eps * max(1, |theta_j|), float64 central differences",
        "rtol": report.rtol,
        "atol": report.atol,
        "pass_rule": "|analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|) + roundoff",
        "dtype": report.dtype,
        "convention": report.convention,
        "n_samples": report.n_samples,
        "rows_checked": report.n_samples,
        "rows_total": report.rows_total if report.rows_total is not None else report.n_samples,
        "sampled": report.sampled,
        "sample_seed": report.sample_seed,
        "features": report.feature_names,
        "point": base["label"],
        "vacuous": base["vacuous"],
        "deterministic": all(p["deterministic"] for p in points),
        "parameters": rows,
        "jacobian": base["jacobian"],
        "kink": base["kink"],
        "points": points,
    }
    sweep = report.points[0].sweep
    if sweep:
        names = [p.name for p in report.points[0].parameters]
        out["sweep"] = {
            "steps": [r.step for r in sweep],
            "abs_errors": {n: [r.abs_errors[j] for r in sweep] for j, n in enumerate(names)},
            "straddling": {n: [r.straddling[j] for r in sweep] for j, n in enumerate(names)},
            "chosen": {p.name: p.step for p in report.points[0].parameters},
        }
    return out


def report_json(report: GradcheckReport, problem: GradcheckProblem | None = None) -> str:
    return json.dumps(report_dict(report, problem), allow_nan=False, default=float)
