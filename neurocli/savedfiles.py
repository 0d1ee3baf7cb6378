"""The files neurocli writes and reads back, model.json and checkpoint.json, validated once.

Each is read as JSON (:func:`neurocli.io.read_json_file`: size cap, nesting, line and column
of a syntax error) and then checked against a strict schema: every field of the type, range
and length neurocli writes, finite where a number is meant, float32 values within float32's
range. The first problem is reported as one line naming the file and the field, e.g.
``run/checkpoint.json, field state.w[1]: must be a finite number, got nan``. What depends on
the data (the number of features, of batches) is checked where the data is known.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from neurocli import __version__
from neurocli import io as nio
from neurocli.config import Config
from neurocli.errors import ModelFileError
from neurocli.train import StopReason

MODEL_FORMAT = "neurocli.model/2"  # 2: the split and statistics of any engine (same fields as 1)
READABLE_MODEL_FORMATS = ("neurocli.model/1", MODEL_FORMAT)  # a model/1 predicts just as well
# 2: each epoch shuffles from its own stream; 3: the split by row hash, the shuffle in two levels
CHECKPOINT_FORMAT = "neurocli.checkpoint/3"

Real = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=2**62)]
Dtype = Literal["float64", "float32"]
Stopped = Literal[tuple(reason.value for reason in StopReason)]
Sha256 = Annotated[str, Field(pattern="^[0-9a-f]{64}$")]
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def utc_now() -> str:
    """The time now, as model.json's ``trained_at`` records it: ISO 8601, UTC, to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_time(text: str) -> str:
    """``text`` if it is an ISO 8601 time in UTC (``2024-05-01T12:00:00Z`` or ``+00:00``)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"must be an ISO 8601 time such as 2024-05-01T12:00:00Z, got {text[:40]!r}") from None
    if when.utcoffset() is None or when.utcoffset().total_seconds() != 0:
        raise ValueError(f"must be a time in UTC (ending in Z or +00:00), got {text[:40]!r}")
    return text


UtcTime = Annotated[str, AfterValidator(_utc_time)]


# defer_build: each schema is built when a file is first read, not when a run that only
# writes them imports this module
class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", defer_build=True)


class _Open(BaseModel):  # fields neurocli does not read may be added by hand
    model_config = ConfigDict(strict=True, extra="allow", defer_build=True)


class Standardization(_Strict):
    mean: list[Real]
    scale: list[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]]


class ModelFile(_Open):
    """What predict, gradcheck and derive need, required; what a run also records, checked when
    present (a model written by hand needs only the first five fields)."""

    format: Literal[READABLE_MODEL_FORMATS]
    features: Annotated[list[str], Field(min_length=1)]
    weights_standardized: list[Real]
    bias_standardized: Real
    standardization: Standardization | None
    dtype: Dtype = "float64"
    target: str | None = None
    weights: dict[str, Real] | None = None
    bias: Real | None = None
    metrics: dict[str, Real | None] | None = None
    epochs: Count | None = None
    stopped: Stopped | None = None
    data: dict[str, Any] | None = None
    config: Config | None = None
    versions: dict[str, str] | None = None
    trained_at: UtcTime | None = None  # when the run saved this model (older files have none)
    best_epoch: Annotated[int, Field(ge=1, le=2**62)] | None = None  # early stopping's best epoch

    @model_validator(mode="after")
    def _lengths_agree(self):
        if self.best_epoch is not None and self.epochs is not None and self.best_epoch > self.epochs:
            raise ValueError(f"best_epoch: {self.best_epoch} is past the run's last epoch ({self.epochs})")
        n = len(self.features)
        if len(set(self.features)) != n:
            raise ValueError("features: a column is listed twice")
        if self.weights is not None and sorted(self.weights) != sorted(self.features):
            raise ValueError("weights: must name exactly the features")
        for name, values in (("weights_standardized", self.weights_standardized),
                             ("standardization.mean", (self.standardization and self.standardization.mean)),
                             ("standardization.scale", (self.standardization and self.standardization.scale))):
            if values is not None and len(values) != n:
                raise ValueError(f"{name}: must hold {n} numbers, one per feature, got {len(values)}")
        if self.standardization is None and self.config is not None and self.config.data.standardize:
            raise ValueError("standardization: null, but the model was trained with data.standardize: true")
        return self


class PartialSums(_Strict):
    sq: NonNegative
    abs: NonNegative
    active: Count
    rows: Count
    grad_norm: NonNegative


class CheckpointState(_Strict):
    epoch: Count
    batch: Count
    partial: PartialSums
    best_loss: NonNegative | None
    best_epoch: Count
    wait: Count
    w: Annotated[list[Real], Field(min_length=1)]
    b: Real
    dtype: Dtype
    best_w: list[Real] | None
    best_b: Real | None

    @model_validator(mode="after")
    def _consistent(self):
        if (self.best_w is None) != (self.best_b is None):
            raise ValueError("best_w and best_b: both are numbers or both null")
        if self.best_w is not None and len(self.best_w) != len(self.w):
            raise ValueError(f"best_w: must hold {len(self.w)} numbers like w, got {len(self.best_w)}")
        if self.best_epoch > self.epoch or self.wait > self.epoch:
            raise ValueError(f"best_epoch and wait: cannot be past epoch {self.epoch}")
        if self.partial.active > self.partial.rows:
            raise ValueError("partial: more active samples than rows")
        if self.dtype == "float32":
            values = [*self.w, self.b, *(self.best_w or []), *([self.best_b] if self.best_b is not None else [])]
            if any(abs(v) > _FLOAT32_MAX for v in values):
                raise ValueError("w, b: a value beyond float32's range in a float32 run")
        return self


class Checkpoint(_Strict):
    format: Literal[CHECKPOINT_FORMAT]
    stopped: Stopped
    config_fingerprint: Sha256
    data_sha256: Sha256
    history_sha256: Sha256
    state: CheckpointState


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(err: dict) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if msg.startswith("Input should be"):
        msg = "must be" + msg.removeprefix("Input should be")
    if err["type"] == "missing":
        return "is missing"
    if err["type"] != "value_error" and "input" in err:
        shown = repr(err["input"])
        msg += f", got {shown if len(shown) <= 40 else shown[:37] + '...'}"
    return msg


def _validated(schema: type[BaseModel], data: dict, path: Path, kind: str):
    if kind == "model" and data.get("format") not in READABLE_MODEL_FORMATS:
        raise ModelFileError(f"incompatible model format {data.get('format')!r}; this neurocli {__version__} "
                             f"reads {' and '.join(map(repr, READABLE_MODEL_FORMATS))}", path=path)
    if kind == "checkpoint" and data.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"incompatible checkpoint format {data.get('format')!r} (this neurocli writes "
                             f"{CHECKPOINT_FORMAT!r}); start a new run, the folder is left as it is", path=path)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        # a check across fields (at the top) names its own fields; any other error is at one field
        where = f"field {_field(err['loc'])}" if err["loc"] else None
        raise ModelFileError(f"{_message(err)} (the {kind} file is damaged)", path=path, where=where) from None


def load_model(path: Path) -> dict:
    """A model.json, checked field by field; returned as the dict it holds."""
    data = nio.read_json_file(path, "model")
    _validated(ModelFile, data, Path(path), "model")
    return data


def load_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint.json, checked field by field."""
    return _validated(Checkpoint, nio.read_json_file(path, "checkpoint"), Path(path), "checkpoint")
