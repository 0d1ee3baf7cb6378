"""The YAML config: loaded safely, validated once by a pydantic schema, errors located.

Every error names the file, the line and column of the offending value, the dotted key,
and what was wrong, e.g. ``quick.yaml, line 12, column 18: training.learning_rate must be
greater than 0, got -0.1``. A value that came from ``--set`` is located as ``--set KEY=VALUE``.
"""

from __future__ import annotations

import csv
import difflib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from neurocli import parquetread, sources
from neurocli.errors import ConfigError, ConfigErrors, DataError
from neurocli.io import check_regular_file

# A config is a handful of keys; anything that expands to more nodes is an alias bomb.
MAX_YAML_NODES = 10_000
MAX_YAML_DEPTH = 50  # a config is three levels deep; this leaves room and keeps far from the recursion limit


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def parse_delimiter(text: str) -> str:
    """A delimiter as users type it: ``\\t`` (backslash, t) is a tab."""
    return "\t" if text == "\\t" else text


def delimiter_error(delimiter: str) -> str | None:
    """Why ``delimiter`` cannot separate CSV fields, or None."""
    if len(delimiter) != 1:
        return f"must be one character (\\t for a tab), got {delimiter!r}"
    if not delimiter.isascii():
        return f"must be a one-byte (ASCII) character such as , ; | or \\t, got {delimiter!r}"
    if delimiter in "\r\n\"":
        return f"cannot be a line break or the quote character, got {delimiter!r}"
    return None


class DataConfig(_Schema):
    path: str = Field(description="the data: a CSV or Parquet (.parquet, .pq) file, a folder of them, a glob "
                                  "(parts/*.csv), relative to the config file's folder; or a URL (s3://, gs://, "
                                  "file://)")
    target: str = Field(description="the column to predict")
    features: list[str] | None = Field(None, min_length=1,
                                       description="the feature columns; null: every column but the target "
                                                   "and those in data.exclude")
    exclude: list[str] | None = Field(None, description="columns left out of the default features (every column "
                                                        "but the target), e.g. [date, species]")
    standardize: bool = Field(True, description="z-score the features (statistics of the training split, saved "
                                                "with the model)")
    missing: Literal["error", "drop"] = Field("error", description="rows with an empty or NA cell in a used "
                                                                   "column: error, or drop them")
    validation_fraction: float = Field(0.0, ge=0.0, lt=1.0,
                                       description="each row is held out for validation with this probability "
                                                   "(a hash of the seed and the row)")
    delimiter: str = Field(",", description="the CSV delimiter: one character; \\t (backslash, t) is a tab")

    @field_validator("delimiter", mode="before")
    @classmethod
    def _one_character(cls, value):
        if isinstance(value, str):
            value = parse_delimiter(value)
            problem = delimiter_error(value)
            if problem:
                raise ValueError(f"data.delimiter {problem}")
        return value

    @field_validator("features")
    @classmethod
    def _features_distinct(cls, features, info):
        if features is not None:
            if info.data.get("target") in features:
                raise ValueError(f"the target {info.data['target']!r} is also listed in data.features")
            seen = set()
            for name in features:
                if name in seen:
                    raise ValueError(f"feature {name!r} is listed twice in data.features")
                seen.add(name)
        return features

    @field_validator("exclude")
    @classmethod
    def _exclude_leaves_out_others(cls, exclude, info):
        """data.exclude names columns once each, neither the target nor one of data.features."""
        for i, name in enumerate(exclude or []):
            if name in exclude[:i]:
                raise ValueError(f"column {name!r} is listed twice in data.exclude")
            if name == info.data.get("target"):
                raise ValueError(f"data.exclude lists the target {name!r}; the target is never a feature")
            if name in (info.data.get("features") or []):
                raise ValueError(f"data.exclude lists {name!r}, which data.features lists too; a column is "
                                 f"either a feature or excluded")
        return exclude


class ModelConfig(_Schema):
    weights_init: Literal["normal", "zeros"] | list[float] = Field(
        "normal", description="normal: N(0, 1/n) from the seed; zeros; or a list of n numbers, used exactly")
    bias_init: Literal["target_mean"] | float = Field(
        "target_mean", description="target_mean: the mean of the training split's target; or a number, used exactly")


class EarlyStoppingConfig(_Schema):
    patience: int = Field(20, ge=1, description="epochs without an improvement before the run stops")
    min_delta: float = Field(0.0, ge=0.0, description="the least decrease of the loss that counts as an "
                                                      "improvement")


class TrainingConfig(_Schema):
    epochs: int = Field(100, ge=1, description="passes over the training split")
    learning_rate: float = Field(0.01, gt=0.0, description="the step of gradient descent")
    batch_size: int | None = Field(None, ge=1, description="null: full batch; a number: mini-batch SGD")
    shuffle: bool = Field(True, description="mini-batch: reshuffle every epoch from the seed")
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="stop when the validation loss (else the training loss) stops improving, and "
                          "restore the best parameters; null: off")
    dtype: Literal["float64", "float32"] = Field("float64", description="the precision of training")
    log_every: int | None = Field(None, ge=1, description="epochs between plain and JSON log lines; null: "
                                                          "epochs / 20")


class OutputConfig(_Schema):
    dir: str = Field("runs/run", description="the run directory, relative to the current directory (~ "
                                             "expands); an existing one gets a -2, -3, ... suffix")
    checkpoint_interval: float = Field(30.0, gt=0.0, description="seconds of training between checkpoints")

    @field_validator("dir")
    @classmethod
    def _names_a_folder(cls, value: str) -> str:
        if Path(value.strip()).name in ("", ".", ".."):
            raise ValueError(f"output.dir must name a folder for the run, e.g. runs/quickstart; got {value!r}")
        return value


class EngineConfig(_Schema):
    kind: Literal["memory", "stream", "dask"] = Field(
        "memory", description="memory: arrays in RAM; stream: the prepared training set in a local file, "
                              "walked part by part; dask: in parts on a dask cluster (the same numbers)")
    scheduler: str | None = Field(None, description="dask: a running scheduler's address (tcp://host:8786); "
                                                    "null starts a LocalCluster here")
    workers: int | None = Field(None, ge=1, le=1024, description="LocalCluster: worker processes (default: one per core)")
    memory_limit: str = Field("auto", description="LocalCluster: memory per worker, e.g. 2GB")


class Config(_Schema):
    """A neurocli training config: the data, the neuron's start, the descent, the engine and the output."""

    model_config = ConfigDict(title="neurocli config")

    data: DataConfig = Field(description="the data set and how to read and prepare it")
    model: ModelConfig = Field(ModelConfig(), description="the neuron's initial parameters")
    training: TrainingConfig = Field(TrainingConfig(), description="gradient descent")
    engine: EngineConfig = Field(EngineConfig(), description="where the gradient is computed")
    seed: int = Field(0, ge=0, description="the same seed and config give bit-identical results")
    output: OutputConfig = Field(OutputConfig(), description="where the run's files go")


def json_schema() -> dict:
    """The config's JSON Schema (draft 2020-12), for editors that complete and check YAML."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **Config.model_json_schema()}


@dataclass
class LoadedConfig:
    """A validated config and where each key was written, for located errors later."""

    config: Config
    path: Path | None
    locations: dict[tuple[str, ...], tuple[int, int]] = field(default_factory=dict)
    overrides: dict[tuple[str, ...], str] = field(default_factory=dict)

    @property
    def data_path(self) -> Path:
        p = self.expanded(("data", "path"), self.config.data.path)
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p

    @property
    def data_url(self) -> str | None:
        """data.path when it is a URL (``s3://...``, ``file://...``, ``memory://...``), read through fsspec."""
        value = self.config.data.path
        return value if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value) else None

    @property
    def data_source(self) -> str:
        """Where the data is, as a run records it: the URL, or the absolute path."""
        return self.data_url or str(self.data_path.resolve())

    def expanded(self, keys: tuple[str, ...], value: str) -> Path:
        """The path of the config key ``keys`` with ``~`` (or ``~user``) expanded."""
        try:
            return Path(value).expanduser()
        except RuntimeError:  # ~user of no user, or no home folder
            raise self.error(keys, f"{'.'.join(keys)}: cannot expand {value.split('/')[0]!r}: no such user or "
                                   f"home folder") from None

    def error(self, keys: tuple[str, ...], message: str) -> ConfigError:
        """A ConfigError located at the value of ``keys`` (or its nearest written parent)."""
        return _located_error(self.path, self.locations, self.overrides, keys, message)

    def resolved(self, every_key: bool = False) -> dict[str, Any]:
        """The config as plain data, with the data path made absolute. data.exclude, when not
        set, is left out (unless ``every_key``): a run's saved config, and the fingerprint a
        resume compares, stay those of the runs made before the key existed."""
        data = self.config.model_dump(mode="json")
        data["data"]["path"] = self.data_source
        if data["data"]["exclude"] is None and not every_key:
            del data["data"]["exclude"]
        return data

    def with_features(self, features: list[str]) -> "LoadedConfig":
        """This config with data.features set to ``features`` (resolved from the data's header)."""
        data = self.config.data.model_copy(update={"features": list(features)})
        return LoadedConfig(self.config.model_copy(update={"data": data}), self.path, self.locations, self.overrides)


def _located_error(path, locations, overrides, keys, message) -> ConfigError:
    dotted = ".".join(str(k) for k in keys)
    plain = tuple(k for k in keys if k != "<key>")
    for key, text in overrides.items():  # a --set at, under or above the key is to blame
        if plain and (key[:len(plain)] == plain or plain[:len(key)] == key):
            return ConfigError(f"{message}", where=f"--set {shown(text)}")
    for n in range(len(keys), -1, -1):
        prefix = tuple(keys[:n])
        if prefix in overrides:
            return ConfigError(f"{message}", where=f"--set {shown(overrides[prefix])}")
        if prefix in locations:
            line, col = locations[prefix]
            return ConfigError(message, path=path, where=f"line {line}, column {col}")
    return ConfigError(message, path=path, where=f"key {dotted}" if dotted else None)


def _too_deep(path=None, where: str | None = None) -> ConfigError:
    return ConfigError(f"the YAML is nested more than {MAX_YAML_DEPTH} levels deep; a config needs three",
                       path=path, where=where)


def _walk_nodes(node: yaml.Node, keys: tuple, locations: dict, path, budget: list[int]) -> None:
    if len(keys) > MAX_YAML_DEPTH:
        raise _too_deep(path, f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}")
    budget[0] += 1
    if budget[0] > MAX_YAML_NODES:
        raise ConfigError(
            f"the YAML expands to more than {MAX_YAML_NODES} nodes (nested aliases?); refusing to load it",
            path=path,
            where=f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}",
        )
    locations.setdefault(keys, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.ScalarNode) and len(node.value) > sys.get_int_max_str_digits() and \
            node.value.lstrip("+-").replace("_", "").isdigit():  # Python would refuse to read it
        raise ConfigError(f"a number of {len(node.value)} digits; no setting takes one that long", path=path,
                          where=f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}")
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            if key in seen and not (keys == () and key == "<<"):
                raise ConfigError(
                    f"key {'.'.join(keys + (key,))!r} is written twice",
                    path=path,
                    where=f"line {key_node.start_mark.line + 1}, column {key_node.start_mark.column + 1}",
                )
            seen.add(key)
            # the key itself, for errors about the key (unknown key) rather than its value
            locations[("<key>",) + keys + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _walk_nodes(value_node, keys + (key,), locations, path, budget)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk_nodes(item, keys + (i,), locations, path, budget)


class _Loader(yaml.SafeLoader):
    """Safe loading (no tags that build objects), plus YAML 1.2 floats such as ``1e-6``,
    which YAML 1.1 would read as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str, path: Path | None) -> tuple[Any, dict]:
    """Safe-load one YAML document; return (data, {key path: (line, column)})."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError("the config is empty; it needs at least a `data:` section", path=path)
        locations: dict = {}
        _walk_nodes(node, (), locations, path, [0])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        if isinstance(exc, yaml.constructor.ConstructorError):
            problem = f"{problem} (only plain YAML is accepted: no tags that build objects)"
        raise ConfigError(f"YAML error: {problem}", path=path, where=where) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", path=path) from exc
    except RecursionError:  # deeper than the composer can go: the same error as the depth cap
        raise _too_deep(path) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "nothing"
        raise ConfigError(
            f"the config must be a mapping of sections (data:, model:, training:, ...), got {kind}",
            path=path,
            where="line 1, column 1",
        )
    return data, locations


def _apply_override(data: dict, item: str) -> tuple[tuple[str, ...], str]:
    if "=" not in item:
        raise ConfigError("expected KEY=VALUE, e.g. training.epochs=50", where=f"--set {shown(item)}")
    dotted, raw = item.split("=", 1)
    keys = tuple(k for k in dotted.strip().split("."))
    if not all(keys):
        raise ConfigError(f"{dotted!r} is not a dotted key like training.epochs", where=f"--set {shown(item)}")
    value = _override_value(raw, item)
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value
    return keys, item


def _override_value(raw: str, item: str):
    """A --set value, read as YAML under the file's limits (nodes, depth); text if not YAML."""
    if not raw.strip():
        return None
    loader = _Loader(raw)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _walk_nodes(node, (), {}, None, [0])
        return loader.construct_document(node)
    except yaml.YAMLError:
        return raw
    except RecursionError:
        raise _too_deep(where=f"--set {shown(item)}") from None
    except ConfigError as exc:
        raise ConfigError(exc.message, where=f"--set {shown(item)}") from None
    finally:
        loader.dispose()


def shown(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for an error line."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _schema_fields(keys: tuple) -> list[str]:
    model: Any = Config
    for key in keys:
        info = getattr(model, "model_fields", {}).get(key)
        if info is None:
            return []
        ann = info.annotation
        candidates = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates and isinstance(ann, type) and issubclass(ann, BaseModel):
            candidates = [ann]
        if not candidates:
            return []
        model = candidates[0]
    return list(getattr(model, "model_fields", {}))


def _dotted(keys) -> str:
    """('model', 'weights_init', 0) -> 'model.weights_init[0]'."""
    out = ""
    for k in keys:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def _describe(error: dict) -> str:
    keys = tuple(k for k in error["loc"] if not (isinstance(k, str) and ("[" in k or k in {"literal", "list", "float", "str", "int", "bool"})))
    dotted = _dotted(keys)
    kind = error["type"]
    given = error.get("input")
    if kind == "extra_forbidden":
        parent, name = keys[:-1], str(keys[-1])
        choices = _schema_fields(parent)
        close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
        hint = f"; did you mean {'.'.join(map(str, parent + (close[0],)))!r}?" if close else ""
        known = f" (known keys: {', '.join(choices)})" if choices and not close else ""
        return f"unknown key {dotted!r}{hint}{known}"
    if kind == "missing":
        return f"{dotted} is required but missing"
    msg = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
        return msg
    msg = msg[0].lower() + msg[1:]
    msg = msg.replace("input should be", "must be")
    return f"{dotted} {msg}, got {given!r}"


def _error_keys(error: dict) -> tuple:
    return tuple(k for k in error["loc"] if not (isinstance(k, str) and ("[" in k or k in {"literal", "list", "float", "str", "int", "bool"})))


def validate(data: dict, path: Path | None, locations: dict, overrides: dict,
             check_data: bool = False) -> LoadedConfig:
    """``data`` checked against the schema; every problem found is raised at once, each located
    (one: a ConfigError, as always; more: a ConfigErrors, one line each). With ``check_data``,
    a schema that fails still has data.path and the columns it names checked, where the data
    section is valid enough, and their lines join the report (:func:`_data_problems`)."""
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        found = [_problem(group, path, locations, overrides) for group in _by_field(exc.errors())]
        if check_data:
            found += _data_problems(data, exc.errors(), path, locations, overrides)
        raise at_once(found, overrides) from exc
    return LoadedConfig(config=config, path=path, locations=locations, overrides=overrides)


def at_once(found: list[ConfigError], overrides: dict) -> ConfigError:
    """The errors ``found`` as one error to raise: each line once, in the order of the file,
    then of the --set overrides (one: a ConfigError; more: a ConfigErrors)."""
    found = sorted({e.located(): e for e in found}.values(), key=lambda e: _place_order(e, overrides))
    return found[0] if len(found) == 1 else ConfigErrors(found)


def _by_field(errors: list[dict]) -> list[list[dict]]:
    """pydantic's errors grouped by the field they are about: one field's errors (a union
    reports one per branch, a list one per item) share a key path, the shortest a prefix of the
    others'. One message comes of each group."""
    groups: list[tuple[tuple, list[dict]]] = []
    for error in sorted(errors, key=lambda e: len(_error_keys(e))):
        keys = _error_keys(error)
        group = next((g for root, g in groups if keys[:len(root)] == root), None)
        if group is None:
            groups.append((keys, [error]))
        else:
            group.append(error)
    return [group for _, group in groups]


def _problem(errors: list[dict], path, locations, overrides) -> ConfigError:
    """The located error of one field's pydantic errors."""
    # A union reports one error per branch; the most specific (deepest) explains best.
    first = max(errors, key=lambda e: (len(_error_keys(e)), e["type"] != "literal_error"))
    same_place = [e for e in errors if _error_keys(e) == _error_keys(first)]
    if len(same_place) > 1 and first["type"] in {"literal_error", "list_type", "float_type"}:
        message = _union_message(_error_keys(first), first.get("input"))
    else:
        message = _describe(first)
    keys = _error_keys(first)
    if first["type"] == "extra_forbidden" and ("<key>",) + keys in locations:
        keys = ("<key>",) + keys
    return _located_error(path, locations, overrides, keys, message)


def _place_order(error: ConfigError, overrides: dict) -> tuple:
    """Errors in the file by line and column, then those of the --set overrides in their order."""
    where = error.where or ""
    found = re.match(r"line (\d+), column (\d+)", where)
    if found:
        return (0, int(found.group(1)), int(found.group(2)))
    sets = [f"--set {shown(text)}" for text in overrides.values()]
    if where in sets:
        return (1, sets.index(where))
    return (2, _schema_order(where[len("key "):])) if where.startswith("key ") else (3,)


def _schema_order(dotted: str) -> tuple:
    """Where the key ``dotted`` (``data.features[1]``) comes in the schema, for the errors of a
    config that no file locates (a dict's): its sections and keys in the schema's order, list
    items by index, a key the schema lacks after its section's known ones."""
    model: Any = Config
    order = []
    for part in re.findall(r"[^.\[\]]+", dotted):
        if part.isdigit():
            order.append(int(part))
            continue
        fields = list(getattr(model, "model_fields", {}))
        order.append(fields.index(part) if part in fields else len(fields))
        model = _schema_model(model, part)
    return tuple(order)


def _schema_model(model: Any, key: str) -> Any:
    """The section model that ``model``'s field ``key`` holds, or None."""
    info = getattr(model, "model_fields", {}).get(key)
    ann = info.annotation if info else None
    return next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
                None)


_UNION_HELP = {
    ("model", "weights_init"): "'normal', 'zeros' or a list of numbers, one per feature",
    ("model", "bias_init"): "'target_mean' or a number",
}


def _union_message(keys: tuple, given: Any) -> str:
    dotted = ".".join(map(str, keys))
    for prefix, text in _UNION_HELP.items():
        if keys[: len(prefix)] == prefix:
            return f"{'.'.join(prefix)} must be {text}, got {given!r}"
    return f"{dotted} has an invalid value {given!r}"


CONFIG_MAX_BYTES = 16 << 20  # room for a weights_init list of several hundred thousand numbers


def load_config(path: Path, overrides: list[str] | None = None) -> LoadedConfig:
    """Read, safe-load and validate a config file, applying ``--set`` overrides."""
    path = Path(path)
    if not path.exists():
        raise ConfigError("config file not found", path=path)
    if path.is_dir():
        raise ConfigError("is a directory, not a config file", path=path)
    check_regular_file(path, "config", CONFIG_MAX_BYTES, ConfigError)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config: {exc.strerror}", path=path) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", path=path, where=f"line {line}") from exc
    data, locations = parse_yaml(text, path)
    applied = {}
    for item in overrides or []:
        keys, text_item = _apply_override(data, item)
        applied[keys] = text_item
    loaded = validate(data, path, locations, applied, check_data=True)
    return resolve_features(loaded) if loaded.config.data.exclude else checked_columns(loaded)


def resolve_features(loaded: LoadedConfig) -> LoadedConfig:
    """``loaded`` with data.features as the data's header resolves it: the columns given, or
    every column but the target and data.exclude's, checked as the reader checks them (a
    column that is not there, an empty name, a column of text among the default features),
    and each column of data.exclude in the header, located at its place in the config.

    The header is the data set's first file's. When data.path names no file the config is
    returned as it is: reading the data then says what is wrong with data.path."""
    from neurocli import data

    found = _first_header(loaded)
    if found is None:
        return loaded
    first, names = found
    _check_named_columns(loaded, first, names)
    cfg = loaded.config.data
    return loaded.with_features(data.feature_columns(first, names, cfg.target, cfg.features, cfg.exclude or ()))


def checked_columns(loaded: LoadedConfig) -> LoadedConfig:
    """``loaded``, once every column it names (data.target, data.features, data.exclude) is
    in the header of the data set's first file; else every one that is not, each located at
    its place in the config. When data.path names no file the config is returned as it is."""
    found = _first_header(loaded)
    if found is not None:
        _check_named_columns(loaded, *found)
    return loaded


def _first_header(loaded: LoadedConfig):
    """(the data set's first file, its column names), or None when data.path names no file."""
    if loaded.data_url:
        from neurocli.cache import cache_dir  # here: the cache's module loads numpy

        try:
            first = sources.fetched(loaded.data_url, cache_dir() / "remote")[0]
        except DataError:
            return None
    else:
        first = _first_file(loaded)
    return None if first is None else (first, sources.column_names(first, loaded.config.data.delimiter))


def _first_file(loaded: LoadedConfig) -> Path | None:
    """The first file of the data set at data.path (not a URL), or None when it names none."""
    path = loaded.data_path
    try:
        if sources.is_pattern(path) or path.is_file() or path.is_dir():
            return sources.data_files(path)[0]
    except DataError:
        pass
    return None


def check_data_path(loaded: LoadedConfig) -> None:
    """Raise, located at data.path, when it names a file that is not there, or one that is
    neither a regular file nor a folder (a pipe, a device); a glob or a URL is looked into
    when the data is read."""
    path = loaded.data_path
    if loaded.data_url or sources.is_pattern(path):
        return
    if not path.exists():
        raise loaded.error(("data", "path"), f"data.path: data file {str(path)!r} not found "
                                             f"(a relative path is taken from the config file's folder)")
    if not (path.is_file() or path.is_dir()):
        raise loaded.error(("data", "path"), f"data.path: {str(path)!r} is not a regular file (a pipe "
                                             f"or a device?); give a CSV or Parquet file, or a folder of them")


def _check_named_columns(loaded: LoadedConfig, first: Path, names: list[str]) -> None:
    """Raise, one located line each, for every column of data.target, data.features and
    data.exclude that ``names`` lacks, with the closest name in the file where one is close."""
    cfg = loaded.config.data
    named = [(("data", "target"), "data.target", cfg.target)]
    named += [(("data", "features", i), f"data.features[{i}]", c) for i, c in enumerate(cfg.features or [])]
    named += [(("data", "exclude", i), f"data.exclude[{i}]", c) for i, c in enumerate(cfg.exclude or [])]
    found = []
    for keys, label, name in named:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; it has: {', '.join(names)}"
            found.append(loaded.error(keys, f"{label}: column {name!r} is not in {first.name}{hint}"))
    if found:
        raise at_once(found, loaded.overrides)


def _data_problems(data: dict, errors: list[dict], path, locations, overrides) -> list[ConfigError]:
    """For a config whose schema failed: what the checks of data.path and of the columns it
    names say, where the data section is valid enough to check, so that one report holds
    every line. The data keys with an error of their own are left out (the schema's line
    tells of them); data.path is checked when it parsed, the columns when data.path,
    data.target and data.delimiter did and the first file's header is plain. Nothing heavy
    is loaded for it: a URL is left to the run, which fetches it, and the header is read by
    :func:`_plain_header`."""
    section, whole = _data_section(data, errors)
    if section is None:
        return []
    loaded = LoadedConfig(Config.model_construct(data=section), path, locations, overrides)
    if loaded.data_url:
        return []
    try:
        check_data_path(loaded)
    except ConfigError as exc:
        return [exc]
    first = _first_file(loaded) if whole else None
    names = _plain_header(first, section.delimiter) if first is not None else None
    if names is None:
        return []
    try:
        _check_named_columns(loaded, first, names)
    except ConfigError as exc:
        return list(exc.errors) if isinstance(exc, ConfigErrors) else [exc]
    return []


def _data_section(data: dict, errors: list[dict]) -> tuple[DataConfig | None, bool]:
    """The data section of ``data`` without its keys that have an error in ``errors``, and
    whether it is whole: validated when what is left is a section (its data.delimiter among
    it); else data.path alone, its other keys unset; else None."""
    section = data.get("data")
    keys = [k for k in map(_error_keys, errors) if k[:1] == ("data",)]
    if not isinstance(section, dict) or any(len(k) == 1 for k in keys):
        return None, False
    bad = {k[1] for k in keys}
    kept = {k: v for k, v in section.items() if k not in bad}
    if "delimiter" not in bad:
        try:
            return DataConfig.model_validate(kept), True
        except ValidationError:
            pass
    return (DataConfig.model_construct(path=kept["path"]) if "path" in kept else None), False


def _plain_header(first: Path, delimiter: str) -> list[str] | None:
    """The column names of a CSV file's first line, stripped, as the reader takes them, read
    by the standard library alone; None when that line cannot settle them here (a Parquet
    file, a line that is blank, not UTF-8, longer than the reader's first read, ends in a
    lone CR, opens a quoted name that runs on, or has one name that looks otherwise
    delimited): reading the data then tells what is wrong."""
    if parquetread.is_parquet(first):
        return None
    try:
        with open(first, "rb") as fh:
            line = fh.readline(1 << 20)
        text = line.decode("utf-8-sig").rstrip("\r\n")
    except (OSError, UnicodeDecodeError):
        return None
    if len(line) == 1 << 20 or not text.strip() or "\r" in text or text.count('"') % 2:
        return None
    try:
        names = [name.strip() for name in next(csv.reader([text], delimiter=delimiter))]
    except csv.Error:  # a NUL byte, say
        return None
    if len(names) == 1 and any(other in names[0] for other in ";\t|," if other != delimiter):
        return None
    return names


def config_from_dict(data: dict, path: Path | None = None) -> LoadedConfig:
    """Validate an in-memory config (tests, resume)."""
    return validate(data, path, {}, {})


def load_config_dict(data: dict, overrides: list[str] | None = None) -> LoadedConfig:
    """Validate a config given as a dict (the Python API), applying ``--set`` overrides, as
    :func:`load_config` does a file's. Nothing locates its values in a file: an error names
    the dotted key (``key training.learning_rate: ...``); relative paths are taken from the
    current folder. ``data`` itself is left unchanged."""
    import copy

    if not isinstance(data, dict):
        raise ConfigError(f"the config must be a dict of sections (data, model, training, ...), got "
                          f"{type(data).__name__}")
    data = copy.deepcopy(data)
    applied = {}
    for item in overrides or []:
        keys, text_item = _apply_override(data, item)
        applied[keys] = text_item
    loaded = validate(data, None, {}, applied, check_data=True)
    return resolve_features(loaded) if loaded.config.data.exclude else checked_columns(loaded)
