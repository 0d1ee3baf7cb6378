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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from neurocli.errors import DataError

# A row shorter than the header is read as missing cells (reported or dropped by
# data.missing), so pandas' note about it would only repeat what neurocli says.
warnings.filterwarnings("ignore", message="Length of header or names does not match", category=pd.errors.ParserWarning)
# A piece is parsed in internal chunks (low_memory); a column whose chunks differ in type
# (numbers, then a text cell) is checked cell by cell in frame_columns, which names the
# cell, so pandas' warning about mixed types would only repeat it, less precisely.
warnings.filterwarnings("ignore", category=pd.errors.DtypeWarning)

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
    for full-batch training: its kernel reads X faster that way, see kernels.py).
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
    return _read_whole(path, features, target, missing, delimiter, keep_frame, layout)


# The data section is cut at newlines into segments of at most this many bytes, and into at
# least three per worker (so a slow one does not hold the others up at the end).
PIECE_BYTES = 64 * 1024 * 1024
# Values (rows x columns) a segment's parser hands back at a time, 4 MiB as float64. Bigger
# chunks were no faster (2 Mi values: within noise) and kept more memory in the workers'
# allocator arenas (peak of a 1,000,000 x 33 training run 1.80-1.87x the data, against
# 1.72-1.80x).
CHUNK_VALUES = 1 << 19
_READERS = max(1, min(4, os.cpu_count() or 1))


class _PieceError(Exception):
    """A problem in one segment (or chunk of it), located by its row or line inside it."""

    def __init__(self, message: str, *, row: int | None = None, line: int | None = None,
                 fallback: bool = False):
        super().__init__(message)
        self.message, self.row, self.line = message, row, line
        self.fallback = fallback  # pandas could not place the problem: read the file whole instead


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
            problems.append((0, j, f"column {name!r}: {str(series.iloc[0])[:40]!r} is not a number"))
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


class _Range(io.RawIOBase):
    """Bytes ``[lo, hi)`` of a file as a stream: each segment's parser reads its own."""

    def __init__(self, path: Path, lo: int, hi: int):
        self._f = open(path, "rb")
        self._f.seek(lo)
        self._left = hi - lo

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self._left)
        if n <= 0:
            return 0
        got = self._f.readinto(memoryview(b)[:n]) or 0
        self._left -= got
        return got

    def close(self) -> None:
        self._f.close()
        super().close()


def _anonymous(shape: tuple[int, int], order: str) -> tuple[np.ndarray, mmap.mmap]:
    """A float64 array over a plain anonymous map: pages appear only where written, and can
    be given back (:func:`_release`). No huge pages: with numpy's 2 MiB pages, each column's
    (or region's) first and last touched page would be whole, tens of MB in all."""
    buf = mmap.mmap(-1, max(1, shape[0] * shape[1] * 8))
    if hasattr(buf, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    return np.ndarray(shape, dtype=np.float64, buffer=buf, order=order), buf


def _release(buf: mmap.mmap, lo: int, hi: int) -> None:
    """Give the whole pages inside bytes ``[lo, hi)`` of ``buf`` back to the system."""
    lo = -(-lo // mmap.PAGESIZE) * mmap.PAGESIZE
    hi = hi // mmap.PAGESIZE * mmap.PAGESIZE
    if hi > lo and hasattr(buf, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        buf.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


@dataclass
class _Segment:
    """What a worker found in one segment: its rows go to X rows ``start`` onwards."""

    lo: int  # byte range of the segment in the file
    hi: int
    start: int  # first row of its region in X
    capacity: int  # rows its region holds
    n_seen: int = 0  # data rows parsed (kept or not)
    n_kept: int = 0
    y: list = field(default_factory=list)  # target values of kept rows, by chunk
    rows: list = field(default_factory=list)  # segment-relative data-row numbers of kept rows
    n_na: int = 0
    first_na: tuple[int, int] | None = None  # (segment-relative row, wanted column)
    error: _PieceError | UnicodeDecodeError | None = None


def _first_line_fields(path: Path, lo: int, hi: int, n_names: int, delimiter: str) -> _PieceError | None:
    """pandas takes extra fields on a stream's first line for an index: the first non-blank
    line of each segment is counted here (no quotes in the file, so a delimiter is a field
    boundary)."""
    with open(path, "rb") as fh:
        fh.seek(lo)
        line, pos = 1, lo
        while pos < hi:
            text = fh.readline(hi - pos)
            pos += len(text)
            if text.strip(_blank_bytes(delimiter) + b"\n"):
                n_fields = text.rstrip(b"\r\n").count(delimiter.encode()) + 1
                if n_fields > n_names:
                    return _PieceError(f"{n_fields} fields but the header has {n_names}", line=line)
                return None
            line += 1
    return None


def _parse_segment(path: Path, seg: _Segment, k: int, names, wanted, delimiter, missing, X,
                   stop_after: list) -> _Segment:
    """Parse one segment with one pandas reader (reused chunk after chunk), writing its rows
    into X from row ``seg.start`` on. Problems are recorded in ``seg.error``, not raised: the
    caller reports the first in file order. A segment after one that failed stops early."""
    d = X.shape[1]
    bad = _first_line_fields(path, seg.lo, seg.hi, len(names), delimiter)
    if bad is not None:
        seg.error = bad
        return seg
    chunk_rows = max(256, CHUNK_VALUES // max(1, len(names)))
    stream = io.BufferedReader(_Range(path, seg.lo, seg.hi), 1 << 20)
    try:
        reader = pd.read_csv(stream, sep=delimiter, header=None, names=names, index_col=False, engine="c",
                             encoding="utf-8", chunksize=chunk_rows)
        for frame in reader:
            if k > stop_after[0]:
                break
            try:
                columns, nan_columns = frame_columns(frame, wanted)
            except _PieceError as exc:
                exc.row += seg.n_seen
                seg.error = exc
                break
            n = len(columns[0])
            keep = None
            if missing != "keep":
                na, r, c = first_missing(columns, nan_columns)
                if na is not None:
                    if seg.first_na is None:
                        seg.first_na = (seg.n_seen + r, c)
                    seg.n_na += int(na.sum())
                    if missing == "drop":
                        keep = ~na
            n_keep = n if keep is None else int(keep.sum())
            if seg.n_kept + n_keep > seg.capacity:  # rows shorter than the header: read whole
                seg.error = _PieceError("more rows than the segment's size allows", fallback=True)
                break
            at = seg.start + seg.n_kept
            for j in range(d):
                X[at:at + n_keep, j] = columns[j] if keep is None else columns[j][keep]
            if len(columns) > d:
                seg.y.append(columns[d] if keep is None else columns[d][keep])
            numbers = np.arange(seg.n_seen, seg.n_seen + n)
            seg.rows.append(numbers if keep is None else numbers[keep])
            seg.n_kept += n_keep
            seg.n_seen += n
    except pd.errors.EmptyDataError:  # only blank lines
        pass
    except pd.errors.ParserError as exc:
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        m = re.search(r"line (\d+)", str(exc))
        if fields:
            seg.error = _PieceError(f"{fields.group(3)} fields but the header has {fields.group(1)}",
                                    line=int(fields.group(2)))
        elif m:
            seg.error = _PieceError(f"malformed CSV: {str(exc).strip().rstrip('.')}", line=int(m.group(1)))
        else:  # a problem pandas cannot place inside a segment: the whole-file read will
            seg.error = _PieceError("fall back to a whole-file read", fallback=True)
    except UnicodeDecodeError as exc:
        seg.error = exc
    finally:
        stream.close()
    if seg.error is not None:
        stop_after[0] = min(stop_after[0], k)
    return seg


def _read_pieces(path: Path, names, features, target, missing, delimiter, layout: str = "C") -> Table | None:
    """The data section in newline-aligned segments, each parsed by one pandas reader on a
    worker thread (one per core), its rows written straight into a region of X of its own.

    A region holds the most rows its segment's bytes could (every cell takes at least two
    bytes); when all are parsed the regions are moved down to close the gaps, giving the
    vacated pages back, so the peak stays near one copy of the data. Meanwhile this thread
    reads the file once for its SHA-256, and for quote characters: a quoted field may hold a
    newline, so then (None) the caller reads the file whole, as it does when rows are shorter
    than the header (a region could overflow) or pandas cannot place a problem. Problems are
    reported in file order: the first segment with one names the line.
    """
    wanted = features + ([target] if target is not None else [])
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.readline()

        def boundary(pos: int) -> int:  # just after the first newline at or after ``pos``
            while True:
                fh.seek(pos)
                window = fh.read(1 << 16)
                if not window:
                    return size
                i = window.find(b"\n")
                if i >= 0:
                    return pos + i + 1
                pos += len(window)

        if size == len(header):
            raise DataError("the file has a header but no data rows", path=path, where="line 2")
        if b'"' in header:
            return None
        data_bytes = size - len(header)
        n_seg = max(1 if data_bytes < (1 << 20) else 3 * _READERS, -(-data_bytes // PIECE_BYTES))
        cuts = sorted({len(header), size} | {boundary(len(header) + data_bytes * i // n_seg) for i in range(1, n_seg)})
    segments, start = [], 0
    for lo, hi in zip(cuts, cuts[1:]):
        capacity = (hi - lo) // (2 * len(names)) + 1
        segments.append(_Segment(lo=lo, hi=hi, start=start, capacity=capacity))
        start += capacity
    X, buf = _anonymous((start, len(features)), layout)
    stop_after = [len(segments)]
    sha = hashlib.sha256(header)
    quoted = False
    pool = ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="neurocli-csv")
    try:
        futures = [pool.submit(_parse_segment, path, seg, k, names, wanted, delimiter, missing, X, stop_after)
                   for k, seg in enumerate(segments)]
        with open(path, "rb") as fh:  # the hash and the quote check, while the workers parse
            fh.seek(len(header))
            for block in iter(lambda: fh.read(8 << 20), b""):
                if b'"' in block:
                    quoted = True
                    stop_after[0] = -1
                    break
                sha.update(block)  # releases the GIL
        for f in futures:
            f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if quoted:
        return None
    n_rows = 0  # data rows before the segment at hand
    n_na, first_na = 0, None
    for seg in segments:
        if isinstance(seg.error, UnicodeDecodeError):
            raise _decode_error(path, seg.error) from seg.error
        if seg.error is not None:
            if seg.error.fallback:
                return None
            if seg.error.line is not None:
                where = f"line {_line_at(path, seg.lo) + seg.error.line - 1}"
            else:
                where = f"line {line_of_row(path, n_rows + seg.error.row, delimiter)}"
            raise DataError(seg.error.message, path=path, where=where)
        if seg.first_na is not None and first_na is None:
            first_na = (n_rows + seg.first_na[0], wanted[seg.first_na[1]])
        n_na += seg.n_na
        n_rows += seg.n_seen
    if n_rows == 0:
        raise DataError("the file has a header but no data rows", path=path, where="line 2")
    if missing == "error" and first_na is not None:
        r, c = first_na
        raise DataError(
            f"column {c!r}: empty or NA cell ({n_na} row{'s have' if n_na > 1 else ' has'} one); "
            f"set data.missing: drop to skip such rows",
            path=path, where=f"line {line_of_row(path, r, delimiter)}",
        )
    n_kept = _close_gaps(X, buf, segments)
    seen_before = np.cumsum([0] + [seg.n_seen for seg in segments[:-1]])
    rows = np.concatenate([np.concatenate(seg.rows) + before if seg.rows else np.empty(0, np.int64)
                           for seg, before in zip(segments, seen_before)]).astype(np.int64, copy=False)
    y = np.concatenate([c for seg in segments for c in seg.y]) if target is not None else None
    return Table(path=path, feature_names=list(features), target=target, X=X[:n_kept], y=y, rows=rows,
                 n_dropped=n_rows - len(rows), sha256=sha.hexdigest(), delimiter=delimiter)


def _close_gaps(X: np.ndarray, buf: mmap.mmap, segments: list[_Segment], block: int = 1 << 16) -> int:
    """Move each segment's rows down to follow the previous segment's, giving the vacated
    pages back as it goes (in row blocks, or column by column for column-major X), so the
    memory in use never grows by more than a block. Returns the number of rows."""
    column_major = X.shape[1] > 1 and X.strides[0] == X.itemsize
    at = 0
    for seg in segments:
        src, n = seg.start, seg.n_kept
        if n and src != at:
            if column_major:
                stride = X.strides[1]
                for j in range(X.shape[1]):
                    X[at:at + n, j] = X[src:src + n, j]  # numpy copies through a buffer if they overlap
                    _release(buf, j * stride + max(src, at + n) * 8, j * stride + (src + n) * 8)
            else:
                row_bytes = X.strides[0]
                for b0 in range(0, n, block):
                    b1 = min(n, b0 + block)
                    X[at + b0:at + b1] = X[src + b0:src + b1]
                    _release(buf, max(src + b0, at + n) * row_bytes, (src + b1) * row_bytes)
        at += n
    return at


def _line_at(path: Path, offset: int) -> int:
    """The line that starts at byte ``offset`` (only to report a place)."""
    lines = 1
    with open(path, "rb") as fh:
        pos = 0
        while pos < offset:
            window = fh.read(min(1 << 20, offset - pos))
            if not window:
                break
            lines += window.count(b"\n")
            pos += len(window)
    return lines


def _read_whole(path: Path, features, target, missing, delimiter, keep_frame, layout: str = "C") -> Table:
    """The whole file in one pandas call (predict keeps every column; quoted fields)."""
    wanted = features + ([target] if target is not None else [])
    n_header = len(read_header(path, delimiter))
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
        if quote:  # pandas counts rows from the header (row 0); the quote opens on that row
            raise DataError("a quoted field is never closed (a '\"' without its pair)", path=path,
                            where=f"line {line_of_row(path, int(quote.group(1)) - 1, delimiter)}") from exc
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
    assert X.strides[0] == X.itemsize and X.strides[1] >= n * X.itemsize, "row- or column-major X expected"
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
        column_major = X.strides[0] == X.itemsize and X.strides[1] >= n * X.itemsize
        X = to_float32_in_place(X) if X.flags.c_contiguous or column_major else X.astype(np_dtype)
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
