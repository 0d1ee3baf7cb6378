"""Domain errors. Each carries its exit code and a message that already names the place.

The CLI has one handler that prints ``str(error)`` on one line to stderr and exits with
``error.exit_code``; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

# The exit codes; EXIT_CODES below says what each means, and every help text is made from it.
EXIT_OK = 0
EXIT_TRAINING_FAILED = 1  # train: diverged or dead neuron; gradcheck: mismatch; derive: the three ways disagree
EXIT_BAD_INPUT = 2
EXIT_INCONCLUSIVE = 3  # gradcheck: nothing to compare (no active sample)
EXIT_INTERNAL = 70  # a bug in neurocli, not the user's input
EXIT_OUTPUT_LOST = 74  # train: standard output closed or full; the run still went on and was saved
EXIT_SIGHUP = 129
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

COMMANDS = ("train", "predict", "evaluate", "init", "gradcheck", "derive", "plot")

# (code, meaning, what it means for a command that says it differently; None: that command never says it)
EXIT_CODES: tuple[tuple[int, str, dict[str, str | None]], ...] = (
    (EXIT_OK, "success", {"gradcheck": "pass (every gradient agrees)"}),
    (EXIT_TRAINING_FAILED,
     "training failed (diverged or dead neuron), a gradient check failed, or derive's three computations disagree",
     {"train": "training failed (diverged or dead neuron)", "predict": None, "evaluate": None, "init": None,
      "plot": None,
      "gradcheck": "fail (a gradient, the Jacobian or the determinism check disagrees)",
      "derive": "the three ways of computing the gradient disagree"}),
    (EXIT_BAD_INPUT, "bad input (config, data, model file, output directory)",
     {"predict": "bad input (model file, data file, output file)",
      "evaluate": "bad input (model file, data file)",
      "init": "bad input (data file, target, an output file that exists)",
      "gradcheck": "bad input (config, data, model file, options)",
      "derive": "bad input (config, data, model file, option)",
      "plot": "bad input (not a run directory, a damaged run file, config, data, an unwritable plots folder)"}),
    (EXIT_INCONCLUSIVE, "gradcheck inconclusive",
     {"train": None, "predict": None, "evaluate": None, "init": None, "derive": None, "plot": None,
      "gradcheck": "inconclusive (no active sample: both gradients are zero and prove nothing; every sample "
                   "straddles the kink; or a step too small for float64 precision)"}),
    (EXIT_INTERNAL, "internal error (a bug: please report it)", {}),
    (EXIT_OUTPUT_LOST, "standard output closed or full (train: the run went on without it and was saved)",
     {"train": "standard output closed or full (the run went on without it and was saved)",
      "predict": "standard output closed or full (use -o to write a file)",
      "evaluate": "standard output closed or full", "init": "standard output closed or full (use -o to write a file)",
      "gradcheck": "standard output closed or full", "derive": "standard output closed or full",
      "plot": "standard output closed or full"}),
    # only train handles SIGHUP, like SIGTERM (checkpoint, then 129); the other commands just end
    (EXIT_SIGHUP, "hung up (SIGHUP)", {"predict": None, "evaluate": None, "init": None, "gradcheck": None,
                                       "derive": None, "plot": None}),
    (EXIT_SIGINT, "interrupted (Ctrl-C)", {}),
    # only train handles SIGTERM (checkpoint, then 143); the other commands just end
    (EXIT_SIGTERM, "terminated (SIGTERM)", {"predict": None, "evaluate": None, "init": None, "gradcheck": None,
                                            "derive": None, "plot": None}),
)


def exit_codes(command: str | None = None) -> list[tuple[int, str]]:
    """(code, meaning) for every exit code of ``command`` (None: of neurocli as a whole)."""
    if command is not None and command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    rows = []
    for code, meaning, per_command in EXIT_CODES:
        if command is not None and command in per_command:
            meaning = per_command[command]
        if meaning is not None:
            rows.append((code, meaning))
    return rows


def exit_codes_help(command: str | None = None) -> str:
    """The one-sentence list of exit codes that a --help page ends with."""
    return "Exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in exit_codes(command)) + "."


class NeurocliError(Exception):
    """An error the user can fix; the message names the file and the place."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, path: object | None = None, where: str | None = None):
        self.message = message
        self.path = path
        self.where = where
        super().__init__(self.located())

    def located(self) -> str:
        prefix = ""
        if self.path is not None:
            prefix = f"{self.path}"
            if self.where:
                prefix += f", {self.where}"
            prefix += ": "
        elif self.where:
            prefix = f"{self.where}: "
        return prefix + self.message

    def lines(self) -> list[str]:
        """The error as the lines the CLI prints, each after ``error: ``: this one."""
        return [self.located()]


class ConfigError(NeurocliError):
    """The YAML config (or a --set override) is invalid."""


class ConfigErrors(ConfigError):
    """Several problems of one config, found in one pass: one located line each, in the order
    of the file (then the ``--set`` overrides), so that one round of editing fixes them all."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.message, path=first.path, where=first.where)
        self.args = ("\n".join(self.lines()),)

    def lines(self) -> list[str]:
        return [e.located() for e in self.errors]


class DataError(NeurocliError):
    """The CSV data cannot be used as given."""


class ModelFileError(NeurocliError):
    """A saved model or checkpoint file cannot be used."""


class OutputError(NeurocliError):
    """The run directory or an output file cannot be written."""
