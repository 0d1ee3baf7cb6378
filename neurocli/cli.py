"""The command line: parse options, call the core, hand results to render, map errors to exit codes.

Exit codes: 0 success; 1 training failed (diverged, dead neuron) or gradcheck mismatch;
2 bad input (config, data, model file, output directory); 3 gradcheck inconclusive;
130 interrupted by Ctrl-C (SIGINT); 143 stopped by SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
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
    "Exit codes: 0 success; 1 training failed (diverged or dead neuron); 2 bad input "
    "(config, data, model file, output directory); 70 internal error (a bug: please report it); "
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
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
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
    """SIGINT/SIGTERM: ask the trainer to stop after the current step; a second signal exits at once."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.received: int | None = None
        self._old = {}

    def _handler(self, signum, frame):
        if self.received is not None:
            # Every file is written atomically, so leaving now corrupts nothing.
            os._exit(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)
        self.received = signum
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

    with handle_errors(debug):
        inputs = load_inputs(config, set_)
        cfg = inputs.loaded.config
        if resume is not None:
            run = TrainRun.resume(inputs, resume)
        else:
            run_dir = nio.create_run_dir(Path(cfg.output.dir))
            try:
                nio.check_writable(run_dir)
            except NeurocliError:
                with contextlib.suppress(OSError):
                    run_dir.rmdir()
                raise
            run = TrainRun(inputs, run_dir)

        out = Console(highlight=False)
        note_console = err_console() if json_out else out
        table = inputs.prepared.table
        if not (json_out or quiet):
            if table.n_dropped:
                out.print(f"dropped {table.n_dropped} row{'s' if table.n_dropped > 1 else ''} with missing values "
                          f"(data.missing: drop); {table.X.shape[0]} rows left")
            out.print(f"training on {inputs.prepared.X_train.shape[0]} rows, validating on "
                      f"{inputs.prepared.X_val.shape[0]}; features: {', '.join(table.feature_names)}; "
                      f"target: {table.target}; run directory: {run.run_dir}")
        total = cfg.training.epochs
        log_every = cfg.training.log_every or max(1, total // 20)
        live_mode = out.is_terminal and not json_out and not quiet
        losses: list[float] = []

        def on_epoch(rec):
            losses.append(rec.loss)
            if json_out:
                if rec.epoch % log_every == 0 or rec.epoch == total or rec.epoch == 1:
                    print(render.epoch_event(rec), flush=True)
            elif live_mode:
                view.update(rec, losses)
            elif not quiet and (rec.epoch % log_every == 0 or rec.epoch == 1 or rec.epoch == total):
                print(render.epoch_line(rec, total), flush=True)

        with _Signals(run.trainer) as signals:
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
            out.print(render.summary_renderable(summary))
        stopped = summary["stopped"]
        if stopped == "interrupted":
            sig = signals.received or signal.SIGINT
            print(f"interrupted after epoch {summary['epochs']}: checkpoint saved in {run.run_dir}; continue with: "
                  f"neurocli train {run.run_dir / 'config.yaml'} --resume {run.run_dir}", file=sys.stderr)
            raise typer.Exit(EXIT_SIGTERM if sig == signal.SIGTERM else EXIT_SIGINT)
        if stopped in ("diverged", "dead_neuron"):
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
    from neurocli.kernels import predict as neuron_predict

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
            print(f"note: {n_missing} row{'s' if n_missing > 1 else ''} of {data} have an empty or NA feature; "
                  f"their {name} is left empty", file=sys.stderr)
        text = frame.to_csv(index=False, lineterminator="\n")
        if output is None:
            sys.stdout.write(text)
        else:
            nio.atomic_write_text(output, text)


# --- gradcheck command (neurocli/gradcheck.py, neurocli/render/gradcheck.py) ---


# --- derive command (neurocli/derive.py, neurocli/render/derive.py) ---


def main() -> None:
    app(prog_name="neurocli")
