"""The command line: parse options, call the core, hand results to render, map errors to exit codes.

Exit codes: 0 success; 1 training failed (diverged, dead neuron) or gradcheck mismatch;
2 bad input (config, data, model file, output directory); 3 gradcheck inconclusive;
130 interrupted by Ctrl-C (SIGINT); 143 stopped by SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from neurocli import __version__
from neurocli import io as nio
from neurocli.errors import (EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_SIGINT, EXIT_SIGTERM, EXIT_TRAINING_FAILED,
                             NeurocliError)

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 training failed (diverged or dead neuron), a gradient check failed, or "
    "derive's three computations disagree; 2 bad input "
    "(config, data, model file, output directory); 3 gradcheck inconclusive; "
    "70 internal error (a bug: please report it); "
    "130 interrupted (Ctrl-C); 143 terminated (SIGTERM)."
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Train, gradient-check and derive a single ReLU neuron, max(0, w.x + b), with MSE loss "
         "and hand-derived gradients (Parr & Howard, 'The Matrix Calculus You Need For Deep Learning').",
    epilog=EXIT_CODES_HELP,
)

DebugOption = typer.Option(False, "--debug", help="Show the full traceback on errors.")


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def handle_errors(debug: bool):
    """The one way out for errors: one located line on stderr, the documented exit code."""
    try:
        yield
    except NeurocliError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc.located()}", file=sys.stderr)
        raise typer.Exit(exc.exit_code)
    except MemoryError:
        if debug:
            traceback.print_exc()
        print("error: out of memory: the data does not fit; try training.dtype: float32 or fewer rows", file=sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("error: interrupted; nothing was written", file=sys.stderr)
        raise typer.Exit(EXIT_SIGINT)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # a bug in neurocli: still one line, the traceback on request
        if debug:
            traceback.print_exc()
        print(f"error: internal error ({type(exc).__name__}: {exc}); rerun with --debug for the traceback "
              f"and please report it", file=sys.stderr)
        raise typer.Exit(EXIT_INTERNAL)


def version_callback(value: bool):
    if value:
        print(f"neurocli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True, help="Show the version and exit."),
):
    """neurocli: see, check and trust the gradients of a ReLU neuron."""


class _Signals:
    """SIGINT/SIGTERM: ask the trainer to stop after the current step; a second signal exits at once.

    Installed before the data is read, so a signal that arrives before training starts still
    ends in a checkpoint at epoch 0 rather than a half-made run directory.
    """

    def __init__(self):
        self.trainer = None
        self.received: int | None = None
        self._old = {}

    def attach(self, trainer) -> None:
        self.trainer = trainer
        if self.received is not None:
            trainer.request_stop()

    def _handler(self, signum, frame):
        if self.received is not None:
            # Every file is written atomically (temporary file, then rename): leaving now corrupts nothing.
            os._exit(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)
        self.received = signum
        if self.trainer is not None:
            self.trainer.request_stop()

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@app.command(epilog=EXIT_CODES_HELP)
def train(
    config: Path = typer.Argument(..., help="YAML config file (see configs/quickstart.yaml)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key, e.g. --set training.epochs=50 (repeatable)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the interrupted run in this run directory."),
    json_out: bool = typer.Option(False, "--json", help="Print NDJSON only on stdout: one object per logged epoch, then a summary."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final summary."),
    debug: bool = DebugOption,
):
    """Train the neuron by gradient descent; save model.json, history.csv and config.yaml in a run directory.

    Shows a live view on a terminal, plain lines otherwise. An existing run directory is never
    overwritten: a new one gets a -2, -3, ... suffix. Ctrl-C saves a checkpoint for --resume.
    """
    from neurocli import render
    from neurocli.pipeline import TrainRun, load_inputs

    with handle_errors(debug), _Signals() as signals:
        inputs = load_inputs(config, set_)
        cfg = inputs.loaded.config
        if resume is not None:
            run = TrainRun.resume(inputs, resume)
        else:
            try:
                run_dir = nio.create_run_dir(Path(cfg.output.dir))
            except NeurocliError as exc:
                raise inputs.loaded.error(("output", "dir"), f"output.dir: {exc.located()}") from exc
            try:
                nio.check_writable(run_dir)
            except NeurocliError:
                with contextlib.suppress(OSError):
                    run_dir.rmdir()
                raise
            run = TrainRun(inputs, run_dir)
        signals.attach(run.trainer)
        try:
            _train_and_report(run, inputs, cfg, resume, json_out, quiet, signals, render)
        except (typer.Exit, KeyboardInterrupt):
            raise
        except BaseException:
            # A new run that could not save a checkpoint (disk full, a bug) leaves nothing behind.
            if resume is None and not (run.run_dir / "checkpoint.json").exists():
                shutil.rmtree(run.run_dir, ignore_errors=True)
            raise


def _train_and_report(run, inputs, cfg, resume, json_out, quiet, signals, render) -> None:
    """The descent with its live view or log lines, the summary, and the exit code it implies."""
    from neurocli.train import StopReason

    out = Console(highlight=False)
    table = inputs.prepared.table
    if not (json_out or quiet):
        if table.n_dropped:
            out.print(f"dropped {table.n_dropped} row{'s' if table.n_dropped > 1 else ''} with missing values "
                      f"(data.missing: drop); {len(table.rows)} rows left")
        verb = f"resuming at epoch {run.state.epoch} of" if resume is not None else "training on"
        out.print(f"{verb} {inputs.prepared.X_train.shape[0]} rows, validating on "
                  f"{inputs.prepared.X_val.shape[0]}; features: {', '.join(table.feature_names)}; "
                  f"target: {table.target}; run directory: {run.run_dir}")
    total = cfg.training.epochs
    log_every = cfg.training.log_every or max(1, total // 20)
    live_mode = out.is_terminal and not json_out and not quiet
    losses: list[float] = [h["loss"] for h in run.state.history]

    def on_epoch(rec):
        losses.append(rec.loss)
        if json_out:
            if rec.epoch % log_every == 0 or rec.epoch == total or rec.epoch == 1:
                print(render.epoch_event(rec), flush=True)
        elif live_mode:
            view.update(rec, losses)
        elif not quiet and (rec.epoch % log_every == 0 or rec.epoch == 1 or rec.epoch == total):
            print(render.epoch_line(rec, total), flush=True)

    if live_mode:
        with render.LiveView(out, total, start_epoch=run.state.epoch) as view:
            summary = run.run(on_epoch)
            if run.state.history:
                from neurocli.train import EpochRecord

                view.update(EpochRecord(**run.state.history[-1]), losses, force=True)
    else:
        summary = run.run(on_epoch)
    if json_out:
        print(render.summary_event(summary), flush=True)
    else:
        out.print(render.summary_renderable(summary, [h["loss"] for h in run.state.history]))
    stopped = summary["stopped"]
    if stopped == StopReason.INTERRUPTED:
        print(f"interrupted after epoch {summary['epochs']}: checkpoint saved in {run.run_dir}; continue with: "
              f"neurocli train {run.run_dir / 'config.yaml'} --resume {run.run_dir}", file=sys.stderr)
        raise typer.Exit(EXIT_SIGTERM if signals.received == signal.SIGTERM else EXIT_SIGINT)
    if stopped in (StopReason.DIVERGED, StopReason.DEAD_NEURON):
        print(f"error: {summary['message']}", file=sys.stderr)
        raise typer.Exit(EXIT_TRAINING_FAILED)


@app.command(epilog="Exit codes: 0 success; 2 bad input (model file, data file, output file).")
def predict(
    model: Path = typer.Argument(..., help="model.json from a training run."),
    data: Path = typer.Argument(..., help="CSV file with the model's feature columns."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the CSV here (atomically) instead of stdout."),
    delimiter: str = typer.Option(",", "--delimiter", help="CSV delimiter of DATA."),
    debug: bool = DebugOption,
):
    """Apply a trained model to a CSV: the input rows plus a `prediction` column.

    The saved standardization is applied first. Rows with an empty/NA feature get an empty
    prediction (and a note on stderr); absent feature columns or non-numeric cells are errors.
    """
    import numpy as np

    from neurocli.data import Standardization, read_table
    from neurocli.neuron import predict as neuron_predict

    with handle_errors(debug):
        m = nio.load_model(model)
        table = read_table(data, target=None, features=m["features"], missing="keep", delimiter=delimiter, keep_frame=True)
        X = table.X
        if m.get("standardization"):
            X = Standardization.from_dict(m["standardization"]).apply(X)
        pred = neuron_predict(X, np.asarray(m["weights_standardized"], dtype=np.float64), float(m["bias_standardized"]))
        frame = table.frame.copy()
        name = "prediction" if "prediction" not in frame.columns else "prediction_neurocli"
        frame[name] = pred
        n_missing = int(np.isnan(pred).sum())
        if n_missing:
            print(f"note: {n_missing} row{'s' if n_missing > 1 else ''} of {data} {'have' if n_missing > 1 else 'has'} "
                  f"an empty or NA feature; "
                  f"their {name} is left empty", file=sys.stderr)
        text = frame.to_csv(index=False, lineterminator="\n")
        if output is None:
            sys.stdout.write(text)
        else:
            nio.atomic_write_text(output, text)


# --- gradcheck command (neurocli/gradcheck.py, neurocli/render/gradcheck.py) ---

GRADCHECK_EXIT_HELP = (
    "Exit codes: 0 pass (every gradient agrees); 1 fail (a gradient, the Jacobian or the determinism "
    "check disagrees); 2 bad input (config, data, model file, options); 3 inconclusive (no active "
    "sample: both gradients are zero and prove nothing, or every sample straddles the kink)."
)


def _gradcheck_problem(config, set_, model):
    """(X, y, w, b, names, line_of, source, seed, label) for the gradcheck command."""
    import numpy as np

    from neurocli.errors import ConfigError, ModelFileError
    from neurocli.gradcheck import builtin_problem
    from neurocli.pipeline import load_inputs

    m = nio.load_model(model) if model is not None else None
    if config is None and model is not None:
        config = Path(model).parent / "config.yaml"
        if not config.exists():
            raise ModelFileError("no CONFIG given and no config.yaml next to the model: pass the training config",
                                 path=model)
    if config is None:
        if set_:
            raise ConfigError("--set needs a CONFIG to override")
        X, y, w, b, names = builtin_problem()
        return X, y, w, b, names, None, "built-in problem, ", None, "built-in parameters"
    inputs = load_inputs(config, set_)
    p = inputs.prepared
    names = list(p.feature_names)
    w, b, label = inputs.w0, inputs.b0, "initial parameters"
    if model is not None:
        if list(m["features"]) != names:
            raise ModelFileError(f"the model's features ({', '.join(m['features'])}) differ from the config's "
                                 f"data.features ({', '.join(names)})", path=model)
        if (m.get("standardization") is None) != (p.standardization is None):
            raise ModelFileError("the model and the config differ in data.standardize", path=model)
        w = np.asarray(m["weights_standardized"], dtype=p.X_train.dtype)
        b = p.X_train.dtype.type(m["bias_standardized"])
        label = f"trained parameters ({model})"
    source = f"{config}, training split{', standardized' if p.standardization is not None else ''}, "
    return (p.X_train, p.y_train, w, b, names, p.line_of_train_sample, source,
            inputs.loaded.config.seed, label)


@app.command(epilog=GRADCHECK_EXIT_HELP)
def gradcheck(
    config: Optional[Path] = typer.Argument(None, help="YAML config: check on its training data after the same "
                                            "preprocessing as train, at its initial parameters. Omit for a small "
                                            "built-in problem."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key, as for train (repeatable)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Check at the trained parameters of this model.json "
                                         "(CONFIG defaults to the config.yaml next to it)."),
    points: int = typer.Option(0, "--points", help="Also check at this many seeded random parameter points."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for --points and Jacobian projections "
                                       "[default: the config's seed, or 0]."),
    eps: Optional[float] = typer.Option(None, "--eps", help="Relative step: h_j = eps * max(1, |theta_j|) "
                                        "[default: machine epsilon^(1/3), about 6.06e-6]."),
    rtol: float = typer.Option(1e-5, "--rtol", help="Relative tolerance: pass when |a - n| <= atol + "
                               "rtol * max(|a|, |n|) + estimated round-off."),
    atol: float = typer.Option(1e-8, "--atol", help="Absolute tolerance (see --rtol)."),
    jacobian: str = typer.Option("auto", "--jacobian", help="Per-sample Jacobian check: full (whole N x (n+1) "
                                 "matrix), fast (seeded projections u^T J v) or auto (full up to 200,000 entries)."),
    sweep: bool = typer.Option(False, "--sweep", help="Also show the error against steps 1e-2 ... 1e-10."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout instead of the tables."),
    debug: bool = DebugOption,
):
    """Compare the analytic gradients of w and b with float64 central differences, handling the ReLU kink.

    Per parameter: analytic, numeric, absolute and symmetric relative error, pass/fail, worst
    first. Samples whose z_i is within one step of 0 straddle the kink and would give a wrong
    difference: the step is shrunk below their margin where precision allows, otherwise they
    are excluded from both sides; at an exact tie z_i = 0 the analytic value must match the
    ReLU'(0) = 0 side and lie between the one-sided differences. Also checks the per-sample
    Jacobian and that two analytic calls agree bit for bit.
    """
    import math

    from neurocli import gradcheck as gc
    from neurocli.errors import EXIT_INCONCLUSIVE, ConfigError
    from neurocli.render import gradcheck as rg

    with handle_errors(debug):
        for name, value, ok in (("--eps", eps, eps is None or (math.isfinite(eps) and 0 < eps < 1)),
                                ("--rtol", rtol, math.isfinite(rtol) and rtol >= 0),
                                ("--atol", atol, math.isfinite(atol) and atol >= 0),
                                ("--points", points, points >= 0)):
            if not ok:
                bound = "in (0, 1)" if name == "--eps" else ">= 0"
                raise ConfigError(f"{name} must be {bound}, got {value}")
        mode = {"auto": "auto", "full": "full", "fast": "projection"}.get(jacobian)
        if mode is None:
            raise ConfigError(f"--jacobian must be auto, full or fast, got {jacobian!r}")
        X, y, w, b, names, line_of, source, cfg_seed, label = _gradcheck_problem(config, set_, model)
        seed_used = seed if seed is not None else (cfg_seed if cfg_seed is not None else 0)
        report = gc.check(X, y, w, b, eps=eps, rtol=rtol, atol=atol, names=names, points=points, seed=seed_used,
                          jacobian=mode, sweep=sweep, label=label)
        if json_out:
            print(rg.report_json(report, line_of), flush=True)
        else:
            out = Console(highlight=False)
            if not out.is_terminal:  # pipes and logs: room for the whole table
                out = Console(highlight=False, width=max(out.width, 130))
            out.print(rg.report_renderable(report, line_of, source))
    if report.verdict == "fail":
        raise typer.Exit(EXIT_TRAINING_FAILED)
    if report.verdict == "inconclusive":
        raise typer.Exit(EXIT_INCONCLUSIVE)


# --- derive command (neurocli/derive.py, neurocli/render/derive.py) ---

DERIVE_FORMATS = ("text", "markdown", "latex", "json")
DERIVE_EXAMPLES = ("vector-chain-rule",)


def _derive_inputs(config: Path, set_, model: Optional[Path], sample: int):
    """Data, parameters and units for derive from a config (and optionally a model.json)."""
    import numpy as np

    from neurocli.errors import ConfigError, ModelFileError
    from neurocli.pipeline import load_inputs

    inputs = load_inputs(config, set_)
    p = inputs.prepared
    n_rows = p.X_train.shape[0]
    if not 0 <= sample < n_rows:
        raise ConfigError(f"{sample} is out of range: the training data after preprocessing has "
                          f"{n_rows} rows (0 to {n_rows - 1})", where="--sample")
    if model is None:
        w, b, source = inputs.w0, inputs.b0, f"the config's initial parameters (seed {inputs.loaded.config.seed})"
    else:
        m = nio.load_model(model)
        if list(m["features"]) != list(p.feature_names):
            raise ModelFileError(f"--model: the model's features ({', '.join(m['features'])}) differ from the "
                                 f"config's ({', '.join(p.feature_names)})", path=model)
        if bool(m.get("standardization")) != (p.standardization is not None):
            raise ModelFileError("--model: the model was trained with"
                                 f"{'' if m.get('standardization') else 'out'} standardized features, the config "
                                 f"has data.standardize: {'true' if p.standardization is not None else 'false'}",
                                 path=model)
        w = np.asarray(m["weights_standardized"], dtype=np.float64)
        b, source = float(m["bias_standardized"]), f"the trained model {model}"
    units = ("standardized features (z-scores, statistics of the training split); target in its own units"
             if p.standardization is not None else "the CSV's own units")
    return inputs, w, b, source, units


@app.command(epilog="Exit codes: 0 success; 1 the three ways of computing the gradient disagree; "
                    "2 bad input (config, data, model file, option).")
def derive(
    config: Optional[Path] = typer.Argument(None, help="YAML config; without it, a built-in 3-feature example."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key, e.g. --set seed=3 (repeatable)."),
    show_jacobians: bool = typer.Option(False, "--show-jacobians", help="Evaluate every Jacobian on a real sample and check the gradient three ways."),
    sample: int = typer.Option(0, "--sample", help="0-based row of the training data after preprocessing (shown with its CSV line)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Evaluate at a trained model.json instead of the config's initial parameters."),
    example: Optional[str] = typer.Option(None, "--example", help="A worked example instead of the neuron: vector-chain-rule (section 4.5.3)."),
    x: float = typer.Option(2.0, "--x", help="The point x for --example vector-chain-rule (x != 0)."),
    format_: str = typer.Option("text", "--format", help="text, markdown, latex or json."),
    debug: bool = DebugOption,
):
    """Print the derivation of the neuron's gradient as Parr & Howard do it: intermediate
    variables, one Jacobian per step with its shape (numerator layout), the chain rule, the
    ReLU case split and the loss gradient. --show-jacobians fills each matrix with numbers.
    """
    from rich.console import Group

    from neurocli import derive as dv
    from neurocli.errors import ConfigError
    from neurocli.render import derive as rd

    with handle_errors(debug):
        if example is None and config is None and model is not None:
            config = Path(model).parent / "config.yaml"  # the run's own config, as gradcheck does
            if not config.exists():
                raise ConfigError("no CONFIG given and no config.yaml next to the model: pass the training "
                                  "config", where="--model")
        if format_ not in DERIVE_FORMATS:
            raise ConfigError(f"must be one of {', '.join(DERIVE_FORMATS)}, got {format_!r}", where="--format")
        if example is not None:
            if example not in DERIVE_EXAMPLES:
                raise ConfigError(f"must be one of {', '.join(DERIVE_EXAMPLES)}, got {example!r}",
                                  where="--example")
            if config is not None or model is not None:
                raise ConfigError("--example works on its own: give no CONFIG and no --model", where="--example")
            if not (x != 0 and abs(x) < 1e150):
                raise ConfigError(f"must be a finite number other than 0 (ln(x²) needs x² > 0), got {x}",
                                  where="--x")
            result = dv.derive_vector_chain_rule(x)
        elif config is None and model is None:
            n = len(dv.EXAMPLE_X)
            if show_jacobians and not 0 <= sample < n:
                raise ConfigError(f"{sample} is out of range: the built-in example has {n} rows (0 to {n - 1})",
                                  where="--sample")
            result = dv.derive_example(show_jacobians, sample)
        else:
            inputs, w, b, source, units = _derive_inputs(config, set_, model, sample)
            p = inputs.prepared
            common = dict(n_features=len(p.feature_names), feature_names=list(p.feature_names),
                          target=p.table.target, source=f"{config} ({p.table.path.name}, {p.X_train.shape[0]} training rows)",
                          units=units)
            if show_jacobians:
                result = dv.derive_neuron(**common, X=p.X_train, y=p.y_train, w=w, b=b, sample=sample,
                                          line_of=p.line_of_train_sample, parameters_from=source)
            else:
                result = dv.derive_neuron(**common)
        if format_ == "text":
            renderables = rd.vcr_renderables(result) if isinstance(result, dv.VectorChainRule) else rd.text_renderables(result)
            out = Console(highlight=False, emoji=False)
            if not out.is_terminal:
                out = Console(highlight=False, emoji=False, width=100)  # pipes and files: a fixed, readable width
            out.print(Group(*renderables))
        else:
            render_fn = {"markdown": rd.to_markdown, "latex": rd.to_latex, "json": rd.to_json}[format_]
            sys.stdout.write(render_fn(result))
        check = result if isinstance(result, dv.VectorChainRule) else result.check
        if check is not None and not check.ok:
            print(f"error: the gradient computed three ways disagrees (max relative error "
                  f"{check.max_rel_error:.1e} > {check.tolerance:.0e})", file=sys.stderr)
            raise typer.Exit(EXIT_TRAINING_FAILED)


# --- cache command (neurocli/cache.py) ---

cache_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="The binary cache of parsed data files, kept under the user's cache folder "
                             "($NEUROCLI_CACHE_DIR, else $XDG_CACHE_HOME/neurocli, else ~/.cache/neurocli); "
                             "NEUROCLI_CACHE=off turns it off.")
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info(json_out: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Show the cache folder and, per entry, the data file, rows and size."""
    import json

    from neurocli import cache

    s = cache.info()
    if json_out:
        print(json.dumps(s))
        return
    print(f"cache: {s['dir']} ({'on' if s['enabled'] else 'off: NEUROCLI_CACHE=off'}); "
          f"{len(s['entries'])} entr{'y' if len(s['entries']) == 1 else 'ies'}, {s['bytes'] / 1e6:.1f} MB")
    for e in s["entries"]:
        print(f"  {e['file']}  {e['rows']} rows  {e['bytes'] / 1e6:.1f} MB")


@cache_app.command("clear")
def cache_clear():
    """Delete every cached table; the next run parses its CSV again."""
    from neurocli import cache

    freed = cache.clear()
    print(f"cleared {cache.cache_dir()} ({freed / 1e6:.1f} MB freed)")


def main() -> None:
    app(prog_name="neurocli")
