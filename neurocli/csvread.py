"""A CSV's data section read in pieces, on every core, into preallocated arrays.

The section is cut at newlines into pieces that worker threads parse with pandas' C
parser; the results are taken in file order, so the first problem reported is the first
in the file, and every problem is located by file, line (as an editor counts it) and
column. :func:`neurocli.data.read_table` calls :func:`read_pieces` and reads the file
whole when it returns None. The line-locating helpers both readers share live here too.
"""

from __future__ import annotations

import csv
import hashlib
import io
import mmap
import os
import re
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neurocli.errors import DataError


def ignore_restated_pandas_warnings(module: str) -> None:
    """Ignore, in pandas calls made from ``module``, the warnings neurocli's errors restate."""
    # a row shorter than the header is read as missing cells, which data.missing reports or drops
    warnings.filterwarnings("ignore", message="Length of header or names does not match",
                            category=pd.errors.ParserWarning, module=re.escape(module))
    # a column whose internal chunks differ in type is checked cell by cell in frame_columns
    warnings.filterwarnings("ignore", category=pd.errors.DtypeWarning, module=re.escape(module))


ignore_restated_pandas_warnings(__name__)

HEADER_LINE = 1
# Bytes of CSV text per piece: pandas' per-call cost is noise, and the pieces in flight are few.
PIECE_BYTES = 8 * 1024 * 1024
PARSE_THREADS = max(1, min(4, os.cpu_count() or 1))


# --- locating a problem: lines as an editor counts them ---------------------------------


def _blank_bytes(delimiter: str) -> bytes:
    """What a line the parser skips may hold: spaces, tabs, CRs, but not the delimiter (a
    line of tabs in a tab-separated file is a row of empty cells)."""
    return bytes(c for c in b" \t\r" if c != ord(delimiter))


def blank_lines(path: Path, chunk_size: int = 1 << 20, delimiter: str = ",") -> list[int]:
    """Line numbers of the blank lines after the header (empty or only spaces, tabs, CRs other
    than the delimiter: the lines the parser skips), in one chunked, vectorized pass."""
    blank = np.zeros(256, dtype=bool)
    blank[list(_blank_bytes(delimiter) + b"\n")] = True
    found: list[int] = []
    line = 1  # the number of the line that the current chunk starts in
    ink_before = 0  # non-blank bytes already seen on that (unfinished) line
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            b = np.frombuffer(chunk, dtype=np.uint8)
            newlines = np.flatnonzero(b == 10)
            ink = np.cumsum(~blank[b])
            ink_at_end = ink[newlines]  # non-blank bytes in the chunk up to each line's end
            per_line = np.diff(np.concatenate([[0], ink_at_end]))
            if len(per_line):
                per_line[0] += ink_before
            numbers = line + np.arange(len(newlines))
            found.extend(int(v) for v in numbers[(per_line == 0) & (numbers > HEADER_LINE)])
            line += len(newlines)
            if len(newlines):  # the unfinished last line carries its bytes into the next chunk
                ink_before = int(ink[-1] - ink_at_end[-1])
            else:
                ink_before += int(ink[-1])
    return found


def line_from_blanks(row: int, blanks: list[int]) -> int:
    """The line of 0-based data row ``row``, given the sorted blank line numbers."""
    line = row + HEADER_LINE + 1
    for blank in blanks:
        if blank <= line:
            line += 1
        else:
            break
    return line


def records(path: Path, delimiter: str = ",", keep_blank: bool = False) -> Iterator[tuple[int, str, int]]:
    """(line, text, fields) of the header and of every data record, in order, blank lines
    skipped: ``line`` is where the record starts, as an editor counts; ``text`` is the record
    exactly as written, its line end included (a quoted field may span lines); ``fields`` is
    how many fields it has. ``keep_blank``: blank lines too, each a record of its own."""
    blank = set(_blank_bytes(delimiter).decode() + "\n")
    raw: list[str] = []

    def lines():
        for line in fh:
            raw.append(line)
            yield line

    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(lines(), delimiter=delimiter)
        start = 1
        for fields in reader:
            text, line, start = "".join(raw), start, reader.line_num + 1
            raw.clear()
            if keep_blank or line == HEADER_LINE or not set(text) <= blank:
                yield line, text, len(fields)


def _has_quotes(path: Path, chunk_size: int = 1 << 20) -> bool:
    with open(path, "rb") as fh:
        return any(b'"' in chunk for chunk in iter(lambda: fh.read(chunk_size), b""))


def row_lines(path: Path, delimiter: str = ",") -> Callable[[int], int]:
    """The line, as an editor counts, of each 0-based data row: from one scan for blank lines,
    or, where quoted fields may span lines, from one pass over the records."""
    if _has_quotes(path):
        starts = [line for line, _, _ in records(path, delimiter)][1:]
        return lambda row: starts[row]
    blanks = blank_lines(path, delimiter=delimiter)
    return lambda row: line_from_blanks(row, blanks)


def line_of_row(path: Path, row: int, delimiter: str = ",") -> int:
    """Line number, as an editor counts, of the 0-based data row ``row`` (blank lines skipped).

    Only used to report a place, so one scan of the file is fine here.
    """
    return row_lines(path, delimiter)(row)


def decode_error(path: Path, exc: UnicodeDecodeError) -> DataError:
    """The DataError for a file that is not UTF-8, naming the line and the first bad byte."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
        line, byte = None, None
    except UnicodeDecodeError as inner:
        line = raw[: inner.start].count(b"\n") + 1
        byte = raw[inner.start]
    where = f"line {line}" if line else None
    detail = f" (byte 0x{byte:02x})" if byte is not None else ""
    return DataError(f"not UTF-8 text{detail}; save the file as UTF-8", path=path, where=where)


def no_data_rows_error(path: Path) -> DataError:
    return DataError("the file has a header but no data rows", path=path, where="line 2")


def missing_cell_error(path: Path, column: str, n_rows: int, where: str) -> DataError:
    """The DataError for the first empty/NA cell (in ``column``, at ``where``: "line 7") when
    data.missing is "error"; ``n_rows``: the rows that have one."""
    return DataError(
        f"column {column!r}: empty or NA cell ({n_rows} row{'s have' if n_rows > 1 else ' has'} one); "
        f"set data.missing: drop to skip such rows",
        path=path, where=where,
    )


# --- one piece: CSV text -> float columns ---------------------------------------------------


class PieceError(Exception):
    """A problem in one piece of the file (or in the whole file, read as one piece), located
    by its 0-based data row or its 1-based line inside the piece."""

    def __init__(self, message: str, *, row: int | None = None, line: int | None = None):
        super().__init__(message)
        self.message, self.row, self.line = message, row, line


class _ReadWhole(Exception):
    """The file cannot be read in pieces: :func:`read_pieces` returns None."""


def _check_first_line(text: bytes, n_header: int, delimiter: str) -> None:
    """Raise PieceError if the piece's first non-blank line has more fields than the header.

    pandas reports that for every line of a piece but its first; a piece has no quotes, so
    every delimiter there is a field boundary.
    """
    pos, line = 0, 1
    while pos < len(text):  # blank lines are skipped by the parser
        newline = text.find(b"\n", pos)
        first = text[pos:len(text) if newline < 0 else newline].rstrip(b"\r")
        if first.strip(_blank_bytes(delimiter) + b"\n"):
            n_fields = first.count(delimiter.encode()) + 1
            if n_fields > n_header:
                raise PieceError(f"{n_fields} fields but the header has {n_header}", line=line)
            return
        if newline < 0:
            return
        pos, line = newline + 1, line + 1


def parser_names(names: list[str]) -> list[str]:
    """The header's names as pandas takes them, each once: a column nobody uses may repeat a
    name (two empty ones, say), and each repeat gets a name of its own that no header has."""
    seen: set[str] = set()
    out = []
    for i, name in enumerate(names):
        out.append(name if name not in seen else f"\0column {i + 1}")
        seen.add(name)
    return out


def _parse_piece(text: bytes, names: list[str], wanted: list[str], delimiter: str):
    """One newline-aligned piece of the data section -> its wanted columns as floats.

    Returns what :func:`frame_columns` returns; raises PieceError (row or line relative to
    the piece) for text cells, infinities and malformed lines, and _ReadWhole when pandas
    cannot place a problem.
    """
    _check_first_line(text, len(names), delimiter)
    try:  # every column (no usecols): a row with more fields than the header is an error, not cut
        # low_memory: tokenizing in internal chunks spares growing one piece-sized token buffer
        frame = pd.read_csv(io.BytesIO(text), sep=delimiter, header=None, names=parser_names(names), index_col=False,
                            engine="c", encoding="utf-8", low_memory=True)
    except pd.errors.EmptyDataError:  # only blank lines
        return [np.empty(0) for _ in wanted], []
    except pd.errors.ParserError as exc:
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if fields:
            raise PieceError(f"{fields.group(3)} fields but the header has {fields.group(1)}",
                             line=int(fields.group(2))) from exc
        m = re.search(r"line (\d+)", str(exc))
        if not m:  # the whole-file read will place it
            raise _ReadWhole() from exc
        raise PieceError(f"malformed CSV: {str(exc).strip().rstrip('.')}", line=int(m.group(1))) from exc
    return frame_columns(frame, wanted)


def frame_columns(frame: pd.DataFrame, wanted: list[str]) -> tuple[list[np.ndarray], list[int]]:
    """The ``wanted`` columns of a parsed frame, each a float64 array (NaN where a cell is
    empty or NA), in ``wanted`` order, and the positions of the columns that hold a NaN.
    Text cells and infinities raise PieceError at the earliest row (then the leftmost
    column), so a file's first problem is the one reported. Columns, not a 2-d block: the
    caller writes each straight into its place in X."""
    problems = []  # (row, column position, message)
    columns, nan_columns = [], []
    for j, name in enumerate(wanted):
        series = frame[name]
        if pd.api.types.is_bool_dtype(series.dtype):
            # a chunk of only true/false cells comes back as booleans, a mixed one as text
            problems.append((0, j, f"column {name!r}: a true/false cell is not a number"))
            series = series.astype(np.float64)
        elif not pd.api.types.is_numeric_dtype(series.dtype):
            coerced = pd.to_numeric(series, errors="coerce")
            bad = (coerced.isna() & series.notna()).to_numpy()
            if series.dtype == object:  # True/False beside empty cells: bools among NaN
                bad = bad | series.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
            if bad.any():
                pos = int(np.argmax(bad))
                problems.append((pos, j, f"column {name!r}: {str(series.iloc[pos])[:40]!r} is not a number"))
            series = coerced
        col = series.to_numpy(dtype=np.float64, na_value=np.nan)
        if not np.isfinite(col).all():  # one scan clears the common case: no NaN, no infinity
            inf = np.isinf(col)
            if inf.any():
                problems.append((int(np.argmax(inf)), j, f"column {name!r}: infinite value"))
            if np.isnan(col).any():
                nan_columns.append(j)
        columns.append(col)
    if problems:
        row, _, message = min(problems)
        raise PieceError(message, row=row)
    return columns, nan_columns


def first_missing(columns: list[np.ndarray], nan_columns: list[int]) -> tuple[np.ndarray | None, int, int]:
    """Rows with an empty/NA cell in the columns ``nan_columns`` (those of ``columns`` that
    hold a NaN): ``(mask or None, first row, its leftmost such column)``; ``(None, -1, -1)``
    when there is none."""
    if not nan_columns:
        return None, -1, -1
    na = np.isnan(columns[nan_columns[0]])
    for j in nan_columns[1:]:
        na |= np.isnan(columns[j])
    r = int(np.argmax(na))
    c = next(j for j in nan_columns if np.isnan(columns[j][r]))
    return na, r, c


# --- the pieces of a file, and the arrays they are written into ----------------------------


class _FileAtOffsets:
    """The open data file, read at byte offsets (by the main thread only: one file position)."""

    def __init__(self, fh, size: int):
        self.fh, self.size = fh, size

    def read(self, pos: int, length: int) -> bytes:
        self.fh.seek(pos)
        return self.fh.read(length)

    def next_line_start(self, pos: int) -> int:
        """The offset just after the first newline at or after ``pos`` (the size if none)."""
        while True:
            window = self.read(pos, 1 << 16)
            if not window:
                return self.size
            i = window.find(b"\n")
            if i >= 0:
                return pos + i + 1
            pos += len(window)

    def line_starting_at(self, offset: int) -> int:
        """The number of the line that starts at byte ``offset`` (a scan: for errors only)."""
        lines, pos = 1, 0
        while pos < offset:
            window = self.read(pos, min(1 << 20, offset - pos))
            lines += window.count(b"\n")
            pos += len(window)
        return lines


def _pieces(file: _FileAtOffsets, start: int) -> Iterator[tuple[int, bytes]]:
    """The file from byte ``start`` on, cut just after newlines into pieces of about
    PIECE_BYTES: ``(offset, text)`` in file order."""
    # Plain reads, not a memory map: mapped file pages would count as our memory.
    while start < file.size:
        end = file.size if start + PIECE_BYTES >= file.size else file.next_line_start(start + PIECE_BYTES - 1)
        yield start, file.read(start, end - start)
        start = end


def _column_major_buffer(n_rows: int, n_columns: int) -> np.ndarray:
    """An uninitialized column-major float64 array in a private anonymous map without huge
    pages, so each column's partly written first and last pages cost 4 KiB, not 2 MiB."""
    buf = mmap.mmap(-1, n_rows * n_columns * 8, flags=mmap.MAP_PRIVATE)
    if hasattr(buf, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    return np.ndarray((n_rows, n_columns), dtype=np.float64, buffer=buf, order="F")


class PreallocatedRows:
    """The result's arrays (features, target, row numbers), allocated once for as many rows
    as the file's size allows and filled piece by piece: no list of pieces to stitch
    together, so the peak stays near the size of the result. Pages never written are never
    touched, so the generous bound costs no memory (column-major too: each column's unused
    tail is never touched)."""

    def __init__(self, capacity: int, n_features: int, has_target: bool, order: str = "C"):
        self.capacity = capacity
        if order == "F":
            self.X = _column_major_buffer(self.capacity, n_features)
        else:
            self.X = np.empty((self.capacity, n_features), dtype=np.float64)
        self.y = np.empty(self.capacity, dtype=np.float64) if has_target else None
        self.rows = np.empty(self.capacity, dtype=np.int64)
        self.n_features = n_features
        self.n_filled = 0

    def has_room(self, k: int) -> bool:
        """Whether ``k`` more rows fit (not always: rows shorter than the header)."""
        return self.n_filled + k <= self.capacity

    def append(self, columns: list[np.ndarray], rows: np.ndarray, keep: np.ndarray | None = None) -> None:
        """Append the rows ``keep`` (all if None) of ``columns`` (features, then the target)."""
        start, end = self.n_filled, self.n_filled + len(rows)
        assert end <= self.capacity, "more rows than the file's size allows"
        for j, col in enumerate(columns[:self.n_features]):
            self.X[start:end, j] = col if keep is None else col[keep]
        if self.y is not None:
            target = columns[self.n_features]
            self.y[start:end] = target if keep is None else target[keep]
        self.rows[start:end] = rows
        self.n_filled = end

    def filled(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Views of the rows written so far: ``(X, y or None, row numbers)``."""
        y = None if self.y is None else self.y[:self.n_filled]
        return self.X[:self.n_filled], y, self.rows[:self.n_filled]


class PieceCollector:
    """Takes the parsed pieces of a file in order: places their problems in the file, counts
    the rows with an empty/NA cell, and hands the kept rows to ``out`` (the preallocated
    arrays, or any object with their ``has_room`` and ``append``).

    ``where(row)`` names 0-based data row ``row`` in an error ("line 7" in a CSV, "row 6" in
    Parquet); ``file``: the open CSV, for problems pandas locates by line (None for Parquet).
    """

    def __init__(self, path: Path, file: _FileAtOffsets | None, wanted: list[str], missing: str,
                 where: Callable[[int], str], out, progress: Callable[[int, int], None] | None = None):
        self.path, self.file, self.wanted, self.progress = path, file, wanted, progress
        self.missing, self.where, self.out = missing, where, out
        self.n_rows = 0  # data rows taken, kept or not
        self.n_missing = 0  # rows with an empty/NA cell
        self.first_missing: tuple[int, str] | None = None  # (data row, column) of the first

    def add(self, piece_start: int, piece_bytes: int, parsed: Callable[[], tuple]) -> None:
        """Take one piece: ``parsed()`` gives its :func:`frame_columns` (or raises its problem);
        ``piece_start``: its byte offset in a CSV; ``piece_bytes``: its size, for ``progress``."""
        columns, nan_columns = self._columns(piece_start, parsed)
        n_piece = len(columns[0])
        kept_rows = np.arange(self.n_rows, self.n_rows + n_piece)
        keep = None
        if self.missing != "keep":
            na, r, c = first_missing(columns, nan_columns)
            if na is not None:
                if self.first_missing is None:
                    self.first_missing = (self.n_rows + r, self.wanted[c])
                self.n_missing += int(na.sum())
                if self.missing == "drop":
                    keep = ~na
                    kept_rows = kept_rows[keep]
        if not self.out.has_room(len(kept_rows)):
            raise _ReadWhole()
        self.out.append(columns, kept_rows, keep)
        self.n_rows += n_piece
        if self.progress is not None:
            self.progress(piece_bytes, n_piece)

    def _columns(self, piece_start: int, parsed: Callable[[], tuple]):
        """The parsed piece's result, its problem raised as a DataError located in the file."""
        try:
            return parsed()
        except PieceError as exc:
            if exc.line is not None:
                where = f"line {self.file.line_starting_at(piece_start) + exc.line - 1}"
            else:
                where = self.where(self.n_rows + exc.row)
            raise DataError(exc.message, path=self.path, where=where) from None
        except UnicodeDecodeError as exc:
            raise decode_error(self.path, exc) from exc

    def check_complete(self) -> None:
        """The errors only the whole file shows: no data rows, or a missing cell (if an error)."""
        if self.n_rows == 0:
            raise no_data_rows_error(self.path)
        if self.missing == "error" and self.first_missing is not None:
            row, column = self.first_missing
            raise missing_cell_error(self.path, column, self.n_missing, self.where(row))


def _parse_in_order(file: _FileAtOffsets, start: int, sha, names: list[str], wanted: list[str],
                    delimiter: str, collector: PieceCollector) -> None:
    """Hand the pieces to the parsing threads and the results to ``collector`` in file order,
    feeding ``sha`` each piece as it is read."""
    pool = ThreadPoolExecutor(max_workers=PARSE_THREADS, thread_name_prefix="neurocli-csv")
    try:
        in_flight: deque[tuple[int, int, Future]] = deque()  # (byte offset, bytes, parse) in file order
        for piece_start, piece in _pieces(file, start):
            if b'"' in piece:
                raise _ReadWhole()
            sha.update(piece)  # releases the GIL: hashes while the threads parse
            in_flight.append((piece_start, len(piece), pool.submit(_parse_piece, piece, names, wanted, delimiter)))
            del piece
            while len(in_flight) > PARSE_THREADS + 1:  # a few in flight per thread
                _take(collector, *in_flight.popleft())
        while in_flight:
            _take(collector, *in_flight.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _take(collector: PieceCollector, piece_start: int, piece_bytes: int, parsed: Future) -> None:
    collector.add(piece_start, piece_bytes, parsed.result)


@dataclass
class PiecewiseRead:
    """What :func:`read_pieces` gives: the kept rows (``X``, ``y``, ``rows`` as in
    :class:`neurocli.data.Table`), how many data rows were dropped, and the file's sha256."""

    X: np.ndarray
    y: np.ndarray | None
    rows: np.ndarray
    n_dropped: int
    sha256: str


def read_pieces(path: Path, names: list[str], features: list[str], target: str | None, missing: str,
                delimiter: str, layout: str = "C", progress: Callable[[int, int], None] | None = None
                ) -> PiecewiseRead | None:
    """The data section in newline-aligned pieces, parsed by pandas on every core, into
    arrays of the file's size (:func:`read_pieces_into`).

    ``names``: the header (:func:`neurocli.data.read_header`); ``missing`` and ``layout`` as
    in :func:`neurocli.data.read_table`. None when the file cannot be read in pieces (see
    :func:`read_pieces_into`); the caller then reads it whole.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header_bytes = len(fh.readline())
    # a full row's every cell takes at least 2 bytes ("0," or "0\n"); shorter rows: see has_room
    capacity = max(16, (size - header_bytes) // (2 * (len(features) + (target is not None))) + 1)
    out = PreallocatedRows(capacity, len(features), target is not None, layout)
    read = read_pieces_into(path, names, features, target, missing, delimiter, out, progress)
    if read is None:
        return None
    n_rows, sha = read
    X, y, rows = out.filled()
    return PiecewiseRead(X=X, y=y, rows=rows, n_dropped=n_rows - len(rows), sha256=sha)


def read_pieces_into(path: Path, names: list[str], features: list[str], target: str | None, missing: str,
                     delimiter: str, out, progress: Callable[[int, int], None] | None = None) -> tuple[int, str] | None:
    """The data section in newline-aligned pieces, parsed by pandas on every core; each
    piece's kept rows handed to ``out`` in file order (``out.has_room(k)``,
    ``out.append(columns, rows, keep)`` as :class:`PreallocatedRows` has them), and
    ``progress(bytes, rows)`` told the bytes and data rows of each piece taken.

    Returns ``(data rows read, kept or not, sha256 of the file)``: the hash is fed the pieces
    as they are read (one read of the file). None when the file cannot be read in pieces: it
    has a quote character (a quoted field may hold a newline, so the pieces could not be cut
    safely), rows shorter than the header overflow ``out``, or pandas cannot place a problem;
    ``out`` may then hold some of the rows.
    """
    wanted = features + ([target] if target is not None else [])
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.readline()
        if size == len(header):
            raise no_data_rows_error(path)
        if b'"' in header:
            return None
        sha = hashlib.sha256(header)
        if progress is not None:
            progress(len(header), 0)
        file = _FileAtOffsets(fh, size)
        collector = PieceCollector(path, file, wanted, missing, lambda row: f"line {line_of_row(path, row, delimiter)}",
                                   out, progress)
        try:
            _parse_in_order(file, len(header), sha, names, wanted, delimiter, collector)
        except _ReadWhole:
            return None
    collector.check_complete()
    return collector.n_rows, sha.hexdigest()
