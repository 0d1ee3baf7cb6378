"""What went wrong in a run, in words that name the likely cause and the fix.

The trainer decides when a run stops (:mod:`neurocli.train`); this module only words why:
a dead neuron (every sample below the kink), a divergence (non-finite, or a loss grown far
beyond its start) and a run that completed yet fits worse than predicting the mean. The
causes it can tell apart: unscaled features (their size makes a learning rate meant for
z-scores overshoot), a step too large (the loss had risen before), and a bias or target that
keeps the output at 0.
"""

from __future__ import annotations

import math

import numpy as np

from neurocli.config import TrainingConfig

# A feature whose root mean square exceeds this is "unscaled": the curvature of the loss grows
# with its square, so a learning rate fit for standardized features (size 1) overshoots.
UNSCALED_FEATURE_SIZE = 10.0
# A run that ends with a training R^2 below this (an MSE above twice the mean's) gets a warning.
WORSE_THAN_MEAN_R2 = -1.0
# A dead neuron whose loss had risen above this many times its first epoch's died of a step too large.
LOSS_ROSE = 2.0


def largest_feature(X: np.ndarray) -> tuple[int, float]:
    """The column of X with the largest root mean square, and that size (in float64, column by
    column: no copy of X; an overflow gives inf, not a warning)."""
    sizes = []
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(X.shape[1]):
            col = X[:, j].astype(np.float64)
            sizes.append(math.sqrt(float(col @ col) / max(1, X.shape[0])))
    j = int(np.argmax(sizes)) if sizes else 0
    return j, (sizes[j] if sizes else 0.0)


class Advice:
    """The messages of one run. ``X``: the training features as arrays, to measure their
    scale (None when an engine holds the data elsewhere: no feature is then named)."""

    def __init__(self, cfg: TrainingConfig, *, standardized: bool, bias_from_target_mean: bool,
                 X: np.ndarray | None = None, feature_names: list[str] | None = None,
                 target_mean: float | None = None):
        self.cfg = cfg
        self.standardized = standardized
        self.bias_from_target_mean = bias_from_target_mean
        self.target_mean = target_mean  # of the training target, when known
        self._X, self._names = X, feature_names
        self._unscaled: tuple[str, float] | None = None
        self._measured = False

    @property
    def _lr(self) -> str:
        return f"training.learning_rate (now {self.cfg.learning_rate:g})"

    def dead(self, when: str, b: float, losses: list[float]) -> str:
        """No sample above the kink ``when`` ("at the start" or "at epoch N"), at bias ``b``,
        after epochs of these ``losses``."""
        head = (f"dead neuron {when}: no training sample has w.x + b > 0, so every gradient is exactly zero "
                f"and descent cannot move (ReLU'(z) = 0 for z <= 0); ")
        return head + (self._dead_at_start(b) if when == "at the start" else self._dead_later(losses))

    def _dead_at_start(self, b: float) -> str:
        """A positive bias alone keeps every sample active: then the initial weights times
        unscaled features are what pushed them all below the kink."""
        unscaled = self._unscaled_feature()
        if unscaled is not None and b > 0:
            return (f"likely cause: the features are unscaled ({self._size(unscaled)}), so the initial "
                    f"w.x outweighs the bias: set data.standardize: true")
        return self._bias_fix()

    def _dead_later(self, losses: list[float]) -> str:
        """Alive at the start, dead after a step: unscaled features, or a step too large (the
        loss had risen); else the bias and target advice with a smaller step."""
        unscaled = self._unscaled_feature()
        if unscaled is not None:
            return (f"likely cause: the features are unscaled ({self._size(unscaled)}), so steps of "
                    f"{self._lr} overshoot and one pushed every sample below the kink: set data.standardize: true "
                    f"or lower training.learning_rate")
        rose = max(losses) / losses[0] if losses and losses[0] > 0 else 0.0
        also = "" if self.standardized else " or set data.standardize: true"
        if rose > LOSS_ROSE:
            return (f"likely cause: a step too large: the loss rose to {rose:.3g} times its first epoch's, then a "
                    f"step pushed every sample below the kink: lower {self._lr}{also}")
        if self.target_mean is not None and self.target_mean > 0:  # alive at the start on a positive target
            return (f"likely cause: a step too large: the target is positive (mean {self.target_mean:.3g}) and the "
                    f"neuron was alive, until a step pushed every sample below the kink: lower {self._lr}{also}")
        return f"{self._bias_fix()}; a step pushed every sample below the kink, so also lower {self._lr}"

    def _bias_fix(self) -> str:
        if self.bias_from_target_mean:
            return ("the bias starts at the target's mean, so the target is mostly <= 0 here or the initial "
                    "weights push every sample below 0; a ReLU cannot output negative values: give "
                    "model.bias_init a positive number or check the target's sign")
        return ("start with a positive bias (model.bias_init: target_mean) or random weights "
                "(model.weights_init: normal)")

    def diverged(self, epoch: int, what: str | None = None) -> str:
        """``what`` happened at ``epoch`` (default: a non-finite loss or parameter, the last
        finite parameters kept), with the advice."""
        what = what or "the loss or a parameter became non-finite (kept the last finite parameters)"
        return f"training diverged at epoch {epoch}: {what}; {self._smaller_step()}"

    def grew(self, epoch: int, loss: float, first: float, zero_output: float, limit: float) -> str:
        """The loss at ``epoch`` is over ``limit`` times its ``first`` epoch's and the loss of
        predicting 0 (``zero_output``)."""
        return self.diverged(epoch, f"the loss grew to {loss:.3g}, over {limit:g} times both its first "
                                    f"epoch's ({first:.3g}) and the target's mean square ({zero_output:.3g})")

    def _smaller_step(self) -> str:
        advice = f"try a smaller {self._lr}"
        if self.standardized:
            return advice
        unscaled = self._unscaled_feature()
        why = "" if unscaled is None else f" (the features are unscaled: {self._size(unscaled)})"
        return f"{advice} or data.standardize: true{why}"

    def poor_fit(self, stopped: str, fit: dict, first_loss: float) -> str | None:
        """The warning for a run that ``stopped`` ("completed", "early_stopping") with ``fit``
        (:func:`neurocli.train.evaluate` on the training set) below :data:`WORSE_THAN_MEAN_R2`."""
        if not fit["r2"] < WORSE_THAN_MEAN_R2:
            return None
        verb = "completed" if stopped == "completed" else "stopped early"
        if fit["mse"] > first_loss:
            also = "" if self.standardized else " or set data.standardize: true"
            fix = f"its loss ended above where it started: lower {self._lr}{also}"
        else:
            fix = f"its loss fell but not far enough: raise training.epochs (now {self.cfg.epochs}) or {self._lr}"
        return (f"the run {verb} but R^2 on the training data is {fit['r2']:.3g}, far worse than predicting "
                f"the mean (R^2 = 0); {fix}")

    def no_progress(self, rose: float) -> str:
        """The warning for early stopping that kept epoch 1's parameters: no later epoch improved
        on them, and the training loss rose to ``rose`` times epoch 1's."""
        also = "" if self.standardized else " or set data.standardize: true"
        return (f"early stopping kept epoch 1's parameters: no later epoch improved on them while the loss rose "
                f"to {rose:.3g} times its first epoch's; the steps overshoot: lower {self._lr}{also}")

    @staticmethod
    def negative_target(y: np.ndarray) -> str | None:
        """The warning, at the start of a run, for a training target with values below 0: a ReLU
        outputs none, so those rows keep an error whatever the parameters (None: no such row)."""
        negative = int(np.count_nonzero(y < 0)) if y.size else 0
        if not negative:
            return None
        rows = f"{negative} of the {y.size} training rows have" if negative > 1 else f"1 of the {y.size} training rows has"
        return (f"{rows} a negative target (the smallest {float(np.min(y)):.6g}), which a ReLU cannot output (its "
                f"values are >= 0): they are predicted 0 at best; shift the target by a constant to make it >= 0")

    def _unscaled_feature(self) -> tuple[str, float] | None:
        """(name, size) of the largest feature when the run is not standardized and that
        feature's root mean square exceeds :data:`UNSCALED_FEATURE_SIZE`; measured once."""
        if not self._measured:
            self._measured = True
            if not self.standardized and self._X is not None and self._X.shape[1] > 0:
                j, size = largest_feature(self._X)
                if size > UNSCALED_FEATURE_SIZE:
                    names = self._names
                    self._unscaled = (names[j] if names and j < len(names) else f"feature {j + 1}", size)
        return self._unscaled

    @staticmethod
    def _size(unscaled: tuple[str, float]) -> str:
        name, size = unscaled
        return f"{name} has a typical size of {size:.3g}"
