"""``neurocli init``: a config scaffolded from a data set, and the quickstart example shipped
inside the package.

The scaffold reads the data set as predict does (:func:`neurocli.pipeline.read_tables`: every
check, errors located at file, line and column), so a config it writes trains at once: the
columns the reader takes for numbers are the features, the others are named in a comment and
left out, as are columns with no value and columns of one value (which cannot be
standardized). Every key of the schema (:mod:`neurocli.config`) is written, each commented
with its default, so the file shows all there is to set.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel

from neurocli import config as schema
from neurocli.errors import ConfigError, DataError, OutputError
from neurocli.pipeline import _URL, prediction_files, read_tables
from neurocli.sources import column_names

# The quickstart, as the repository has it in configs/ and data/, shipped in neurocli/examples/.
EXAMPLE_FILES = ("configs/quickstart.yaml", "data/penguins.csv")

# A full-batch step on z-scored features is stable while the learning rate is below 1 / the
# largest eigenvalue of their correlation matrix (the MSE's Hessian in w is twice that matrix
# while every sample is active): init takes half that, never above the quickstart's 0.1. The
# correlations are those of the first complete rows, at most this many.
MAX_LEARNING_RATE = 0.1
CORRELATION_ROWS = 100_000
VALIDATION_FRACTION = 0.2
EPOCHS = 1000
EARLY_STOPPING = {"patience": 20, "min_delta": 0.0}

COMMENT_COLUMN = 32  # where a key's comment starts, as in the README's config block
WIDTH = 80

# what a default of null means, for the comment
NULL_MEANS = {
    ("data", "features"): "every other column",
    ("training", "batch_size"): "full batch",
    ("training", "early_stopping"): "off",
    ("training", "log_every"): "epochs / 20",
    ("engine", "scheduler"): "dask starts a LocalCluster",
    ("engine", "workers"): "one per core",
}


@dataclass
class Survey:
    """What the scaffold learned of a data set: its columns and how each is used."""

    target: str
    columns: list[str]  # every column, in file order
    features: list[str]  # numeric, with values that vary: the config's data.features
    text: list[str] = field(default_factory=list)  # not numbers (text, true/false): left out
    empty: list[str] = field(default_factory=list)  # no value at all: left out
    constant: list[str] = field(default_factory=list)  # one value in every complete row: left out
    rows: int = 0
    rows_missing: int = 0  # rows with an empty or NA cell in the features or the target
    top_eigenvalue: float = 1.0  # the largest eigenvalue of the features' correlation matrix
    target_below_zero: int = 0  # rows whose target max(0, w.x + b) cannot reach


def survey(data: str | Path, target: str, delimiter: str = ",") -> Survey:
    """Read the data set ``data`` and sort its columns into features and columns left out."""
    files = prediction_files(data)
    columns = column_names(files[0], delimiter)
    candidates, text = [c for c in columns if c != target], []
    while True:
        if not candidates:
            raise DataError(f"no numeric column besides the target {target!r} (not numbers: {', '.join(text)})",
                            path=data)
        try:
            tables = read_tables(files, candidates, delimiter, target=target, missing="keep", keep_text=False)
            break
        except DataError as exc:
            column = _not_a_number(exc, [target, *candidates])
            if column is None:
                raise
            if column == target:
                raise DataError(f"the target must be numeric: {exc.message}", path=exc.path, where=exc.where) from None
            candidates.remove(column)
            text.append(column)
    X = np.concatenate([t.X for t in tables]) if len(tables) > 1 else tables[0].X
    y = np.concatenate([t.y for t in tables]) if len(tables) > 1 else tables[0].y
    return _sorted_columns(Survey(target, columns, candidates, text=text, rows=len(y)), X, y, data)


def _not_a_number(exc: DataError, columns: list[str]) -> str | None:
    """The column ``exc`` finds a cell that is not a number in (text, true/false), if that is what it says."""
    for c in columns:
        if exc.message.startswith(f"column {c!r}: ") and exc.message.endswith("is not a number"):
            return c
    return None


def _sorted_columns(s: Survey, X: np.ndarray, y: np.ndarray, data) -> Survey:
    """Leave out the columns with no value and the columns of one value; count the rows with a gap."""
    nan = np.isnan(X)
    empty = nan.all(axis=0)
    keep = ~empty
    complete = ~(nan[:, keep].any(axis=1) | np.isnan(y))
    if not complete.any():
        raise DataError(f"no row has a value in every numeric column and the target {s.target!r}: "
                        f"too many gaps to train on", path=data)
    with np.errstate(invalid="ignore"):
        spread = np.ptp(X[complete], axis=0) if X.shape[1] else np.empty(0)
    constant = keep & (spread == 0)
    used = keep & ~constant
    if not used.any():
        raise DataError(f"no numeric column besides the target {s.target!r} has values that vary", path=data)
    s.empty = [c for c, e in zip(s.features, empty) if e]
    s.constant = [c for c, k in zip(s.features, constant) if k]
    s.features = [c for c, u in zip(s.features, used) if u]
    s.text = [c for c in s.columns if c in s.text]  # file order
    s.rows_missing = int((nan[:, used].any(axis=1) | np.isnan(y)).sum())
    s.target_below_zero = int((y < 0).sum())
    s.top_eigenvalue = top_eigenvalue(X[complete][:CORRELATION_ROWS][:, used])
    return s


def top_eigenvalue(X: np.ndarray) -> float:
    """The largest eigenvalue of the correlation matrix of X's columns (1 for one column):
    from 1, columns that do not move together, to their number, columns that all do."""
    if X.shape[1] < 2:
        return 1.0
    return float(np.linalg.eigvalsh(np.corrcoef(X, rowvar=False))[-1])


def learning_rate(eigenvalue: float) -> float:
    """0.5 / ``eigenvalue`` (:func:`top_eigenvalue`), rounded down to two significant digits,
    at most MAX_LEARNING_RATE."""
    rate = 0.5 / eigenvalue
    if rate >= MAX_LEARNING_RATE:
        return MAX_LEARNING_RATE
    exponent = math.floor(math.log10(rate)) - 1
    return float(f"{math.floor(rate / 10 ** exponent)}e{exponent}")  # the decimal, as YAML will show it


def scaffold(data: str, target: str, delimiter: str = ",", written_to: Path | None = None) -> tuple[str, Survey]:
    """The config text for ``data`` (to be written to ``written_to``, or printed), and the survey behind it."""
    s = survey(data, target, delimiter)
    chosen = {
        ("data", "path"): _data_path(data, written_to),
        ("data", "target"): target,
        ("data", "features"): s.features,
        ("data", "standardize"): True,
        ("data", "missing"): "drop" if s.rows_missing else "error",
        ("data", "validation_fraction"): VALIDATION_FRACTION,
        ("data", "delimiter"): delimiter,
        ("training", "epochs"): EPOCHS,
        ("training", "learning_rate"): learning_rate(s.top_eigenvalue),
        ("training", "early_stopping"): EARLY_STOPPING,
        ("output", "dir"): f"runs/{_run_name(data)}",
    }
    lines = _header(data, s, written_to) + _body(chosen, _notes(s, written_to))
    text = "\n".join(lines) + "\n"
    _check_valid(text)
    return text, s


def _data_path(data: str, written_to: Path | None) -> str:
    """data.path as the config must say it: relative to the config file's folder."""
    if _URL.match(str(data)) or written_to is None or os.path.isabs(data):
        return str(data)
    return os.path.relpath(os.path.abspath(data), os.path.dirname(os.path.abspath(written_to)))


def _run_name(data: str) -> str:
    name = Path(str(data).rstrip("/")).stem
    return name if name and not (set(name) & set("*?[")) else "run"


def _header(data: str, s: Survey, written_to: Path | None) -> list[str]:
    name = written_to if written_to is not None else "config.yaml"
    saved = [] if written_to is not None else ["# Save it in the current folder: data.path is relative to it."]
    return [f"# A config for {Path(str(data).rstrip('/')).name}, written by neurocli init "
            f"({s.rows} rows, {len(s.columns)} columns).",
            f"# Train it with: neurocli train {name}", *saved,
            "# Every key is written out, its default in its comment (the README says more)."]


def _names(s: Survey, columns: list[str]) -> str:
    """Column names for a comment; a column with an empty header name by its place (1-based)."""
    return ", ".join(c if c.strip() else f"the unnamed column {s.columns.index(c) + 1}" for c in columns)


def _notes(s: Survey, written_to: Path | None) -> dict[tuple[str, ...], tuple[str | None, str]]:
    """(a comment line above the key or None, the end of its own comment) for the keys init chose."""
    left_out = [f"not numbers: {_names(s, s.text)}" if s.text else "",
                f"empty: {_names(s, s.empty)}" if s.empty else "",
                f"one value: {_names(s, s.constant)}" if s.constant else ""]
    left_out = "; ".join(p for p in left_out if p)
    below = (f"{s.target_below_zero} target value{'s are' if s.target_below_zero > 1 else ' is'} below 0: "
             f"max(0, w.x + b) never predicts {'them' if s.target_below_zero > 1 else 'it'}"
             if s.target_below_zero else None)
    missing = (f"{s.rows_missing} row{'s have' if s.rows_missing > 1 else ' has'} empty or NA cells"
               if s.rows_missing else "")
    return {
        ("data", "path"): (None, "required; relative to this file's folder"),
        ("data", "target"): (below, "required; the column to predict"),
        ("data", "features"): (f"the numeric columns; left out, {left_out}" if left_out else "the numeric columns",
                               ""),
        ("data", "missing"): (None, missing),
        ("data", "validation_fraction"): (None, "held out for early stopping"),
        ("training", "epochs"): (None, "early stopping ends a run sooner"),
        ("training", "learning_rate"): (f"half the largest stable step on these z-scores, 0.5 / "
                                        f"{s.top_eigenvalue:.3g} (the top eigenvalue of the features' "
                                        f"correlations), at most {MAX_LEARNING_RATE:g}", ""),
    }


def _body(chosen: dict, notes: dict) -> list[str]:
    """Every key of the schema in its order, with init's value or the default, each commented."""
    lines = []
    for section, info in schema.Config.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            lines.append(f"{section}:")
            for key, sub in model.model_fields.items():
                lines += _key_lines((section, key), sub, chosen, notes, indent=2)
        else:
            lines += _key_lines((section,), info, chosen, notes, indent=0)
    return lines


def _key_lines(keys: tuple[str, ...], info, chosen: dict, notes: dict, indent: int) -> list[str]:
    above, note = notes.get(keys, (None, ""))
    if info.is_required():
        comment = note
    else:
        default = yaml_text(info.default)
        meaning = f" ({NULL_MEANS[keys]})" if info.default is None and keys in NULL_MEANS else ""
        comment = f"default: {default}{meaning}" + (f"; {note}" if note else "")
    value = chosen.get(keys, info.default)
    pad = " " * indent
    lines = _comment_lines(above, pad) if above else []
    flow = f"{pad}{keys[-1]}: {yaml_text(value)}"
    if isinstance(value, list) and len(flow) > WIDTH:  # one item a line
        return lines + _commented(f"{pad}{keys[-1]}:", comment, pad) + [f"{pad}  - {yaml_text(v)}" for v in value]
    return lines + _commented(flow, comment, pad)


def _commented(line: str, comment: str, pad: str) -> list[str]:
    """``line`` with ``comment`` beside it at COMMENT_COLUMN, or above it when the two pass WIDTH."""
    if not comment:
        return [line]
    beside = line.ljust(COMMENT_COLUMN - 1) + " " if len(line) < COMMENT_COLUMN - 1 else line + "  "
    if len(beside) + 2 + len(comment) <= WIDTH:
        return [f"{beside}# {comment}"]
    return [*_comment_lines(comment, pad), line]


def _comment_lines(text: str, pad: str) -> list[str]:
    """``text`` as comment lines of at most WIDTH characters."""
    return [f"{pad}# {part}" for part in textwrap.wrap(text, WIDTH - len(pad) - 2, break_on_hyphens=False)]


def yaml_text(value) -> str:
    """``value`` as YAML on one line: ``0.2``, ``null``, ``[a, b]``, ``{patience: 20}``, ``','``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, allow_unicode=True, sort_keys=False)
    return text.strip().removesuffix("\n...").strip()


def _check_valid(text: str) -> None:
    """The scaffold must be a config the schema takes: anything else is a bug of init's."""
    try:
        data, locations = schema.parse_yaml(text, None)
        schema.validate(data, None, locations, {})
    except ConfigError as exc:
        raise RuntimeError(f"init made a config its own schema refuses ({exc})") from None


def write_new(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path``, which must not exist: never over a file, not even one made meanwhile."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise _exists(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise _exists(path) from None
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", path=path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise OutputError(f"cannot write: {exc.strerror or exc}", path=path) from None


def _exists(path: Path) -> OutputError:
    return OutputError("already exists; neurocli init never overwrites a file: choose another -o or move it",
                       path=path)


def example_files() -> dict[str, bytes]:
    """The quickstart's files as the package ships them: name (relative path) -> bytes."""
    root = resources.files("neurocli") / "examples"
    return {name: root.joinpath(*name.split("/")).read_bytes() for name in EXAMPLE_FILES}


def write_example(folder: Path) -> list[Path]:
    """The quickstart's config and data written into ``folder``; nothing is written if either exists."""
    files = example_files()
    targets = [Path(folder) / name for name in files]
    for t in targets:
        if t.exists() or t.is_symlink():
            raise _exists(t)
    for t, content in zip(targets, files.values()):
        write_new(t, content)
    return targets
