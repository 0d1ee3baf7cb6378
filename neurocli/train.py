"""Gradient descent on one ReLU neuron: yields one record per epoch, never prints.

Full batch: ``w <- w - lr * grad_w``, ``b <- b - lr * grad_b`` once per epoch on all
training rows. Mini-batch: the same per batch, the batch's own N in the mean, the rows
shuffled each epoch from the seed and the epoch's number. Every bit of state that decides the
future (parameters, epoch, position inside the epoch, early-stopping memory, history) lives
in :class:`TrainState`, so a run stopped after any step and resumed ends bit-identical.
This module is the policy (epochs, early stopping, a dead or diverged neuron, stop reasons);
how a step runs over the data is the engine's (:mod:`neurocli.engines`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable, Iterator

import numpy as np

from neurocli import neuron
from neurocli.config import TrainingConfig
from neurocli.diagnoses import Advice
from neurocli.engines import Engine, EpochSums, memory, rows_per_block, stream
from neurocli.engines.memory import MemoryEngine

# A run stops as diverged when an epoch's loss exceeds this many times the larger of its first
# epoch's loss and the loss of predicting 0 (a dead neuron's, mean(y^2)): its predictions are
# then off by 100 times the target's own size, a blow-up no descent comes back from. Legitimate
# runs stay within a few times their start (noisy early mini-batch epochs included).
LOSS_GROWTH_LIMIT = 1e4


class StopReason(StrEnum):
    """Why a run stopped (the summary's and the checkpoint's ``stopped``)."""

    COMPLETED = "completed"
    EARLY_STOPPING = "early_stopping"
    DIVERGED = "diverged"
    DEAD_NEURON = "dead_neuron"
    INTERRUPTED = "interrupted"

    @property
    def succeeded(self) -> bool:
        return self in (StopReason.COMPLETED, StopReason.EARLY_STOPPING)


@dataclass
class EpochRecord:
    """One row of history.csv: metrics of one epoch (val_* are None without a split)."""

    epoch: int
    loss: float
    rmse: float
    mae: float
    val_loss: float | None
    val_rmse: float | None
    val_mae: float | None
    grad_norm: float
    active_fraction: float
    bias: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TrainState:
    """Everything needed to continue a run exactly where it stopped.

    w : ndarray of shape (n_features,) in the training dtype; b : scalar of that dtype.
    epoch : epochs completed. batch : batches done inside the current epoch (mini-batch);
    the epoch's shuffle is redrawn from its number (:func:`neurocli.engines.epoch_order`).
    sums : running sums of the current epoch (saved as ``partial``).
    """

    w: np.ndarray
    b: np.floating
    epoch: int = 0
    batch: int = 0
    sums: EpochSums = field(default_factory=EpochSums)
    best_w: np.ndarray | None = None
    best_b: float | None = None
    best_loss: float = math.inf
    best_epoch: int = 0
    wait: int = 0
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        # history is not here: it is history.csv, written beside the checkpoint (floats in repr, exact)
        d = {"epoch": self.epoch, "batch": self.batch, "partial": self.sums.to_dict()}
        d.update({k: getattr(self, k) for k in ("best_loss", "best_epoch", "wait")})
        d["w"] = [float(v) for v in self.w]
        d["b"] = float(self.b)
        d["dtype"] = str(self.w.dtype)
        d["best_w"] = None if self.best_w is None else [float(v) for v in self.best_w]
        d["best_b"] = None if self.best_b is None else float(self.best_b)
        d["best_loss"] = None if math.isinf(self.best_loss) else self.best_loss
        return d

    @classmethod
    def from_dict(cls, d: dict, history: list[dict]) -> "TrainState":
        dtype = np.dtype(d["dtype"])
        return cls(
            w=np.asarray(d["w"], dtype=dtype),
            b=dtype.type(d["b"]),
            epoch=int(d["epoch"]),
            batch=int(d["batch"]),
            sums=EpochSums.from_dict(d["partial"]),
            best_w=None if d["best_w"] is None else np.asarray(d["best_w"], dtype=dtype),
            best_b=None if d["best_b"] is None else dtype.type(d["best_b"]),
            best_loss=math.inf if d["best_loss"] is None else float(d["best_loss"]),
            best_epoch=int(d["best_epoch"]),
            wait=int(d["wait"]),
            history=list(history),
        )


def initial_parameters(model_cfg, n_features: int, y_train: np.ndarray, seed: int, dtype) -> tuple[np.ndarray, np.floating]:
    """``weights_init``: normal N(0, 1/n) from the seed, zeros, or the list as given;
    ``bias_init``: the training target's mean, or the number as given."""
    dtype = np.dtype(dtype)
    wi = model_cfg.weights_init
    if isinstance(wi, list):
        w = np.asarray(wi, dtype=dtype)
    elif wi == "zeros":
        w = np.zeros(n_features, dtype=dtype)
    else:
        w = np.random.default_rng([seed, 2]).normal(0.0, 1.0 / math.sqrt(n_features), n_features).astype(dtype)
    bi = model_cfg.bias_init
    b = float(np.mean(y_train, dtype=np.float64)) if bi == "target_mean" else float(bi)
    return w, dtype.type(b)


def evaluate(X: np.ndarray, y: np.ndarray, w: np.ndarray, b) -> dict:
    """MSE, RMSE, MAE and R^2 of the neuron on (X, y); empty dict for 0 rows."""
    if X.shape[0] == 0:
        return {}
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged model reports inf, not a warning
        return _evaluate(X, y, w, b)


def _evaluate(X, y, w, b) -> dict:
    """The metrics of a grid of one block from the residuals in float64; of many blocks from
    the reduction rule's sums (by the stream engine's walk, which holds a part at a time of
    an X in a mapped file), so every engine reports the same bits."""
    centred = y.astype(np.float64) - float(np.mean(y, dtype=np.float64))
    sst = float(centred @ centred)
    n = X.shape[0]
    if rows_per_block(n, X.shape[1], X.dtype) >= n:
        r = neuron.predict(X, w, b).astype(np.float64) - y
        sq, mae = float(r @ r), float(np.abs(r).mean())
        mse = sq / n
    else:
        lg = stream.loss_and_gradient(X, y, w, b, block_fn=memory.errors_fn_for(n, X.shape[1], X.dtype))
        mse, mae = lg.loss, lg.abs_error_sum / n
        sq = mse * n
    return {
        "mse": mse,
        "rmse": math.sqrt(mse) if math.isfinite(mse) else math.inf,
        "mae": mae,
        "r2": 1.0 - sq / sst if sst > 0 else float("nan"),
    }


def engine_options(cfg: TrainingConfig, seed: int, n_samples: int, dtype) -> dict:
    """What every engine is built with, from the training config: the rows per step (a batch
    larger than the data is the data), the shuffle, seed and epochs, and the learning rate
    as the training dtype holds it."""
    batch_size = n_samples if cfg.batch_size is None else min(cfg.batch_size, n_samples)
    return dict(batch_size=batch_size, shuffle=cfg.shuffle, seed=seed, epochs=cfg.epochs,
                lr=float(np.dtype(dtype).type(cfg.learning_rate)))


class Trainer:
    """Runs the descent; iterate :meth:`run` for epoch records, then read :attr:`stopped`.

    ``request_stop()`` (from a signal handler) makes the loop stop after the current step
    with ``stopped == StopReason.INTERRUPTED`` and :attr:`state` ready to checkpoint.
    """

    def __init__(self, X, y, X_val, y_val, cfg: TrainingConfig, seed: int, state: TrainState, *,
                 standardized: bool = False, bias_from_target_mean: bool = False, engine: Engine | None = None,
                 feature_names: list[str] | None = None):
        """X, y : the training set as arrays, run by the in-memory engine; or ``engine``, any
        :class:`neurocli.engines.Engine` over the training set (then X and y are not used: the
        messages measure no feature sizes and a completed run gets no R^2 warning).
        ``feature_names`` : to name a feature in a message (else "feature 1", ...)."""
        self.X_val, self.y_val = X_val, y_val
        self.cfg, self.seed, self.state = cfg, seed, state
        self.advice = Advice(cfg, standardized=standardized, bias_from_target_mean=bias_from_target_mean,
                             X=X if engine is None else None, feature_names=feature_names,
                             target_mean=None if engine is not None or y.size == 0 else
                             float(np.mean(y, dtype=np.float64)))
        self.stopped: StopReason | None = None
        self.message: str | None = None
        # what the data shows before the first step (a target a ReLU cannot reach), for the start of the run
        self.start_warning: str | None = None if y is None else Advice.negative_target(y)
        # the start's warning, and for a succeeded run that ended far worse than predicting the mean,
        # that too (and in message)
        self.warning: str | None = self.start_warning
        self._X, self._y = (X, y) if engine is None else (None, None)
        self._zero_loss: float | None = None
        self._stop_requested = False
        self.dtype = X.dtype if engine is None else engine.dtype
        self.lr = self.dtype.type(cfg.learning_rate)
        if engine is None:
            engine = MemoryEngine(X, y, **engine_options(cfg, seed, X.shape[0], X.dtype))
        self.engine = engine
        self.full_batch = engine.batch_size == engine.n_samples
        # called after every epoch once its record is kept and the stopping rules have seen it:
        # the state then is the one a resume continues from
        self.at_epoch_end: Callable[[], None] | None = None

    def request_stop(self) -> None:
        self._stop_requested = True

    @property
    def has_validation(self) -> bool:
        return self.X_val.shape[0] > 0

    def run(self) -> Iterator[EpochRecord]:
        try:
            yield from self._run()
        finally:
            self.engine.close()

    def _run(self) -> Iterator[EpochRecord]:
        st, cfg = self.state, self.cfg
        self.engine.start(st.epoch)  # a shuffle is drawn while the start is checked
        if st.epoch == 0 and st.batch == 0 and not self.engine.any_active(st.w, st.b):
            self._stop(StopReason.DEAD_NEURON, self._dead_message("at the start"))
            return
        while st.epoch < cfg.epochs:
            if self._stop_requested:
                self._stop(StopReason.INTERRUPTED)
                return
            if st.batch == 0:
                st.sums = EpochSums()
            # Full batch: the epoch's metrics and validation are measured at the parameters it
            # started from (where its one step computed the loss). Mini-batch: the loss is the
            # running mean over the batches, validation at the parameters the epoch ends with.
            at_w, at_b = st.w, st.b
            if not (self._full_batch_step() if self.full_batch else self._minibatch_epoch()):
                return
            if not self.full_batch:
                at_w, at_b = st.w, st.b
            st.batch = 0
            st.epoch += 1
            record = self._record(at_w, at_b)
            st.history.append(record.as_dict())
            yield record
            if record.active_fraction == 0.0:
                self._stop(StopReason.DEAD_NEURON, self._dead_message(f"at epoch {st.epoch}"))
                return
            if self._blown_up(record.loss):
                self._stop(StopReason.DIVERGED, self._growth_message(record.loss))
                return
            if cfg.early_stopping is not None and self._early_stop(record, at_w, at_b):
                return
            if self.at_epoch_end is not None and st.epoch < cfg.epochs:
                self.at_epoch_end()
        self._stop(StopReason.COMPLETED)

    def _stop(self, reason: StopReason, message: str | None = None) -> None:
        """Record why the run stopped; a succeeded run far worse than the mean gets its warning."""
        self.stopped, self.message = reason, message
        if reason.succeeded:
            fit = self._fit_warning()
            if fit is not None:
                self.message = f"{message}; warning: {fit}" if message else f"warning: {fit}"
            self.warning = "; ".join(w for w in (self.start_warning, fit) if w) or None

    def _full_batch_step(self) -> bool:
        """The epoch's one descent step on all rows; False (and stopped) if it diverged."""
        st = self.state
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected below, not warned
            lg = self.engine.loss_and_gradient(st.w, st.b)
            w_new, b_new = neuron.descent_step(st.w, st.b, lg.grad_w, lg.grad_b, self.lr)
        if not (math.isfinite(lg.loss) and math.isfinite(float(b_new)) and np.isfinite(w_new).all()):
            self._stop(StopReason.DIVERGED, self._diverged_message())
            return False
        st.w, st.b = w_new, b_new
        with np.errstate(over="ignore", invalid="ignore"):
            grad_norm = math.hypot(float(np.linalg.norm(lg.grad_w.astype(np.float64))), lg.grad_b)
        st.sums = EpochSums(squared_error=lg.loss * lg.n_samples, abs_error=lg.abs_error_sum,
                            active=lg.n_active, rows=lg.n_samples, grad_norm=grad_norm)
        return True

    def _minibatch_epoch(self) -> bool:
        """The epoch's batches from ``state.batch`` on; False if it diverged or was interrupted."""
        st = self.state
        done = self.engine.minibatch_epoch(st.epoch, st.w, st.b, st.batch, st.sums, lambda: self._stop_requested)
        st.w, st.b, st.batch, st.sums = done.w, done.b, done.batch, done.sums
        if done.diverged:
            self._stop(StopReason.DIVERGED, self._diverged_message())
            return False
        if st.batch < self.engine.n_batches:
            self._stop(StopReason.INTERRUPTED)
            return False
        return True

    def _dead_message(self, when: str) -> str:
        return self.advice.dead(when, float(self.state.b), [h["loss"] for h in self.state.history])

    def _diverged_message(self) -> str:
        return self.advice.diverged(self.state.epoch + 1)

    def _growth_message(self, loss: float) -> str:
        return self.advice.grew(self.state.epoch, loss, float(self.state.history[0]["loss"]),
                                self._zero_output_loss(), LOSS_GROWTH_LIMIT)

    def _blown_up(self, loss: float) -> bool:
        """Whether ``loss`` is over :data:`LOSS_GROWTH_LIMIT` times both the first epoch's loss
        and :meth:`_zero_output_loss` (compared with the first alone before: a normal run never
        pays for the second)."""
        first = float(self.state.history[0]["loss"])
        if not loss > LOSS_GROWTH_LIMIT * first:
            return False
        reference = max(first, self._zero_output_loss())
        return reference > 0 and loss > LOSS_GROWTH_LIMIT * reference

    def _zero_output_loss(self) -> float:
        """The loss of predicting 0 everywhere (a dead neuron's): the target's mean square,
        from one pass of the engine at w = 0, b = 0; computed once, when first needed."""
        if self._zero_loss is None:
            with np.errstate(over="ignore", invalid="ignore"):
                self._zero_loss = self.engine.loss_and_gradient(np.zeros_like(self.state.w), self.dtype.type(0)).loss
        return self._zero_loss

    def _fit_warning(self) -> str | None:
        """For a run that ended far worse than predicting the mean: what it is and what to change
        (:meth:`Advice.poor_fit`); None otherwise, or without the training set as arrays."""
        st = self.state
        losses = [h["loss"] for h in st.history]
        if self.stopped == StopReason.EARLY_STOPPING and st.best_epoch == 1 and len(losses) > 1 and \
                losses[0] > 0 and max(losses[1:]) > losses[0]:  # kept the start, and the loss rose from it
            return self.advice.no_progress(max(losses) / losses[0])
        if self._y is None or not st.history:
            return None
        var = float(np.var(self._y, dtype=np.float64))
        if not (var > 0 and st.history[-1]["loss"] > var):  # the last epoch beat the mean: no pass over X
            return None
        return self.advice.poor_fit(self.stopped, evaluate(self._X, self._y, st.w, st.b), float(st.history[0]["loss"]))

    def _record(self, at_w, at_b) -> EpochRecord:
        """The epoch's metrics; validation (and the recorded bias) at parameters ``at_w, at_b``."""
        st, sums = self.state, self.state.sums
        loss = sums.squared_error / sums.rows
        val = evaluate(self.X_val, self.y_val, at_w, at_b) if self.has_validation else {}
        return EpochRecord(
            epoch=st.epoch,
            loss=loss,
            rmse=math.sqrt(loss),
            mae=sums.abs_error / sums.rows,
            val_loss=val.get("mse"),
            val_rmse=val.get("rmse"),
            val_mae=val.get("mae"),
            grad_norm=sums.grad_norm,
            active_fraction=sums.active / sums.rows,
            bias=float(at_b),
        )

    def _early_stop(self, record: EpochRecord, at_w, at_b) -> bool:
        """Keep the parameters the monitored loss was measured at, when it improved."""
        st, es = self.state, self.cfg.early_stopping
        monitored = record.val_loss if record.val_loss is not None else record.loss
        if monitored < st.best_loss - es.min_delta:
            st.best_loss, st.best_epoch, st.wait = monitored, record.epoch, 0
            st.best_w, st.best_b = at_w.copy(), at_b
            return False
        st.wait += 1
        if st.wait >= es.patience:
            which = "validation" if record.val_loss is not None else "training"
            st.w, st.b = st.best_w.copy(), st.best_b  # first: a warning is about the parameters kept
            self._stop(StopReason.EARLY_STOPPING,
                       f"early stopping: no improvement of {which} loss by more than {es.min_delta:g} for "
                       f"{es.patience} epochs; restored the best parameters (epoch {st.best_epoch})")
            return True
        return False
