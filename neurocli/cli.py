"""The command line: parse options, call the core, hand results to render, map errors to exit codes.

Each command is: options -> one core call (neurocli.pipeline, neurocli.problems) -> a renderer
(neurocli.render) -> an exit code. The exit codes and their meanings are in neurocli.errors,
which every help text here is made from. numpy, rich and the cores are imported inside the
commands, so that --help and --version start fast, and train checks its config before
numpy loads (docs/design.md, "Start-up").
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import shutil
import sys
import textwrap
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Literal, Optional

import typer
from typer._click import exceptions as click_errors  # the click typer runs on (vendored)

from neurocli import __version__
from neurocli.errors import (EXIT_BAD_INPUT, EXIT_INCONCLUSIVE, EXIT_INTERNAL, EXIT_OUTPUT_LOST, EXIT_SIGHUP,
                             EXIT_SIGINT, EXIT_SIGTERM, EXIT_TRAINING_FAILED, NeurocliError, exit_codes_help)

if TYPE_CHECKING:
    from rich.console import Console


class _HelpGroup(typer.core.TyperGroup):
    """A group whose --help lists each command with the first clause of its help (up to the
    first ": " or "; ", else its first sentence) whole, wrapped to the page; click would cut
    it to one line and end it with "..."."""

    def format_commands(self, ctx, formatter) -> None:
        commands = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        rows = [(name, _first_clause(cmd.get_short_help_str(limit=10_000)))
                for name, cmd in commands if cmd is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _first_clause(sentence: str) -> str:
    """``"Train the neuron; save its files."`` -> ``"Train the neuron"``."""
    import re

    return re.split(r"[:;] ", sentence, maxsplit=1)[0].rstrip(".")


class _Commands(_HelpGroup):
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
                _say(f"error: standard output failed ({lost})")
                code = EXIT_OUTPUT_LOST
        except click_errors.NoArgsIsHelpError as exc:  # `neurocli` alone: the help, as asked
            exc.show()
            sys.exit(0)
        except click_errors.UsageError as exc:
            where = f"; see {exc.ctx.command_path} --help" if exc.ctx is not None else ""
            _say(f"error: {_one_line(exc.format_message()).rstrip('.')}{where}")
            sys.exit(EXIT_BAD_INPUT)
        except click_errors.ClickException as exc:
            _say(f"error: {_one_line(exc.format_message())}")
            sys.exit(exc.exit_code)
        except typer.Abort:
            _say("error: interrupted; nothing was written")
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


class _Command(typer.core.TyperCommand):
    """A command whose help names its parameters as users read them: arguments in capitals
    (``neurocli train [OPTIONS] CONFIG``, ``[CONFIG]`` when optional) and options with their
    choices (``--format [text|markdown|latex|json]``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is None:
                param.metavar = _metavar(param)

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                shown = param.metavar if param.required else f"[{param.metavar}]"
                pieces.append(shown + ("..." if param.nargs != 1 else ""))
        return pieces


def _metavar(param) -> str | None:
    """An argument's name in capitals; an option's choices as ``[a|b|c]``, or its items' type
    for a repeatable one (``<str>``); None: what typer shows (``<path>``, ``<float>``)."""
    if param.param_type_name == "argument":
        return param.name.upper()
    kind = getattr(param, "type_descriptor", None)
    if kind is None or getattr(param, "is_flag", False):
        return None
    if kind.is_choice:
        return "[" + "|".join(map(str, kind.choices)) + "]"
    if kind.is_list:
        return f"<{param.bare_type().removeprefix('list[').removesuffix(']')}>"
    return None


class _App(typer.Typer):
    """A Typer app whose commands are made as :class:`_Command`, unless one asks otherwise."""

    def command(self, *args, **kwargs):
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


# -h is --help, for every command (click hands the names down to the subcommands' contexts)
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

app = _App(
    cls=_Commands,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings=HELP_OPTIONS,
    help="Train, gradient-check and derive a single ReLU neuron, max(0, w.x + b), with MSE loss "
         "and hand-derived gradients (Parr & Howard, 'The Matrix Calculus You Need For Deep Learning').",
    epilog=exit_codes_help(),
)

MAX_ERROR_CHARS = 400
DebugOption = typer.Option(False, "--debug", help="Show the full traceback on errors.")


def _numpy_quiet(debug: bool):
    """numpy's floating-point warnings off (neurocli finds non-finite values itself and says
    what they mean), unless --debug."""
    if debug:
        return contextlib.nullcontext()
    import numpy as np

    return np.errstate(all="ignore")


@contextlib.contextmanager
def _one_line_warnings(debug: bool, numpy: bool = True):
    """Any warning in one line, not the source line it came from; numpy's floating-point
    warnings off (``numpy=False``: numpy left unloaded, for the steps before it is needed)."""
    import warnings

    if debug:
        yield
        return
    with _numpy_quiet(debug) if numpy else contextlib.nullcontext(), warnings.catch_warnings():
        warnings.showwarning = lambda message, category, *_, **__: print(
            f"warning: {str(message).splitlines()[0] if str(message) else category.__name__}", file=sys.stderr)
        yield


def _console(**options) -> Console:
    """A rich Console, without highlighting (rich loads here: --help and --version need none of it)."""
    from rich.console import Console

    return Console(highlight=False, **options)


def _say(text: str) -> None:
    """An error, warning or note on stderr: one line, wrapped at words to the terminal's width
    when stderr is one (a terminal would break it mid-word)."""
    if sys.stderr is not None and sys.stderr.isatty():
        width = shutil.get_terminal_size().columns
        text = textwrap.fill(text, width=max(20, width), subsequent_indent="  ", break_long_words=False,
                             break_on_hyphens=False)
    print(text, file=sys.stderr)


@contextlib.contextmanager
def handle_errors(debug: bool, numpy: bool = True):
    """The one way out for errors: one located line on stderr, the documented exit code.
    ``numpy=False``: numpy is not loaded for it (its warnings are then the caller's to quiet)."""
    entry = sys.modules.get("neurocli.entry")  # loaded by the console script, not by a program using neurocli
    if entry is not None:
        entry.hand_over()  # a Ctrl-C from here on is this command's KeyboardInterrupt
    try:
        with _one_line_warnings(debug, numpy):
            yield
    except NeurocliError as exc:
        if debug:
            traceback.print_exc()
        for line in map(_one_line, exc.lines()):  # one line a problem (a config may have several)
            if len(line) > MAX_ERROR_CHARS:  # a value echoed in full could fill the screen
                line = line[:MAX_ERROR_CHARS - 3] + "..."
            _say(f"error: {line}")
        raise typer.Exit(exc.exit_code)
    except MemoryError:
        if debug:
            traceback.print_exc()
        _say("error: out of memory: the data does not fit; try training.dtype: float32 or fewer rows")
        raise typer.Exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        _say("error: interrupted; nothing was written")
        raise typer.Exit(EXIT_SIGINT)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # a bug in neurocli: still one line, the traceback on request
        if sys.stdout is None and isinstance(exc, AttributeError):  # no standard output at all (fd 1 closed)
            _say("error: standard output failed (closed)")
            raise typer.Exit(EXIT_OUTPUT_LOST) from None
        if debug:
            traceback.print_exc()
        _say(f"error: internal error ({type(exc).__name__}: {exc}); rerun with --debug for the traceback "
             f"and please report it")
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
    config: Path = typer.Argument(..., help="YAML config file, e.g. configs/quickstart.yaml, which "
                                  "`neurocli init --example` writes."),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help="Override a config key, e.g. --set training.epochs=50 (repeatable)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the interrupted run in this run directory."),
    json_out: bool = typer.Option(False, "--json", help="Print NDJSON only on stdout: one object per logged epoch, then a summary."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final summary."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config (every default "
                                      "filled in, data.features from the data's header) as YAML and exit, "
                                      "without training."),
    debug: bool = DebugOption,
):
    """Train the neuron by gradient descent; save model.json, history.csv and config.yaml in a run directory.

    Shows a live view on a terminal, plain lines otherwise. An existing run directory is never
    overwritten: a new one gets a -2, -3, ... suffix. Ctrl-C saves a checkpoint for --resume.
    A target with negative values, which a ReLU cannot output, is warned of at the start.
    """
    if print_config:
        with handle_errors(debug):
            _print_resolved_config(config, set_)
        return
    with handle_errors(debug, numpy=False), _Signals() as signals:
        loaded = _checked_config(config, set_)  # a wrong key or a missing file is told before numpy loads
        from neurocli.engines import compiled
        from neurocli.pipeline import TrainRun

        compiled.on_compile(lambda line: _say(f"note: {line}"))
        with _numpy_quiet(debug):
            inputs = _read(config, set_, loaded, live=not (json_out or quiet))
            run = TrainRun.start(inputs) if resume is None else TrainRun.resume(inputs, resume)
            signals.attach(run.trainer, run.run_dir)
            if run.trainer.start_warning and not json_out:  # --json: with the summary's warning, at the end
                _say(f"warning: {run.trainer.start_warning}")
            with run.discarded_unless_saved():
                _train_and_report(run, resume is not None, json_out, quiet, signals)


def _checked_config(config: Path, overrides):
    """The config loaded and validated, its data.path checked: yaml and pydantic, not numpy."""
    from neurocli.config import check_data_path, load_config

    loaded = load_config(config, overrides)
    check_data_path(loaded)
    return loaded


def _print_resolved_config(config: Path, overrides) -> None:
    """The config with every default filled in and data.features read from the data's header,
    as YAML: training it gives the same run as ``config``."""
    import yaml

    from neurocli.config import load_config, resolve_features
    from neurocli.pipeline import load_inputs

    loaded = resolve_features(load_config(config, overrides))
    if loaded.config.data.features is None:  # data.path names no file: reading the data says why, as train does
        loaded = loaded.with_features(load_inputs(config, overrides, loaded=loaded).prepared.feature_names)
    print(yaml.safe_dump(loaded.resolved(every_key=True), sort_keys=False), end="")


def _read(config: Path, overrides, loaded, live: bool):
    """The run's inputs, with the live view of reading on a terminal."""
    from neurocli.pipeline import load_inputs

    console = _console() if live else None
    if console is None or not console.is_terminal:
        return load_inputs(config, overrides, loaded=loaded)
    from neurocli import render

    with render.ReadingView(console) as view:
        return load_inputs(config, overrides, loaded=loaded, progress=view)


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
    from neurocli.render.layout import show

    out, stdout = _console(), _Stdout()
    if not (json_out or quiet):
        stdout(lambda: _print_start(out, run, resumed))
    summary = _descend(run, out, stdout, json_out, quiet)
    if json_out:
        stdout(lambda: print(render.summary_event(summary)))
        if summary["warning"]:  # for the human beside the script (the summary panel shows it otherwise)
            _say(f"warning: {summary['warning']}")
    else:
        stdout(lambda: show(out, render.summary_renderable(summary, [h["loss"] for h in run.state.history])))
    _exit_for(summary, run, signals, stdout.lost)


def _print_start(out: Console, run, resumed: bool) -> None:
    """What the run reads and where it writes: wrapped at words on a terminal, one line a message elsewhere."""
    from neurocli.render.layout import Prose, show

    p = run.inputs.prepared
    table = p.table
    if table.n_dropped:
        show(out, Prose(f"dropped {table.n_dropped} row{'s' if table.n_dropped > 1 else ''} with missing values "
                        f"(data.missing: drop); {len(table.rows)} rows left"))
    verb = f"resuming at epoch {run.state.epoch} of" if resumed else "training on"
    show(out, Prose(f"{verb} {p.X_train.shape[0]} rows, validating on "
                    f"{p.X_val.shape[0]}; features: {', '.join(table.feature_names)}; "
                    f"target: {table.target}; run directory: {run.run_dir}"))


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
            stdout(lambda: print(render.epoch_line(rec, total, out.width if out.is_terminal else None)))
            emitted.append(rec.epoch)

    if not live_mode:
        summary = run.run(on_epoch)
        if json_out:
            _emit_last_and_best(run, stdout, emitted)
        elif not quiet and run.state.history and run.state.history[-1]["epoch"] not in emitted:
            from neurocli.train import EpochRecord  # the epoch the run stopped at, whatever stopped it

            stdout(lambda: print(render.epoch_line(EpochRecord(**run.state.history[-1]), total,
                                                      out.width if out.is_terminal else None)))
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
        _say(f"error: standard output failed ({stdout_lost}); the run went on without it and was saved in "
             f"{run.run_dir} (stopped: {stopped})")
    if stopped == StopReason.INTERRUPTED:
        print(f"interrupted after epoch {summary['epochs']}: checkpoint saved in {run.run_dir}; continue with: "
              f"neurocli train {run.run_dir / 'config.yaml'} --resume {run.run_dir}", file=sys.stderr)
        raise typer.Exit(exit_code_of_signal(signals.received or signal.SIGINT))
    if stopped in (StopReason.DIVERGED, StopReason.DEAD_NEURON):
        _say(f"error: {summary['message']}")
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
                               "same columns), a URL (s3://..., file://...) as data.path takes it, or - for a "
                               "CSV on standard input."),
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
    from neurocli.pipeline import data_or_stdin, predict_csv

    with handle_errors(debug):
        with data_or_stdin(data) as source:
            result = predict_csv(model, source, delimiter)
        n = result.n_missing
        if n:
            from neurocli.render.layout import Prose, show

            show(_console(stderr=True),
                 Prose(f"note: {n} row{'s' if n > 1 else ''} of {_shown(data)} {'have' if n > 1 else 'has'} an empty "
                       f"or NA feature; their {result.column} is left empty"))
        nio.write_output("-" if output is None else output, result.csv, protected=_inputs_of(result, model))


def _inputs_of(result, model: Path) -> dict[str, Path]:
    """The files predict read, which -o must not overwrite, each named as the refusal names it."""
    if len(result.files) == 1:
        return {"input CSV": result.files[0], "model file": model}
    return {**{f"input file {f}": f for f in result.files}, "model file": model}


def _shown(data: str) -> str:
    """DATA as a message names it: standard input as <stdin>."""
    return "<stdin>" if data == "-" else data


# --- evaluate command (neurocli/pipeline.py evaluate_model, neurocli/render/evaluate.py) ---

@app.command(epilog=exit_codes_help("evaluate"))
def evaluate(
    model: Path = typer.Argument(..., help="model.json from a training run."),
    data: str = typer.Argument(..., help="Held-out data with the model's feature and target columns, read as "
                               "predict reads it: a CSV or Parquet file, a folder or a glob of them, a URL, or - "
                               "for a CSV on standard input."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object: mse, rmse, mae, r2, rows, "
                                  "rows_skipped."),
    delimiter: str = typer.Option(",", "--delimiter", callback=_delimiter,
                                  help="CSV delimiter of DATA: one character; \\t is a tab."),
    debug: bool = DebugOption,
):
    """Score a trained model on held-out data: the MSE, RMSE, MAE and R^2 of its predictions.

    The data is read and checked as predict reads it; rows with an empty or NA feature or
    target are left out and counted in one note on stderr. The metrics are computed as
    train computes its own, on the rows scored.
    """
    from neurocli.pipeline import data_or_stdin, evaluate_model
    from neurocli.render import evaluate as rev

    with handle_errors(debug):
        with data_or_stdin(data) as source:
            result = evaluate_model(model, source, delimiter)
        note = rev.skipped_note(result, _shown(data))
        if note:
            print(note, file=sys.stderr)
        if json_out:
            print(rev.evaluation_json(result))
        else:
            _console().print(rev.evaluation_renderable(result, str(model), _shown(data)))


# --- init command (neurocli/scaffold.py) ---

@app.command(epilog=exit_codes_help("init"))
def init(
    data: Optional[str] = typer.Argument(None, help="The data to write a config for: a CSV or Parquet file, a "
                                         "folder or a glob of them, or a URL, as data.path takes it."),
    target: Optional[str] = typer.Option(None, "--target", help="The column to predict (numeric)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the config to this file, which "
                                          "must not exist (without -o: to stdout). With --example: the folder "
                                          "to write into [default: the current one]."),
    example: bool = typer.Option(False, "--example", help="Write the quickstart instead: configs/quickstart.yaml "
                                 "and data/penguins.csv, as shipped with neurocli."),
    delimiter: str = typer.Option(",", "--delimiter", callback=_delimiter,
                                  help="CSV delimiter of DATA: one character; \\t is a tab."),
    debug: bool = DebugOption,
):
    """Write a config for a data set: one that trains at once, every key with its default.

    The numeric columns become the features (text columns are named in a comment and left
    out); missing: drop when used columns have empty or NA cells (how many, in a comment);
    standardized features, a validation split with early stopping, and a learning rate
    stable on z-scores. Never overwrites a file. --example writes the quickstart's config
    and data.
    """
    with handle_errors(debug):
        if example:
            _init_example(data, target, output)
        else:
            _init_config(data, target, output, delimiter)


def _init_example(data: Optional[str], target: Optional[str], output: Optional[Path]) -> None:
    from neurocli.errors import ConfigError
    from neurocli.scaffold import write_example

    if data is not None or target is not None:
        raise ConfigError("--example writes the quickstart on its own: give no DATA and no --target", where="--example")
    config, csv = write_example(Path(".") if output is None else output)
    print(f"wrote {config} and {csv}\ntrain it with: neurocli train {config}")


def _init_config(data: Optional[str], target: Optional[str], output: Optional[Path], delimiter: str) -> None:
    from neurocli.errors import ConfigError
    from neurocli.scaffold import scaffold, write_new

    if data is None or target is None:
        raise ConfigError("give the DATA and its --target COLUMN (or --example for the quickstart)", where="init")
    to_file = None if output is None or str(output) == "-" else output
    text, survey = scaffold(data, target, delimiter, to_file)
    if to_file is None:
        sys.stdout.write(text)
        return
    write_new(output, text.encode("utf-8"))
    print(f"wrote {output}: {len(survey.features)} features, target {target}\ntrain it with: neurocli train {output}")


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
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                             help="Override a config key, as for train (repeatable)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Check at the trained parameters of this model.json "
                                         "(CONFIG defaults to the config.yaml next to it)."),
    points: int = typer.Option(0, "--points", min=0, max=10_000,
                               help="Also check at this many seeded random parameter points (at most 10000)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Seed for --points, Jacobian projections and "
                                       "the sample of rows (see --max-rows) [default: the config's seed, or 0]."),
    max_rows: int = typer.Option(MAX_ROWS_CHECKED, "--max-rows", min=1, show_default=False,
                                 help="Check on at most this many training "
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
        with _points_progress(points) as progress:
            report = problem.check(eps=eps, rtol=rtol, atol=atol, points=points, seed=seed, max_rows=max_rows,
                                   jacobian=JACOBIAN_MODES[jacobian], sweep=sweep, progress=progress)
        _print_report(report, problem, json_out)
    if report.verdict == "fail":
        raise typer.Exit(EXIT_TRAINING_FAILED)
    if report.verdict == "inconclusive":
        raise typer.Exit(EXIT_INCONCLUSIVE)


def _print_report(report, problem, json_out: bool) -> None:
    from neurocli.render import gradcheck as rg
    from neurocli.render.layout import Prose, show

    if json_out:
        print(rg.report_json(report, problem), flush=True)
        return
    report, left_out = _worst_points(report)
    out = _console()
    show(out, rg.report_renderable(report, problem))
    if left_out:
        show(out, Prose(left_out))


@contextlib.contextmanager
def _points_progress(points: int):
    """A progress bar of the random points checked, on stderr when it is a terminal; the
    callback for gradcheck.check's ``progress`` (None: nothing to show)."""
    err = _console(stderr=True)
    if points < 1 or not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("checking random points"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("points", total=points)
        yield lambda done, total: bar.update(task, completed=done)


MAX_POINTS_SHOWN = 20  # points of a report printed as tables; --json has every one


def _worst_points(report):
    """The report as printed: its first point (the parameters asked for) and the worst of its
    random points, :data:`MAX_POINTS_SHOWN` in all, worst first; and the line that counts
    those left out (None: none is)."""
    import dataclasses

    if len(report.points) <= MAX_POINTS_SHOWN:
        return report, None
    rank = {"fail": 2, "inconclusive": 1, "pass": 0}

    def worst_first(point):
        return (-rank[point.verdict], -max((p.badness for p in point.parameters), default=0.0))

    first, rest = report.points[0], sorted(report.points[1:], key=worst_first)
    shown, hidden = rest[:MAX_POINTS_SHOWN - 1], rest[MAX_POINTS_SHOWN - 1:]
    counts = {v: sum(p.verdict == v for p in hidden) for v in ("fail", "inconclusive", "pass")}
    tally = ", ".join(f"{n:,} {v}" for v, n in counts.items() if n)
    line = f"shown: the {len(shown)} worst of {len(rest):,} random points; {len(hidden):,} more ({tally}) in --json"
    return dataclasses.replace(report, points=[first, *shown]), line


# --- derive command (neurocli/problems.py, neurocli/derive.py, neurocli/render/derive.py) ---

DeriveFormat = Literal["text", "markdown", "latex", "json"]


@app.command(epilog=exit_codes_help("derive"))
def derive(
    config: Optional[Path] = typer.Argument(None, help="YAML config; without it, a built-in 3-feature example."),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                             help="Override a config key, e.g. --set seed=3 (repeatable)."),
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
            _say(f"error: the gradient computed three ways disagrees (max relative error "
                 f"{check.max_rel_error:.1e} > {check.tolerance:.0e})")
            raise typer.Exit(EXIT_TRAINING_FAILED)


def _print_derivation(result, format_: DeriveFormat) -> None:
    from rich.console import Group

    from neurocli import derive as dv
    from neurocli.render import derive as rd
    from neurocli.render.layout import show

    if format_ == "text":
        renderables = rd.vcr_renderables(result) if isinstance(result, dv.VectorChainRule) else rd.text_renderables(result)
        show(_console(emoji=False), Group(*renderables))
    else:
        render_fn = {"markdown": rd.to_markdown, "latex": rd.to_latex, "json": rd.to_json}[format_]
        sys.stdout.write(render_fn(result))


# --- plot command (neurocli/plot.py) ---

@app.command(epilog=exit_codes_help("plot"))
def plot(
    run_dir: Path = typer.Argument(..., help="A run directory (it holds model.json and history.csv)."),
    format_: Literal["png", "svg"] = typer.Option("png", "--format", help="png or svg."),
    config: Optional[Path] = typer.Option(None, "--config", help="Read the data and replay the descent from this "
                                          "config [default: RUN_DIR/config.yaml]."),
    debug: bool = DebugOption,
):
    """Draw a run's pictures into RUN_DIR/plots/: loss.png (training and validation loss per
    epoch, log scale, the epoch early stopping restored marked), predicted.png (predicted
    against actual on the validation rows, or the training rows without a split; R^2 in the
    title) and surface.png (the training loss over the two most influential weights, the
    other parameters at their trained values, with the descent's path and the crease where a
    row crosses z = 0). Prints the paths written, one a line.

    The path is the run's config trained again in a temporary folder (the same bits); a
    replay that does not end at model.json's parameters is named in a warning. The surface is
    evaluated on at most 20,000 training rows (a seeded sample; the picture says so). Files
    of the same names are replaced atomically.
    """
    from neurocli.plot import write_plots

    with handle_errors(debug):
        paths, warnings = write_plots(run_dir, format_, config)
    for warning in warnings:
        _say(f"warning: {warning}")
    for path in paths:
        print(path)


# --- schema command (neurocli/config.py) ---

@app.command()
def schema():
    """Print the config's JSON Schema, for editors that complete and check YAML.

    Save it and name it on a config's first line, for a YAML language server (editors'
    YAML extensions use one):

        neurocli schema > neurocli.schema.json

        # yaml-language-server: $schema=neurocli.schema.json
    """
    import json

    from neurocli.config import json_schema

    with handle_errors(False):
        print(json.dumps(json_schema(), indent=2))


# --- cache command (neurocli/cache.py) ---

cache_app = _App(cls=_HelpGroup, no_args_is_help=True, rich_markup_mode=None,
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
    from neurocli.render.cache import info_renderable
    from neurocli.render.layout import show

    show(_console(), info_renderable(s))


@cache_app.command("clear")
def cache_clear():
    """Delete every cached table; the next run parses its CSV again."""
    from neurocli import cache

    with handle_errors(False):
        freed = cache.clear()
    print(f"cleared {cache.cache_dir()} ({freed / 1e6:.1f} MB freed)")


def main() -> None:
    app(prog_name="neurocli")
