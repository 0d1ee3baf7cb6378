"""What gradcheck and derive run on, and the check or derivation itself, with no printing.

The data and parameters come from a config (with any --set overrides, after the same
preprocessing as train), at its initial parameters or at a trained model.json's; with no
config, from a small built-in problem. A model must fit the config it is used with:
:func:`model_parameters` is the one check of that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from neurocli import derive, gradcheck
from neurocli import savedfiles
from neurocli.data import Prepared
from neurocli.errors import ConfigError, ModelFileError
from neurocli.pipeline import load_inputs

# The worked examples derive can show instead of the neuron (section 4.5.3's, so far).
WORKED_EXAMPLES = ("vector-chain-rule",)


def config_beside(model: Path) -> Path:
    """The config.yaml that the training run saved next to ``model``."""
    config = Path(model).parent / "config.yaml"
    if not config.exists():
        raise ModelFileError("no CONFIG given and no config.yaml next to the model: pass the training config",
                             path=model, where="--model")
    return config


def model_parameters(m: dict, model: Path, prepared: Prepared, dtype) -> tuple[np.ndarray, np.floating]:
    """The trained (w, b) of a loaded model.json, in ``dtype``, once it is known to fit the config's data."""
    names = list(prepared.feature_names)
    if list(m["features"]) != names:
        raise ModelFileError(f"--model: the model's features ({', '.join(m['features'])}) differ from the config's "
                             f"data.features ({', '.join(names)})", path=model)
    trained_standardized = m.get("standardization") is not None
    if trained_standardized != (prepared.standardization is not None):
        raise ModelFileError(f"--model: the model was trained with{'' if trained_standardized else 'out'} "
                             f"standardized features, the config has data.standardize: "
                             f"{'true' if prepared.standardization is not None else 'false'}", path=model)
    dtype = np.dtype(dtype)
    return np.asarray(m["weights_standardized"], dtype=dtype), dtype.type(m["bias_standardized"])


@dataclass
class GradcheckProblem:
    """The data and the point (w, b) a gradient check runs on."""

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    b: float
    names: list[str]
    label: str  # where (w, b) come from, as the report names the point
    source: str = "built-in problem"  # where the data comes from, as the report's first line begins
    split: str | None = None  # "training": the rows are the training split's
    standardized: bool = False  # the features are z-scores
    # where row i of X is in the data set, as Table.place names it ("line 7", "part-0003.csv, line 7")
    place_of: Callable[[int], str] | None = None
    seed: int = 0  # the config's seed: the default for random points, projections and the sample of rows

    def check(self, *, seed: int | None = None, **options) -> gradcheck.GradcheckReport:
        """:func:`gradcheck.check` on this problem; ``options`` are its keyword arguments (``max_rows``
        among them: larger data is checked on a sample of that many rows, drawn from the seed)."""
        return gradcheck.check(self.X, self.y, self.w, self.b, names=self.names, label=self.label,
                               seed=self.seed if seed is None else seed, **options)


# where the worked example's three-way check holds at its tolerance (finite differences of
# ln(x²) and sin(3x) lose precision near 0 and for large |x|)
EXAMPLE_X_RANGE = (0.01, 200.0)


def gradcheck_problem(config: Path | None = None, overrides: list[str] | None = None,
                      model: Path | None = None) -> GradcheckProblem:
    """A config's training split at its initial parameters (or at ``model``'s); the built-in problem without one.

    Without a config, a model is checked on the config.yaml next to it.
    """
    m = savedfiles.load_model(model) if model is not None else None
    if config is None and model is not None:
        config = config_beside(model)
    if config is None:
        if overrides:
            raise ConfigError("--set needs a CONFIG to override")
        X, y, w, b, names = gradcheck.builtin_problem()
        return GradcheckProblem(X, y, w, b, names, label="built-in parameters")
    inputs = load_inputs(config, overrides)
    p = inputs.prepared
    w, b, label = inputs.w0, inputs.b0, "initial parameters"
    if m is not None:
        w, b = model_parameters(m, model, p, p.X_train.dtype)
        label = f"trained parameters ({model})"
    return GradcheckProblem(p.X_train, p.y_train, w, b, list(p.feature_names), label, source=str(config),
                            split="training", standardized=p.standardization is not None,
                            place_of=place_of_train_sample(p), seed=inputs.loaded.config.seed)


def derivation(config: Path | None = None, overrides: list[str] | None = None, *, model: Path | None = None,
               show_jacobians: bool = False, sample: int = 0, example: str | None = None,
               x: float = 2.0) -> derive.Derivation | derive.VectorChainRule:
    """The neuron's derivation for a config (or the built-in example), or a worked example at ``x``.

    ``show_jacobians`` evaluates every step at training sample ``sample``; without a config, a
    model is taken with the config.yaml next to it.
    """
    if example is None and config is None and model is not None:
        config = config_beside(model)  # the run's own config, as gradcheck does
    if example is not None:
        if example not in WORKED_EXAMPLES:
            raise ConfigError(f"must be one of {', '.join(WORKED_EXAMPLES)}, got {example!r}", where="--example")
        if config is not None or model is not None:
            raise ConfigError("--example works on its own: give no CONFIG and no --model", where="--example")
        if not (EXAMPLE_X_RANGE[0] <= abs(x) <= EXAMPLE_X_RANGE[1]):  # NaN fails too
            raise ConfigError(f"must be a number with {EXAMPLE_X_RANGE[0]:g} <= |x| <= {EXAMPLE_X_RANGE[1]:g} (ln(x²) "
                              f"needs x² > 0; beyond that range the finite-difference check of the example loses "
                              f"its precision), got {x}", where="--x")
        return derive.derive_vector_chain_rule(x)
    if config is None:
        n = len(derive.EXAMPLE_X)
        if show_jacobians and not 0 <= sample < n:
            raise ConfigError(f"{sample} is out of range: the built-in example has {n} rows (0 to {n - 1})",
                              where="--sample")
        return derive.derive_example(show_jacobians, sample)
    return _neuron_derivation(config, overrides, model, show_jacobians, sample)


def _neuron_derivation(config: Path, overrides, model: Path | None, show_jacobians: bool,
                       sample: int) -> derive.Derivation:
    """The derivation on a config's training data, at its initial parameters or at ``model``'s."""
    inputs = load_inputs(config, overrides)
    p = inputs.prepared
    n_rows = p.X_train.shape[0]
    if not 0 <= sample < n_rows:
        raise ConfigError(f"{sample} is out of range: the training data after preprocessing has "
                          f"{n_rows} rows (0 to {n_rows - 1})", where="--sample")
    if model is None:
        w, b = inputs.w0, inputs.b0
        parameters_from = f"the config's initial parameters (seed {inputs.loaded.config.seed})"
    else:
        w, b = model_parameters(savedfiles.load_model(model), model, p, np.float64)
        b, parameters_from = float(b), f"the trained model {model}"
    units = ("standardized features (z-scores, statistics of the training split); target in its own units"
             if p.standardization is not None else "the data's own units")
    common = dict(n_features=len(p.feature_names), feature_names=list(p.feature_names), target=p.table.target,
                  source=f"{config} ({_data_set_text(p)}, {n_rows} training rows)", units=units)
    if not show_jacobians:
        return derive.derive_neuron(**common)
    place_of = place_of_train_sample(p)
    rows = gradcheck.sample_rows(n_rows, gradcheck.MAX_ROWS, inputs.loaded.config.seed)
    if rows is None:
        return derive.derive_neuron(**common, X=p.X_train, y=p.y_train, w=w, b=b, sample=sample,
                                    place_of=place_of, parameters_from=parameters_from)
    # large data: evaluated, as gradcheck checks it, on the config seed's sample, with row `sample` in it
    rows = np.union1d(rows, [sample])
    common["source"] = (f"{config} ({_data_set_text(p)}; evaluated on a seeded sample of {len(rows):,} of "
                        f"{n_rows:,} training rows (seed {inputs.loaded.config.seed}), sample {sample} among them)")
    return derive.derive_neuron(**common, X=p.X_train[rows], y=p.y_train[rows], w=w, b=b,
                                sample=int(np.searchsorted(rows, sample)), place_of=lambda i: place_of(int(rows[i])),
                                parameters_from=parameters_from, indices=rows)


def _data_set_text(p: Prepared) -> str:
    """The data set as a derivation's source names it: its file, or its folder or glob and how many files."""
    parts = p.table.parts
    return p.table.path.name + (f", {len(parts)} files" if parts else "")


def place_of_train_sample(p: Prepared) -> Callable[[int], str]:
    """Where training sample i is in the data set, as :meth:`Table.place` names it: "line 7" in a
    CSV, "row 6" in a Parquet file, "part-0003.csv, line 7" in a data set of several files."""
    place = p.table.places()
    return lambda i: place(int(p.train_rows[i]))
