"""Parquet files through pyarrow (the optional ``parquet`` extra): the column names, and the
wanted columns as a pandas frame, which :mod:`neurocli.data` validates as it does a CSV's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from neurocli.errors import DataError

SUFFIXES = (".parquet", ".pq")
INSTALL = 'pip install "neurocli[parquet]"'


def is_parquet(path: Path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


def _parquet(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading Parquet needs pyarrow, an optional extra: {INSTALL}", path=path) from None
    return pq


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
