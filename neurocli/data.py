"""CSV -> validated float arrays, then the preprocessing every command shares.

Reading is pandas' C parser; what neurocli adds is validation that names the place of
every problem: the file, the line as a text editor counts it, and the column.
Preprocessing (missing rows, validation split, standardization, dtype) happens once, in
:func:`prepare`, so train, gradcheck, derive and predict all see the same numbers.
"""

from __future__ import annotations

import hashlib
import io
import math
import mmap
import os
import re
from concurrent.futures import ThreadPoolExecutor
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neurocli.errors import DataError

# A row shorter than the header is read as missing cells (reported or dropped by
# data.missing), so pandas' note about it would only repeat what neurocli says.
warnings.filterwarnings("ignore", message="Length of header or names does not match", category=pd.errors.ParserWarning,
                        module=r"neurocli\.data")
# A piece is parsed in internal chunks (low_memory); a column whose chunks differ in type
# (numbers, then a text cell) is checked cell by cell in frame_columns, which names the
# cell, so pandas' warning about mixed types would only repeat it, less precisely.
warnings.filterwarnings("ignore", category=pd.errors.DtypeWarning, module=r"neurocli\.data")

HEADER_LINE = 1


@dataclass
class Table:
    """The columns neurocli uses, as read from one CSV file.

    X : ndarray of shape (n_rows, n_features), float64, raw units
    y : ndarray of shape (n_rows,), float64, or None when there is no target (predict)
    rows : ndarray of shape (n_rows,), 0-based index of each kept row among the file's data rows
    """

    path: Path
    feature_names: list[str]
    target: str | None
    X: np.ndarray
    y: np.ndarray | None
    rows: np.ndarray
    n_dropped: int
    frame: pd.DataFrame | None = None  # the whole file, kept only when asked (predict)
    sha256: str | None = None  # of the whole file, when the reader hashed it on the way
    delimiter: str = ","

    def line_of(self, i: int) -> int:
        """The file line (1-based, header = line 1) of kept row ``i``.

        The first call scans the file once for blank lines (which the parser skips); every
        later call is a lookup, so a per-sample table on a million rows stays fast.
        """
        if self.__dict__.get("_blank_lines") is None:
            self.__dict__["_blank_lines"] = blank_lines(self.path, delimiter=self.delimiter)
        return _line_from_blanks(int(self.rows[i]), self.__dict__["_blank_lines"])


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


def _line_from_blanks(row: int, blanks: list[int]) -> int:
    """The line of 0-based data row ``row``, given the sorted blank line numbers."""
    line = row + HEADER_LINE + 1
    for blank in blanks:
        if blank <= line:
            line += 1
        else:
            break
    return line


def line_of_row(path: Path, row: int, delimiter: str = ",") -> int:
    """Line number, as an editor counts, of the 0-based data row ``row`` (blank lines skipped).

    Only used to report a place, so one scan of the file is fine here.
    """
    return _line_from_blanks(row, blank_lines(path, delimiter=delimiter))


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


def _decode_error(path: Path, exc: UnicodeDecodeError) -> DataError:
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


def read_header(path: Path, delimiter: str) -> list[str]:
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
        raise _decode_error(path, exc) from exc
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
                    f"the header has one column {names[0][:60]!r}, which looks {shown!r}-delimited; "
                    f"set data.delimiter: {shown!r} in the config",
                    path=path, where="line 1",
                )
    seen: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        if name == "" or name.lower() == "nan":
            raise DataError(f"column {i} has an empty name in the header", path=path, where="line 1")
        if name in seen:
            raise DataError(
                f"column name {name!r} appears twice (columns {seen[name]} and {i}); names must be unique",
                path=path, where="line 1",
            )
        seen[name] = i
    return names


def _missing_columns(path: Path, wanted: list[str], names: list[str], role: str) -> DataError:
    absent = [c for c in wanted if c not in names]
    return DataError(
        f"{role} column{'s' if len(absent) > 1 else ''} {', '.join(map(repr, absent))} not in the file; "
        f"it has: {', '.join(names)}",
        path=path, where="line 1",
    )


def read_table(
    path: Path,
    *,
    target: str | None,
    features: list[str] | None,
    missing: str = "error",
    delimiter: str = ",",
    keep_frame: bool = False,
    layout: str = "C",
) -> Table:
    """Read the target and feature columns of a CSV into float64 arrays, validated.

    ``missing``: "error" (an empty/NA cell is an error), "drop" (rows with one are dropped,
    counted in ``n_dropped``) or "keep" (left as NaN; predict leaves their prediction empty).
    Raises DataError naming the file, line and column for: missing/unreadable/empty file,
    header only, undecodable bytes, wrong delimiter, duplicate or absent columns,
    non-numeric cells, infinities, and empty/NA cells when ``missing == "error"``.

    Large files are read in pieces (:func:`_read_pieces`), which bounds memory to about the
    size of the result and parses on every core; ``keep_frame`` (predict keeps every column)
    and files with quoted fields are read whole.

    ``layout``: "C" (row-major X, for mini-batches, which gather rows) or "F" (column-major,
    for full-batch training: its kernel reads X faster that way, see engines/memory.py).
    """
    path = Path(path)
    names = read_header(path, delimiter)
    if target is not None and target not in names:
        raise _missing_columns(path, [target], names, "target")
    if features is None:
        features = [c for c in names if c != target]
        if not features:
            raise DataError("no feature columns: the file has only the target column", path=path, where="line 1")
    elif any(c not in names for c in features):
        raise _missing_columns(path, features, names, "feature")
    if not keep_frame:
        table = _read_pieces(path, names, features, target, missing, delimiter, layout)
        if table is not None:
            return table
    return _read_whole(path, len(names), features, target, missing, delimiter, keep_frame, layout)


# Bytes of CSV text per piece: big enough that pandas' per-call cost is noise, small enough
# that the pieces in flight stay a small fraction of the data.
PIECE_BYTES = 8 * 1024 * 1024
_READERS = max(1, min(4, os.cpu_count() or 1))


class _PieceError(Exception):
    """A problem in one piece, located by its row or line inside the piece."""

    def __init__(self, message: str, *, row: int | None = None, line: int | None = None,
                 fallback: bool = False):
        super().__init__(message)
        self.message, self.row, self.line = message, row, line
        self.fallback = fallback  # pandas could not place the problem: read the file whole instead


def _parse_piece(text: bytes, names: list[str], wanted: list[str], delimiter: str):
    """One newline-aligned piece of the data section -> its wanted columns as floats.

    Returns its columns and the positions of those with a NaN (:func:`frame_columns`):
    float64, in ``wanted`` order, NaN where a cell is empty or NA; raises _PieceError (row
    or line relative to the piece) for text cells, infinities and malformed lines.
    """
    # Every column is parsed (no usecols) so that a row with more fields than the header is
    # an error rather than silently cut; pandas reports all but a piece's first line, so
    # that one is counted here (no quotes in a piece, so a delimiter is a field boundary).
    pos, line = 0, 1
    while pos < len(text):  # the first non-blank line (blank lines are skipped by the parser)
        newline = text.find(b"\n", pos)
        first = text[pos:len(text) if newline < 0 else newline].rstrip(b"\r")
        if first.strip(_blank_bytes(delimiter) + b"\n"):
            n_fields = first.count(delimiter.encode()) + 1
            if n_fields > len(names):
                raise _PieceError(f"{n_fields} fields but the header has {len(names)}", line=line)
            break
        if newline < 0:
            break
        pos, line = newline + 1, line + 1
    try:
        # low_memory: the C parser tokenizes in internal chunks; one big chunk spent much of
        # its time growing (realloc) its token buffers (an 8 MiB piece: 42 ms against 55 ms).
        frame = pd.read_csv(io.BytesIO(text), sep=delimiter, header=None, names=names, index_col=False,
                            engine="c", encoding="utf-8", low_memory=True)
    except pd.errors.EmptyDataError:  # only blank lines
        return [np.empty(0) for _ in wanted], []
    except pd.errors.ParserError as exc:
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if fields:
            raise _PieceError(f"{fields.group(3)} fields but the header has {fields.group(1)}",
                              line=int(fields.group(2))) from exc
        m = re.search(r"line (\d+)", str(exc))
        if not m:  # a problem pandas cannot place inside a piece: the whole-file read will
            raise _PieceError("fall back to a whole-file read", fallback=True) from exc
        raise _PieceError(f"malformed CSV: {str(exc).strip().rstrip('.')}", line=int(m.group(1))) from exc
    return frame_columns(frame, wanted)


def frame_columns(frame: pd.DataFrame, wanted: list[str]) -> tuple[list[np.ndarray], list[int]]:
    """The ``wanted`` columns of a parsed frame, each a float64 array (NaN where a cell is
    empty or NA), in ``wanted`` order, and the positions of the columns that hold a NaN.
    Text cells and infinities raise _PieceError at the earliest row (then the leftmost
    column), so a file's first problem is the one reported. Columns, not a 2-d block: the
    caller writes each straight into its place in X."""
    problems = []  # (row, column position, message)
    columns, nan_columns = [], []
    for j, name in enumerate(wanted):
        series = frame[name]
        if pd.api.types.is_bool_dtype(series.dtype):
            # True/False cells are text, not numbers, wherever the reader's chunks fall (a
            # chunk of only such cells comes back as booleans, a mixed one as text)
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
        raise _PieceError(message, row=row)
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


def _read_pieces(path: Path, names, features, target, missing, delimiter, layout: str = "C") -> Table | None:
    """The data section in newline-aligned pieces, parsed by pandas on every core.

    The pieces are cut at newlines and handed to the workers; results are taken in file
    order, so the first problem reported is the first in the file. The sha256 of the file is
    fed the pieces as they are read (one read of the file). None when the file has a quote
    character (a quoted field may hold a newline, so the pieces could not be cut safely):
    the caller reads it whole.
    """
    wanted = features + ([target] if target is not None else [])
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.readline()
        if size == len(header):
            raise DataError("the file has a header but no data rows", path=path, where="line 2")
        if b'"' in header:
            return None
        sha = hashlib.sha256(header)  # fed each piece in order below: the file is read once

        def read_at(pos: int, length: int) -> bytes:  # only this thread reads fh
            fh.seek(pos)
            return fh.read(length)

        def boundary(pos: int) -> int:  # just after the first newline at or after ``pos``
            while True:
                window = read_at(pos, 1 << 16)
                if not window:
                    return size
                i = window.find(b"\n")
                if i >= 0:
                    return pos + i + 1
                pos += len(window)

        def line_at(offset: int) -> int:  # the line that starts at byte ``offset`` (errors only)
            lines, pos = 1, 0
            while pos < offset:
                window = read_at(pos, min(1 << 20, offset - pos))
                lines += window.count(b"\n")
                pos += len(window)
            return lines

        results: list = []  # (byte offset, future) in file order
        out = _Growing(size, len(header), len(features), target is not None, layout)
        n_rows = 0  # data rows seen (kept or not)
        n_na = 0
        first_na: tuple[int, str] | None = None
        pool = ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="neurocli-csv")
        try:
            start = len(header)
            while True:
                # Plain reads, not a memory map: mapped file pages would count as our memory.
                end = size if start + PIECE_BYTES >= size else boundary(start + PIECE_BYTES - 1)
                chunk = end > start
                if chunk:
                    piece = read_at(start, end - start)
                    if b'"' in piece:
                        return None
                    sha.update(piece)  # releases the GIL: hashes while the workers parse
                    results.append((start, pool.submit(_parse_piece, piece, names, wanted, delimiter)))
                    del piece
                start = end
                # Take finished pieces in file order, keeping a few in flight per worker.
                while results and (len(results) > _READERS + 1 or not chunk):
                    piece_start, future = results.pop(0)
                    try:
                        columns, nan_columns = future.result()
                    except _PieceError as exc:
                        if exc.fallback:
                            return None
                        if exc.line is not None:
                            where = f"line {line_at(piece_start) + exc.line - 1}"
                        else:
                            where = f"line {line_of_row(path, n_rows + exc.row, delimiter)}"
                        raise DataError(exc.message, path=path, where=where) from None
                    except UnicodeDecodeError as exc:
                        raise _decode_error(path, exc) from exc
                    n_piece = len(columns[0])
                    kept_rows = np.arange(n_rows, n_rows + n_piece)
                    keep = None
                    if missing != "keep":
                        na, r, c = first_missing(columns, nan_columns)
                        if na is not None:
                            if first_na is None:
                                first_na = (n_rows + r, wanted[c])
                            n_na += int(na.sum())
                            if missing == "drop":
                                keep = ~na
                                kept_rows = kept_rows[keep]
                    if not out.fits(len(kept_rows)):  # rows shorter than the header: read whole
                        return None
                    out.append(columns, kept_rows, keep)
                    n_rows += n_piece
                    del columns
                if not chunk:
                    break
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    if n_rows == 0:
        raise DataError("the file has a header but no data rows", path=path, where="line 2")
    if missing == "error" and first_na is not None:
        r, c = first_na
        raise DataError(
            f"column {c!r}: empty or NA cell ({n_na} row{'s have' if n_na > 1 else ' has'} one); "
            f"set data.missing: drop to skip such rows",
            path=path, where=f"line {line_of_row(path, r, delimiter)}",
        )
    X, y, rows = out.result()
    return Table(path=path, feature_names=list(features), target=target, X=X, y=y, rows=rows,
                 n_dropped=n_rows - len(rows), sha256=sha.hexdigest(), delimiter=delimiter)


class _Growing:
    """Rows appended into preallocated arrays (features, target, row numbers), sized from
    the file: no list of pieces to stitch together, so the peak stays near the size of the
    result. Pages never written are never touched, so the generous bound costs no memory
    (in column-major order too: each column's unused tail is never touched)."""

    def __init__(self, file_bytes: int, header_bytes: int, n_features: int, has_target: bool, order: str = "C"):
        n_columns = n_features + has_target
        # a full row's every cell takes at least 2 bytes ("0," or "0\n"); a file of rows shorter
        # than the header could hold more, and is read whole instead (see ``fits``)
        self.capacity = max(16, (file_bytes - header_bytes) // (2 * n_columns) + 1)
        if order == "F":
            # Each column is written from its start up to the row count, and its tail never.
            # numpy asks the kernel for 2 MiB pages on big arrays, and then every column's first
            # and last touched page is 2 MiB (up to 4 MiB of waste per column); a private
            # anonymous map without huge pages keeps the waste to 4 KiB per column.
            buf = mmap.mmap(-1, self.capacity * n_features * 8, flags=mmap.MAP_PRIVATE)
            if hasattr(buf, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
                buf.madvise(mmap.MADV_NOHUGEPAGE)
            self.X = np.ndarray((self.capacity, n_features), dtype=np.float64, buffer=buf, order="F")
        else:
            self.X = np.empty((self.capacity, n_features), dtype=np.float64)
        self.y = np.empty(self.capacity, dtype=np.float64) if has_target else None
        self.rows = np.empty(self.capacity, dtype=np.int64)
        self.d = n_features
        self.n = 0

    def fits(self, k: int) -> bool:
        return self.n + k <= self.capacity

    def append(self, columns: list[np.ndarray], rows: np.ndarray, keep: np.ndarray | None = None) -> None:
        """Append the rows ``keep`` (all if None) of ``columns`` (features, then the target)."""
        k = len(rows)
        end = self.n + k
        assert end <= self.capacity, "more rows than the file's size allows"
        for j, col in enumerate(columns[:self.d]):
            self.X[self.n:end, j] = col if keep is None else col[keep]
        if self.y is not None:
            self.y[self.n:end] = columns[self.d] if keep is None else columns[self.d][keep]
        self.rows[self.n:end] = rows
        self.n = end

    def result(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        y = None if self.y is None else self.y[:self.n]
        return self.X[:self.n], y, self.rows[:self.n]


def _read_whole(path: Path, n_header: int, features, target, missing, delimiter, keep_frame,
                layout: str = "C") -> Table:
    """The whole file in one pandas call (predict keeps every column; quoted fields).
    ``n_header``: the number of header fields (:func:`read_header`)."""
    wanted = features + ([target] if target is not None else [])
    try:
        first = pd.read_csv(path, sep=delimiter, encoding="utf-8-sig", header=None, skiprows=1, nrows=1,
                            dtype=str, keep_default_na=False)
        if first.shape[1] > n_header:  # pandas would take the extra field for a row index
            raise DataError(f"{first.shape[1]} fields but the header has {n_header}", path=path,
                            where=f"line {line_of_row(path, 0, delimiter)}")
        frame = pd.read_csv(path, sep=delimiter, encoding="utf-8-sig", engine="c", index_col=False)
    except pd.errors.EmptyDataError:
        raise DataError("the file has a header but no data rows", path=path, where="line 2") from None
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from exc
    except pd.errors.ParserError as exc:
        msg = str(exc).strip().rstrip(".")
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
        if fields:
            raise DataError(f"{fields.group(3)} fields but the header has {fields.group(1)}", path=path,
                            where=f"line {fields.group(2)}") from exc
        m = re.search(r"line (\d+)", msg)
        quote = re.search(r"EOF inside string starting at row (\d+)", msg)
        if quote:  # pandas counts lines from the header (row 0), blank ones included
            raise DataError("a quoted field is never closed (a '\"' without its pair)", path=path,
                            where=f"line {int(quote.group(1)) + 1}") from exc
        raise DataError(f"malformed CSV: {msg}", path=path, where=f"line {m.group(1)}" if m else None) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame) == 0:
        raise DataError("the file has a header but no data rows", path=path, where="line 2")
    rows = np.arange(len(frame))
    try:
        columns, _ = frame_columns(frame, wanted)
    except _PieceError as exc:
        raise DataError(exc.message, path=path, where=f"line {line_of_row(path, exc.row, delimiter)}") from None
    X = np.empty((len(frame), len(features)), dtype=np.float64, order=layout)
    for j in range(len(features)):
        X[:, j] = columns[j]
    y = columns[len(features)] if target is not None else None
    del columns

    def first_bad(mask_2d: np.ndarray, cols: list[str]) -> tuple[int, str]:
        flat = int(np.argmax(mask_2d))
        r, c = divmod(flat, mask_2d.shape[1])
        return r, cols[c]

    all_cols = features + ([target] if target is not None else [])
    nan_mask = np.isnan(X)
    if y is not None:
        nan_mask = np.column_stack([nan_mask, np.isnan(y)])
    n_dropped = 0
    if missing != "keep" and nan_mask.any():
        if missing == "error":
            r, c = first_bad(nan_mask, all_cols)
            n_bad = int(nan_mask.any(axis=1).sum())
            raise DataError(
                f"column {c!r}: empty or NA cell ({n_bad} row{'s have' if n_bad > 1 else ' has'} one); "
                f"set data.missing: drop to skip such rows",
                path=path, where=f"line {line_of_row(path, r, delimiter)}",
            )
        keep = ~nan_mask.any(axis=1)
        n_dropped = int((~keep).sum())
        X, rows = np.asarray(X[keep], order=layout), rows[keep]
        if y is not None:
            y = y[keep]
        if keep_frame:
            frame = frame[keep]
    return Table(
        path=path, feature_names=list(features), target=target, X=X, y=y, rows=rows,
        n_dropped=n_dropped, frame=frame if keep_frame else None, delimiter=delimiter,
    )


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

    @property
    def feature_names(self) -> list[str]:
        return self.table.feature_names

    def line_of_train_sample(self, i: int) -> int:
        return self.table.line_of(int(self.train_rows[i]))


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation split drawn from the seed (its own stream, independent of training)."""
    n_val = int(round(fraction * n))
    if n_val == 0:
        return np.arange(n), np.arange(0)
    perm = np.random.default_rng([seed, 1]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def move_rows_first(X: np.ndarray, first: np.ndarray, rest: np.ndarray, block: int = 1 << 16) -> None:
    """Reorder the rows of X in place to ``X[first]`` then ``X[rest]`` (both sorted, together
    a permutation), holding only ``X[rest]`` and one block aside.

    The ``first`` rows move forward in blocks: ``first[k] >= k`` since the indices are sorted,
    so a block's sources are never rows an earlier block overwrote.
    """
    aside = X[rest]
    for start in range(0, len(first), block):
        stop = min(start + block, len(first))
        X[start:stop] = X[first[start:stop]]
    X[len(first):] = aside


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


def column_stats(X: np.ndarray, block: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of each column, two passes in row blocks,
    so no temporary the size of X is made."""
    n = X.shape[0]
    mean = X.mean(axis=0, dtype=np.float64)
    ss = np.zeros(X.shape[1], dtype=np.float64)
    for start in range(0, n, block):
        dev = X[start:start + block] - mean
        ss += np.einsum("ij,ij->j", dev, dev)
    return mean, np.sqrt(ss / n)


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
    path = table.path
    n = table.X.shape[0]
    train_idx, val_idx = split_indices(n, validation_fraction, seed)
    if n >= 2 and validation_fraction > 0 and (len(val_idx) < 1 or len(train_idx) < 1) and locate is not None:
        raise locate(("data", "validation_fraction"),
                     f"data.validation_fraction {validation_fraction:g} of {n} rows leaves "
                     f"{len(val_idx)} validation and {len(train_idx)} training rows; use 0 for no validation "
                     f"or a fraction between {1 / n:.2g} and {1 - 1 / n:.2g}")
    if len(train_idx) < 1 or (validation_fraction > 0 and len(val_idx) < 1) or n < 2:
        message = (f"only {n} usable row{'s' if n != 1 else ''}"
                   f"{f' after dropping {table.n_dropped} with missing values' if table.n_dropped else ''}: "
                   f"too few for training{' with a validation split of ' + str(validation_fraction) if validation_fraction else ''}")
        if locate is not None and validation_fraction > 0 and n >= 2:
            raise locate(("data", "validation_fraction"), message)
        raise DataError(message, path=path)
    limit = magnitude_limit(n, np.float32 if dtype == "float32" else np.float64)
    columns = list(table.feature_names) + ([table.target] if table.y is not None else [])
    for j, name in enumerate(columns):
        col = table.X[:, j] if j < table.X.shape[1] else table.y
        if standardize and j < table.X.shape[1]:
            col_limit = magnitude_limit(n, np.float64)
        else:
            col_limit = limit
        big = np.abs(col) > col_limit
        if big.any():
            r = int(np.argmax(big))
            raise DataError(
                f"column {name!r}: value {col[r]:.4g} is too large (|x| > {col_limit:.3g}): "
                f"its square would overflow the loss; rescale the column",
                path=path, where=f"line {table.line_of(r)}",
            )
    X = table.X
    table.X = None  # consumed: reordered and standardized in place below (no second copy)
    n_train = len(train_idx)
    if len(val_idx):
        move_rows_first(X, train_idx, val_idx)
    standardization = None
    if standardize:
        mean, scale = column_stats(X[:n_train])
        for j, s in enumerate(scale):
            if not np.isfinite(s) or s == 0 or s <= 1e-12 * max(1.0, abs(mean[j])):
                raise DataError(
                    f"column {table.feature_names[j]!r} is constant ({mean[j]:.6g}) in the training rows: "
                    f"it cannot be standardized; drop it from data.features or set data.standardize: false",
                    path=path,
                )
        standardization = Standardization(mean=mean, scale=scale)
        np.subtract(X, mean, out=X)  # (x - mean) / scale, in place
        np.divide(X, scale, out=X)
    np_dtype = np.float32 if dtype == "float32" else np.float64
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
    )
