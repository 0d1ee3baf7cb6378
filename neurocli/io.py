"""Files a run leaves behind, every one written atomically (temporary file, fsync, rename).

A run directory holds ``model.json``, ``history.csv``, ``config.yaml`` and, while a run can
still be resumed, ``checkpoint.json``. A crash or a full disk never leaves a half-written
file: the old version stays until the new one is complete.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import math
import os
import platform
import stat
import sys
import tempfile
from pathlib import Path

import yaml

from neurocli import __version__
from neurocli.errors import ModelFileError, NeurocliError, OutputError

JSON_MAX_BYTES = 256 << 20  # model.json, checkpoint.json: about 2 million features' worth
HISTORY_MAX_BYTES = 1 << 30  # history.csv: about 5 million epochs


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    fd = None
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a result file gets the usual mode
        with os.fdopen(fd, "wb") as fh:
            fd = None
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", path=path) from exc
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def check_regular_file(path, kind: str, max_bytes: int, error: type[NeurocliError]) -> None:
    """Refuse, before opening it, a file neurocli reads whole that is not a plain file (a FIFO
    would block, a device never end) or is far larger than any such file neurocli writes."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise error(f"is not a regular file (a FIFO, socket or device); give the {kind} file itself", path=path)
    if st.st_size > max_bytes:
        raise error(f"is {st.st_size:,} bytes, larger than a {kind} file can be "
                    f"({max_bytes / 2**20:g} MiB at most)", path=path)


def write_output(path: Path, text: str, protected: dict[str, Path]) -> None:
    """Write a command's result to ``path``, the user's ``-o``, destroying nothing it does not own.

    ``-`` is standard output. A symlink is written through, atomically, to its target (the
    link stays). A FIFO or a device is written as a stream, never replaced. A path that is one
    of ``protected`` (kind -> path, e.g. the input CSV) is refused.
    """
    if str(path) == "-":
        sys.stdout.write(text)
        return
    target = Path(os.path.realpath(path))
    if target.is_symlink():  # realpath stops on a loop of links
        raise OutputError("is a loop of symlinks; it leads to no file to write", path=path)
    for kind, other in protected.items():
        if target.exists() and Path(other).exists() and os.path.samefile(target, other):
            raise OutputError(f"is the {kind}; refusing to overwrite it: choose another -o", path=path)
    if target.is_dir():
        raise OutputError("is a directory; give a file name for -o", path=path)
    if target.exists() and not stat.S_ISREG(target.stat().st_mode):
        try:
            with open(target, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        except OSError as exc:
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=path) from exc
        return
    atomic_write_text(target, text)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_safe(obj):
    """``obj`` with non-finite floats as None and numpy scalars as Python numbers (strict JSON)."""
    import numpy as np  # here: the config's checks, which import this module, run before numpy loads

    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: Path, data, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(json_safe(data), indent=indent, allow_nan=False) + "\n")


def history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    if history:
        writer = csv.DictWriter(buf, fieldnames=list(history[0]), lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def read_history_text(path: Path) -> tuple[str, list[dict]]:
    """history.csv's text and its records, from one read, exactly as written (floats with repr)."""

    def parse(value: str):
        if value == "":
            return None
        try:
            return int(value)
        except ValueError:
            return float(value)

    if Path(path).exists():
        check_regular_file(path, "history", HISTORY_MAX_BYTES, ModelFileError)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            text = fh.read()
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = []
        for row in reader:
            if None in row or None in row.values():  # more fields than the header, or fewer
                fields = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
                raise ModelFileError(f"history file is damaged: line {reader.line_num} has {fields} fields but "
                                     f"the header has {len(reader.fieldnames)}", path=path)
            rows.append({k: parse(v) for k, v in row.items()})
        return text, rows
    except FileNotFoundError as exc:
        raise ModelFileError("history file not found: the run cannot be resumed without it", path=path) from exc
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"history file is damaged: {exc}", path=path) from exc


def history_sha256(text: str, epochs: int) -> str:
    """SHA-256 of the header and the first ``epochs`` rows of a history.csv text: what a
    checkpoint of that many epochs was saved beside."""
    lines = text.splitlines(keepends=True)[:1 + epochs] if epochs else []
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


RUN_FILES = ("model.json", "history.csv", "config.yaml", "checkpoint.json")


def remove_leftovers(directory: Path) -> None:
    """Temporary files of writes that a kill cut short (the files they would replace are intact)."""
    for name in RUN_FILES:
        for tmp in Path(directory).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def lock_run_dir(directory: Path):
    """Hold the run directory for this process; a second process asking for it is refused.

    Returns the open lock file (the lock lasts as long as it stays open: the kernel drops it
    when the process ends, however it ends).
    """
    path = Path(directory) / ".lock"
    try:
        fh = open(path, "a+")
    except OSError as exc:
        raise OutputError(f"cannot lock the run directory: {exc.strerror or exc}", path=directory) from exc
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise OutputError("the run directory is in use by another neurocli train; wait for it to end or stop it",
                          path=directory) from None
    return fh


def create_run_dir(requested: Path) -> Path:
    """Claim a new, empty run directory: ``requested`` or, if that exists, ``requested-2``, ``-3``...

    ``mkdir`` is atomic, so two runs never share a directory and no earlier run is touched.
    """
    requested = Path(requested)
    try:
        requested.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder: {exc.strerror or exc}", path=requested.parent) from exc
    for i in range(1, 10_000):
        candidate = requested if i == 1 else requested.with_name(f"{requested.name}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot create the run directory: {exc.strerror or exc}", path=candidate) from exc
    raise OutputError("too many existing runs with this name", path=requested)


def check_writable(directory: Path) -> None:
    """Fail early (before training) if files cannot be created in ``directory``."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".probe.", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputError(f"the run directory is not writable: {exc.strerror or exc}", path=directory) from exc


def package_versions() -> dict:
    import numpy
    import pandas
    import pydantic

    return {
        "neurocli": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "pydantic": pydantic.__version__,
    }


def write_config(path: Path, resolved: dict) -> None:
    atomic_write_text(path, yaml.safe_dump(resolved, sort_keys=False))


def read_json_file(path: Path, kind: str) -> dict:
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{kind} file not found", path=path)
    if path.is_dir():
        raise ModelFileError(f"is a directory, not a {kind} file", path=path)
    check_regular_file(path, kind, JSON_MAX_BYTES, ModelFileError)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFileError(f"not a {kind} file: not UTF-8 text", path=path) from exc
    except OSError as exc:
        raise ModelFileError(f"cannot read the {kind} file: {exc.strerror}", path=path) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(
            f"not a valid {kind} file: {exc.msg} (truncated or not JSON?)",
            path=path, where=f"line {exc.lineno}, column {exc.colno}",
        ) from exc
    except RecursionError:
        raise ModelFileError(f"not a {kind} file: nested far deeper than any neurocli writes", path=path) from None
    except ValueError:  # the one other ValueError json raises: an integer too long to convert
        raise ModelFileError(f"not a {kind} file: a number of more than {sys.get_int_max_str_digits()} digits",
                             path=path) from None
    if not isinstance(data, dict):
        raise ModelFileError(f"not a {kind} file: expected a JSON object", path=path, where="line 1, column 1")
    return data
