"""The data cache: served only for an unchanged file read with unchanged options."""

import os

import numpy as np
import pytest
from typer.testing import CliRunner

from neurocli import cache
from neurocli.cli import app
from neurocli.data import file_sha256
from neurocli.errors import DataError

OPTS = dict(target="y", features=None, missing="error", delimiter=",")


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("NEUROCLI_CACHE_DIR", str(root))
    monkeypatch.delenv("NEUROCLI_CACHE", raising=False)
    return root


def csv(path, rows):
    path.write_text("a,b,y\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows))
    return path


def entries(root):
    return [d for d in root.iterdir() if not d.name.startswith(".")] if root.exists() else []


def test_second_read_is_served_from_the_cache(tmp_path, cache_root):
    f = csv(tmp_path / "d.csv", [(1, 2, 3), (4, 5, 6)])
    first, sha1 = cache.read_table_cached(f, **OPTS)
    assert len(entries(cache_root)) == 1
    second, sha2 = cache.read_table_cached(f, **OPTS)
    assert sha1 == sha2 == file_sha256(f)
    assert np.array_equal(first.X, second.X) and np.array_equal(first.y, second.y)
    assert second.feature_names == ["a", "b"] and second.target == "y"
    assert np.array_equal(first.rows, second.rows) and second.n_dropped == 0


@pytest.mark.parametrize("layout", ["C", "F"])
def test_an_entry_is_served_in_the_layout_it_was_asked_for(tmp_path, cache_root, layout):
    f = csv(tmp_path / "d.csv", [(i, 2 * i + 1, 3 * i) for i in range(50)])
    first, _ = cache.read_table_cached(f, **OPTS, layout=layout)

    def no_parse(*a, **k):
        raise AssertionError("parsed again: the entry was not served")
    real_read = cache.read_table
    cache.read_table = no_parse
    try:
        second, _ = cache.read_table_cached(f, **OPTS, layout=layout)  # must be a hit
    finally:
        cache.read_table = real_read
    other, _ = cache.read_table_cached(f, **OPTS, layout="FC"[layout == "F"])  # an entry of its own
    assert len(entries(cache_root)) == 2
    for t in (first, second):
        assert t.X.strides[0 if layout == "F" else 1] == 8
    assert other.X.strides[1 if layout == "F" else 0] == 8
    assert np.array_equal(first.X, second.X) and np.array_equal(first.X, other.X)
    assert second.X[:, 1].tolist() == [2.0 * i + 1 for i in range(50)]


def test_changed_content_of_the_same_size_and_mtime_is_never_served_stale(tmp_path, cache_root):
    f = csv(tmp_path / "d.csv", [(1, 2, 3), (4, 5, 6)])
    cache.read_table_cached(f, **OPTS)
    st = f.stat()
    csv(f, [(1, 2, 3), (4, 5, 7)])  # one digit changed: same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime put back
    assert f.stat().st_size == st.st_size
    table, sha = cache.read_table_cached(f, **OPTS)
    assert table.y[1] == 7.0 and sha == file_sha256(f)
    assert len(entries(cache_root)) == 1  # the old entry of this file was replaced


def test_changed_options_are_never_served_stale(tmp_path, cache_root):
    f = csv(tmp_path / "d.csv", [(1, 2, 3), (4, 5, 6)])
    cache.read_table_cached(f, **OPTS)
    t = cache.read_table_cached(f, **{**OPTS, "features": ["b"]})[0]
    assert t.feature_names == ["b"] and t.X.tolist() == [[2.0], [5.0]]
    t = cache.read_table_cached(f, **{**OPTS, "target": "a", "features": ["b", "y"]})[0]
    assert t.target == "a" and t.y.tolist() == [1.0, 4.0]
    f2 = csv(tmp_path / "e.csv", [(1, None, 3), (4, 5, 6)])
    with pytest.raises(DataError):
        cache.read_table_cached(f2, **OPTS)
    assert cache.read_table_cached(f2, **{**OPTS, "missing": "drop"})[0].X.shape == (1, 2)


def test_invalid_data_is_never_cached_and_keeps_its_located_error(tmp_path, cache_root):
    f = tmp_path / "bad.csv"
    f.write_text("a,b,y\n1,2,3\n4,x,6\n")
    for _ in range(2):
        with pytest.raises(DataError) as err:
            cache.read_table_cached(f, **OPTS)
        assert "line 3" in err.value.located() and "'b'" in str(err.value)
    assert entries(cache_root) == []


def test_a_damaged_entry_is_ignored(tmp_path, cache_root):
    f = csv(tmp_path / "d.csv", [(1, 2, 3), (4, 5, 6)])
    cache.read_table_cached(f, **OPTS)
    (entries(cache_root)[0] / "X.npy").write_bytes(b"garbage")
    assert cache.read_table_cached(f, **OPTS)[0].X.tolist() == [[1.0, 2.0], [4.0, 5.0]]
    [entry] = entries(cache_root)  # and replaced by a whole one, which the next read serves
    assert np.load(entry / "X.npy").tolist() == [[1.0, 2.0], [4.0, 5.0]]


def test_cache_off_writes_nothing(tmp_path, cache_root, monkeypatch):
    monkeypatch.setenv("NEUROCLI_CACHE", "off")
    f = csv(tmp_path / "d.csv", [(1, 2, 3), (4, 5, 6)])
    assert cache.read_table_cached(f, **OPTS)[1] == file_sha256(f)
    assert not cache_root.exists()


def test_default_location_is_the_user_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("NEUROCLI_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "neurocli"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.cache_dir().parts[-2:] == (".cache", "neurocli")


def test_large_files_are_sampled_but_edges_and_slices_count(tmp_path):
    f = tmp_path / "big.bin"
    data = bytearray(os.urandom(5 << 20))
    f.write_bytes(data)
    before = cache.sampled_digest(f, len(data))
    data[-1] ^= 1
    f.write_bytes(data)
    assert cache.sampled_digest(f, len(data)) != before


def test_cache_info_and_clear_commands(tmp_path, cache_root):
    f = csv(tmp_path / "d.csv", [(1, 2, 3), (4, 5, 6)])
    cache.read_table_cached(f, **OPTS)
    (cache_root / "keep-me").mkdir()  # not ours: clear leaves it alone
    runner = CliRunner()
    r = runner.invoke(app, ["cache", "info"])
    assert r.exit_code == 0 and "1 entry" in r.output and str(f.resolve()) in r.output and "table" in r.output
    assert [e["kind"] for e in cache.info()["entries"]] == ["table"]
    r = runner.invoke(app, ["cache", "clear"])
    assert r.exit_code == 0 and "cleared" in r.output
    assert [d.name for d in cache_root.iterdir()] == ["keep-me"]
    assert runner.invoke(app, ["cache", "--help"]).exit_code == 0


def test_an_unreadable_cache_folder_is_one_line_for_info_and_clear(tmp_path, cache_root, monkeypatch):
    from pathlib import Path

    f = csv(tmp_path / "d.csv", [(1, 2, 3), (4, 5, 6)])
    cache.read_table_cached(f, **OPTS)
    runner = CliRunner()
    real_iterdir = Path.iterdir

    def denied(self):  # what a folder without read permission does (root reads anything)
        if self == cache_root:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", denied)
    for command in ("info", "clear"):
        r = runner.invoke(app, ["cache", command])
        assert r.exit_code == 2, r.output
        assert r.stderr == f"error: {cache_root}: cannot read the cache folder: Permission denied\n"
    monkeypatch.setattr(Path, "iterdir", real_iterdir)

    def undeletable(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache.shutil, "rmtree", undeletable)
    r = runner.invoke(app, ["cache", "clear"])
    assert r.exit_code == 2 and "cannot delete this cache entry: Permission denied" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.output
