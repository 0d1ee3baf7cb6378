"""Parquet files through pyarrow (the optional ``parquet`` extra): the column names, and the
wanted columns as a pandas frame, which :mod:`neurocli.data` validates as it does a CSV's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from neurocli.errors import DataError

if TYPE_CHECKING:  # only for the annotations: a data set's file list needs no pandas
    import pandas as pd

SUFFIXES = (".parquet", ".pq")
INSTALL = 'pip install "neurocli[parquet]"'


def is_parquet(path: Path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


def _parquet(path: Path):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading Parquet needs pyarrow, an optional extra: {INSTALL}", path=path) from None
    _use_a_pool_that_gives_back(pa)
    return pq


def _use_a_pool_that_gives_back(pa) -> None:
    """jemalloc, where pyarrow has it: it hands freed batches back to the system, where the
    default pool kept about 100 MB more at the peak of a part-by-part read (measured)."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)  # at once, not seconds later
    except (NotImplementedError, AttributeError):
        pass


def columns(path: Path) -> list[str]:
    """The file's column names, from its footer (no data is read)."""
    pq = _parquet(path)
    import pyarrow as pa

    try:
        return list(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", path=path) from None


def frame(path: Path, wanted: list[str]) -> pd.DataFrame:
    """The ``wanted`` columns, nulls as NaN (pandas' missing values), in file order."""
    pq = _parquet(path)
    import pyarrow as pa

    try:
        table = pq.read_table(path, columns=wanted)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", path=path) from None
    return table.to_pandas()


# Rows per record batch read at a time by :func:`batches`: with the file read through a small
# buffer (no pre-buffering of whole row groups), pyarrow then holds about a batch and a page
# per column, not a row group (a million rows by default).
BATCH_ROWS = 1 << 14
READ_BUFFER = 1 << 16


def batches(path: Path, wanted: list[str], rows: int = BATCH_ROWS):
    """The ``wanted`` columns in record batches of ``rows`` rows, in file order, each as a
    pandas frame (nulls as NaN) with its share of the file's bytes: ``(frame, bytes)``."""
    pq = _parquet(path)
    import pyarrow as pa

    try:
        file = pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER)
        total_rows, size = file.metadata.num_rows, Path(path).stat().st_size
        for batch in file.iter_batches(batch_size=rows, columns=wanted, use_threads=False):
            yield batch.to_pandas(), size * batch.num_rows // max(1, total_rows)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", path=path) from None


def row_count(path: Path) -> int:
    """The file's number of rows, from its footer."""
    pq = _parquet(path)
    import pyarrow as pa

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", path=path) from None
