"""CSV -> validated float arrays, then the preprocessing every command shares.

Reading is pandas' C parser; what neurocli adds is validation that names the place of
every problem: the file, the line as a text editor counts it, and the column.
Preprocessing (missing rows, validation split, standardization, dtype) happens once, in
:func:`prepare`, so train, gradcheck, derive and predict all see the same numbers.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neurocli.errors import DataError

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

    def line_of(self, i: int) -> int:
        """The file line (1-based, header = line 1) of kept row ``i``.

        The first call scans the file once for blank lines (which the parser skips); every
        later call is a lookup, so a per-sample table on a million rows stays fast.
        """
        if self.__dict__.get("_blank_lines") is None:
            self.__dict__["_blank_lines"] = blank_lines(self.path)
        row = int(self.rows[i])
        line = row + HEADER_LINE + 1
        for blank in self.__dict__["_blank_lines"]:  # sorted; usually empty
            if blank <= line:
                line += 1
            else:
                break
        return line


def blank_lines(path: Path, chunk_size: int = 1 << 23) -> list[int]:
    """Line numbers of the empty lines after the header, in one chunked pass over the file."""
    found: list[int] = []
    line = 1  # the line that starts at the current chunk's first byte
    carry = b""
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(chunk_size)
            if not chunk:
                break
            data = carry + chunk
            start = 0
            while True:  # an empty line is a newline right after a newline (or after "\n\r")
                hit = data.find(b"\n\n", start)
                hit_cr = data.find(b"\n\r\n", start)
                if hit < 0 and hit_cr < 0:
                    break
                hit = min(h for h in (hit, hit_cr) if h >= 0)
                number = line + data.count(b"\n", 0, hit + 1)
                if number > HEADER_LINE and (not found or found[-1] != number):
                    found.append(number)
                start = hit + 1
            line += data.count(b"\n", 0, len(data) - 2)
            carry = data[len(data) - 2:]
    return found


def line_of_row(path: Path, row: int) -> int:
    """Line number, as an editor counts, of the 0-based data row ``row`` (blank lines skipped).

    Only used to report a place, so a plain scan of the file is fine here.
    """
    seen = -1
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if number == HEADER_LINE:
                continue
            if line.strip(b"\r\n\t "):
                seen += 1
                if seen == row:
                    return number
    return row + HEADER_LINE + 1


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


def _to_float(frame: pd.DataFrame, column: str, path: Path, rows_index) -> np.ndarray:
    series = frame[column]
    if not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        coerced = pd.to_numeric(series, errors="coerce")
        bad = coerced.isna() & series.notna()
        if bad.any():
            pos = int(np.argmax(bad.to_numpy()))
            text = str(series.iloc[pos])
            raise DataError(
                f"column {column!r}: {text[:40]!r} is not a number",
                path=path, where=f"line {line_of_row(path, int(rows_index[pos]))}",
            )
        series = coerced
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def read_table(
    path: Path,
    *,
    target: str | None,
    features: list[str] | None,
    missing: str = "error",
    delimiter: str = ",",
    keep_frame: bool = False,
) -> Table:
    """Read the target and feature columns of a CSV into float64 arrays, validated.

    ``missing``: "error" (an empty/NA cell is an error), "drop" (rows with one are dropped,
    counted in ``n_dropped``) or "keep" (left as NaN; predict leaves their prediction empty).
    Raises DataError naming the file, line and column for: missing/unreadable/empty file,
    header only, undecodable bytes, wrong delimiter, duplicate or absent columns,
    non-numeric cells, infinities, and empty/NA cells when ``missing == "error"``.
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
    wanted = features + ([target] if target is not None else [])
    try:
        frame = pd.read_csv(
            path, sep=delimiter, encoding="utf-8-sig", engine="c",
            # header names are compared stripped ("y " is column y), as read_header reports them
            usecols=None if keep_frame else (lambda c, _w=frozenset(wanted): str(c).strip() in _w),
            skipinitialspace=True,
            dtype=None if keep_frame else None,
        )
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from exc
    except pd.errors.ParserError as exc:
        msg = str(exc).strip().rstrip(".")
        where = None
        import re

        m = re.search(r"line (\d+)", msg)
        if m:
            where = f"line {m.group(1)}"
        raise DataError(f"malformed CSV: {msg}", path=path, where=where) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame) == 0:
        raise DataError("the file has a header but no data rows", path=path, where="line 2")
    rows = np.arange(len(frame))
    columns = {c: _to_float(frame, c, path, rows) for c in wanted}
    X = np.empty((len(frame), len(features)), dtype=np.float64)
    for j, c in enumerate(features):
        X[:, j] = columns[c]
    y = columns[target] if target is not None else None
    del columns

    def first_bad(mask_2d: np.ndarray, cols: list[str]) -> tuple[int, str]:
        flat = int(np.argmax(mask_2d))
        r, c = divmod(flat, mask_2d.shape[1])
        return r, cols[c]

    all_cols = features + ([target] if target is not None else [])
    stacked_bad_inf = np.isinf(X)
    if y is not None:
        stacked_bad_inf = np.column_stack([stacked_bad_inf, np.isinf(y)])
    if stacked_bad_inf.any():
        r, c = first_bad(stacked_bad_inf, all_cols)
        raise DataError(f"column {c!r}: infinite value", path=path, where=f"line {line_of_row(path, r)}")

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
                path=path, where=f"line {line_of_row(path, r)}",
            )
        keep = ~nan_mask.any(axis=1)
        n_dropped = int((~keep).sum())
        X, rows = X[keep], rows[keep]
        if y is not None:
            y = y[keep]
        if keep_frame:
            frame = frame[keep]
    return Table(
        path=path, feature_names=list(features), target=target, X=X, y=y, rows=rows,
        n_dropped=n_dropped, frame=frame if keep_frame else None,
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


def magnitude_limit(n_rows: int, dtype) -> float:
    """Largest |value| whose square, summed over n_rows, stays finite in ``dtype``."""
    return math.sqrt(float(np.finfo(dtype).max) / max(1, n_rows)) / 4


def prepare(table: Table, *, validation_fraction: float, standardize: bool, seed: int,
            dtype: str = "float64", locate=None) -> Prepared:
    """Split, standardize (statistics from the training split only) and cast.

    ``locate(keys, message)`` builds a ConfigError located at a config key, for problems
    that the config can fix (too few rows for the split).
    """
    path = table.path
    n = table.X.shape[0]
    train_idx, val_idx = split_indices(n, validation_fraction, seed)
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
    standardization = None
    X = table.X
    if standardize:
        Xt = X[train_idx] if len(val_idx) else X
        mean = Xt.mean(axis=0)
        scale = Xt.std(axis=0)
        for j, s in enumerate(scale):
            if not np.isfinite(s) or s == 0 or s <= 1e-12 * max(1.0, abs(mean[j])):
                raise DataError(
                    f"column {table.feature_names[j]!r} is constant ({mean[j]:.6g}) in the training rows: "
                    f"it cannot be standardized; drop it from data.features or set data.standardize: false",
                    path=path,
                )
        standardization = Standardization(mean=mean, scale=scale)
    np_dtype = np.float32 if dtype == "float32" else np.float64

    def take(idx: np.ndarray, whole: bool) -> np.ndarray:
        part = X if whole else X[idx]
        if standardization is not None:  # (X - mean) / scale with one temporary, not two
            part = part - standardization.mean if whole else np.subtract(part, standardization.mean, out=part)
            part /= standardization.scale
        return np.ascontiguousarray(part, dtype=np_dtype)

    whole = len(val_idx) == 0
    X_train = take(train_idx, whole)
    X_val = take(val_idx, False) if len(val_idx) else np.empty((0, X.shape[1]), dtype=np_dtype)
    y = table.y
    return Prepared(
        table=table,
        X_train=X_train,
        y_train=np.ascontiguousarray(y[train_idx], dtype=np_dtype),
        X_val=X_val,
        y_val=np.ascontiguousarray(y[val_idx], dtype=np_dtype),
        train_rows=train_idx,
        val_rows=val_idx,
        standardization=standardization,
    )
