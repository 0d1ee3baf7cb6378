"""CSV -> validated float arrays, then the preprocessing every command shares.

Reading is pandas' C parser; what neurocli adds is validation that names the place of
every problem: the file, the line as a text editor counts it, and the column. Large files
are read in pieces on every core by :mod:`neurocli.csvread`; this module decides how a
file is read and reads it whole when it cannot be read in pieces.
Preprocessing (missing rows, validation split, standardization, dtype) happens once, in
:func:`prepare`, so train, gradcheck, derive and predict all see the same numbers.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import math
import mmap
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from neurocli.csvread import (
    PieceCollector, PieceError, PreallocatedRows, decode_error, first_missing, frame_columns, ignore_restated_pandas_warnings,
    line_of_row, missing_cell_error, no_data_rows_error, parser_names, read_pieces, read_pieces_into, records,
    row_lines,
)
from neurocli import parquetread, rowrules
from neurocli.errors import DataError

ignore_restated_pandas_warnings(__name__)


@dataclass
class Table:
    """The columns neurocli uses, as read from one CSV or Parquet file (or the files of a data set).

    X : ndarray of shape (n_rows, n_features), float64, raw units
    y : ndarray of shape (n_rows,), float64, or None when there is no target (predict)
    rows : ndarray of shape (n_rows,), 0-based index of each kept row among the data rows
    (of the file, or of all the data set's files in order)
    """

    path: Path
    feature_names: list[str]
    target: str | None
    X: np.ndarray
    y: np.ndarray | None
    rows: np.ndarray
    n_dropped: int
    texts: list[str] | None = None  # the header and every data record as written, kept only when asked (predict)
    sha256: str | None = None  # of the whole file, when the reader hashed it on the way
    delimiter: str = ","
    # a data set of several files: (file, global index of its first data row), in order
    parts: list[tuple[Path, int]] | None = None

    def place(self, i: int) -> str:
        """Where kept row ``i`` is, for a message: ``line 7`` in a CSV, ``row 6`` in a Parquet
        file; in a data set of several files, the file's name first."""
        row = int(self.rows[i])
        if not self.parts:
            return _place_in(self.path, row, self.delimiter)
        file, first = next((f, start) for f, start in reversed(self.parts) if start <= row)
        return f"{file.name}, {_place_in(file, row - first, self.delimiter)}"

    def line_of(self, i: int) -> int:
        """The file line (1-based, header = line 1) of kept row ``i``.

        The first call scans the file once (for blank lines, which the parser skips, or for
        records, when a quoted field may span lines); every later call is a lookup, so a
        per-sample table on a million rows stays fast.
        """
        if self.__dict__.get("_row_lines") is None:
            self.__dict__["_row_lines"] = row_lines(self.path, self.delimiter)
        return self.__dict__["_row_lines"](int(self.rows[i]))

    def places(self) -> Callable[[int], str]:
        """:meth:`place` for a report that names many rows: each CSV file is scanned for its
        lines once, when a row of it is first named, instead of once a row."""
        found: dict[Path, Callable[[int], int]] = {}

        def in_file(file: Path, row: int) -> str:
            if parquetread.is_parquet(file):
                return f"row {row + 1}"
            if file not in found:
                found[file] = row_lines(file, self.delimiter)
            return f"line {found[file](row)}"

        def place(i: int) -> str:
            row = int(self.rows[i])
            if not self.parts:
                return in_file(self.path, row)
            file, first = next((f, start) for f, start in reversed(self.parts) if start <= row)
            return f"{file.name}, {in_file(file, row - first)}"

        return place


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError("data file not found", path=path)
    if path.is_dir():
        raise DataError("is a directory, not a CSV file", path=path)
    if not path.is_file():
        raise DataError("is not a regular file (a pipe or a device?); give a CSV file", path=path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise DataError(f"cannot read the data file: {exc.strerror}", path=path) from exc
    if not head.strip():
        raise DataError("the data file is empty: expected a header line and data rows", path=path)


class Header(list):
    """A CSV file's column names as its header line has them (a list of str), with the file and
    its delimiter, so that the columns chosen from it can be checked against the rows below."""

    def __init__(self, names: list[str], path: Path, delimiter: str):
        super().__init__(names)
        self.path, self.delimiter = path, delimiter


def read_header(path: Path, delimiter: str) -> Header:
    """The column names of a CSV file's first line, stripped. Names are not checked here: a
    column nobody uses may have an empty or a repeated name (:func:`_chosen_columns` checks
    the ones used)."""
    _check_file(path)
    with open(path, "rb") as fh:
        first = fh.readline(1 << 20)
    if b"\r" in first.rstrip(b"\r\n") and b'"' not in first:
        # pandas would read it, but every line number neurocli reports counts newlines
        raise DataError("the lines end in a lone CR (old Mac style), not LF or CRLF; save the file with "
                        "LF or CRLF line endings", path=path, where="line 1")
    try:
        head = pd.read_csv(path, sep=delimiter, header=None, nrows=1, dtype=str,
                           encoding="utf-8-sig", keep_default_na=False)
    except UnicodeDecodeError as exc:
        raise decode_error(path, exc) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError("the data file is empty: expected a header line and data rows", path=path) from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"cannot parse the header: {exc}", path=path, where="line 1") from exc
    names = [str(v).strip() for v in head.iloc[0].tolist()]
    if len(names) == 1:
        for other in [";", "\t", "|", ","]:
            if other != delimiter and other in names[0]:
                shown = {"\t": "\\t"}.get(other, other)
                raise DataError(
                    f"the header has one column {names[0][:60]!r}, which looks '{shown}'-delimited; "
                    f"set data.delimiter: '{shown}' in the config (for predict, evaluate and init: "
                    f"--delimiter '{shown}')",
                    path=path, where="line 1",
                )
    return Header(names, path, delimiter)


def _missing_columns(path: Path, wanted: list[str], names: list[str], role: str, header: str = "line 1") -> DataError:
    absent = [c for c in wanted if c not in names]
    return DataError(
        f"{role} column{'s' if len(absent) > 1 else ''} {', '.join(map(repr, absent))} not in the file; "
        f"it has: {', '.join(names)}",
        path=path, where=header,
    )


def read_table(
    path: Path,
    *,
    target: str | None,
    features: list[str] | None,
    missing: str = "error",
    delimiter: str = ",",
    keep_text: bool = False,
    layout: str = "C",
    progress: Callable[[int, int], None] | None = None,
) -> Table:
    """Read the target and feature columns of a CSV into float64 arrays, validated.

    ``missing``: "error" (an empty/NA cell is an error), "drop" (rows with one are dropped,
    counted in ``n_dropped``) or "keep" (left as NaN; predict leaves their prediction empty).
    Raises DataError naming the file, line and column for: missing/unreadable/empty file,
    header only, undecodable bytes, wrong delimiter, duplicate or absent columns,
    non-numeric cells, infinities, and empty/NA cells when ``missing == "error"``.

    Large files are read in pieces (:func:`neurocli.csvread.read_pieces`), which bounds memory
    to about the size of the result and parses on every core; files with quoted fields are
    read whole. ``keep_text`` keeps every record's text as written (predict writes them back).

    ``layout``: "C" (row-major X, for mini-batches, which gather rows) or "F" (column-major,
    for full-batch training: its kernel reads X faster that way, see engines/memory.py).
    ``progress(bytes, rows)`` is told the bytes and data rows of the file read, as they are.
    """
    path = Path(path)
    before = _file_state(path)
    try:
        table = _read_table(path, target, features, missing, delimiter, layout, progress)
        if keep_text and not parquetread.is_parquet(path):
            table.texts = _record_texts(path, delimiter)
        if table.sha256 is None:  # hashed here, so that the check below covers the hash too
            table.sha256 = file_sha256(path)
    except DataError:
        _refuse_if_changed(path, before)  # a cut line is the change's doing, not the file's
        raise
    _refuse_if_changed(path, before)
    return table


def _record_texts(path: Path, delimiter: str) -> list[str]:
    """The header and every record as written; a record with fewer fields than the header is
    refused (a field added at its end would land in another column)."""
    texts, header_fields = [], None
    for line, text, fields in records(path, delimiter):
        header_fields = fields if header_fields is None else header_fields
        if fields < header_fields:
            raise DataError(f"{fields} fields but the header has {header_fields}", path=path, where=f"line {line}")
        texts.append(text)
    return texts


def _place_in(path: Path, row: int, delimiter: str) -> str:
    """Data row ``row`` (0-based, dropped rows counted) of one file, as its messages name it."""
    return f"row {row + 1}" if parquetread.is_parquet(path) else f"line {line_of_row(path, row, delimiter)}"


def _file_state(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _refuse_if_changed(path: Path, before: tuple | None) -> None:
    """A file written, truncated or replaced while it was read gave rows of neither version."""
    if before is not None and _file_state(path) != before:
        raise DataError("the file changed while neurocli read it (its size, times or inode differ); "
                        "read it again once nothing writes it, or train on a copy", path=path)


def _read_table(path: Path, target, features, missing, delimiter, layout, progress=None) -> Table:
    progress = progress or (lambda n, rows: None)
    if parquetread.is_parquet(path):  # in record batches, into arrays of the footer's row count
        _check_file(path)
        features = _chosen_columns(path, parquetread.columns(path), target, features, "row 1")
        out = PreallocatedRows(max(1, parquetread.row_count(path)), len(features), target is not None, layout)
        n_rows = _read_parquet_into(path, out, features, target, missing, progress)
        X, y, rows = out.filled()
        return Table(path=path, feature_names=list(features), target=target, X=X, y=y, rows=rows,
                     n_dropped=n_rows - len(rows))
    names = read_header(path, delimiter)
    features = _chosen_columns(path, names, target, features, "line 1")
    read = read_pieces(path, names, features, target, missing, delimiter, layout, progress)
    if read is not None:
        return Table(path=path, feature_names=list(features), target=target, X=read.X, y=read.y,
                     rows=read.rows, n_dropped=read.n_dropped, sha256=read.sha256, delimiter=delimiter)
    table = _read_whole(path, len(names), features, target, missing, delimiter, layout)
    progress(path.stat().st_size, len(table.rows) + table.n_dropped)
    return table


def read_table_into(path: Path, out, *, target: str | None, features: list[str] | None, missing: str = "error",
                    delimiter: str = ",", progress: Callable[[int, int], None] | None = None) -> tuple[list[str], int, str]:
    """:func:`read_table`, part by part: each part's kept rows handed to ``out`` as they are
    validated (``out.append(columns, rows, keep)``, see :class:`neurocli.csvread.PieceCollector`;
    ``rows``: 0-based data rows of this file), so the file is never held whole. A CSV goes in
    pieces, a Parquet file in record batches; a CSV that cannot be cut into pieces (quoted
    fields) is read whole and handed over at once, after ``out.rollback(out.mark())``
    forgets what its pieces had sent. The same checks and errors as :func:`read_table`.

    Returns ``(the feature columns, the file's data rows kept or not, its sha256)``.
    """
    path = Path(path)
    before = _file_state(path)
    try:
        read = _read_into(path, out, target, features, missing, delimiter, progress or (lambda n, rows: None))
    except DataError:
        _refuse_if_changed(path, before)
        raise
    _refuse_if_changed(path, before)
    return read


def _read_into(path: Path, out, target, features, missing, delimiter, progress) -> tuple[list[str], int, str]:
    if parquetread.is_parquet(path):
        _check_file(path)
        features = _chosen_columns(path, parquetread.columns(path), target, features, "row 1")
        return features, _read_parquet_into(path, out, features, target, missing, progress), file_sha256(path)
    names = read_header(path, delimiter)
    features = _chosen_columns(path, names, target, features, "line 1")
    mark = out.mark()
    read = read_pieces_into(path, names, features, target, missing, delimiter, out, progress)
    if read is not None:
        return features, read[0], read[1]
    out.rollback(mark)
    table = _read_whole(path, len(names), features, target, missing, delimiter)
    out.append([table.X[:, j] for j in range(table.X.shape[1])] + ([table.y] if target is not None else []),
               table.rows, None)
    progress(path.stat().st_size, len(table.rows) + table.n_dropped)
    return features, len(table.rows) + table.n_dropped, file_sha256(path)


def _read_parquet_into(path: Path, out, features: list[str], target, missing: str, progress) -> int:
    """A Parquet file's record batches validated and handed to ``out`` in order; returns its rows."""
    wanted = features + ([target] if target is not None else [])
    collector = PieceCollector(path, None, wanted, missing, lambda row: f"row {row + 1}", out, progress)
    for frame, nbytes in parquetread.batches(path, wanted):
        collector.add(0, nbytes, lambda: frame_columns(frame, wanted))
    collector.check_complete()
    return collector.n_rows


def _read_whole(path: Path, n_header: int, features, target, missing, delimiter, layout: str = "C") -> Table:
    """The whole file in one pandas call (quoted fields).
    ``n_header``: the number of header fields (:func:`read_header`)."""
    frame = _parse_whole(path, n_header, delimiter)
    table = _table_from_frame(path, frame, features, target, missing, layout,
                              lambda row: f"line {line_of_row(path, row, delimiter)}")
    table.delimiter = delimiter
    return table


def feature_columns(path: Path, names: list[str], target: str, features: list[str] | None = None,
                    exclude=()) -> list[str]:
    """The feature columns of the file at ``path`` with columns ``names``, as reading it would
    choose them (:func:`_chosen_columns`): ``features``, or every column but the target and
    those in ``exclude``."""
    return _chosen_columns(path, names, target, features, "row 1" if parquetread.is_parquet(path) else "line 1",
                           exclude)


def _chosen_columns(path: Path, names: list[str], target, features, header: str, exclude=()) -> list[str]:
    """The feature columns (every column but the target and ``exclude`` when not given), each
    checked to be there once, with a name; a default feature of text is refused, naming every
    such column and the fixes. The columns not used are not looked at."""
    if target is not None and target not in names:
        raise _missing_columns(path, [target], names, "target", header)
    chosen = features is None
    if chosen:
        features = [c for c in names if c != target and c not in exclude]
        for i, name in enumerate(names, start=1):
            if name in features and (name == "" or name.lower() == "nan"):
                raise DataError(f"column {i} has an empty name in the header; name it, or list the columns to "
                                f"use in data.features", path=path, where=header)
        if not features:
            rest = "the target column and the columns of data.exclude" if exclude else "the target column"
            raise DataError(f"no feature columns: the file has only {rest}", path=path, where=header)
    elif any(c not in names for c in features):
        raise _missing_columns(path, features, names, "feature", header)
    for name in list(features) + ([target] if target is not None else []):
        at = [i for i, c in enumerate(names, start=1) if c == name]
        if len(at) > 1:
            raise DataError(f"column name {name!r} appears twice (columns {at[0]} and {at[1]}); names must be unique",
                            path=path, where=header)
    if chosen:
        _refuse_text_features(path, names, features, target, list(exclude))
    return list(features)


# The start of the file in which a default feature's cells are looked at for text: about a
# megabyte of rows (a CSV's first whole lines of it; of a Parquet file, as many rows of the
# columns used), so that looking costs a few milliseconds however wide the file
TEXT_SAMPLE_BYTES = 1 << 20


def _refuse_text_features(path: Path, names: list[str], features: list[str], target, exclude) -> None:
    """Raise, at the first cell the reader would refuse, if some of the default ``features``
    hold text in the file's first rows, naming them all and the two fixes."""
    sample = _first_rows(path, names, features + ([target] if target is not None else []))
    text = [c for c in features if sample is not None and _not_numeric(sample[c])]
    if not text:
        return  # the reader finds any problem further down, at its line
    try:
        frame_columns(sample, features + ([target] if target is not None else []))
        first, where = f"column {text[0]!r} is not numeric", None
    except PieceError as exc:
        first = exc.message
        where = (f"row {exc.row + 1}" if parquetread.is_parquet(path) else
                 f"line {line_of_row(path, exc.row, names.delimiter)}")
    also = " and data.exclude's" if exclude else ""
    raise DataError(f"{first}; with no data.features every column but the target{also} is a feature, and "
                    f"{len(text)} {'is' if len(text) == 1 else 'are'} not numeric: {', '.join(text)}; list the "
                    f"columns to use in data.features, or set data.exclude: [{', '.join([*exclude, *text])}]",
                    path=path, where=where)


def _first_rows(path: Path, names: list[str], wanted: list[str]) -> pd.DataFrame | None:
    """The ``wanted`` columns of the file's first rows (:data:`TEXT_SAMPLE_BYTES`) as the
    reader parses them; None when that cannot be done here (the reader then says why)."""
    if parquetread.is_parquet(path):
        rows = max(16, TEXT_SAMPLE_BYTES // (8 * len(wanted)))
        with contextlib.suppress(DataError, StopIteration):
            return next(parquetread.batches(path, wanted, rows))[0]
        return None
    if not isinstance(names, Header):
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(TEXT_SAMPLE_BYTES + 1)
        if len(head) > TEXT_SAMPLE_BYTES:  # whole lines only
            head = head[:head.rfind(b"\n", 0, TEXT_SAMPLE_BYTES) + 1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (mixed types in a column: the point of looking)
            warnings.simplefilter("error", pd.errors.ParserWarning)  # the first row has more fields than the header
            return pd.read_csv(io.BytesIO(head), sep=names.delimiter, header=0, names=parser_names(names),
                               index_col=False, encoding="utf-8-sig", engine="c")[wanted]
    except (ValueError, UnicodeDecodeError, OSError, csv.Error, pd.errors.ParserWarning):  # parser errors: ValueError
        return None


def _not_numeric(series: pd.Series) -> bool:
    """Whether a parsed column holds a cell that is not a number (text, true/false), as
    :func:`neurocli.csvread.frame_columns` finds them."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return True
    if pd.api.types.is_numeric_dtype(series.dtype):
        return False
    bad = pd.to_numeric(series, errors="coerce").isna() & series.notna()
    if series.dtype == object:
        bad = bad | series.map(lambda v: isinstance(v, (bool, np.bool_)))
    return bool(bad.any())


def _table_from_frame(path: Path, frame: pd.DataFrame, features, target, missing, layout,
                      where: Callable[[int], str]) -> Table:
    """The wanted columns of a parsed frame as a validated Table; ``where(row)`` names the
    place of 0-based data row ``row`` in an error ("line 7", "row 6")."""
    wanted = features + ([target] if target is not None else [])
    rows = np.arange(len(frame))
    try:
        columns, nan_columns = frame_columns(frame, wanted)
    except PieceError as exc:
        raise DataError(exc.message, path=path, where=where(exc.row)) from None
    X = np.empty((len(frame), len(features)), dtype=np.float64, order=layout)
    for j in range(len(features)):
        X[:, j] = columns[j]
    y = columns[len(features)] if target is not None else None
    na, first_row, first_column = first_missing(columns, nan_columns) if missing != "keep" else (None, -1, -1)
    del columns
    n_dropped = 0
    if na is not None:
        if missing == "error":
            raise missing_cell_error(path, wanted[first_column], int(na.sum()), where(first_row))
        keep = ~na
        n_dropped = int((~keep).sum())
        X, rows = np.asarray(X[keep], order=layout), rows[keep]
        if y is not None:
            y = y[keep]
    return Table(path=path, feature_names=list(features), target=target, X=X, y=y, rows=rows, n_dropped=n_dropped)


def _parse_whole(path: Path, n_header: int, delimiter: str) -> pd.DataFrame:
    """Every column of the file as pandas parses it, its problems raised as located DataErrors."""
    try:
        first = pd.read_csv(path, sep=delimiter, encoding="utf-8-sig", header=None, skiprows=1, nrows=1,
                            dtype=str, keep_default_na=False)
        if first.shape[1] > n_header:  # pandas would take the extra field for a row index
            raise DataError(f"{first.shape[1]} fields but the header has {n_header}", path=path,
                            where=f"line {line_of_row(path, 0, delimiter)}")
        frame = pd.read_csv(path, sep=delimiter, encoding="utf-8-sig", engine="c", index_col=False)
    except pd.errors.EmptyDataError:
        raise no_data_rows_error(path) from None
    except UnicodeDecodeError as exc:
        raise decode_error(path, exc) from exc
    except pd.errors.ParserError as exc:
        raise _parser_error(path, exc, delimiter) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame) == 0:
        raise no_data_rows_error(path)
    return frame


def _parser_error(path: Path, exc: pd.errors.ParserError, delimiter: str) -> DataError:
    """pandas' ParserError on the whole file as a DataError at the line it names. pandas
    counts records (a quoted field over three lines is one), so its number is mapped to the
    line the record starts on."""
    msg = str(exc).strip().rstrip(".")
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
    if fields:
        return DataError(f"{fields.group(3)} fields but the header has {fields.group(1)}", path=path,
                         where=f"line {_record_line(path, int(fields.group(2)) - 1, delimiter)}")
    m = re.search(r"line (\d+)", msg)
    quote = re.search(r"EOF inside string starting at row (\d+)", msg)
    if quote:
        return DataError("a quoted field is never closed (a '\"' without its pair)", path=path,
                         where=f"line {_record_line(path, int(quote.group(1)), delimiter)}")
    return DataError(f"malformed CSV: {msg}", path=path, where=f"line {m.group(1)}" if m else None)


def _record_line(path: Path, index: int, delimiter: str) -> int:
    """The line where record ``index`` starts, counting records as pandas does in its errors
    (0-based, the header is 0, a blank line is a record); ``index + 1`` when there is none."""
    with contextlib.suppress(csv.Error, UnicodeDecodeError, OSError):
        for i, (line, _, _) in enumerate(records(path, delimiter, keep_blank=True)):
            if i == index:
                return line
    return index + 1


@dataclass
class Standardization:
    """z-score statistics of the training split: ``x_std = (x - mean) / scale``."""

    mean: np.ndarray
    scale: np.ndarray

    def apply(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale

    def to_original_units(self, w: np.ndarray, b: float) -> tuple[np.ndarray, float]:
        """Weights and bias that act on raw features: ``w/scale`` and ``b - sum(w*mean/scale)``."""
        w_orig = w / self.scale
        return w_orig, float(b - np.dot(w_orig, self.mean))

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Standardization":
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["scale"], dtype=np.float64))


@dataclass
class Prepared:
    """The data every command works on, after the shared preprocessing.

    X_train : ndarray (n_train, n_features) in the training dtype, standardized if asked
    y_train : ndarray (n_train,); X_val, y_val likewise (0 rows when no validation split)
    train_rows, val_rows : indices into ``table.rows`` (for CSV line numbers)
    """

    table: Table
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    train_rows: np.ndarray
    val_rows: np.ndarray
    standardization: Standardization | None
    # the one buffer X_train and X_val are views of (training rows first), for an engine that moves it
    X_all: np.ndarray | None = None

    @property
    def feature_names(self) -> list[str]:
        return self.table.feature_names

    def line_of_train_sample(self, i: int) -> int:
        return self.table.line_of(int(self.train_rows[i]))


def split_indices(rows: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the training and validation rows among ``rows`` (the kept rows' indices
    among the file's data rows), each in file order, by :func:`neurocli.rowrules.validation_mask`."""
    val = rowrules.validation_mask(seed, rows, fraction)
    return np.flatnonzero(~val), np.flatnonzero(val)


def move_rows_first(X: np.ndarray, first: np.ndarray, rest: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """Reorder the rows of X to ``X[first]`` then ``X[rest]`` (both sorted, together a
    permutation), holding only ``X[rest]`` and one block aside; returns the reordered X.
    A writable X is reordered in place; a read-only one (a cache entry's mapped pages) into a
    row-major array of its own, the source's pages handed back as the blocks pass them.

    The ``first`` rows move forward in blocks: ``first[k] >= k`` since the indices are sorted,
    so a block's sources are never rows an earlier block overwrote.
    """
    out = X if X.flags.writeable else _private_buffer(X.shape, "C")
    aside = X[rest]
    for start in range(0, len(first), block):
        stop = min(start + block, len(first))
        if out is not X:
            _advise_pages(out[start:stop], MADV_POPULATE_WRITE, whole_pages=False)
        out[start:stop] = X[first[start:stop]]
        if out is not X and X.flags.c_contiguous:
            _advise_pages(X[:first[stop - 1]], mmap.MADV_DONTNEED)
    out[len(first):] = aside
    return out


def _private_buffer(shape: tuple[int, int], order: str) -> np.ndarray:
    """An uninitialized float64 array in a private anonymous map without huge pages: a huge
    page's first touch may wait while the kernel compacts memory (seconds, after a parse)."""
    buf = mmap.mmap(-1, max(1, shape[0] * shape[1] * 8), flags=mmap.MAP_PRIVATE)
    if hasattr(buf, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    return np.ndarray(shape, dtype=np.float64, buffer=buf, order=order)


def columns_rows_first(X: np.ndarray, first: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Column-major X's rows ``first`` then ``rest`` (both sorted, together a permutation),
    one gather per column. A writable X is reordered in place, one column aside; a read-only
    one (a cache entry's mapped pages) is gathered into a column-major array of its own,
    each source column's pages handed back once read, so the two together stay about the
    size of one. Returns the reordered X."""
    n, d = X.shape
    order = np.concatenate([first, rest])
    own = X.flags.writeable
    out = X if own else _private_buffer((n, d), "F")
    aside = np.empty(n, dtype=X.dtype) if own else None
    for j in range(d):
        if own:
            np.take(X[:, j], order, out=aside)
            X[:, j] = aside
        else:
            _advise_pages(out[:, j], MADV_POPULATE_WRITE, whole_pages=False)  # one call, not a fault a page
            np.take(X[:, j], order, out=out[:, j])
            _advise_pages(X[:, j], mmap.MADV_DONTNEED)
    return out


MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux 5.14


def _advise_pages(column: np.ndarray, advice: int, whole_pages: bool = True) -> None:
    """madvise the pages of a contiguous array that lives in a memory map: those wholly its
    own (``whole_pages``), or every page it touches; nothing where it is not mapped memory
    or the kernel refuses. MADV_DONTNEED hands the pages back: they read as zeros (anonymous
    memory) or as the file (a file's copy-on-write map) afterwards."""
    buffer = column.base
    while buffer is not None and not isinstance(buffer, mmap.mmap):
        buffer = getattr(buffer, "base", None)
    if buffer is None or not hasattr(buffer, "madvise"):
        return
    start = column.ctypes.data - np.frombuffer(buffer, dtype=np.uint8).ctypes.data
    end, page = start + column.nbytes, mmap.PAGESIZE
    if whole_pages:
        start, end = -(-start // page) * page, end // page * page
    else:
        start, end = start // page * page, min(len(buffer), -(-end // page) * page)
    if end > start:
        with contextlib.suppress(OSError, ValueError):
            buffer.madvise(advice, start, end - start)


def is_column_major(X: np.ndarray) -> bool:
    """Whether each column of the 2-d X is contiguous, with any column stride of at least a
    column (as the reader leaves it: a buffer sized from the file), and X is not also
    row-major (one column)."""
    return X.shape[1] > 1 and X.strides[0] == X.itemsize and X.strides[1] >= X.shape[0] * X.itemsize


def to_float32_in_place(X: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """X (float64, row-major, or column-major with any column stride) as float32, written
    over X's own memory, in the same layout.

    Row-major: row blocks go in order into the front half of X's buffer. Column-major:
    each column goes into the front half of its own float64 storage (the float32 matrix
    keeps X's column stride). Either way a block's float32 destination starts no later than
    its float64 source, and numpy buffers an assignment whose two sides overlap, so nothing
    is read after it was overwritten. No second copy of the data is made; X must not be
    used afterwards.
    """
    n, d = X.shape
    if X.flags.c_contiguous:
        out = X.reshape(-1).view(np.float32)[:n * d].reshape(n, d)
        for start in range(0, n, block):
            out[start:start + block] = X[start:start + block]
        return out
    assert is_column_major(X), "row- or column-major X expected"
    for j in range(d):
        col = X[:, j]
        col32 = col.view(np.float32)[:n]  # the front half of column j's own bytes
        for start in range(0, n, block):
            col32[start:start + block] = col[start:start + block]
    first = X[:, 0].view(np.float32)
    return np.lib.stride_tricks.as_strided(first, shape=(n, d), strides=(4, X.strides[1]))


def magnitude_limit(n_rows: int, dtype) -> float:
    """Largest |value| whose square, summed over n_rows, stays finite in ``dtype``."""
    return math.sqrt(float(np.finfo(dtype).max) / max(1, n_rows)) / 4


def prepare(table: Table, *, validation_fraction: float, standardize: bool, seed: int,
            dtype: str = "float64", locate=None) -> Prepared:
    """Split, standardize (statistics from the training split only) and cast, in place.

    ``table.X`` is consumed (its rows reordered, training first, and standardized in
    place) so the data is held once; ``table.rows`` keeps the file order.

    ``locate(keys, message)`` builds a ConfigError located at a config key, for problems
    that the config can fix (too few rows for the split).
    """
    n = table.X.shape[0]
    train_idx, val_idx = split_indices(table.rows, validation_fraction, seed)
    check_enough_rows(table, len(train_idx), len(val_idx), validation_fraction, locate)
    _check_magnitudes(table, standardize, dtype)
    X = table.X
    table.X = None  # consumed: reordered and standardized in place below (no second copy;
    # a read-only X, mapped from a cache entry, is copied once, as it is reordered)
    n_train = len(train_idx)
    np_dtype = np.float32 if dtype == "float32" else np.float64
    changes = standardize or X.dtype != np_dtype
    if is_column_major(X) and (len(val_idx) or (changes and not X.flags.writeable)):
        X = columns_rows_first(X, train_idx, val_idx)  # a column at a time
    elif len(val_idx) or (changes and not X.flags.writeable):
        X = move_rows_first(X, train_idx, val_idx)
    standardization = _standardize_in_place(X, n_train, table.feature_names, table.path) if standardize else None
    if X.dtype != np_dtype:
        X = to_float32_in_place(X) if X.flags.c_contiguous or is_column_major(X) else X.astype(np_dtype)
    X_train, X_val = X[:n_train], X[n_train:]
    y = table.y
    return Prepared(
        table=table,
        X_train=X_train,
        y_train=np.ascontiguousarray(y[train_idx], dtype=np_dtype),
        X_val=X_val if len(val_idx) else np.empty((0, X.shape[1]), dtype=np_dtype),
        y_val=np.ascontiguousarray(y[val_idx], dtype=np_dtype),
        train_rows=train_idx,
        val_rows=val_idx,
        standardization=standardization,
        X_all=X,
    )


def check_enough_rows(table: Table, n_train: int, n_val: int, validation_fraction: float, locate) -> None:
    """Raise if the split leaves no training rows, or no validation rows when asked for some."""
    n = n_train + n_val
    if n >= 2 and validation_fraction > 0 and (n_val < 1 or n_train < 1) and locate is not None:
        raise locate(("data", "validation_fraction"),
                     f"data.validation_fraction {validation_fraction:g} of {n} rows leaves "
                     f"{n_val} validation and {n_train} training rows; use 0 for no validation "
                     f"or a fraction between {1 / n:.2g} and {1 - 1 / n:.2g}")
    if n_train < 1 or (validation_fraction > 0 and n_val < 1) or n < 2:
        message = (f"only {n} usable row{'s' if n != 1 else ''}"
                   f"{f' after dropping {table.n_dropped} with missing values' if table.n_dropped else ''}: "
                   f"too few for training{' with a validation split of ' + str(validation_fraction) if validation_fraction else ''}")
        if locate is not None and validation_fraction > 0 and n >= 2:
            raise locate(("data", "validation_fraction"), message)
        raise DataError(message, path=table.path)


def _check_magnitudes(table: Table, standardize: bool, dtype: str) -> None:
    """Raise at the first value whose square, summed over the rows, would overflow the loss."""
    n = table.X.shape[0]
    limit = magnitude_limit(n, np.float32 if dtype == "float32" else np.float64)
    columns = list(table.feature_names) + ([table.target] if table.y is not None else [])
    for j, name in enumerate(columns):
        col = table.X[:, j] if j < table.X.shape[1] else table.y
        if standardize and j < table.X.shape[1]:
            col_limit = magnitude_limit(n, np.float64)
        else:
            col_limit = limit
        if -col_limit <= col.min() and col.max() <= col_limit:  # two reductions clear the common case
            continue
        big = np.abs(col) > col_limit
        if big.any():
            r = int(np.argmax(big))
            raise DataError(
                f"column {name!r}: value {col[r]:.4g} is too large (|x| > {col_limit:.3g}): "
                f"its square would overflow the loss; rescale the column",
                path=table.path, where=table.place(r),
            )


def _standardize_in_place(X: np.ndarray, n_train: int, feature_names: list[str], path: Path) -> Standardization:
    """z-score X with the statistics of its first ``n_train`` rows (the training split)."""
    standardization = checked_standardization(*rowrules.column_stats(X[:n_train]), feature_names, path)
    mean, scale = standardization.mean, standardization.scale
    # (x - mean) / scale, in place; column-major X a column at a time, while it is in cache
    parts = [(X[:, j], mean[j], scale[j]) for j in range(X.shape[1])] if is_column_major(X) else [(X, mean, scale)]
    for part, m, s in parts:
        np.subtract(part, m, out=part)
        np.divide(part, s, out=part)
    return standardization


def checked_standardization(mean: np.ndarray, scale: np.ndarray, feature_names: list[str],
                            path: Path) -> Standardization:
    """The statistics as a Standardization, refused for a column constant in the training rows."""
    for j, s in enumerate(scale):
        if not np.isfinite(s) or s == 0 or s <= 1e-12 * max(1.0, abs(mean[j])):
            raise DataError(
                f"column {feature_names[j]!r} is constant ({mean[j]:.6g}) in the training rows: "
                f"it cannot be standardized; drop it from data.features or set data.standardize: false",
                path=path,
            )
    return Standardization(mean=mean, scale=scale)
