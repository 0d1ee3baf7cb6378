"""A data set's files: one CSV or Parquet file, a folder of them, or a glob; read one after
another into one table whose rows are numbered across the files (row i of the data set is
the same row however the data is cut into files)."""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path

import numpy as np

from neurocli import parquetread
from neurocli.cache import read_table_cached
from neurocli.data import Table, read_header
from neurocli.errors import DataError

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_GLOB = set("*?[")


def is_pattern(path: Path) -> bool:
    return bool(_GLOB & set(str(path)))


def data_files(path: Path) -> list[Path]:
    """The files of the data set at ``path``, in name order: the file itself; a folder's CSV or
    Parquet files; a glob's matching files. Raises when there is none, or they mix formats."""
    if is_pattern(path):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError("no file matches this pattern", path=path)
    elif path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in
                       CSV_SUFFIXES + parquetread.SUFFIXES)
        if not files:
            raise DataError("the folder holds no CSV or Parquet file", path=path)
    else:
        return [path]
    kinds = [parquetread.is_parquet(f) for f in files]
    if len(set(kinds)) > 1:
        other = files[kinds.index(not kinds[0])]
        raise DataError(f"{'a Parquet' if not kinds[0] else 'a CSV'} file among {'CSV' if not kinds[0] else 'Parquet'} "
                        f"files ({files[0].name}, ...): a data set is of one format", path=other)
    return files


def column_names(path: Path, delimiter: str) -> list[str]:
    return parquetread.columns(path) if parquetread.is_parquet(path) else read_header(path, delimiter)


def read_data_set(path: Path, files: list[Path], *, target, features, missing: str, delimiter: str,
                  layout: str) -> tuple[Table, str]:
    """The files of the data set ``path`` as one table (:func:`neurocli.cache.read_table_cached`
    each), its rows numbered across them, and the SHA-256 that names the data set (one file's
    own; for many, of their names and hashes in order). Every file must have the first one's
    columns."""
    if len(files) == 1:
        return read_table_cached(files[0], target=target, features=features, missing=missing,
                                 delimiter=delimiter, layout=layout)
    first = column_names(files[0], delimiter)
    tables, parts, digest, offset = [], [], hashlib.sha256(), 0
    for f in files:
        names = column_names(f, delimiter) if f != files[0] else first
        if names != first:
            raise DataError(f"its columns ({', '.join(names)}) are not those of {files[0].name} "
                            f"({', '.join(first)}): every file of a data set has the same columns",
                            path=f, where="row 1" if parquetread.is_parquet(f) else "line 1")
        table, sha = read_table_cached(f, target=target, features=features, missing=missing,
                                       delimiter=delimiter, layout=layout)
        features = table.feature_names
        parts.append((f, offset))
        table.rows = table.rows + offset
        offset += len(table.rows) + table.n_dropped
        tables.append(table)
        digest.update(f"{f.name}\0{sha}\n".encode())
    return _concatenated(path, tables, parts, layout), digest.hexdigest()


def _concatenated(path: Path, tables: list[Table], parts: list[tuple[Path, int]], layout: str) -> Table:
    """One table of the files' tables, in order, X in ``layout``; each part freed once copied."""
    n, d = sum(t.X.shape[0] for t in tables), tables[0].X.shape[1]
    X = np.empty((n, d), dtype=np.float64, order=layout)
    has_y = tables[0].y is not None
    y = np.empty(n, dtype=np.float64) if has_y else None
    rows, at = np.empty(n, dtype=np.int64), 0
    first = tables[0]
    n_dropped = sum(t.n_dropped for t in tables)
    while tables:
        t = tables.pop(0)
        k = t.X.shape[0]
        X[at:at + k] = t.X
        if has_y:
            y[at:at + k] = t.y
        rows[at:at + k] = t.rows
        at += k
    return Table(path=path, feature_names=list(first.feature_names), target=first.target, X=X, y=y, rows=rows,
                 n_dropped=n_dropped, delimiter=first.delimiter, parts=parts)
