"""A data set read and prepared part by part into files, for the stream engine, so that its
memory stays a few parts whatever the size of the data.

Reading (:class:`RowFiles`): every file of the data set in parts (a CSV in the pieces of
:mod:`neurocli.csvread`, a Parquet file in record batches), validated as the in-memory
reader validates it; each part's kept rows go, by the split rule
(:func:`neurocli.rowrules.validation_mask` of their global index), to the end of a training
file or of a validation file, row-major float64. Only the target, the rows' indices and
which split each row went to stay in memory: a few numbers per row, a feature's worth each.

Preparing (:func:`prepare`): the statistics of the training rows block by block, as
:func:`neurocli.rowrules.column_stats` takes them in memory (a block's moments do not depend
on where or how its rows are laid out, so they are the same bits); then each file
standardized and cast to the training dtype part by part, in place. The values are those
:func:`neurocli.data.prepare` gives, bit for bit; only where they live differs.

The files are made in the cache folder and unlinked at once: their mappings keep them while
the run uses them, and nothing is left however the process ends. Together they take the
data's float64 size on disk.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurocli import rowrules
from neurocli.data import Prepared, Table, check_enough_rows, checked_standardization, magnitude_limit
from neurocli.engines import rows_per_block
from neurocli.engines.stream import TiledColumns, release
from neurocli.errors import DataError

# Bytes of X per step of a walk over a file: the pages held at a time.
PART_BYTES = 4 << 20


class RowFile:
    """Rows of ``n_features`` float64 values appended to a file that is unlinked as it is made."""

    def __init__(self, folder: Path, n_features: int):
        fd, name = tempfile.mkstemp(prefix="neurocli-rows-", suffix=".bin", dir=folder)
        os.unlink(name)
        self.file = os.fdopen(fd, "r+b")
        weakref.finalize(self, self.file.close)  # closed however the preparation ends
        self.folder, self.n_features, self.n_rows = folder, n_features, 0

    def append(self, X: np.ndarray) -> None:
        """Append the rows of X (k, n_features), float64."""
        if X.shape[0]:
            self.file.write(np.ascontiguousarray(X, dtype=np.float64).tobytes())
        self.n_rows += X.shape[0]

    def truncate(self, n_rows: int, itemsize: int = 8) -> None:
        """Keep the first ``n_rows`` rows (of ``itemsize`` bytes per value) only."""
        self.file.flush()
        self.file.truncate(n_rows * self.n_features * itemsize)
        self.file.seek(n_rows * self.n_features * itemsize)
        self.n_rows = n_rows

    def mapped(self, dtype=np.float64, mode: str = "r", order: str = "C") -> np.ndarray:
        """The rows as a (n_rows, n_features) array mapped from the file (empty: in memory)."""
        self.file.flush()
        if self.n_rows == 0:
            return np.empty((0, self.n_features), dtype=dtype)
        return np.memmap(self.file, dtype=dtype, mode=mode, shape=(self.n_rows, self.n_features), order=order)

    def close(self) -> None:
        """Let the file go (its mappings keep it while they live)."""
        self.file.close()


class RowFiles:
    """Where a data set's parts go as they are read (the ``out`` of
    :func:`neurocli.data.read_table_into`): each part's rows split by the split rule into a
    training and a validation :class:`RowFile`; the target, the rows' global indices and the
    split of each row in memory; the largest |value| of each column, for the magnitude check.

    ``offset``: the global index of the current file's first data row (the caller moves it on
    from file to file). The files are made at the first part, which tells the number of
    features.
    """

    def __init__(self, folder: Path, seed: int, fraction: float):
        self.folder, self.seed, self.fraction = folder, seed, fraction
        self.train: RowFile | None = None
        self.val: RowFile | None = None
        self.n_features = 0
        self.offset = 0
        self._y: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._is_val: list[np.ndarray] = []
        self.is_val: np.ndarray | None = None  # of every kept row, once gathered
        self.largest = np.zeros(0)

    def has_room(self, k: int) -> bool:
        return True

    def append(self, columns: list[np.ndarray], rows: np.ndarray, keep: np.ndarray | None) -> None:
        """The rows ``keep`` (all if None) of ``columns`` (the features, then the target),
        ``rows`` their 0-based data rows in the current file."""
        d = len(columns) - 1
        if self.train is None:
            self.train, self.val = RowFile(self.folder, d), RowFile(self.folder, d)
            self.n_features, self.largest = d, np.zeros(d + 1)
        X = np.empty((len(rows), d), dtype=np.float64)
        for j, col in enumerate(columns[:d]):
            X[:, j] = col if keep is None else col[keep]
        y = columns[d] if keep is None else columns[d][keep]
        rows = rows + self.offset
        is_val = rowrules.validation_mask(self.seed, rows, self.fraction)
        self.train.append(X[~is_val])
        self.val.append(X[is_val])
        self._y.append(np.array(y, dtype=np.float64))
        self._rows.append(rows)
        self._is_val.append(is_val)
        if len(rows):
            np.maximum(self.largest[:d], np.abs(X).max(axis=0), out=self.largest[:d])
            self.largest[d] = max(self.largest[d], float(np.abs(y).max()))

    def mark(self) -> tuple[int, int, int]:
        return (0, 0, 0) if self.train is None else (self.train.n_rows, self.val.n_rows, len(self._y))

    def rollback(self, mark: tuple[int, int, int]) -> None:
        """Forget every part sent since ``mark``. The column maxima stay: a bound, only used
        to decide whether to look closer."""
        n_train, n_val, parts = mark
        if self.train is not None:
            self.train.truncate(n_train)
            self.val.truncate(n_val)
        del self._y[parts:], self._rows[parts:], self._is_val[parts:]

    def gathered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(y, global rows, is_val) of every kept row, in data-set order, once the reading is
        done (the parts' own arrays are let go one by one)."""
        self.is_val = _joined(self._is_val, bool)
        return _joined(self._y, np.float64), _joined(self._rows, np.int64), self.is_val


def _joined(parts: list[np.ndarray], dtype) -> np.ndarray:
    """The parts concatenated into one array, each part let go once copied."""
    out = np.empty(sum(len(p) for p in parts), dtype=dtype)
    at = 0
    while parts:
        part = parts.pop(0)
        out[at:at + len(part)] = part
        at += len(part)
    return out


@dataclass
class _Split:
    """The kept rows' split: the positions of the training and of the validation rows among
    the kept rows, each in order."""

    train_idx: np.ndarray
    val_idx: np.ndarray


def prepare(table: Table, files: RowFiles, *, standardize: bool, dtype: str, layout: str,
            validation_fraction: float, locate=None, progress=None) -> Prepared:
    """The read data set (``table``: its names, rows and target; its rows' values in
    ``files``) split, checked, standardized and cast as :func:`neurocli.data.prepare` does,
    with the same errors; X_train and X_val are the files (full batch: tiles,
    :class:`neurocli.engines.stream.TiledColumns`; mini-batch: mapped), except that an X of one
    block of the reduction rule (small data) is held in memory in ``layout`` (the in-memory
    reader's: "F" full batch, "C" mini-batch), where the one-block kernels read it as the
    in-memory engine does. ``progress("preparing", bytes done, bytes in all, rows)`` is told
    each part done."""
    is_val = files.is_val  # the split rule's, decided part by part as the rows came
    split = _Split(np.flatnonzero(~is_val), np.flatnonzero(is_val))
    check_enough_rows(table, len(split.train_idx), len(split.val_idx), validation_fraction, locate)
    _check_magnitudes(table, files, split, standardize, dtype)
    np_dtype = np.dtype(np.float32 if dtype == "float32" else np.float64)
    row_bytes, n_train, n_val = files.n_features * 8, files.train.n_rows, files.val.n_rows
    passes = (n_train if standardize else 0) + (n_train + n_val if standardize or dtype != "float64" else 0)
    done = _Done(progress, passes * row_bytes, len(table.rows))
    standardization = None
    if standardize:
        standardization = checked_standardization(*_train_stats(files.train, done), table.feature_names,
                                                  table.path)
    X_train = _finished(files.train, standardization, np_dtype, layout, done)
    X_val = _finished(files.val, standardization, np_dtype, layout, done)
    y, table.y = table.y, None  # the target lives on split, not twice
    return Prepared(table=table, X_train=X_train, y_train=np.ascontiguousarray(y[split.train_idx], dtype=np_dtype),
                    X_val=X_val, y_val=np.ascontiguousarray(y[split.val_idx], dtype=np_dtype),
                    train_rows=split.train_idx, val_rows=split.val_idx, standardization=standardization)


class _Done:
    """The preparation's progress, in bytes of the files' float64 rows: ``add(rows)``."""

    def __init__(self, progress, total: int, rows: int):
        self.progress, self.total, self.rows, self.done = progress, total, rows, 0

    def add(self, rows: int, row_bytes: int) -> None:
        if self.progress is not None:
            self.done = min(self.total, self.done + rows * row_bytes)
            self.progress("preparing", self.done, self.total, self.rows)


def _check_magnitudes(table: Table, files: RowFiles, split: _Split, standardize: bool, dtype: str) -> None:
    """:func:`neurocli.data._check_magnitudes` from the column maxima; the files are searched
    for the first row only when a column holds a value too large."""
    n, d = len(table.rows), files.n_features
    limit = magnitude_limit(n, np.float32 if dtype == "float32" else np.float64)
    for j, name in enumerate(list(table.feature_names) + [table.target]):
        col_limit = magnitude_limit(n, np.float64) if standardize and j < d else limit
        if not files.largest[j] > col_limit:
            continue
        if j == d:
            r = int(np.argmax(np.abs(table.y) > col_limit))
            value = table.y[r]
        else:
            r, value = _first_above(files, split, j, col_limit)
        raise DataError(f"column {name!r}: value {value:.4g} is too large (|x| > {col_limit:.3g}): "
                        f"its square would overflow the loss; rescale the column",
                        path=table.path, where=table.place(r))


def _first_above(files: RowFiles, split: _Split, j: int, limit: float) -> tuple[int, float]:
    """The first kept row (in data-set order) whose column j exceeds ``limit``, and its value."""
    found = []
    for file, positions in ((files.train, split.train_idx), (files.val, split.val_idx)):
        X = file.mapped()
        for lo, hi in _parts(X):
            big = np.flatnonzero(np.abs(X[lo:hi, j]) > limit)
            if big.size:
                found.append((int(positions[lo + big[0]]), float(X[lo + big[0], j])))
                break
        release(X)
    return min(found)


def _tiled(file: RowFile, standardization, dtype: np.dtype, done: _Done) -> TiledColumns:
    """The file's rows standardized and cast, written into a new file as tiles, one per block
    of the reduction rule's grid (:class:`neurocli.engines.stream.TiledColumns`)."""
    X = file.mapped()
    n, d = X.shape
    rows = rows_per_block(n, d, dtype)
    out_file = RowFile(file.folder, d)
    per_part = max(1, PART_BYTES // (rows * d * 8)) * rows  # whole blocks
    for lo in range(0, n, per_part):
        part = np.array(X[lo:lo + per_part])
        if standardization is not None:
            np.subtract(part, standardization.mean, out=part)
            np.divide(part, standardization.scale, out=part)
        for start in range(0, part.shape[0], rows):  # written, not mapped: nothing held but the part
            out_file.file.write(np.asarray(part[start:start + rows].T, dtype=dtype, order="C").tobytes())
        release(X)
        done.add(part.shape[0], d * 8)
    del X
    file.close()
    out_file.file.flush()
    tiles = TiledColumns(out_file.file, (n, d), dtype, rows)
    out_file.close()
    return tiles


def _parts(X: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges of X of about :data:`PART_BYTES` each."""
    rows = max(1, PART_BYTES // max(1, X.shape[1] * X.dtype.itemsize))
    return [(lo, min(lo + rows, X.shape[0])) for lo in range(0, X.shape[0], rows)]


def _train_stats(train: RowFile, done: _Done) -> tuple[np.ndarray, np.ndarray]:
    """:func:`neurocli.rowrules.column_stats` of the training rows, block by block, each
    block copied into a column-major buffer (its pages handed back; each column contiguous
    for its sums)."""
    X = train.mapped()
    block = rowrules.STAT_BLOCK_ROWS
    buffer = np.empty((min(block, X.shape[0]), X.shape[1]), dtype=np.float64, order="F")
    moments = []
    for lo in range(0, X.shape[0], block):
        part = buffer[:min(block, X.shape[0] - lo)]
        np.copyto(part, X[lo:lo + part.shape[0]])
        release(X)  # the block is copied: its pages go back
        moments.append(rowrules.moments(part))
        done.add(part.shape[0], X.shape[1] * 8)
    return rowrules.stats_of(moments)


def _finished(file: RowFile, standardization, dtype: np.dtype, layout: str, done: _Done) -> np.ndarray:
    """The file's rows standardized and cast to ``dtype``, part by part, then mapped read-only:
    row-major in place, or ("F", full batch) as tiles of the reduction rule's blocks into a
    file of their own (:func:`_tiled`); one block of the reduction rule is read into memory in
    ``layout`` instead."""
    n, d = file.n_rows, file.n_features
    if layout == "F" and rows_per_block(n, d, dtype) < n:
        return _tiled(file, standardization, dtype, done)
    X = file.mapped(mode="r+")
    if n and (standardization is not None or dtype != X.dtype):
        # float32 values go to the front of the file: part k's destination ends before part
        # k+1's source begins, and each part is copied before it is written
        out = X.reshape(-1).view(dtype)[:n * d].reshape(n, d) if dtype != X.dtype else X
        for lo, hi in _parts(X):
            part = np.array(X[lo:hi])
            if standardization is not None:
                np.subtract(part, standardization.mean, out=part)  # as data.prepare does it, in place
                np.divide(part, standardization.scale, out=part)
            out[lo:hi] = part
            release(X)
            done.add(hi - lo, d * 8)
        del out
    del X
    if dtype != np.float64:
        file.truncate(n, dtype.itemsize)
    mapped = file.mapped(dtype=dtype)
    file.close()  # the mapping holds the file
    if rows_per_block(n, d, dtype) >= n:  # small: in memory, laid out as the in-memory reader lays it
        held = np.array(mapped, order=layout)
        release(mapped)
        return held
    return mapped
