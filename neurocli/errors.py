"""Domain errors. Each carries its exit code and a message that already names the place.

The CLI has one handler that prints ``str(error)`` on one line to stderr and exits with
``error.exit_code``; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

# Documented exit codes (README, "Exit codes").
EXIT_OK = 0
EXIT_TRAINING_FAILED = 1  # train: diverged or dead neuron; gradcheck: mismatch
EXIT_BAD_INPUT = 2
EXIT_INCONCLUSIVE = 3  # gradcheck: nothing to compare (no active sample)
EXIT_INTERNAL = 70  # a bug in neurocli, not the user's input
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


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


class ConfigError(NeurocliError):
    """The YAML config (or a --set override) is invalid."""


class DataError(NeurocliError):
    """The CSV data cannot be used as given."""


class ModelFileError(NeurocliError):
    """A saved model or checkpoint file cannot be used."""


class OutputError(NeurocliError):
    """The run directory or an output file cannot be written."""
