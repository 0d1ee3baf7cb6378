"""The data set read and prepared part by part into files (the stream engine's way) gives the
in-memory reader's values bit for bit, the same errors, and leaves nothing behind."""

from __future__ import annotations

import gc
import os
import warnings

import numpy as np
import pandas as pd
import pytest

from neurocli import csvread, parquetread, pipeline
from neurocli.config import load_config
from neurocli.engines.stream import TiledColumns
from neurocli.errors import DataError
from tests.conftest import write


def _prepared_both_ways(config, *sets: str):
    loaded = load_config(config, list(sets))
    files = pipeline._data_files(loaded)
    in_memory, sha_m = pipeline._in_memory(loaded, files, None)
    streamed, sha_s = pipeline._streamed(loaded, files, None)
    assert sha_m == sha_s
    return in_memory, streamed


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _assert_same(m, s):
    for name in ("X_train", "y_train", "X_val", "y_val", "train_rows", "val_rows"):
        assert _same_bits(getattr(m, name), getattr(s, name)), name
    assert _same_bits(m.table.rows, s.table.rows) and m.table.n_dropped == s.table.n_dropped
    assert m.feature_names == s.feature_names and m.table.target == s.table.target
    if m.standardization is None:
        assert s.standardization is None
    else:
        assert _same_bits(m.standardization.mean, s.standardization.mean)
        assert _same_bits(m.standardization.scale, s.standardization.scale)


def _frame(n: int, seed: int = 0, missing: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(3, 2, n), "b": rng.uniform(-1e3, 1e3, n), "c": rng.normal(size=n)})
    frame["y"] = np.abs(frame.a * 2 - frame.c) + rng.normal(size=n)
    if missing:
        frame.loc[rng.choice(n, missing, replace=False), "b"] = np.nan
    return frame


def _write_parts(root, frame: pd.DataFrame, kind: str, cuts: list[int]) -> str:
    (root / "parts").mkdir()
    for i, (lo, hi) in enumerate(zip(cuts, cuts[1:])):
        part = frame.iloc[lo:hi]
        if kind == "parquet":
            part.to_parquet(root / f"parts/p{i:02d}.parquet", index=False)
        else:
            part.to_csv(root / f"parts/p{i:02d}.csv", index=False, float_format="%.17g")
    return "parts"


# 150,000 rows: three blocks of the statistics' 65,536 training rows, the last one partial
@pytest.mark.parametrize("sets", [
    [],
    ["training.batch_size=64"],
    ["training.dtype=float32"],
    ["training.dtype=float32", "training.batch_size=64", "data.standardize=false"],
    ["data.validation_fraction=0"],
], ids=["full-batch", "mini-batch", "float32", "float32-raw-minibatch", "no-split"])
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_the_prepared_rows_are_the_in_memory_bits(kind, sets, in_tmp, monkeypatch):
    pytest.importorskip("pyarrow")
    monkeypatch.setattr(csvread, "PIECE_BYTES", 1 << 20)  # many pieces per file
    monkeypatch.setattr(parquetread, "BATCH_ROWS", 7000)  # batches that do not divide the blocks
    frame = _frame(150_000, missing=40)
    data = _write_parts(in_tmp, frame, kind, [0, 1, 70_000, 70_001, 150_000])  # uneven, one-row parts
    write(in_tmp / "c.yaml", f"data: {{path: {data}, target: y, missing: drop}}\n")
    m, s = _prepared_both_ways(in_tmp / "c.yaml", *sets)
    _assert_same(m, s)
    assert s.table.n_dropped == 40 and s.X_train.shape[0] > 2 * 65_536
    assert not [f for f in os.listdir(os.environ["NEUROCLI_CACHE_DIR"]) if f.startswith("neurocli-rows-")]


def test_a_csv_with_quoted_fields_read_whole_gives_the_same_bits(in_tmp, monkeypatch):
    monkeypatch.setattr(csvread, "PIECE_BYTES", 1 << 16)
    frame = _frame(20_000)
    text = frame.to_csv(index=False, float_format="%.17g")
    lines = text.splitlines(keepends=True)
    lines[15_000] = '"' + lines[15_000].replace(",", '",', 1)  # a quote far in: the pieces before it are undone
    write(in_tmp / "q.csv", "".join(lines))
    write(in_tmp / "c.yaml", "data: {path: q.csv, target: y}\n")
    m, s = _prepared_both_ways(in_tmp / "c.yaml")
    _assert_same(m, s)
    assert s.X_train.shape[0] + s.X_val.shape[0] == 20_000


def test_big_data_stays_in_the_mapped_files_and_small_data_in_memory(in_tmp):
    frame = _frame(400_000)  # 9.6 MB of features: many blocks of the reduction rule
    frame.to_csv(in_tmp / "big.csv", index=False)
    write(in_tmp / "c.yaml", "data: {path: big.csv, target: y}\n")
    m, s = _prepared_both_ways(in_tmp / "c.yaml")
    _assert_same(m, s)
    assert isinstance(s.X_train, TiledColumns) and isinstance(m.X_train, np.ndarray)  # full batch: the file's tiles
    rows = np.array([0, 5, 399_999 % s.X_train.shape[0], 7000, 6999])  # across tiles, out of order
    assert _same_bits(s.X_train[rows], np.asarray(m.X_train)[rows])
    assert _same_bits(s.X_train[3:70_000], np.asarray(m.X_train)[3:70_000])
    frame.iloc[:500].to_csv(in_tmp / "small.csv", index=False)
    write(in_tmp / "c.yaml", "data: {path: small.csv, target: y}\n")
    m, s = _prepared_both_ways(in_tmp / "c.yaml")
    _assert_same(m, s)
    assert not isinstance(s.X_train, np.memmap) and s.X_train.flags.f_contiguous  # as the memory reader lays it


def _text_cell(f):
    g = f.astype({"b": object})
    g.loc[1203, "b"] = "oops"
    return g


def _too_large(f):
    g = f.copy()
    g.loc[1500, "a"] = 1e200
    return g


def _missing_cell(f):
    g = f.copy()
    g.loc[1800, "b"] = np.nan
    return g


def _constant_column(f):
    return f.assign(c=1.5)


@pytest.mark.parametrize("damage", [_text_cell, _too_large, _missing_cell, _constant_column])
def test_a_bad_part_is_the_same_error(damage, in_tmp):
    frame = damage(_frame(3000))
    _write_parts(in_tmp, frame, "csv", [0, 1000, 2000, 3000])
    write(in_tmp / "c.yaml", "data: {path: parts, target: y}\n")
    loaded = load_config(in_tmp / "c.yaml", [])
    files = pipeline._data_files(loaded)
    errors = []
    for read in (pipeline._in_memory, pipeline._streamed):
        with pytest.raises(DataError) as exc:
            read(loaded, files, None)
        errors.append(exc.value.located())
    assert errors[0] == errors[1]
    assert "p01.csv" in errors[0] or "constant" in errors[0], errors[0]


def test_the_reading_is_reported_to_the_last_byte_and_row(in_tmp, monkeypatch):
    monkeypatch.setattr(csvread, "PIECE_BYTES", 1 << 16)
    frame = _frame(30_000)
    _write_parts(in_tmp, frame, "csv", [0, 10_000, 30_000])
    write(in_tmp / "c.yaml", "data: {path: parts, target: y}\n")
    total = sum(f.stat().st_size for f in (in_tmp / "parts").iterdir())
    for kind in ("memory", "stream"):
        events = []
        pipeline.load_inputs(in_tmp / "c.yaml", [f"engine.kind={kind}"], progress=lambda *a: events.append(a))
        seen = [e for e in events if e[0] == "reading"]
        assert seen[0] == ("reading", 0, total, 0) and seen[-1] == ("reading", total, total, 30_000), kind
        assert len(seen) > 3 and all(a[1] <= b[1] for a, b in zip(seen, seen[1:]))
        prepared = events[len(seen):]  # then, on the stream engine, the preparation of its files
        assert all(e[0] == "preparing" for e in prepared) and bool(prepared) == (kind == "stream")
        if prepared:  # statistics over the training rows, then standardizing every row: 8 bytes a value
            n_train = pipeline.load_inputs(in_tmp / "c.yaml").prepared.X_train.shape[0]
            assert prepared[-1][1:3] == ((n_train + 30_000) * 3 * 8,) * 2


@pytest.mark.parametrize("sets", [[], ["training.batch_size=64"], ["data.validation_fraction=0.99"]],
                         ids=["tiles", "mapped", "too few rows"])
def test_no_file_is_left_open_for_the_collector(sets, in_tmp, monkeypatch):
    # a file object the collector closes warns then, in whatever code runs at that moment
    frame = _frame(400_000)
    frame.to_csv(in_tmp / "big.csv", index=False)
    write(in_tmp / "c.yaml", "data: {path: big.csv, target: y}\n")
    loaded = load_config(in_tmp / "c.yaml", sets)
    files = pipeline._data_files(loaded)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            prepared, _ = pipeline._streamed(loaded, files, None)
            assert prepared.X_train.shape[0] > 0
            del prepared
        except DataError:
            pass  # too few rows for the split: the files made so far are let go too
        gc.collect()
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)]
    assert not [f for f in os.listdir(os.environ["NEUROCLI_CACHE_DIR"]) if f.startswith("neurocli-rows-")]
