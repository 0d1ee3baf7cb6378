"""neurocli from Python (a notebook, a script): train, load a model, predict, evaluate, check
and derive, with the cores the commands call (:mod:`neurocli.pipeline`,
:mod:`neurocli.problems`), returning their objects instead of drawing them.

A bad input raises neurocli's own exception (:mod:`neurocli.errors`: ConfigError, DataError,
ModelFileError, OutputError, all NeurocliError) with the located message the command would
print, never SystemExit. docs/api.md has a worked example.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from neurocli import pipeline, problems, savedfiles
from neurocli.config import LoadedConfig, load_config_dict
from neurocli.csvread import PieceError, frame_columns
from neurocli.errors import DataError, ModelFileError
from neurocli.scaffold import yaml_text
from neurocli.train import StopReason

__all__ = ["Run", "Model", "train", "load_model", "evaluate", "gradcheck", "derive"]


@dataclass
class Run:
    """A finished training run: its summary (what ``train --json`` ends with), its history and
    its run directory (an absolute path)."""

    summary: dict
    history_records: list[dict]
    run_dir: Path

    @property
    def weights(self) -> dict[str, float]:
        """Feature name -> weight, in the features' original units (as model.json holds them)."""
        return dict(self.summary["weights"])

    @property
    def bias(self) -> float:
        return self.summary["bias"]

    @property
    def stopped(self) -> str:
        """completed, early_stopping, diverged, dead_neuron or interrupted."""
        return str(self.summary["stopped"])

    @property
    def history(self) -> pd.DataFrame:
        """One row per epoch, the columns of history.csv."""
        return pd.DataFrame(self.history_records)

    @property
    def model(self) -> "Model":
        """The run's model.json, loaded."""
        return load_model(self.run_dir / "model.json")


class Model:
    """A saved model.json: its features, weights and bias, and predictions as ``predict`` makes them."""

    def __init__(self, data: dict, path: Path):
        self.data, self.path = data, Path(path)

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, features={self.features}, target={self.target!r})"

    @property
    def features(self) -> list[str]:
        return list(self.data["features"])

    @property
    def target(self) -> str | None:
        return self.data.get("target")

    @property
    def weights(self) -> dict[str, float]:
        """Feature name -> weight, in the features' original units."""
        return dict(zip(self.features, map(float, self._original_units()[0])))

    @property
    def bias(self) -> float:
        """The bias for features in their original units."""
        return float(self._original_units()[1])

    def _original_units(self) -> tuple[np.ndarray, float]:
        m = self.data
        if m.get("weights") is not None and m.get("bias") is not None:  # as the run saved them
            return np.array([m["weights"][f] for f in self.features]), m["bias"]
        w, b = pipeline._parameters(m)  # a model written by hand: from its standardized units
        if m.get("standardization"):
            from neurocli.data import Standardization

            return Standardization.from_dict(m["standardization"]).to_original_units(w, b)
        return w, b

    def predict(self, X) -> np.ndarray:
        """The prediction for each row of ``X``: a DataFrame (the model's feature columns, by
        name; others are ignored) or a 2-d array (its columns in the model's feature order).
        The numbers ``neurocli predict`` writes, bit for bit; NaN where a feature is NaN."""
        rows = _feature_rows(X, self.features)
        with np.errstate(all="ignore"):
            pred = pipeline.predict_rows(self.data, rows)
        overflowed = np.flatnonzero(np.isinf(pred))
        if overflowed.size:
            raise ModelFileError(f"the prediction for row {int(overflowed[0]) + 1} of X overflows float64: the "
                                 f"model's weights are far too large for this data", path=self.path)
        return pred


def load_model(path: str | Path) -> Model:
    """A model.json, checked field by field as the commands check it."""
    return Model(savedfiles.load_model(Path(path)), Path(path))


def train(config: str | Path | Mapping, overrides: Mapping[str, Any] | None = None, *, quiet: bool = True) -> Run:
    """Train as ``neurocli train`` does, into a new run directory, and return the run.

    ``config``: a YAML file, or a dict of the same sections (validated by the same schema;
    relative paths from the current folder). ``overrides``: dotted keys and values,
    ``{"training.epochs": 50}``, applied as ``--set training.epochs=50``. ``quiet=False``
    prints the plain log lines and the summary. A run that diverges or dies is returned (its
    ``stopped`` says which, ``summary["message"]`` why) with a warning; an interrupt saves
    the run, as the command does.
    """
    from neurocli import render

    sets = set_options(overrides)
    with _quiet_numpy():
        inputs = pipeline.load_inputs(_loaded(config, sets) or Path(config), sets)
        run = pipeline.TrainRun.start(inputs)
        total = inputs.loaded.config.training.epochs
        log_every = inputs.loaded.config.training.log_every or max(1, total // 20)

        def on_epoch(rec) -> None:
            if rec.epoch % log_every == 0 or rec.epoch in (1, total):
                print(render.epoch_line(rec, total))

        with run.discarded_unless_saved():
            summary = run.run(None if quiet else on_epoch)
    if not quiet:
        from rich.console import Console

        Console(highlight=False).print(render.summary_renderable(summary, [h["loss"] for h in run.state.history]))
    if summary["stopped"] in (StopReason.DIVERGED, StopReason.DEAD_NEURON):
        warnings.warn(summary["message"], RuntimeWarning, stacklevel=2)
    elif summary.get("warning"):
        warnings.warn(summary["warning"], RuntimeWarning, stacklevel=2)
    return Run(summary, list(run.state.history), Path(run.run_dir).resolve())


def evaluate(model: Model | str | Path, data, *, delimiter: str = ",") -> dict:
    """A model's metrics on held-out data, as ``neurocli evaluate --json`` prints them: mse,
    rmse, mae, r2, rows, rows_skipped. ``data``: a path (anything ``evaluate`` reads) or a
    DataFrame with the feature and target columns; rows with a NaN in them are left out."""
    m = model if isinstance(model, Model) else load_model(model)
    with _quiet_numpy():
        if isinstance(data, pd.DataFrame):
            return _evaluate_frame(m, data).as_dict()
        return pipeline.evaluate_model(m.path, data, delimiter, model=m.data).as_dict()


def gradcheck(config: str | Path | Mapping | None = None, overrides: Mapping[str, Any] | None = None, *,
              model: str | Path | None = None, **options):
    """The report of ``neurocli gradcheck`` (a :class:`neurocli.gradcheck.GradcheckReport`):
    without a config, the built-in problem. ``options`` are the check's: eps, rtol, atol,
    points, seed, max_rows, jacobian ("auto", "full", "projection"), sweep."""
    sets = set_options(overrides)
    with _quiet_numpy():
        problem = problems.gradcheck_problem(_config_argument(config, sets), sets or None,
                                             None if model is None else Path(model))
        return problem.check(**options)


def derive(config: str | Path | Mapping | None = None, overrides: Mapping[str, Any] | None = None, **options):
    """The derivation ``neurocli derive`` prints (a :class:`neurocli.derive.Derivation`, or a
    VectorChainRule for ``example="vector-chain-rule"``). ``options``: model, show_jacobians,
    sample, example, x."""
    sets = set_options(overrides)
    if options.get("model") is not None:
        options["model"] = Path(options["model"])
    with _quiet_numpy():
        return problems.derivation(_config_argument(config, sets), sets or None, **options)


def set_options(overrides: Mapping[str, Any] | None) -> list[str]:
    """``{"training.epochs": 50}`` as the ``--set`` options ``["training.epochs=50"]``."""
    return [f"{key}={yaml_text(value)}" for key, value in (overrides or {}).items()]


class _DictConfig(LoadedConfig):
    """A config given as a dict, named so where a report names its config."""

    def __str__(self) -> str:
        return "the config dict"


def _loaded(config, sets: list[str]) -> LoadedConfig | None:
    """A dict config, validated with its overrides (a path is loaded by the core itself)."""
    if not isinstance(config, Mapping):
        return None
    loaded = load_config_dict(dict(config), sets)
    return _DictConfig(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(loaded)})


def _config_argument(config, sets: list[str]):
    """What the cores take for a config: a path, or a dict's config already loaded."""
    if config is None:
        return None
    return _loaded(config, sets) or Path(config)


@contextlib.contextmanager
def _quiet_numpy():
    """numpy's floating-point warnings off, as on the command line: neurocli finds non-finite
    values itself and says what they mean."""
    with np.errstate(all="ignore"):
        yield


def _feature_rows(X, features: list[str], target: str | None = None) -> np.ndarray:
    """``X``'s feature columns (then ``target``'s) as float64 rows, checked as a CSV's cells
    are (text, true/false and infinite values refused, NaN kept)."""
    wanted = features + ([target] if target is not None else [])
    if isinstance(X, pd.DataFrame):
        for role, names in (("feature", features), ("target", [target] if target is not None else [])):
            absent = [c for c in names if c not in X.columns]
            if absent:
                raise DataError(f"{role} column{'s' if len(absent) > 1 else ''} {', '.join(map(repr, absent))} "
                                f"not in the DataFrame; it has: {', '.join(map(str, X.columns))}")
        frame = X.reset_index(drop=True)
    else:
        array = np.asarray(X)
        if array.ndim != 2 or array.shape[1] != len(wanted):
            raise DataError(f"an array of shape {array.shape}: give one row per sample and {len(wanted)} "
                            f"columns ({', '.join(wanted)}), or a DataFrame", path="X")
        frame = pd.DataFrame(array, columns=wanted)
    try:
        columns, _ = frame_columns(frame, wanted)
    except PieceError as exc:
        raise DataError(exc.message, path="DataFrame" if isinstance(X, pd.DataFrame) else "X",
                        where=f"row {exc.row + 1}") from None
    return np.column_stack(columns) if columns else np.empty((len(frame), 0))


def _evaluate_frame(m: Model, frame: pd.DataFrame) -> pipeline.Evaluation:
    """A model on a DataFrame's rows: its features and target, rows with a NaN left out."""
    target = pipeline.model_target(m.data, m.path)
    rows = _feature_rows(frame, m.features, target)
    kept = ~np.isnan(rows).any(axis=1)
    X, y = np.ascontiguousarray(rows[kept, :-1]), np.ascontiguousarray(rows[kept, -1])
    m.predict(X)  # refuses an overflow, as the command does
    return pipeline.scored(m.data, X, y, int((~kept).sum()), "DataFrame")
