"""A data set's files: one CSV or Parquet file, a folder of them, or a glob; read one after
another into one table whose rows are numbered across the files (row i of the data set is
the same row however the data is cut into files)."""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from neurocli import parquetread
from neurocli.errors import DataError

# numpy, neurocli.data and neurocli.cache are imported where a file is read: a data set's
# file list (a config's check of data.path) needs none of them
if TYPE_CHECKING:
    from neurocli.data import Table

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
        files = sorted(f for f in path.iterdir() if f.is_file() and is_data_file(f))
        if not files:
            raise DataError(EMPTY_FOLDER, path=path)
    else:
        return [path]
    check_one_format(files)
    return files


EMPTY_FOLDER = "the folder holds no CSV or Parquet file"


def is_data_file(name: str | Path) -> bool:
    """Whether a folder's file of this name is one of its data set's: a CSV or Parquet file."""
    return PurePosixPath(name).suffix.lower() in CSV_SUFFIXES + parquetread.SUFFIXES


def check_one_format(files: list, named=lambda f: f) -> None:
    """Raises when ``files`` (paths, or a store's names, told apart by suffix) mix CSV and
    Parquet, naming the first of the other format as ``named`` gives it."""
    kinds = [parquetread.is_parquet(f) for f in files]
    if len(set(kinds)) > 1:
        other = files[kinds.index(not kinds[0])]
        raise DataError(f"{'a Parquet' if not kinds[0] else 'a CSV'} file among {'CSV' if not kinds[0] else 'Parquet'} "
                        f"files ({PurePosixPath(files[0]).name}, ...): a data set is of one format",
                        path=named(other))


def fetched(url: str, folder: Path) -> list[Path]:
    """The files a URL names (a file, a folder, or a glob; chosen as :func:`data_files`
    chooses a path's), each copied once into ``folder`` and read from there: fsspec reaches
    the store (``s3://`` needs s3fs, ``gs://`` gcsfs, ...); a copy is named by the URL, size
    and modification time or ETag the store reports, so a changed object is fetched again."""
    try:
        import fsspec
    except ImportError:
        raise DataError("reading a URL needs fsspec (and the store's package, e.g. s3fs): "
                        'pip install "neurocli[dask]" or pip install fsspec', path=url) from None
    try:
        fs, _, paths = fsspec.get_fs_token_paths(url)
        files = _stored_files(fs, paths, url)
    except (ImportError, ValueError) as exc:
        raise DataError(f"cannot open this URL: {exc}", path=url) from None
    except OSError as exc:
        raise DataError(f"cannot read this URL: {exc.strerror or exc}", path=url) from None
    if not files:
        raise DataError("no file at this URL", path=url)
    check_one_format(files, fs.unstrip_protocol)
    return [_local_copy(fs, p, folder) for p in files]


def _stored_files(fs, paths: list[str], url: str) -> list[str]:
    """The store's files of the URL ``url`` (``paths``, as fsspec read it), in name order: a
    folder's CSV or Parquet files, as a local folder's; else those of ``paths`` that are files."""
    if not is_pattern(Path(url)) and len(paths) == 1 and fs.isdir(paths[0]):
        files = sorted(e["name"] for e in fs.ls(paths[0], detail=True)
                       if e.get("type") == "file" and is_data_file(e["name"]))
        if not files:
            raise DataError(EMPTY_FOLDER, path=url)
        return files
    return sorted(p for p in paths if fs.isfile(p))


# Each local copy's URL, so that an error found in a copy names the object the user gave.
FETCHED: dict[Path, str] = {}


def named_as_fetched(exc: DataError) -> DataError:
    """``exc`` naming the URL of the object, when it names the local copy of one."""
    url = FETCHED.get(Path(exc.path)) if exc.path is not None else None
    return exc if url is None else type(exc)(exc.message, path=url, where=exc.where)


def _local_copy(fs, remote: str, folder: Path) -> Path:
    info = fs.info(remote)
    stamp = {k: str(info.get(k)) for k in ("size", "mtime", "LastModified", "ETag", "created") if info.get(k)}
    key = hashlib.sha256(f"{fs.protocol}\0{remote}\0{sorted(stamp.items())}".encode()).hexdigest()[:24]
    local = folder / key / Path(remote).name
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.part")
        try:
            fs.get_file(remote, str(partial))
        except OSError as exc:
            raise DataError(f"cannot fetch this file: {exc.strerror or exc}", path=remote) from None
        partial.replace(local)  # whole or not there
    FETCHED[local] = fs.unstrip_protocol(remote)
    return local


def column_names(path: Path, delimiter: str) -> list[str]:
    from neurocli.data import read_header

    return parquetread.columns(path) if parquetread.is_parquet(path) else read_header(path, delimiter)


def _check_columns(files: list[Path], f: Path, first: list[str], delimiter: str) -> None:
    """Every file of a data set has the first file's columns, by name and in order (a column
    nobody uses may have an empty name, in every file alike; the reader checks the ones used)."""
    names = column_names(f, delimiter) if f != files[0] else first
    if list(names) != list(first):
        def shown(columns):
            return ", ".join(c if c else "(empty)" for c in columns)

        raise DataError(f"its columns ({shown(names)}) are not those of {files[0].name} "
                        f"({shown(first)}): every file of a data set has the same columns",
                        path=f, where="row 1" if parquetread.is_parquet(f) else "line 1")


def data_set_sha256(files: list[Path], shas: list[str]) -> str:
    """The SHA-256 that names a data set: one file's own; for many, of their names and hashes in order."""
    if len(files) == 1:
        return shas[0]
    digest = hashlib.sha256()
    for f, sha in zip(files, shas):
        digest.update(f"{f.name}\0{sha}\n".encode())
    return digest.hexdigest()


def stream_data_set(path: Path, files: list[Path], out, *, target, features, missing: str, delimiter: str,
                    progress=None) -> tuple[Table, str]:
    """The files of the data set ``path`` read part by part into ``out``
    (:func:`neurocli.data.read_table_into`, e.g. a :class:`neurocli.streamprep.RowFiles`),
    its rows numbered across the files (``out.offset``, moved on from file to file). Returns
    the table without its X (names, target, rows, y from ``out.gathered()``) and the data
    set's SHA-256, as :func:`read_data_set`."""
    from neurocli.data import Table, read_table_into

    first = column_names(files[0], delimiter) if len(files) > 1 else None
    parts, shas = [], []
    for f in files:
        if first is not None:
            _check_columns(files, f, first, delimiter)
        parts.append((f, out.offset))
        features, n_rows, sha = read_table_into(f, out, target=target, features=features, missing=missing,
                                                delimiter=delimiter, progress=progress)
        out.offset += n_rows
        shas.append(sha)
    y, rows, _ = out.gathered()
    table = Table(path=path if len(files) > 1 else files[0], feature_names=list(features), target=target, X=None,
                  y=y, rows=rows, n_dropped=out.offset - len(rows), delimiter=delimiter,
                  parts=parts if len(files) > 1 else None)
    return table, data_set_sha256(files, shas)


def read_data_set(path: Path, files: list[Path], *, target, features, missing: str, delimiter: str,
                  layout: str, progress=None, cache_table: bool = True) -> tuple[Table, str]:
    """The files of the data set ``path`` as one table (:func:`neurocli.cache.read_table_cached`
    each), its rows numbered across them, and the SHA-256 that names the data set (one file's
    own; for many, of their names and hashes in order). Every file must have the first one's
    columns. ``cache_table=False``: a single file is read as it is, not through the cache
    (a training run caches its prepared data instead)."""
    from neurocli.cache import read_table_cached, read_uncached

    if len(files) == 1 and not cache_table:
        return read_uncached(files[0], target=target, features=features, missing=missing, delimiter=delimiter,
                             layout=layout, progress=progress)
    if len(files) == 1:
        return read_table_cached(files[0], target=target, features=features, missing=missing,
                                 delimiter=delimiter, layout=layout, progress=progress)
    first = column_names(files[0], delimiter)
    tables, parts, shas, offset = [], [], [], 0
    for f in files:
        _check_columns(files, f, first, delimiter)
        table, sha = read_table_cached(f, target=target, features=features, missing=missing,
                                       delimiter=delimiter, layout=layout, progress=progress)
        features = table.feature_names
        parts.append((f, offset))
        table.rows = table.rows + offset
        offset += len(table.rows) + table.n_dropped
        tables.append(table)
        shas.append(sha)
    return _concatenated(path, tables, parts, layout), data_set_sha256(files, shas)


def _concatenated(path: Path, tables: list[Table], parts: list[tuple[Path, int]], layout: str) -> Table:
    """One table of the files' tables, in order, X in ``layout``; each part freed once copied."""
    import numpy as np

    from neurocli.data import Table

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
