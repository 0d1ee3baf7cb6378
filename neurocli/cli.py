"""The command line: parse options, call the core, hand results to render, map errors to exit codes.

Each command is: options -> one core call (neurocli.pipeline, neurocli.problems) -> a renderer
(neurocli.render) -> an exit code. The exit codes and their meanings are in neurocli.errors,
which every help text here is made from. numpy and the cores are imported inside the commands,
so that --help and --version start fast.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Callable, List, Literal, Optional

import typer
from typer._click import exceptions as click_errors  # the click typer runs on (vendored)
from rich.console import Console

from neurocli import __version__
from neurocli.errors import (EXIT_BAD_INPUT, EXIT_INCONCLUSIVE, EXIT_INTERNAL, EXIT_OUTPUT_LOST, EXIT_SIGHUP,
                             EXIT_SIGINT, EXIT_SIGTERM, EXIT_TRAINING_FAILED, NeurocliError, exit_codes_help)


class _Commands(typer.core.TyperGroup):
    """A usage error (an unknown option, a bad or missing value) is reported like every other
    bad input: one line on stderr, exit 2; standard output that fails, in one line, exit 74."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        if sys.stdout is not None and not isinstance(sys.stdout, _WatchedStdout):
            sys.stdout = _WatchedStdout(sys.stdout)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
            if sys.stdout is not None:
                sys.stdout.flush()  # here, not at exit: a failure is then this command's to report
            code = code if isinstance(code, int) else 0
            lost = _stdout_lost()
            if lost is not None and code == 0:  # (a command that failed has said so; train says it itself)
                print(f"error: standard output failed ({lost})", file=sys.stderr)
                code = EXIT_OUTPUT_LOST
        except click_errors.NoArgsIsHelpError as exc:  # `neurocli` alone: the help, as asked
            exc.show()
            sys.exit(0)
        except click_errors.UsageError as exc:
            where = f"; see {exc.ctx.command_path} --help" if exc.ctx is not None else ""
            print(f"error: {_one_line(exc.format_message()).rstrip('.')}{where}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except click_errors.ClickException as exc:
            print(f"error: {_one_line(exc.format_message())}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except typer.Abort:
            print("error: interrupted; nothing was written", file=sys.stderr)
            sys.exit(EXIT_SIGINT)
        sys.exit(code)


def _one_line(text: str) -> str:
    """``text`` as one line: line breaks (in a file name, say) shown as \\n."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class _WatchedStdout:
    """Standard output that, when it fails (a reader gone, a full disk), notes why in
    :attr:`failed` and sends the rest nowhere: the command goes on, and says at its end."""

    def __init__(self, stream):
        self._stream, self.failed = stream, None

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            self._fail(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.failed = self.failed or exc.strerror or type(exc).__name__
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _stdout_lost() -> str | None:
    """Why standard output failed (closed from the start, a reader gone, a full disk), or None."""
    if sys.stdout is None:
        return "closed"
    return sys.stdout.failed if isinstance(sys.stdout, _WatchedStdout) else None


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Train, gradient-check and derive a single ReLU neuron, max(0, w.x + b), with MSE loss "
         "and hand-derived gradients (Parr & Howard, 'The Matrix Calculus You Need For Deep Learning').",
    epilog=exit_codes_help(),
)

MAX_ERROR_CHARS = 400
DebugOption = typer.Option(False, "--debug", help="Show the full traceback on errors.")


@contextlib.contextmanager
def _one_line_warnings(debug: bool):
    """numpy's floating-point warnings off (neurocli finds non-finite values itself and says what
    they mean); any other warning in one line, not the source line it came from."""
    import warnings

    import numpy as np

    if debug:
        yield
        return
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.showwarning = lambda message, category, *_, **__: print(
            f"warning: {str(message).splitlines()[0] if str(message) else category.__name__}", file=sys.stderr)
        yield


@contextlib.contextmanager
def handle_errors(debug: bool):
    """The one way out for errors: one located line on stderr, the documented exit code."""
    entry = sys.modules.get("neurocli.entry")  # loaded by the console script, not by a program using neurocli
    if entry is not None:
        entry.hand_over()  # a Ctrl-C from here on is this command's KeyboardInterrupt
    try:
        with _one_line_warnings(debug):
            yield
    except NeurocliError as exc:
        if debug:
            traceback.print_exc()
        line = _one_line(exc.located())
        if len(line) > MAX_ERROR_CHARS:  # a value echoed in full could fill the screen
            line = line[:MAX_ERROR_CHARS - 3] + "..."
        print(f"error: {line}", file=sys.stderr)
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
        if sys.stdout is None and isinstance(exc, AttributeError):  # no standard output at all (fd 1 closed)
            print("error: standard output failed (closed)", file=sys.stderr)
            raise typer.Exit(EXIT_OUTPUT_LOST) from None
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


def exit_code_of_signal(signum: int) -> int:
    return {signal.SIGTERM: EXIT_SIGTERM, signal.SIGHUP: EXIT_SIGHUP}.get(signum, EXIT_SIGINT)


class _Signals:
    """SIGINT, SIGTERM, SIGHUP: ask the trainer to stop after the current step; a second signal exits at once.

    Installed before the data is read, so a signal that arrives before training starts still
    ends in a checkpoint at epoch 0 rather than a half-made run directory.
    """

    def __init__(self):
        self.trainer = None
        self.run_dir = None
        self.received: int | None = None
        self._old = {}

    def attach(self, trainer, run_dir=None) -> None:
        self.trainer, self.run_dir = trainer, run_dir
        if self.received is not None:
            trainer.request_stop()

    def _handler(self, signum, frame):
        if self.received is not None:
            # Every file is written atomically (temporary file, then rename): leaving now corrupts nothing.
            where = (f"; the run's last save is in {self.run_dir}; continue with: neurocli train "
                     f"{self.run_dir / 'config.yaml'} --resume {self.run_dir}") if self.run_dir else ""
            os.write(2, f"error: interrupted again: stopped at once{where}\n".encode())
            os._exit(exit_code_of_signal(signum))
        self.received = signum
        if self.trainer is not None:
            self.trainer.request_stop()

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@app.command(epilog=exit_codes_help("train"))
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
    from neurocli.pipeline import TrainRun

    with handle_errors(debug), _Signals() as signals:
        inputs = _read(config, set_, live=not (json_out or quiet))
        run = TrainRun.start(inputs) if resume is None else TrainRun.resume(inputs, resume)
        signals.attach(run.trainer, run.run_dir)
        with run.discarded_unless_saved():
            _train_and_report(run, resume is not None, json_out, quiet, signals)


def _read(config: Path, overrides, live: bool):
    """The run's inputs, with the live view of reading on a terminal."""
    from neurocli import render
    from neurocli.pipeline import load_inputs

    console = Console(highlight=False)
    if not (live and console.is_terminal):
        return load_inputs(config, overrides)
    with render.ReadingView(console) as view:
        return load_inputs(config, overrides, progress=view)


class _Stdout:
    """Standard output that may go away (its reader gone, a full disk): the run goes on without it."""

    def __init__(self):
        self.lost: str | None = None

    def __call__(self, emit: Callable[[], None]) -> None:
        if self.lost is not None:
            return
        try:
            emit()
            sys.stdout.flush()
        except AttributeError:  # no standard output at all (fd 1 closed)
            if sys.stdout is not None:
                raise
        self.lost = _stdout_lost()


def _train_and_report(run, resumed: bool, json_out: bool, quiet: bool, signals: _Signals) -> None:
    """The descent with its live view or log lines, the summary, and the exit code it implies."""
    from neurocli import render

    out, stdout = Console(highlight=False), _Stdout()
    if not (json_out or quiet):
        stdout(lambda: _print_start(out, run, resumed))
    summary = _descend(run, out, stdout, json_out, quiet)
    if json_out:
        stdout(lambda: print(render.summary_event(summary)))
        if summary["warning"]:  # for the human beside the script (the summary panel shows it otherwise)
            print(f"warning: {summary['warning']}", file=sys.stderr)
    else:
        stdout(lambda: out.print(render.summary_renderable(summary, [h["loss"] for h in run.state.history])))
    _exit_for(summary, run, signals, stdout.lost)


def _print_start(out: Console, run, resumed: bool) -> None:
    p = run.inputs.prepared
    table = p.table
    if table.n_dropped:
        out.print(f"dropped {table.n_dropped} row{'s' if table.n_dropped > 1 else ''} with missing values "
                  f"(data.missing: drop); {len(table.rows)} rows left")
    verb = f"resuming at epoch {run.state.epoch} of" if resumed else "training on"
    out.print(f"{verb} {p.X_train.shape[0]} rows, validating on "
              f"{p.X_val.shape[0]}; features: {', '.join(table.feature_names)}; "
              f"target: {table.target}; run directory: {run.run_dir}")


def _descend(run, out: Console, stdout: _Stdout, json_out: bool, quiet: bool) -> dict:
    """Run the descent, showing epochs as NDJSON, in a live view (on a terminal) or as log lines."""
    from neurocli import render

    training = run.inputs.loaded.config.training
    total = training.epochs
    log_every = training.log_every or max(1, total // 20)
    live_mode = out.is_terminal and not json_out and not quiet
    losses: list[float] = [h["loss"] for h in run.state.history]

    emitted: list[int] = []

    def on_epoch(rec):
        losses.append(rec.loss)
        logged = rec.epoch % log_every == 0 or rec.epoch == 1 or rec.epoch == total
        if json_out:
            if logged:
                stdout(lambda: print(render.epoch_event(rec)))
                emitted.append(rec.epoch)
        elif live_mode:
            view.update(rec, losses)
        elif not quiet and logged:
            stdout(lambda: print(render.epoch_line(rec, total)))
            emitted.append(rec.epoch)

    if not live_mode:
        summary = run.run(on_epoch)
        if json_out:
            _emit_last_and_best(run, stdout, emitted)
        elif not quiet and run.state.history and run.state.history[-1]["epoch"] not in emitted:
            from neurocli.train import EpochRecord  # the epoch the run stopped at, whatever stopped it

            stdout(lambda: print(render.epoch_line(EpochRecord(**run.state.history[-1]), total)))
        return summary
    with render.LiveView(out, total, start_epoch=run.state.epoch) as view:
        summary = run.run(on_epoch)
        if run.state.history:
            from neurocli.train import EpochRecord

            view.update(EpochRecord(**run.state.history[-1]), losses, force=True)
    return summary


def _emit_last_and_best(run, stdout: _Stdout, emitted: list[int]) -> None:
    """The last epoch's record, whatever stopped the run, and the best one's when early stopping
    restored its parameters (as a "best" event): what a script reading --json needs at the end."""
    from neurocli import render
    from neurocli.train import EpochRecord, StopReason

    history, st = run.state.history, run.state
    if history and history[-1]["epoch"] not in emitted:
        stdout(lambda: print(render.epoch_event(EpochRecord(**history[-1]))))
    if run.trainer.stopped == StopReason.EARLY_STOPPING and 0 < st.best_epoch <= len(history):
        stdout(lambda: print(render.epoch_event(EpochRecord(**history[st.best_epoch - 1]), "best")))


def _exit_for(summary: dict, run, signals: _Signals, stdout_lost: str | None) -> None:
    from neurocli.train import StopReason

    stopped = summary["stopped"]
    if stdout_lost is not None:
        print(f"error: standard output failed ({stdout_lost}); the run went on without it and was saved in "
              f"{run.run_dir} (stopped: {stopped})", file=sys.stderr)
    if stopped == StopReason.INTERRUPTED:
        print(f"interrupted after epoch {summary['epochs']}: checkpoint saved in {run.run_dir}; continue with: "
              f"neurocli train {run.run_dir / 'config.yaml'} --resume {run.run_dir}", file=sys.stderr)
        raise typer.Exit(exit_code_of_signal(signals.received or signal.SIGINT))
    if stopped in (StopReason.DIVERGED, StopReason.DEAD_NEURON):
        print(f"error: {summary['message']}", file=sys.stderr)
        raise typer.Exit(EXIT_TRAINING_FAILED)
    if stdout_lost is not None:
        raise typer.Exit(EXIT_OUTPUT_LOST)


def _delimiter(value: str) -> str:
    from neurocli.config import delimiter_error, parse_delimiter

    delimiter = parse_delimiter(value)
    problem = delimiter_error(delimiter)
    if problem:
        raise typer.BadParameter(problem)
    return delimiter


@app.command(epilog=exit_codes_help("predict"))
def predict(
    model: Path = typer.Argument(..., help="model.json from a training run."),
    data: str = typer.Argument(..., help="The data, with the model's feature columns: a CSV or Parquet file, a "
                               "folder or a glob of them (one data set, its files in name order, all with the "
                               "same columns), or a URL (s3://..., file://...) as data.path takes it."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the CSV here instead of stdout: atomically (through a symlink to its target), as a stream to a FIFO or device; never onto an input file or the model; - is stdout."),
    delimiter: str = typer.Option(",", "--delimiter", callback=_delimiter,
                                  help="CSV delimiter of DATA: one character; \\t is a tab."),
    debug: bool = DebugOption,
):
    """Apply a trained model to a data set: its rows plus a `prediction` column, as one CSV.

    The saved standardization is applied first. Rows with an empty/NA feature get an empty
    prediction (and a note on stderr); absent feature columns or non-numeric cells are errors.
    Every row, in data-set order: a CSV's records exactly as written (the header once), a
    Parquet file's columns as CSV.
    """
    from neurocli import io as nio
    from neurocli.pipeline import predict_csv

    with handle_errors(debug):
        result = predict_csv(model, data, delimiter)
        n = result.n_missing
        if n:
            print(f"note: {n} row{'s' if n > 1 else ''} of {data} {'have' if n > 1 else 'has'} an empty or NA "
                  f"feature; their {result.column} is left empty", file=sys.stderr)
        nio.write_output("-" if output is None else output, result.csv, protected=_inputs_of(result, model))


def _inputs_of(result, model: Path) -> dict[str, Path]:
    """The files predict read, which -o must not overwrite, each named as the refusal names it."""
    if len(result.files) == 1:
        return {"input CSV": result.files[0], "model file": model}
    return {**{f"input file {f}": f for f in result.files}, "model file": model}


# --- gradcheck command (neurocli/problems.py, neurocli/gradcheck.py, neurocli/render/gradcheck.py) ---

# --jacobian's words for gradcheck.check's modes
JACOBIAN_MODES = {"auto": "auto", "full": "full", "fast": "projection"}
MAX_ROWS_CHECKED = 100_000  # gradcheck.MAX_ROWS, written here so that --help needs no numpy (a test holds them equal)


def _relative_step(value: Optional[float]) -> Optional[float]:
    if value is not None and not (math.isfinite(value) and 0 < value < 1):
        raise typer.BadParameter(f"must be in (0, 1), got {value}")
    if value is not None and value < 1e-15:  # below float64 precision the step rounds to nothing
        raise typer.BadParameter(f"must be at least 1e-15 (a smaller step is lost in float64 rounding), got {value}")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


@app.command(epilog=exit_codes_help("gradcheck"))
def gradcheck(
    config: Optional[Path] = typer.Argument(None, help="YAML config: check on its training data after the same "
                                            "preprocessing as train, at its initial parameters. Omit for a small "
                                            "built-in problem."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key, as for train (repeatable)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Check at the trained parameters of this model.json "
                                         "(CONFIG defaults to the config.yaml next to it)."),
    points: int = typer.Option(0, "--points", min=0, max=10_000,
                               help="Also check at this many seeded random parameter points (at most 10000)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Seed for --points, Jacobian projections and "
                                       "the sample of rows (see --max-rows) [default: the config's seed, or 0]."),
    max_rows: int = typer.Option(MAX_ROWS_CHECKED, "--max-rows", min=1, help="Check on at most this many training "
                                 "rows: larger data is checked on a seeded sample of this many (both sides on the "
                                 "same rows; the report says which) [default: 100,000]."),
    eps: Optional[float] = typer.Option(None, "--eps", callback=_relative_step, help="Relative step: h_j = eps * "
                                        "max(1, |theta_j|), in (0, 1) [default: machine epsilon^(1/3), about "
                                        "6.06e-6]."),
    rtol: float = typer.Option(1e-5, "--rtol", min=0, callback=_finite, help="Relative tolerance: pass when "
                               "|a - n| <= atol + rtol * max(|a|, |n|) + estimated round-off."),
    atol: float = typer.Option(1e-8, "--atol", min=0, callback=_finite, help="Absolute tolerance (see --rtol)."),
    jacobian: Literal["auto", "full", "fast"] = typer.Option("auto", "--jacobian", help="Per-sample Jacobian check: "
                                 "full (whole N x (n+1) matrix), fast (seeded projections u^T J v) or auto (full up "
                                 "to 200,000 entries)."),
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

    Data of more than --max-rows training rows is checked on a seeded sample of that many:
    the check holds several arrays of N x (n+1) values and evaluates the loss many times a
    parameter, and a wrong formula shows on any sample of rows as on all of them. Samples are
    named by their index in the training split and their place in the data set. --json: one
    object; rows_checked, rows_total, sampled and sample_seed say which rows were checked; a
    kink's indices are training-split indices, with places ("line 7", "row 6",
    "part-0003.csv, line 7") and lines (the line in a data set of one CSV file, else null).
    """
    from neurocli.problems import gradcheck_problem

    with handle_errors(debug):
        problem = gradcheck_problem(config, set_, model)
        report = problem.check(eps=eps, rtol=rtol, atol=atol, points=points, seed=seed, max_rows=max_rows,
                               jacobian=JACOBIAN_MODES[jacobian], sweep=sweep)
        _print_report(report, problem, json_out)
    if report.verdict == "fail":
        raise typer.Exit(EXIT_TRAINING_FAILED)
    if report.verdict == "inconclusive":
        raise typer.Exit(EXIT_INCONCLUSIVE)


def _print_report(report, problem, json_out: bool) -> None:
    from neurocli.render import gradcheck as rg

    if json_out:
        print(rg.report_json(report, problem), flush=True)
        return
    out = Console(highlight=False)
    if not out.is_terminal:  # pipes and logs: room for the whole table
        out = Console(highlight=False, width=max(out.width, 130))
    out.print(rg.report_renderable(report, problem))


# --- derive command (neurocli/problems.py, neurocli/derive.py, neurocli/render/derive.py) ---

DeriveFormat = Literal["text", "markdown", "latex", "json"]


@app.command(epilog=exit_codes_help("derive"))
def derive(
    config: Optional[Path] = typer.Argument(None, help="YAML config; without it, a built-in 3-feature example."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key, e.g. --set seed=3 (repeatable)."),
    show_jacobians: bool = typer.Option(False, "--show-jacobians", help="Evaluate every Jacobian on a real sample and check the gradient three ways."),
    sample: int = typer.Option(0, "--sample", help="0-based row of the training data after preprocessing (shown "
                               "with its place in the data set: line 7, row 6 of a Parquet file, or "
                               "part-0003.csv, line 7 in a data set of several files)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Evaluate at a trained model.json instead of the config's initial parameters."),
    example: Optional[Literal["vector-chain-rule"]] = typer.Option(None, "--example", help="A worked example instead of the neuron: vector-chain-rule (section 4.5.3)."),
    x: float = typer.Option(2.0, "--x", help="The point x for --example vector-chain-rule (0.01 <= |x| <= 200)."),
    format_: DeriveFormat = typer.Option("text", "--format", help="text, markdown, latex or json."),
    debug: bool = DebugOption,
):
    """Print the derivation of the neuron's gradient as Parr & Howard do it: intermediate
    variables, one Jacobian per step with its shape (numerator layout), the chain rule, the
    ReLU case split and the loss gradient. --show-jacobians fills each matrix with numbers.

    --format json: the sample and each row of the per-sample table carry "place" (where the
    row is in the data set, as the text names it) and "line" (its line as a number in a data
    set of one CSV file, else null).
    """
    from neurocli.derive import VectorChainRule
    from neurocli.problems import derivation

    with handle_errors(debug):
        result = derivation(config, set_, model=model, show_jacobians=show_jacobians, sample=sample,
                            example=example, x=x)
        _print_derivation(result, format_)
        check = result if isinstance(result, VectorChainRule) else result.check
        if check is not None and not check.ok:
            print(f"error: the gradient computed three ways disagrees (max relative error "
                  f"{check.max_rel_error:.1e} > {check.tolerance:.0e})", file=sys.stderr)
            raise typer.Exit(EXIT_TRAINING_FAILED)


def _print_derivation(result, format_: DeriveFormat) -> None:
    from rich.console import Group

    from neurocli import derive as dv
    from neurocli.render import derive as rd

    if format_ == "text":
        renderables = rd.vcr_renderables(result) if isinstance(result, dv.VectorChainRule) else rd.text_renderables(result)
        out = Console(highlight=False, emoji=False)
        if not out.is_terminal:
            out = Console(highlight=False, emoji=False, width=100)  # pipes and files: a fixed, readable width
        out.print(Group(*renderables))
    else:
        render_fn = {"markdown": rd.to_markdown, "latex": rd.to_latex, "json": rd.to_json}[format_]
        sys.stdout.write(render_fn(result))


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

    with handle_errors(False):
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

    with handle_errors(False):
        freed = cache.clear()
    print(f"cleared {cache.cache_dir()} ({freed / 1e6:.1f} MB freed)")


def main() -> None:
    app(prog_name="neurocli")
