"""The steps every command shares: config -> table -> prepared data -> initial parameters,
the whole training run (claim a run directory, descend, save), and applying a saved model
to a CSV, with no printing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from neurocli import io as nio
from neurocli import parquetread, savedfiles, sources, streamprep
from neurocli.cache import cache_dir, finish_writes, prepared_cached
from neurocli.config import LoadedConfig, check_data_path, load_config
from neurocli.data import Prepared, Standardization, Table, file_sha256, prepare, read_header, read_table
from neurocli.errors import ConfigError, DataError, ModelFileError, NeurocliError, OutputError
from neurocli.engines.stream import StreamEngine
from neurocli.neuron import predict as neuron_predict
from neurocli.train import StopReason, Trainer, TrainState, engine_options, evaluate, initial_parameters


@dataclass
class Inputs:
    loaded: LoadedConfig
    prepared: Prepared
    w0: np.ndarray
    b0: np.floating
    load_s: float
    data_sha256: str | None = None  # of the data file, served by the table cache when it hits


Progress = Callable[[str, int, int, int], None]  # (phase, bytes done, bytes in all, rows so far)


def load_inputs(config_path: Path | LoadedConfig, overrides: list[str] | None = None,
                loaded: LoadedConfig | None = None, progress: Progress | None = None) -> Inputs:
    """Read and validate the config and its data; compute the initial parameters.

    ``config_path`` may be a config already loaded (a dict's, from :mod:`neurocli.api`).

    ``progress(phase, done, total, rows)`` is told how the reading goes: "reading", bytes of
    the data files read of all their bytes, and data rows so far, piece by piece; then, on the
    stream engine, "preparing", bytes of the prepared files done of all.
    """
    t0 = time.perf_counter()
    if loaded is None and isinstance(config_path, LoadedConfig):
        loaded = config_path
    loaded = loaded or load_config(config_path, overrides)
    cfg = loaded.config
    files = _data_files(loaded)
    # the stream and dask engines: read and prepared part by part, never held whole here
    read = _in_memory if cfg.engine.kind == "memory" else _streamed
    try:
        prepared, data_sha256 = read(loaded, files, progress)
    except DataError as exc:  # a problem in a fetched copy is the object's: name its URL
        raise sources.named_as_fetched(exc) from None
    prepared = _small_ones_column_major(prepared, cfg)
    table = prepared.table
    n_features = len(table.feature_names)
    wi = cfg.model.weights_init
    if isinstance(wi, list) and len(wi) != n_features:
        raise loaded.error(("model", "weights_init"),
                           f"model.weights_init has {len(wi)} number{'s' if len(wi) != 1 else ''} but there "
                           f"{'are' if n_features != 1 else 'is'} {n_features} feature{'s' if n_features != 1 else ''} "
                           f"({', '.join(table.feature_names)})")
    bs = cfg.training.batch_size
    n_train = prepared.X_train.shape[0]
    if bs is not None and bs > n_train:
        raise loaded.error(("training", "batch_size"),
                           f"training.batch_size is {bs} but the training split has only {n_train} rows")
    _check_representable(loaded, cfg)
    w0, b0 = initial_parameters(cfg.model, n_features, prepared.y_train, cfg.seed, cfg.training.dtype)
    return Inputs(loaded, prepared, w0, b0, time.perf_counter() - t0, data_sha256)


def _layout(loaded: LoadedConfig, files: list[Path]) -> str:
    """How the reader lays X out: mini-batches gather rows, row-major; a full batch as
    :func:`neurocli.engines.compiled.full_batch_layout` has it (column-major, the kernels'
    layout, unless the compiled row kernel reads wide data), the width asked of the first
    file's header only where the files may hold enough data to use the compiled path."""
    cfg = loaded.config
    if cfg.training.batch_size is not None:
        return "C"
    from neurocli.engines import compiled

    # a value takes 2 bytes of a CSV at least ("0,"), 8 of X: smaller files never compile
    big = sum(_size(f) for f in files) * 4 >= compiled.FAST_MIN_BYTES
    if not (big and compiled.may_run()):
        return "F"
    d = cfg.data
    if d.features is not None:
        n_features = len(d.features)
    else:
        names = sources.column_names(files[0], d.delimiter)
        n_features = len(set(names) - {d.target} - set(d.exclude or ()))
    return compiled.full_batch_layout(n_features, cfg.training.dtype)


def _small_ones_column_major(p: Prepared, cfg) -> Prepared:
    """A full-batch run's training or validation X too small for the compiled path, copied
    column-major where :func:`_layout` read it row-major for the row kernel (the file's size
    only bounds X's): the numpy reference then reads it as without the extra, the same bits
    (the standardization's do not depend on the layout). Each copy is under
    :data:`neurocli.engines.compiled.FAST_MIN_BYTES`."""
    if cfg.training.batch_size is not None:
        return p
    from neurocli.engines import compiled

    def laid_out(X):
        small = X.nbytes < compiled.FAST_MIN_BYTES and X.ndim == 2 and X.shape[1] > 1
        return np.asfortranarray(X) if small and X.flags.c_contiguous else X

    X_train, X_val = laid_out(p.X_train), laid_out(p.X_val)
    if X_train is p.X_train and X_val is p.X_val:
        return p
    return dataclasses.replace(p, X_train=X_train, X_val=X_val)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # said by the reader
        return 0


def _in_memory(loaded: LoadedConfig, files: list[Path], progress: Progress | None) -> tuple[Prepared, str]:
    """The data set read into memory and prepared there."""
    cfg = loaded.config
    read_options = dict(target=cfg.data.target, features=cfg.data.features, missing=cfg.data.missing,
                        delimiter=cfg.data.delimiter, layout=_layout(loaded, files))
    prep_options = dict(validation_fraction=cfg.data.validation_fraction, standardize=cfg.data.standardize,
                        seed=cfg.seed, dtype=cfg.training.dtype)

    def read() -> tuple[Table, str]:
        # one file: its prepared data is what is cached (written while the run trains), so the
        # load waits on no entry's writing; a data set of many files: each file's table
        return sources.read_data_set(loaded.data_path, files, **read_options, progress=_counted(files, progress),
                                     cache_table=len(files) > 1)

    def prepared(table: Table) -> Prepared:
        return prepare(table, **prep_options, locate=loaded.error)

    if len(files) == 1:  # a file's prepared data is cached too: a second run maps it, as is
        return prepared_cached(files[0], read_options, prep_options, read, prepared)
    table, sha = read()
    return prepared(table), sha


def _streamed(loaded: LoadedConfig, files: list[Path], progress: Progress | None) -> tuple[Prepared, str]:
    """The data set read part by part into files under the cache folder and prepared there
    (:mod:`neurocli.streamprep`): the stream engine's memory stays a few parts."""
    cfg = loaded.config
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot make the cache folder for the stream engine's files: {exc.strerror or exc}",
                          path=folder) from None
    out = streamprep.RowFiles(folder, cfg.seed, cfg.data.validation_fraction)
    table, sha = sources.stream_data_set(
        loaded.data_path, files, out, target=cfg.data.target, features=cfg.data.features,
        missing=cfg.data.missing, delimiter=cfg.data.delimiter, progress=_counted(files, progress))
    prepared = streamprep.prepare(table, out, standardize=cfg.data.standardize, dtype=cfg.training.dtype,
                                  layout=_layout(loaded, files), validation_fraction=cfg.data.validation_fraction,
                                  locate=loaded.error, progress=progress)
    return prepared, sha


def _counted(files: list[Path], progress: Progress | None):
    """``progress`` as the readers call it (bytes and rows of each piece), as running totals."""
    if progress is None:
        return None
    total = sum(f.stat().st_size for f in files)
    done = [0, 0]

    def advance(nbytes: int, rows: int) -> None:
        done[0] += nbytes
        done[1] += rows
        progress("reading", min(done[0], total), total, done[1])

    progress("reading", 0, total, 0)
    return advance


def _data_files(loaded: LoadedConfig) -> list[Path]:
    """data.path's files (:func:`neurocli.sources.data_files`), its problems located at data.path."""
    if loaded.data_url:
        try:
            return sources.fetched(loaded.data_url, cache_dir() / "remote")
        except DataError as exc:
            raise loaded.error(("data", "path"), f"data.path: {exc.located()}") from None
    check_data_path(loaded)
    try:
        return sources.data_files(loaded.data_path)
    except DataError as exc:
        raise loaded.error(("data", "path"), f"data.path: {exc.located()}") from None


def _check_representable(loaded: LoadedConfig, cfg) -> None:
    """Initial parameters given as numbers must fit the training dtype (float32 ends near 3.4e38)."""
    largest = float(np.finfo(cfg.training.dtype).max)
    wi, bi = cfg.model.weights_init, cfg.model.bias_init
    for i, v in enumerate(wi if isinstance(wi, list) else []):
        if not abs(v) <= largest:
            raise loaded.error(("model", "weights_init", i), f"model.weights_init[{i}] = {v:g} does not fit "
                               f"training.dtype {cfg.training.dtype} (at most {largest:.3g} in size)")
    if not isinstance(bi, str) and not abs(bi) <= largest:
        raise loaded.error(("model", "bias_init"), f"model.bias_init = {bi:g} does not fit training.dtype "
                           f"{cfg.training.dtype} (at most {largest:.3g} in size)")


def _changed_keys(run_config: Path, resolved: dict) -> list[str]:
    """Dotted keys whose values differ between a run's config.yaml and ``resolved``."""
    try:
        old = yaml.safe_load(run_config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    changed: list[str] = []

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), prefix + [str(k)])
        elif a != b and prefix[:1] != ["output"] and prefix != ["training", "epochs"]:
            changed.append(".".join(prefix))

    walk(old, resolved, [])
    return changed


def config_fingerprint(resolved: dict) -> str:
    """Hash of everything that decides a run's numbers except the epoch budget and output dir."""
    d = json.loads(json.dumps(resolved))
    d["training"].pop("epochs", None)
    d["training"].pop("log_every", None)
    d.pop("output", None)
    d.pop("engine", None)  # every engine gives the same bits: a run may resume on another
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


class TrainRun:
    """One training run, fresh or resumed, writing into its run directory.

    ``run(on_epoch)`` calls ``on_epoch(record)`` after every epoch and returns the summary
    dict (the ``--json`` summary). The run's files are saved at the start, every
    ``output.checkpoint_interval`` seconds of training, when interrupted and at the end, so
    a run killed at any moment can be resumed with ``--resume`` from its last save.

    Why a save is never half a save: each file is replaced atomically, in the order
    history.csv, config.yaml, model.json, checkpoint.json. The checkpoint is written last and
    is what the run is: it names its epoch and the SHA-256 of the history's rows up to it. A
    kill before it leaves the previous checkpoint, beside a history that may run ahead of it
    (history only grows, row by row the same), and a resume keeps the rows the checkpoint
    names. The directory is locked while a run holds it.
    """

    def __init__(self, inputs: Inputs, run_dir: Path, state: TrainState | None = None, data_sha: str | None = None):
        self.inputs = inputs
        self.run_dir = run_dir
        self.fresh = state is None
        p = inputs.prepared
        cfg = inputs.loaded.config
        self.state = state or TrainState(w=inputs.w0.copy(), b=inputs.b0)
        self.kernel = _warmed_kernel(p, cfg)
        engine = _engine(inputs)
        self.trainer = Trainer(p.X_train, p.y_train, p.X_val, p.y_val, cfg.training, cfg.seed, self.state,
                               engine=engine,
                               standardized=p.standardization is not None,
                               bias_from_target_mean=cfg.model.bias_init == "target_mean",
                               feature_names=list(p.feature_names))
        self.data_sha = data_sha or inputs.data_sha256 or file_sha256(inputs.loaded.data_path)
        self.resolved = inputs.loaded.resolved()
        self.train_s = 0.0
        self.saved_progress = False  # a save after the first epoch, or the last one
        self._lock = nio.lock_run_dir(run_dir)
        nio.remove_leftovers(run_dir)
        self._interval = inputs.loaded.config.output.checkpoint_interval
        self._last_save = time.monotonic()
        self.trainer.at_epoch_end = self._checkpoint_when_due

    @classmethod
    def start(cls, inputs: Inputs) -> "TrainRun":
        """A new run in a new run directory: output.dir, or output.dir-2, -3, ... if it exists."""
        requested = inputs.loaded.expanded(("output", "dir"), inputs.loaded.config.output.dir)
        made = next((p for p in reversed([requested, *requested.parents]) if not p.exists()), None)
        try:
            run_dir = nio.create_run_dir(requested)
        except NeurocliError as exc:
            raise inputs.loaded.error(("output", "dir"), f"output.dir: {exc.located()}") from exc
        try:
            nio.check_writable(run_dir)
            return cls(inputs, run_dir)
        except BaseException:  # nothing was saved yet: the new folder goes, with the parents made for it
            shutil.rmtree(made if made is not None and made != requested else run_dir, ignore_errors=True)
            raise

    @contextlib.contextmanager
    def discarded_unless_saved(self):
        """A new run that fails before it saved a checkpoint (disk full, a bug) leaves no folder behind."""
        try:
            yield self
        except KeyboardInterrupt:  # an interrupt is not a failure: the folder stays, as a stop at a step leaves it
            raise
        except BaseException:
            if self.fresh and not self.saved_progress:
                self._lock.close()
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    @classmethod
    def resume(cls, inputs: Inputs, run_dir: Path) -> "TrainRun":
        ckpt_path = Path(run_dir) / "checkpoint.json"
        if not Path(run_dir).exists():
            raise ModelFileError("run directory not found", path=run_dir)
        if not Path(run_dir).is_dir():
            raise ModelFileError("is a file, not a run directory (give the folder that holds checkpoint.json)",
                                 path=run_dir)
        if not ckpt_path.exists():
            raise ModelFileError("no checkpoint: the run was stopped before its first save; start it again",
                                 path=ckpt_path)
        ckpt = savedfiles.load_checkpoint(ckpt_path)
        resolved = inputs.loaded.resolved()
        if ckpt.config_fingerprint != config_fingerprint(resolved):
            changed = _changed_keys(Path(run_dir) / "config.yaml", resolved)
            if not changed:
                raise ModelFileError("checkpoint is damaged or from another run: its config fingerprint is not "
                                     "the one of the run's config.yaml", path=ckpt_path)
            raise ConfigError(
                f"the config (with any --set) differs from the run's in {', '.join(changed)}; only "
                f"training.epochs may change on resume: resume with {Path(run_dir) / 'config.yaml'} and no other --set",
                path=inputs.loaded.path,
            )
        sha = inputs.data_sha256 or file_sha256(inputs.loaded.data_path)
        if ckpt.data_sha256 != sha:
            raise ConfigError(f"the data file changed since the run started (its SHA-256 is not the one in "
                              f"{ckpt_path.name}); cannot resume it bit-identically", path=inputs.loaded.data_path)
        history = _history_of(Path(run_dir), ckpt, ckpt_path)
        state = TrainState.from_dict(ckpt.state.model_dump(), history)
        _check_state_fits(state, inputs, ckpt_path)
        stopped = ckpt.stopped
        if stopped not in (StopReason.INTERRUPTED, StopReason.COMPLETED):
            raise ModelFileError(
                f"nothing to resume: the run ended ({stopped}) after {state.epoch} epochs; start a new run",
                path=ckpt_path,
            )
        _check_epochs_reach(state, inputs.loaded)
        if stopped == StopReason.COMPLETED and state.epoch >= inputs.loaded.config.training.epochs:
            raise ModelFileError(
                f"nothing to resume: the run completed all {state.epoch} epochs; to continue it, raise "
                f"training.epochs (e.g. --set training.epochs={2 * state.epoch})",
                path=ckpt_path,
            )
        nio.check_writable(Path(run_dir))
        return cls(inputs, Path(run_dir), state=state, data_sha=sha)

    def _checkpoint_when_due(self) -> None:
        if time.monotonic() - self._last_save >= self._interval:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Save the run as it stands, resumable (between epochs, or before the first)."""
        summary = self.summary()
        summary["stopped"] = StopReason.INTERRUPTED
        self.save(summary)

    def run(self, on_epoch: Callable | None = None) -> dict:
        try:
            if self.fresh:
                self.checkpoint()  # a run killed before its first periodic save resumes from epoch 0
            t0 = time.perf_counter()
            try:
                for rec in self.trainer.run():
                    if on_epoch is not None:
                        on_epoch(rec)
            except KeyboardInterrupt:  # a second Ctrl-C lands here only if the handler re-raised
                self.trainer.stopped = StopReason.INTERRUPTED
            self.train_s += time.perf_counter() - t0
            summary = self.summary()
            self.save(summary)
            finish_writes()  # the data's cache entry, written while the run trained
            return summary
        finally:
            self._lock.close()  # the run is over, however it ended: another process may resume it now

    def summary(self) -> dict:
        p, st = self.inputs.prepared, self.state
        tr = evaluate(p.X_train, p.y_train, st.w, st.b)
        va = evaluate(p.X_val, p.y_val, st.w, st.b)
        w_std = st.w.astype(np.float64)
        b_std = float(st.b)
        if p.standardization is not None:
            w_orig, b_orig = p.standardization.to_original_units(w_std, b_std)
        else:
            w_orig, b_orig = w_std, b_std
        return {
            "loss": tr.get("mse"), "rmse": tr.get("rmse"), "mae": tr.get("mae"), "r2": tr.get("r2"),
            "val_loss": va.get("mse"), "val_rmse": va.get("rmse"), "val_mae": va.get("mae"), "val_r2": va.get("r2"),
            "epochs": st.epoch,
            "stopped": self.trainer.stopped,
            "message": self.trainer.message,
            "warning": self.trainer.warning,
            "weights": dict(zip(p.feature_names, map(float, w_orig))),
            "bias": float(b_orig),
            "weights_standardized": [float(v) for v in w_std],
            "bias_standardized": b_std,
            "standardized": p.standardization is not None,
            "n_train": int(p.X_train.shape[0]),
            "n_val": int(p.X_val.shape[0]),
            "rows_dropped": p.table.n_dropped,
            "run_dir": str(self.run_dir),
            "kernel": self.kernel,
            "timing": {"load_s": round(self.inputs.load_s, 4), "train_s": round(self.train_s, 4)},
        }

    def save(self, summary: dict) -> None:
        p, st = self.inputs.prepared, self.state
        cfg = self.inputs.loaded.config
        d = self.run_dir
        model = {
            "format": savedfiles.MODEL_FORMAT,
            "features": list(p.feature_names),
            "target": p.table.target,
            "weights": summary["weights"],
            "bias": summary["bias"],
            "weights_standardized": summary["weights_standardized"],
            "bias_standardized": summary["bias_standardized"],
            "standardization": None if p.standardization is None else p.standardization.to_dict(),
            "dtype": cfg.training.dtype,
            "metrics": {k: summary[k] for k in ("loss", "rmse", "mae", "r2", "val_loss", "val_rmse", "val_mae", "val_r2")},
            "epochs": st.epoch,
            "stopped": summary["stopped"],
            "data": {"path": self.inputs.loaded.data_source, "sha256": self.data_sha,
                     "rows_used": int(len(p.table.rows)), "rows_dropped": p.table.n_dropped},
            "config": self.resolved,
            "versions": nio.package_versions(),
            "trained_at": savedfiles.utc_now(),
            # the epoch of the best monitored loss: the model's parameters when early stopping ended the run
            "best_epoch": st.best_epoch if cfg.training.early_stopping is not None and st.best_epoch > 0 else None,
        }
        history = nio.history_csv(st.history)
        nio.atomic_write_text(d / "history.csv", history)
        nio.write_config(d / "config.yaml", self.resolved)
        nio.write_json(d / "model.json", model)
        nio.write_json(d / "checkpoint.json", {  # last: the save is complete once this is in place
            "format": savedfiles.CHECKPOINT_FORMAT,
            "stopped": summary["stopped"],
            "config_fingerprint": config_fingerprint(self.resolved),
            "data_sha256": self.data_sha,
            "history_sha256": nio.history_sha256(history, st.epoch),
            "state": self.trainer.state.to_dict(),
        }, indent=None)
        self._last_save = time.monotonic()
        self.saved_progress = self.saved_progress or st.epoch > 0 or summary["stopped"] != StopReason.INTERRUPTED


def _warmed_kernel(p: Prepared, cfg) -> str:
    """Which kernels train: "numpy", or "compiled" (the ``fast`` extra), loaded now (compiled
    if not yet on disk, which is announced) so that no epoch waits for them."""
    from neurocli.engines import compiled

    (n, d), dtype = p.X_train.shape, p.X_train.dtype
    kind = compiled.used_by(n, d, dtype, engine_options(cfg.training, cfg.seed, n, dtype)["batch_size"])
    if kind is None:
        return "numpy"
    compiled.warm(dtype, minibatch=kind == "mini-batch", by_rows=kind == "full-batch" and compiled.reads_rows(d, dtype))
    return "compiled"


def _engine(inputs: Inputs):
    """The engine ``engine.kind`` names (None: the trainer's own, in memory); a problem with
    the config it meets is located at its key in the config."""
    p, cfg = inputs.prepared, inputs.loaded.config
    if cfg.engine.kind == "memory":
        return None
    try:
        return _stream_engine(p, cfg) if cfg.engine.kind == "stream" else _dask_engine(p, cfg)
    except ConfigError as exc:
        if exc.path is None and exc.where:  # where is the key: put the file's line and column to it
            raise inputs.loaded.error(tuple(exc.where.split(".")), f"{exc.where}: {exc.message}") from None
        raise


def _stream_engine(p: Prepared, cfg) -> StreamEngine:
    """The stream engine over the training rows as :func:`_streamed` left them (a mapped file)."""
    n = p.X_train.shape[0]
    return StreamEngine(p.X_train, p.y_train, **engine_options(cfg.training, cfg.seed, n, p.X_train.dtype))


def _dask_engine(p: Prepared, cfg):
    """The training set in parts on a dask cluster: the configured scheduler's, or a LocalCluster."""
    from neurocli.engines import dask_engine

    e = cfg.engine
    options = engine_options(cfg.training, cfg.seed, p.X_train.shape[0], p.X_train.dtype)
    client = dask_engine.connect(e.scheduler) if e.scheduler else dask_engine.local_client(e.workers, e.memory_limit)
    try:
        try:
            return dask_engine.DaskEngine(p.X_train, p.y_train, client=client, owns_client=True, **options)
        except Exception as exc:  # dask's own failure while the parts were sent: a worker gone
            if isinstance(exc, NeurocliError):
                raise
            raise ConfigError(f"sending the data ({p.X_train.nbytes / 1e6:,.0f} MB, each part to two workers) to "
                              f"the dask workers failed ({type(exc).__name__}: {exc}); a worker out of memory is "
                              f"the likely cause: raise engine.memory_limit (now {e.memory_limit}) or add workers",
                              where="engine.memory_limit") from None
    except BaseException:
        cluster = None if e.scheduler else client.cluster  # a LocalCluster started here goes too
        client.close()
        if cluster is not None:
            cluster.close()
        raise


def _history_of(run_dir: Path, ckpt: savedfiles.Checkpoint, ckpt_path: Path) -> list[dict]:
    """The history rows the checkpoint was saved with: history.csv may run ahead of it (a kill
    between the two writes), never behind, and its first rows must be the ones it names."""
    path = run_dir / "history.csv"
    text, history = nio.read_history_text(path)
    epoch = ckpt.state.epoch
    if len(history) < epoch or nio.history_sha256(text, epoch) != ckpt.history_sha256:
        raise ModelFileError(f"history.csv does not hold the {epoch} epochs {ckpt_path.name} was saved with",
                             path=path)
    return history[:epoch]


def _check_epochs_reach(state: TrainState, loaded: LoadedConfig) -> None:
    """A resumed run cannot end before where it already is (a model of part of an epoch is no model)."""
    epochs = loaded.config.training.epochs
    least = state.epoch + (1 if state.batch else 0)
    if epochs < least:
        at = f"epoch {state.epoch}" + (f" and {state.batch} batches into the next" if state.batch else "")
        raise loaded.error(("training", "epochs"), f"training.epochs = {epochs} is below where the run already "
                                                   f"is ({at}): give at least {least}")


def _check_state_fits(state: TrainState, inputs: Inputs, ckpt_path: Path) -> None:
    """What a checkpoint's schema cannot know: that its state fits this run's data and config."""
    p, training = inputs.prepared, inputs.loaded.config.training
    n, d = p.X_train.shape
    batch_size = engine_options(training, 0, n, p.X_train.dtype)["batch_size"]
    n_batches = -(-n // batch_size)
    problem = None
    if state.w.shape != (d,):
        problem = f"state.w holds {state.w.size} weights but the data has {d} features"
    elif str(state.w.dtype) != training.dtype:
        problem = f"state.dtype is {state.w.dtype} but the run trains in {training.dtype}"
    elif state.batch >= n_batches or (state.batch and n_batches == 1):
        problem = f"state.batch is {state.batch} but an epoch has {n_batches} batches"
    elif state.batch and state.sums.rows != state.batch * batch_size:
        problem = f"state.partial.rows is {state.sums.rows} but {state.batch} batches of {batch_size} were done"
    if problem:
        raise ModelFileError(f"checkpoint is damaged: {problem}", path=ckpt_path)


@dataclass
class Prediction:
    csv: str  # the input rows plus the prediction column
    column: str  # "prediction", or "prediction_neurocli" when the data already has a "prediction"
    n_missing: int  # rows with an empty or NA feature: their prediction is left empty
    files: list[Path] = field(default_factory=list)  # the data set's files, as read (never to be overwritten)


# a URL, as data.path takes one (s3://, gs://, file://, memory://)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def predict_csv(model_path: Path, data: str | Path, delimiter: str = ",") -> Prediction:
    """Apply a model.json to a data set of its features: the saved standardization first, then the neuron.

    ``data`` is what data.path may be: a CSV or Parquet file, a folder or a glob of them, or a
    URL (fetched once into the cache folder). The result is one CSV of every row in data-set
    order: a CSV's records as written with the header once, a Parquet file's columns as CSV;
    each with the prediction added. Every file must have the first one's columns.
    """
    m = savedfiles.load_model(model_path)
    files = prediction_files(data)
    tables = read_tables(files, m["features"], delimiter)
    pred = _predictions(m, tables)
    _refuse_overflow(pred, tables, model_path)
    n_missing = int(np.isnan(pred).sum())  # a missing feature gives NaN
    if tables[0].texts is None:  # Parquet: its columns as CSV, the prediction added
        text, name = _parquet_csv(files, pred)
    else:
        text, name = _records_csv(tables, pred, delimiter)
    return Prediction(text, name, n_missing, files)


@dataclass
class Evaluation:
    """A saved model's metrics on held-out rows that have its target."""

    metrics: dict  # mse, rmse, mae, r2: neurocli.train.evaluate's on the rows scored
    rows: int  # the rows scored
    rows_skipped: int  # rows left out: an empty or NA feature or target
    target: str
    files: list[Path] = field(default_factory=list)  # the data set's files, as read

    def as_dict(self) -> dict:
        """What ``evaluate --json`` prints: mse, rmse, mae, r2, rows, rows_skipped."""
        return {**self.metrics, "rows": self.rows, "rows_skipped": self.rows_skipped}


def evaluate_model(model_path: Path, data: str | Path, delimiter: str = ",", *,
                   model: dict | None = None) -> Evaluation:
    """A model.json's MSE, RMSE, MAE and R^2 on a data set with its feature and target columns.

    ``data`` is read as :func:`predict_csv` reads it (a CSV or Parquet file, a folder, a glob,
    a URL), with its checks and errors; rows with an empty or NA feature or target are left
    out and counted. The metrics are :func:`neurocli.train.evaluate`'s on the rows kept, at
    the model's parameters, after its saved standardization. ``model``: the model.json
    already loaded from ``model_path``.
    """
    m = model if model is not None else savedfiles.load_model(model_path)
    target = model_target(m, model_path)
    files = prediction_files(data)
    tables = read_tables(files, m["features"], delimiter, target=target, missing="drop", keep_text=False)
    X, y = _stacked([t.X for t in tables]), _stacked([t.y for t in tables])
    pred = predict_rows(m, X)
    _refuse_overflow(pred, tables, model_path)
    _refuse_error_overflow(pred, y, tables, model_path)
    return scored(m, X, y, sum(t.n_dropped for t in tables), data, files)


def model_target(m: dict, model_path: Path) -> str:
    """The target column a model.json was trained on (a model written by hand may not say)."""
    if not m.get("target"):
        raise ModelFileError("the model names no target column (field target); add it to score the model",
                             path=model_path)
    return m["target"]


def scored(m: dict, X: np.ndarray, y: np.ndarray, skipped: int, source: object,
           files: list[Path] | None = None) -> Evaluation:
    """The Evaluation of a loaded model on raw feature rows ``X`` and their targets ``y``
    (rows with a NaN already left out, ``skipped`` of them); ``source`` names the data."""
    if not len(y):
        rows = "its one row has" if skipped == 1 else f"all {skipped} rows have"
        raise DataError(f"no row to score: {rows} an empty or NA feature or target", path=source)
    metrics = evaluate(_standardized(m, X), y, *_parameters(m))
    return Evaluation(metrics, int(len(y)), int(skipped), m["target"], files or [])


STDIN = "-"


@contextlib.contextmanager
def data_or_stdin(data: str | Path):
    """``data`` itself; for ``-``, standard input (CSV) copied into a file under the cache
    folder, removed on the way out. Errors that name the copy name ``<stdin>`` instead, with
    the same lines: the copy holds the bytes as they came."""
    if str(data) != STDIN:
        yield data
        return
    copy = _stdin_copy()
    try:
        yield copy
    except NeurocliError as exc:
        raise _as_stdin(exc, copy) from None
    finally:
        copy.unlink(missing_ok=True)


def _stdin_copy() -> Path:
    if sys.stdin is None or sys.stdin.isatty():
        raise DataError("DATA is -, standard input, but nothing is piped into it: pipe a CSV in "
                        "(cat d.csv | neurocli ...) or give the file", path="<stdin>")
    folder = cache_dir() / "stdin"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="stdin-", suffix=".csv", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot make the copy of standard input: {exc.strerror or exc}", path=folder) from None
    copy = Path(name)
    try:
        with open(fd, "wb") as fh:
            source = getattr(sys.stdin, "buffer", None)
            if source is not None:
                shutil.copyfileobj(source, fh)
            else:  # a text stream without bytes underneath
                fh.write(sys.stdin.read().encode("utf-8"))
        with open(copy, "rb") as fh:
            if fh.read(4) == b"PAR1":
                raise DataError("standard input is read as CSV, and this is a Parquet file: give its path",
                                path="<stdin>")
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    return copy


def _as_stdin(exc: NeurocliError, copy: Path) -> NeurocliError:
    """``exc`` with the copy of standard input named ``<stdin>``, wherever it names it."""
    path = "<stdin>" if exc.path is not None and str(exc.path) == str(copy) else exc.path
    message = exc.message.replace(str(copy), "<stdin>").replace(copy.name, "<stdin>")
    if path == exc.path and message == exc.message:
        return exc
    try:
        return type(exc)(message, path=path, where=exc.where)
    except TypeError:  # an error type of other arguments (several errors in one): as it was
        return exc


def prediction_files(data: str | Path) -> list[Path]:
    """The files of the data set ``data`` names (:func:`neurocli.sources.data_files`); a URL's
    fetched into the cache folder (:func:`neurocli.sources.fetched`)."""
    if _URL.match(str(data)):
        return sources.fetched(str(data), cache_dir() / "remote")
    return sources.data_files(Path(data))


def read_tables(files: list[Path], features: list[str] | None, delimiter: str, *, target: str | None = None,
                missing: str = "keep", keep_text: bool = True) -> list[Table]:
    """Each file's feature columns (and ``target``'s), validated, as predict reads them: by
    default empty and NA cells kept and a CSV's records as written; every file with the
    first one's columns. ``missing="drop"`` leaves out, and counts, the rows with an empty
    or NA cell in those columns (evaluate)."""
    if len(files) > 1:
        _check_same_columns(files, delimiter)
    return [read_table(f, target=target, features=features, missing=missing, delimiter=delimiter,
                       keep_text=keep_text) for f in files]


def _check_same_columns(files: list[Path], delimiter: str) -> None:
    """Every file has the first one's columns: the output has one header for all their rows."""
    first = sources.column_names(files[0], delimiter)
    for f in files[1:]:
        names = sources.column_names(f, delimiter)
        if names != first:
            raise DataError(f"its columns ({', '.join(names)}) are not those of {files[0].name} "
                            f"({', '.join(first)}): every file of a data set has the same columns",
                            path=f, where="row 1" if parquetread.is_parquet(f) else "line 1")


def _predictions(m: dict, tables: list[Table]) -> np.ndarray:
    """The model on every row of the tables, in order: one array, so each row's bits are the
    ones of the same rows in one file."""
    return predict_rows(m, _stacked([t.X for t in tables]))


def _stacked(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _standardized(m: dict, X: np.ndarray) -> np.ndarray:
    """Raw feature rows as the model's weights take them: its saved standardization applied."""
    if m.get("standardization"):
        return Standardization.from_dict(m["standardization"]).apply(X)
    return X


def _parameters(m: dict) -> tuple[np.ndarray, float]:
    """A loaded model's (w, b) in the units of its standardized features, as float64."""
    return np.asarray(m["weights_standardized"], dtype=np.float64), float(m["bias_standardized"])


def predict_rows(m: dict, X: np.ndarray) -> np.ndarray:
    """A loaded model.json on raw feature rows (columns in the model's feature order): what
    predict writes, bit for bit. A row with a NaN feature gives NaN."""
    return neuron_predict(_standardized(m, X), *_parameters(m))


def _refuse_overflow(pred: np.ndarray, tables: list[Table], model_path: Path) -> None:
    """A prediction of inf (a missing feature gives NaN; only an overflow gives inf) names its file and place."""
    overflowed = np.flatnonzero(np.isinf(pred))
    if overflowed.size:
        raise ModelFileError(f"the prediction for {_row_place(int(overflowed[0]), tables)}, overflows float64: "
                             f"the model's weights are far too large for this data", path=model_path)


def _refuse_error_overflow(pred: np.ndarray, y: np.ndarray, tables: list[Table], model_path: Path) -> None:
    """Metrics of inf or NaN are refused at the row where the sum of squared errors first
    overflows float64 (a finite prediction far from its target squares to inf)."""
    with np.errstate(over="ignore", invalid="ignore"):
        r = pred.astype(np.float64) - y
        overflowed = np.flatnonzero(~np.isfinite(np.cumsum(r * r)))
    if overflowed.size:
        raise ModelFileError(f"the error of the prediction for {_row_place(int(overflowed[0]), tables)}, "
                             f"squared, overflows float64: the model's weights are far too large for this "
                             f"data", path=model_path)


def _row_place(i: int, tables: list[Table]) -> str:
    """Row ``i`` of the tables stacked in order, as ``FILE, line N`` (``row N`` for Parquet)."""
    for table in tables:
        if i < table.X.shape[0]:
            break
        i -= table.X.shape[0]
    return f"{table.path}, {table.place(i)}"


def _records_csv(tables: list[Table], pred: np.ndarray, delimiter: str) -> tuple[str, str]:
    """(the CSV files' records as written, the first file's header once, each with its prediction; the column)."""
    name = "prediction" if "prediction" not in read_header(tables[0].path, delimiter) else "prediction_neurocli"
    texts = tables[0].texts + [text for t in tables[1:] for text in t.texts[1:]]
    cells = [name] + ["" if math.isnan(v) else repr(v) for v in pred.tolist()]
    return _with_last_field(texts, cells, delimiter), name


def _parquet_csv(files: list[Path], pred: np.ndarray) -> tuple[str, str]:
    """(the Parquet files' columns as one CSV, the header once, each row with its prediction; the column)."""
    pieces, name, at = [], None, 0
    for f in files:
        frame = parquetread.frame(f, parquetread.columns(f))
        name = name or ("prediction" if "prediction" not in frame.columns else "prediction_neurocli")
        frame[name] = pred[at:at + len(frame)]
        at += len(frame)
        pieces.append(frame.to_csv(index=False, header=not pieces, lineterminator="\n"))
    return "".join(pieces), name


def _with_last_field(texts: list[str], cells: list[str], delimiter: str) -> str:
    """Records exactly as written (``007`` stays ``007``, ``NA`` stays ``NA``), each with one more field."""
    out = []
    for text, cell in zip(texts, cells, strict=True):
        body = text.rstrip("\r\n")
        out.append(f"{body}{delimiter}{cell}{text[len(body):] or chr(10)}")
    return "".join(out)
