"""A binary cache of validated data, so a second run on an unchanged file skips the parse:
a training run's prepared data (one file), or each file's table (a data set of several).

Where: ``$NEUROCLI_CACHE_DIR``, else ``$XDG_CACHE_HOME/neurocli``, else ``~/.cache/neurocli``
(never next to the data). ``NEUROCLI_CACHE=off`` turns it off; ``neurocli cache info`` and
``neurocli cache clear`` show and empty it.

An entry is served only when everything that decides the table is unchanged:

- the read options (target, features, missing, delimiter, the layout of X) and the cache
  format; an entry holds X in the layout it was asked for, so a hit never converts it;
- the file's resolved path, device and inode, size, mtime and ctime in nanoseconds (ctime
  cannot be set back by a user: any write, ``touch`` or rename moves it);
- a hash of sampled content (the first and last MiB and 16 slices of 64 KiB in between),
  in case a file system keeps coarse timestamps.

Each entry also keeps the SHA-256 of the whole file, computed while the parse ran, so a
cached load does not have to read the CSV at all. Entries are written to a temporary folder
and renamed into place, so a crash leaves no half entry; a damaged entry is ignored and
replaced. A training run on one file writes its prepared data's entry on a thread of its own
while it trains (:class:`PreparedWriter`); a file's table is written before the read returns
(:class:`EntryWriter`). The arrays of an entry are .npy files, mapped when served, so a hit
reads each page of them once, on first use.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import json
import mmap
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from neurocli.data import Prepared, Standardization, Table, file_sha256, is_column_major, read_table
from neurocli.errors import OutputError

CACHE_FORMAT = 2
EDGE_BYTES = 1 << 20
SLICES, SLICE_BYTES = 16, 1 << 16
_ENTRY_NAME = re.compile(r"[0-9a-f]{24}-[0-9a-f]{24}")


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get("NEUROCLI_CACHE_DIR"):
        return Path(os.environ["NEUROCLI_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "neurocli"


def enabled() -> bool:
    return os.environ.get("NEUROCLI_CACHE", "on").strip().lower() not in ("off", "0", "no", "false")


def sampled_digest(path: Path, size: int) -> str:
    """SHA-256 of the first and last MiB and 16 evenly spaced 64 KiB slices (the whole file if small)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= 2 * EDGE_BYTES + SLICES * SLICE_BYTES:
            h.update(fh.read())
        else:
            h.update(fh.read(EDGE_BYTES))
            for i in range(1, SLICES + 1):
                fh.seek(EDGE_BYTES + (size - 2 * EDGE_BYTES) * i // (SLICES + 1))
                h.update(fh.read(SLICE_BYTES))
            fh.seek(size - EDGE_BYTES)
            h.update(fh.read(EDGE_BYTES))
    return h.hexdigest()


def _keys(path: Path, options: dict) -> tuple[str, str, dict]:
    """(prefix naming file + options, suffix naming its current state, the facts hashed)."""
    resolved = path.resolve()
    st = resolved.stat()
    facts = {"format": CACHE_FORMAT, "path": str(resolved), "options": options}
    prefix = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]
    state = {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             "ctime_ns": st.st_ctime_ns, "sample": sampled_digest(resolved, st.st_size),
             "numpy": np.lib.NumpyVersion(np.__version__).major}
    suffix = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:24]
    return prefix, suffix, {**facts, **state}


def read_table_cached(path: Path, *, target, features, missing: str, delimiter: str,
                      layout: str = "C", progress=None) -> tuple[Table, str]:
    """:func:`neurocli.data.read_table` through the cache. Returns ``(table, sha256 of the file)``.

    Errors are those of ``read_table`` (nothing is cached for a file that fails validation).
    ``progress(bytes, rows)`` as read_table's; a hit tells it the whole file at once; a hit's
    arrays are read-only mappings of the entry's files (:func:`neurocli.data.prepare` copies
    X once, as it orders the rows).
    A miss writes its entry (:class:`EntryWriter`) before it returns.
    """
    path = Path(path)
    options = {"target": target, "features": features, "missing": missing, "delimiter": delimiter,
               "layout": layout}
    if not enabled():
        return read_uncached(path, **options, progress=progress)
    try:
        prefix, suffix, facts = _keys(path, options)
    except OSError:  # missing or unreadable: let read_table name the problem
        return read_uncached(path, **options, progress=progress)
    root = cache_dir()
    entry = root / f"{prefix}-{suffix}"
    hit = _load(entry, path)
    if hit is not None:
        if progress is not None:
            progress(facts["size"], len(hit[0].rows) + hit[0].n_dropped)
        return hit
    table = read_table(path, **options, progress=progress)
    sha = table.sha256 or file_sha256(path)
    if _keys(path, options)[1] == suffix:  # the file did not change while we read it
        writer = EntryWriter(root, entry, prefix, table, sha, facts)
        writer.run()
        _warn_if_failed(writer)
    return table, sha


def read_uncached(path: Path, **options) -> tuple[Table, str]:
    """:func:`neurocli.data.read_table`, not through the cache: ``(table, sha256 of the file)``."""
    table = read_table(path, **options)
    return table, table.sha256 or file_sha256(path)


MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14


def _mapped(path: Path) -> np.ndarray:
    """A .npy file mapped, as a read-only plain array (numpy.memmap would make every result of
    it one too). The pages the kernel has cached are mapped in one call, not a fault each
    (where it cannot, on first use); each is read once, by what uses it: training gathers X
    into memory of its own, handing the mapped pages back as it goes
    (:func:`neurocli.data.prepare`)."""
    mapped = np.load(path, mmap_mode="c")
    with contextlib.suppress(OSError, ValueError, AttributeError):
        mapped._mmap.madvise(MADV_POPULATE_READ)
    array = np.asarray(mapped)
    array.flags.writeable = False
    return array


def _load(entry: Path, path: Path) -> tuple[Table, str] | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
        X = _mapped(entry / "X.npy")
        if meta.get("layout") == "F":  # stored as X^T, row by row: X's columns, each contiguous
            X = X.T
        y = _mapped(entry / "y.npy") if meta["target"] is not None else None
        rows = _mapped(entry / "rows.npy")
        n = meta["n_rows"]
        if (X.shape != (n, len(meta["feature_names"])) or rows.shape != (n,) or X.dtype != np.float64
                or (y is not None and (y.shape != (n,) or y.dtype != np.float64))):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    table = Table(path=path, feature_names=list(meta["feature_names"]), target=meta["target"], X=X, y=y,
                  rows=rows, n_dropped=int(meta["n_dropped"]), delimiter=meta["facts"]["options"]["delimiter"])
    return table, meta["sha256"]


class _Writer(threading.Thread):
    """Writes one entry (:func:`_write_entry`: whole or not at all), its files from
    :meth:`_fill`; then :meth:`_finished`: on a thread of its own once started, or in the
    caller's by :meth:`run`. Not a daemon: a process that ends normally waits for its entry. Failing to write (a read-only or full disk, anything) only
    costs the next run a parse: ``failure`` names it, for :func:`finish_writes` to tell."""

    def __init__(self, name: str, root: Path, entry: Path, prefix: str, sha: str, facts: dict):
        super().__init__(name=name)
        self.root, self.entry, self.prefix, self.sha, self.facts = root, entry, prefix, sha, facts
        self.failure: str | None = None
        _pending.append(self)

    def run(self) -> None:
        try:
            _write_entry(self.root, self.entry, self.prefix, self._fill)
        except Exception as exc:  # a cache that cannot be written only costs the next run a parse
            self.failure = _write_failure(self.root, exc)
        finally:
            self._finished()

    def _fill(self, tmp: Path) -> None:
        raise NotImplementedError

    def _finished(self) -> None:
        """The write is over (written or not): let go of what it wrote from."""


class EntryWriter(_Writer):
    """Writes one table's entry: X (column-major X a column at a time, with no copy of the
    whole), then y, the row numbers and meta.json."""

    def __init__(self, root: Path, entry: Path, prefix: str, table: Table, sha: str, facts: dict):
        super().__init__("neurocli-cache-write", root, entry, prefix, sha, facts)
        self.X, self.y, self.rows = table.X, table.y, table.rows
        self.feature_names, self.target, self.n_dropped = list(table.feature_names), table.target, table.n_dropped

    def _finished(self) -> None:
        self.X = self.y = self.rows = None

    def _fill(self, tmp: Path) -> None:
        column_major = is_column_major(self.X)
        self._save_X(tmp / "X.npy", column_major)
        if self.y is not None:
            np.save(tmp / "y.npy", self.y, allow_pickle=False)
        np.save(tmp / "rows.npy", self.rows, allow_pickle=False)
        meta = {"feature_names": self.feature_names, "target": self.target, "n_rows": int(self.X.shape[0]),
                "n_dropped": int(self.n_dropped), "sha256": self.sha, "created": time.time(),
                "facts": self.facts, "layout": "F" if column_major else "C"}
        (tmp / "meta.json").write_text(json.dumps(meta))

    def _save_X(self, path: Path, column_major: bool) -> None:
        """X as a .npy file: row-major X as it is; column-major X as X^T, one column at a time
        straight from X's memory."""
        if not column_major:
            np.save(path, np.ascontiguousarray(self.X), allow_pickle=False)
            return
        n, d = self.X.shape
        with open(path, "wb") as fh:
            header = {"descr": np.lib.format.dtype_to_descr(self.X.dtype), "fortran_order": False, "shape": (d, n)}
            np.lib.format.write_array_header_1_0(fh, header)
            for j in range(d):
                fh.write(memoryview(np.ascontiguousarray(self.X[:, j])).cast("B"))


_pending: list[_Writer] = []  # the entries this process is writing, not yet told of
atexit.register(lambda: finish_writes())  # a command that loaded data but did not train waits and tells too


def _write_entry(root: Path, entry: Path, prefix: str, fill: Callable[[Path], None]) -> None:
    """An entry written whole or not at all: ``fill(folder)`` writes its files into a
    temporary folder, renamed to ``entry`` when complete; older entries of ``prefix`` (the
    same file and options, a damaged one of this name) go first. A failure or a kill leaves no
    entry."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        fill(tmp)
        for old in root.glob(f"{prefix}-*"):  # older entries, and a damaged one of this name
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError as exc:  # another process put the same entry in place since: it stands
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not entry.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_failure(root: Path, exc: Exception) -> str:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
    return f"cannot write the data cache in {root} ({reason}); the next run parses the data again"


def finish_writes() -> None:
    """Wait for the entries this process writes in the background; a failure is a warning
    (once: the table's and the prepared data's entries fail alike)."""
    told = set()
    while _pending:
        writer = _pending.pop(0)
        if writer.is_alive() or writer.ident is not None:
            writer.join()
        if writer.failure not in told:
            told.add(writer.failure)
            _warn_if_failed(writer)


def _warn_if_failed(writer: _Writer) -> None:
    if writer in _pending:
        _pending.remove(writer)
    if writer.failure:
        warnings.warn(writer.failure, RuntimeWarning, stacklevel=3)


def _entries(root: Path, *, leftovers: bool = False) -> list[Path]:
    """The cache's entry folders (and, with ``leftovers``, interrupted writes), or an error
    naming the folder when it cannot be listed."""
    if not root.is_dir():
        return []
    try:
        return [d for d in sorted(root.iterdir()) if d.is_dir() and
                (_ENTRY_NAME.fullmatch(d.name) or (leftovers and d.name.startswith(".tmp-")))]
    except OSError as exc:
        raise OutputError(f"cannot read the cache folder: {exc.strerror or exc}", path=root) from None


def _size(d: Path) -> int:
    try:
        return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    except OSError:  # an entry we cannot look into counts as empty; clear says if it stays
        return 0


def info() -> dict:
    """What the cache holds: its folder, and per entry the data file, its kind ("table": the
    file as read; "prepared": a training run's data as prepared), rows and bytes."""
    root = cache_dir()
    entries = []
    for d in _entries(root):
        try:
            meta = json.loads((d / "meta.json").read_text())
            options = meta["facts"]["options"]
            entries.append({"file": meta["facts"]["path"], "kind": "prepared" if "prepared" in options else "table",
                            "rows": meta["n_rows"], "bytes": _size(d), "options": options, "created": meta["created"]})
        except (OSError, ValueError, KeyError, TypeError):
            entries.append({"file": None, "kind": None, "rows": None, "bytes": _size(d), "options": None,
                            "created": None})
    return {"dir": str(root), "enabled": enabled(), "entries": entries,
            "bytes": sum(e["bytes"] for e in entries)}


def clear() -> int:
    """Delete every entry (and leftovers of interrupted writes); returns the bytes freed.
    An entry that cannot be deleted is an error naming it (the others are gone)."""
    freed, failed = 0, []
    for d in _entries(cache_dir(), leftovers=True):
        size = _size(d)
        try:
            shutil.rmtree(d)
            freed += size
        except OSError as exc:
            failed.append((d, exc))
    if failed:
        d, exc = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise OutputError(f"cannot delete this cache entry{more}: {exc.strerror or exc}", path=d)
    return freed


# --- the prepared data of a training run ---

def prepared_cached(path: Path, read_options: dict, prep_options: dict, read: Callable[[], tuple[Table, str]],
                    prepare: Callable[[Table], Prepared]) -> tuple[Prepared, str]:
    """The prepared data of one file (split, standardized, cast: ``prepare(read()[0])``)
    through the cache. Returns ``(prepared, sha256 of the file)``.

    Its entry is keyed as a table's is (the file's state, the read options) and by the
    preparation's options; it holds the prepared arrays, so a hit maps them and nothing is
    read, split or standardized again: the checks of the preparation passed on these very
    values. A miss reads and prepares, then writes the entry on a thread of its own while
    the run trains (:func:`finish_writes` waits for it), from arrays no one changes.
    """
    path = Path(path)
    if not enabled():
        table, sha = read()
        return prepare(table), sha
    try:
        prefix, suffix, facts = _keys(path, {**read_options, "prepared": prep_options})
    except OSError:  # missing or unreadable: let the reader name the problem
        table, sha = read()
        return prepare(table), sha
    root = cache_dir()
    entry = root / f"{prefix}-{suffix}"
    hit = _load_prepared(entry, path)
    if hit is not None:
        return hit
    table, sha = read()
    prepared = prepare(table)
    if _keys(path, {**read_options, "prepared": prep_options})[1] == suffix:
        PreparedWriter(root, entry, prefix, prepared, sha, facts).start()
    return prepared, sha


def _load_prepared(entry: Path, path: Path) -> tuple[Prepared, str] | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
        X = _mapped(entry / "X.npy")
        if meta["layout"] == "F":  # stored as X^T
            X = X.T
        arrays = {name: _mapped(entry / f"{name}.npy") for name in ("y_train", "y_val", "train_rows", "val_rows",
                                                                    "rows")}
        n_train, n_val, d = meta["n_train"], meta["n_val"], len(meta["feature_names"])
        dtype = np.dtype(meta["dtype"])
        if (X.shape != (n_train + n_val, d) or X.dtype != dtype or arrays["y_train"].shape != (n_train,)
                or arrays["y_val"].shape != (n_val,) or arrays["train_rows"].shape != (n_train,)
                or arrays["val_rows"].shape != (n_val,) or arrays["rows"].shape != (meta["n_rows"],)):
            return None
        standardization = None
        if meta["mean"] is not None:
            standardization = Standardization(mean=np.array(meta["mean"], dtype=np.float64),
                                              scale=np.array(meta["scale"], dtype=np.float64))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    table = Table(path=path, feature_names=list(meta["feature_names"]), target=meta["target"], X=None, y=None,
                  rows=arrays["rows"], n_dropped=int(meta["n_dropped"]), delimiter=meta["facts"]["options"]["delimiter"],
                  sha256=meta["sha256"])
    prepared = Prepared(table=table, X_train=X[:n_train], y_train=arrays["y_train"], X_val=X[n_train:],
                        y_val=arrays["y_val"], train_rows=arrays["train_rows"], val_rows=arrays["val_rows"],
                        standardization=standardization, X_all=X)
    return prepared, meta["sha256"]


class PreparedWriter(_Writer):
    """Writes one entry of prepared data: X training rows first, the targets, the rows'
    indices and the standardization, from arrays the run only reads."""

    def __init__(self, root: Path, entry: Path, prefix: str, prepared: Prepared, sha: str, facts: dict):
        super().__init__("neurocli-cache-write-prepared", root, entry, prefix, sha, facts)
        self.prepared = prepared

    def _finished(self) -> None:
        self.prepared = None

    def _fill(self, tmp: Path) -> None:
        p = self.prepared
        X = p.X_all if p.X_all is not None else np.concatenate([p.X_train, p.X_val])
        column_major = is_column_major(X)
        np.save(tmp / "X.npy", X.T if column_major else np.ascontiguousarray(X), allow_pickle=False)
        for name in ("y_train", "y_val", "train_rows", "val_rows"):
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(p, name)), allow_pickle=False)
        np.save(tmp / "rows.npy", np.ascontiguousarray(p.table.rows), allow_pickle=False)
        s = p.standardization
        meta = {"feature_names": list(p.feature_names), "target": p.table.target,
                "n_rows": int(len(p.table.rows)), "n_train": int(p.X_train.shape[0]),
                "n_val": int(p.X_val.shape[0]), "n_dropped": int(p.table.n_dropped), "dtype": X.dtype.name,
                "mean": None if s is None else [float(v) for v in s.mean],
                "scale": None if s is None else [float(v) for v in s.scale],
                "sha256": self.sha, "created": time.time(), "facts": self.facts,
                "layout": "F" if column_major else "C"}
        (tmp / "meta.json").write_text(json.dumps(meta))
