"""Gradient descent on one ReLU neuron: yields one record per epoch, never prints.

Full batch: ``w <- w - lr * grad_w``, ``b <- b - lr * grad_b`` once per epoch on all
training rows. Mini-batch: the same per batch, the batch's own N in the mean, the rows
shuffled each epoch from the seed and the epoch's number. Every bit of state that decides the
future (parameters, epoch, position inside the epoch, early-stopping memory, history) lives
in :class:`TrainState`, so a run stopped after any step and resumed ends bit-identical.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from neurocli import kernels
from neurocli.config import TrainingConfig

STOP_COMPLETED = "completed"
STOP_EARLY = "early_stopping"
STOP_DIVERGED = "diverged"
STOP_DEAD = "dead_neuron"
STOP_INTERRUPTED = "interrupted"

# A shuffled mini-batch epoch gathers its rows a run of whole batches at a time, about this
# many bytes of X per call (one call's overhead serves many steps, and it keeps more rows in
# flight than a batch does); a batch always sits in the same slot of the buffers.
GATHER_BYTES = 1 << 20


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffle of epoch ``epoch`` (0-based): a permutation of ``range(n)`` drawn from a
    stream of its own, ``(seed, epoch)``. So the next epoch's shuffle can be drawn ahead on
    another core, and a run resumed inside an epoch redraws it from the epoch number alone."""
    return np.random.default_rng([seed, 3, epoch]).permutation(n)


def _finite(w: np.ndarray, b) -> bool:
    """Whether every weight and the bias are finite (not w.w: it overflows for a finite
    weight above 1.3e154)."""
    return bool(np.isfinite(w).all()) and math.isfinite(b)


def _batch_sums(r: np.ndarray, batch_size: int, out: np.ndarray) -> tuple[list[float], list[float]]:
    """``sum r^2`` and ``sum |r|`` of each batch of ``batch_size`` consecutive residuals (the
    last may be shorter), in order, using ``out`` as scratch. Full batches are the rows of one
    reshape, so every batch is summed alike wherever its run started (a resumed epoch gets
    the same bits), and so is a batch summed on its own."""
    n_full = len(r) // batch_size

    def per_batch(a: np.ndarray) -> list[float]:
        sums = a[:n_full * batch_size].reshape(n_full, batch_size).sum(axis=1).tolist()
        if n_full * batch_size < len(a):
            sums.append(float(a[n_full * batch_size:].sum()))
        return sums

    squares = per_batch(np.multiply(r, r, out=out))
    return squares, per_batch(np.abs(r, out=out))


def _gather_rows(X, y, order, lo: int, hi: int, Xc, yc, at: int) -> None:
    """Rows ``order[lo:hi]`` of X and y into ``Xc[at:]``, ``yc[at:]``. mode="clip": indices of
    a permutation are always in range, and numpy copies through a temporary when out= is
    given with the default "raise"."""
    idx = order[lo:hi]
    np.take(X, idx, axis=0, out=Xc[at:at + hi - lo], mode="clip")
    np.take(y, idx, out=yc[at:at + hi - lo], mode="clip")


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
    the epoch's shuffle is redrawn from its number (:func:`epoch_order`).
    partial : running sums of the current epoch (squared error, abs error, active count, rows).
    """

    w: np.ndarray
    b: np.floating
    epoch: int = 0
    batch: int = 0
    partial: dict = field(default_factory=lambda: {"sq": 0.0, "abs": 0.0, "active": 0, "rows": 0, "grad_norm": 0.0})
    best_w: np.ndarray | None = None
    best_b: float | None = None
    best_loss: float = math.inf
    best_epoch: int = 0
    wait: int = 0
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        # history is not here: it is history.csv, written beside the checkpoint (floats in repr, exact)
        d = {k: getattr(self, k) for k in ("epoch", "batch", "partial",
                                            "best_loss", "best_epoch", "wait")}
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
            partial=dict(d["partial"]),
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
    r = kernels.predict(X, w, b).astype(np.float64) - y
    mse = float(r @ r) / len(r)
    centred = y.astype(np.float64) - float(np.mean(y, dtype=np.float64))
    sst = float(centred @ centred)
    return {
        "mse": mse,
        "rmse": math.sqrt(mse) if math.isfinite(mse) else math.inf,
        "mae": float(np.abs(r).mean()),
        "r2": 1.0 - float(r @ r) / sst if sst > 0 else float("nan"),
    }


class Trainer:
    """Runs the descent; iterate :meth:`run` for epoch records, then read :attr:`stopped`.

    ``request_stop()`` (from a signal handler) makes the loop stop after the current step
    with ``stopped == "interrupted"`` and the state ready to checkpoint.
    """

    def __init__(self, X, y, X_val, y_val, cfg: TrainingConfig, seed: int, state: TrainState, *,
                 standardized: bool = False, bias_from_target_mean: bool = False):
        self.X, self.y, self.X_val, self.y_val = X, y, X_val, y_val
        self.cfg = cfg
        self.state = state
        self.standardized = standardized  # only to word the advice in messages
        self.bias_from_target_mean = bias_from_target_mean
        self.stopped: str | None = None
        self.message: str | None = None
        self._stop_requested = False
        self.seed = seed
        # a helper thread draws the next epoch's shuffle during this epoch (numpy draws it
        # outside the GIL); gathering rows on a helper too was slower: the loop's small
        # numpy calls hold the GIL, so the helper waited for it and the loop for the helper
        self._drawer: ThreadPoolExecutor | None = None
        self._next_order: tuple[int, Future] | None = None
        self.dtype = X.dtype
        self.lr = self.dtype.type(cfg.learning_rate)
        n = X.shape[0]
        self.batch_size = n if cfg.batch_size is None else min(cfg.batch_size, n)

    def request_stop(self) -> None:
        self._stop_requested = True

    def snapshot(self) -> TrainState:
        """The state, ready to checkpoint (the shuffle needs no generator state: see
        :func:`epoch_order`)."""
        return self.state

    def _draw_ahead(self, epoch: int, n: int) -> None:
        """Set the shuffle of ``epoch`` drawing on the helper thread."""
        if self._drawer is None:
            self._drawer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neurocli-shuffle")
        self._next_order = (epoch, self._drawer.submit(epoch_order, self.seed, epoch, n))

    def _order(self, epoch: int, n: int) -> np.ndarray:
        """This epoch's shuffle (drawn ahead while the previous epoch ran, or, for the first
        one, while the start was checked), and the next one set drawing."""
        drawn, future = self._next_order
        assert drawn == epoch
        order = future.result()
        self._next_order = None
        if epoch + 1 < self.cfg.epochs:
            self._draw_ahead(epoch + 1, n)
        return order

    @property
    def has_validation(self) -> bool:
        return self.X_val.shape[0] > 0

    def _step(self, Xb, yb) -> kernels.LossGrad | None:
        """One full-batch descent step, which is the whole epoch; None (and stopped set) if
        it diverged."""
        st = self.state
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected below, not warned
            lg = kernels.loss_and_gradient(Xb, yb, st.w, st.b)
            w_new = st.w - self.lr * lg.grad_w.astype(self.dtype, copy=False)
            b_new = self.dtype.type(st.b - self.lr * self.dtype.type(lg.grad_b))
        if not (math.isfinite(lg.loss) and math.isfinite(float(b_new)) and np.isfinite(w_new).all()):
            self.stopped = STOP_DIVERGED
            self.message = self._diverged_message()
            return None
        st.w, st.b = w_new, b_new
        # the epoch is this one step: its sums are the step's
        with np.errstate(over="ignore", invalid="ignore"):
            grad_norm = math.hypot(float(np.linalg.norm(lg.grad_w.astype(np.float64))), lg.grad_b)
        st.partial = {"sq": lg.loss * lg.n_samples, "abs": lg.abs_error_sum, "active": lg.n_active,
                      "rows": lg.n_samples, "grad_norm": grad_norm}
        return lg

    def _dead_message(self, when: str) -> str:
        if self.bias_from_target_mean:
            fix = ("the bias starts at the target's mean, so the target is mostly <= 0 here or the initial "
                   "weights push every sample below 0; a ReLU cannot output negative values: give "
                   "model.bias_init a positive number or check the target's sign")
        else:
            fix = ("start with a positive bias (model.bias_init: target_mean) or random weights "
                   "(model.weights_init: normal)")
        later = ("" if when == "at the start" else
                 f"; a step pushed every sample below the kink, so also lower training.learning_rate "
                 f"(now {self.cfg.learning_rate:g})")
        return (f"dead neuron {when}: no training sample has w.x + b > 0, so every gradient is exactly zero "
                f"and descent cannot move (ReLU'(z) = 0 for z <= 0); {fix}{later}")

    def run(self) -> Iterator[EpochRecord]:
        try:
            yield from self._run()
        finally:
            if self._drawer is not None:
                self._drawer.shutdown(wait=True, cancel_futures=True)
            self._drawer, self._next_order = None, None

    def _run(self) -> Iterator[EpochRecord]:
        st, cfg = self.state, self.cfg
        n = self.X.shape[0]
        shuffled = cfg.shuffle and self.batch_size < n
        if shuffled and st.epoch < cfg.epochs:
            self._draw_ahead(st.epoch, n)  # while the start is checked
        if st.epoch == 0 and st.batch == 0:
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow is found by the first step
                z = kernels.pre_activation(self.X, st.w, st.b)
            if not np.any(kernels.active_mask(z)):
                self.stopped, self.message = STOP_DEAD, self._dead_message("at the start")
                return
        while st.epoch < cfg.epochs:
            if self._stop_requested:
                self.stopped = STOP_INTERRUPTED
                return
            if st.batch == 0:
                st.partial = {"sq": 0.0, "abs": 0.0, "active": 0, "rows": 0, "grad_norm": 0.0}
            order = self._order(st.epoch, n) if shuffled else None
            n_batches = -(-n // self.batch_size)
            if self.batch_size == n:
                # Full batch: every metric of the epoch is measured at the parameters it
                # started from (the step computes the loss there), and so is validation.
                at_w, at_b = st.w, st.b
                if self._step(self.X, self.y) is None:
                    return
            else:
                # Mini-batch: the training loss is the running mean over the epoch's batches;
                # validation is measured at the parameters the epoch ends with.
                if not self._minibatch_epoch(order, n_batches):
                    return
                at_w, at_b = st.w, st.b
            st.batch = 0
            st.epoch += 1
            record = self._record(at_w, at_b)
            st.history.append(record.as_dict())
            yield record
            if record.active_fraction == 0.0:
                self.stopped, self.message = STOP_DEAD, self._dead_message(f"at epoch {st.epoch}")
                return
            if cfg.early_stopping is not None and self._early_stop(record, at_w, at_b):
                return
        self.stopped = STOP_COMPLETED

    def _minibatch_epoch(self, order: np.ndarray | None, n_batches: int) -> bool:
        """The batches of one epoch from ``state.batch`` on; False if it stopped (diverged or
        interrupted). A tight loop over caller-owned buffers.

        Batches go in runs of ``per``: the run holding batch j is run ``j // per``, and batch
        j always uses slot ``j % per`` of the buffers. A run is one gather of its rows (when
        shuffled), then a step per batch (the fused block and the update, about ten numpy
        calls), then the run's loss and metrics (``r.r`` and ``sum |r|`` of each batch, the
        active count) in a few calls. So an epoch resumed in the middle of a run computes,
        batch by batch, exactly what an uninterrupted one does.
        """
        st, X, y = self.state, self.X, self.y
        n, d = X.shape
        B, dtype = self.batch_size, self.dtype
        per = min(n_batches, max(1, GATHER_BYTES // (B * d * dtype.itemsize)))
        if order is not None:
            Xc, yc = np.empty((per * B, d), dtype=dtype), np.empty(per * B, dtype=dtype)
        # a run's z, r = a - y, g = r * m and m, batch after batch; slots[k] holds the rows of
        # Xc (and the views of these) that the batch in slot k uses
        Z, R, G = (np.empty(per * B, dtype=dtype) for _ in range(3))
        M = np.empty(per * B, dtype=bool)
        slots = [(slice(k * B, (k + 1) * B), Z[k * B:(k + 1) * B], R[k * B:(k + 1) * B], M[k * B:(k + 1) * B],
                  G[k * B:(k + 1) * B]) for k in range(per)]
        grad = np.empty(d, dtype=dtype)
        w, w_prev = st.w.copy(), st.w.copy()
        # float64: the bias as a Python float (the same IEEE arithmetic, without numpy's
        # scalar overhead); float32 keeps numpy's float32 rounding
        exact = dtype == np.float64
        b = b_prev = float(st.b) if exact else st.b
        p = st.partial
        sq_total, abs_total, active_total, rows_total = p["sq"], p["abs"], p["active"], p["rows"]
        lr = float(self.lr)
        full_step = dtype.type(-lr * (2.0 / B))  # the step -lr * dC/dw is full_step * X_b^T g
        grad_b = 0.0
        ok, stop = True, False
        careful = False  # check the parameters after every step (a run being replayed)
        bad_loss = None  # when replaying: the first batch whose loss r.r overflowed
        seen = 0  # when replaying: how far the first pass went (a stop request counts from there)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected, not warned
            while ok and not stop and st.batch < n_batches:
                first = st.batch
                run = first // per
                last = min((run + 1) * per, n_batches)  # one past the run's last batch
                base, hi = run * per * B, min(last * B, n)  # rows of X (or of order) at slot 0, the end
                if order is not None:
                    _gather_rows(X, y, order, first * B, hi, Xc, yc, first * B - base)
                else:
                    Xc, yc = X[base:hi], y[base:hi]
                at_start = (w.copy(), b)
                done = first
                for j in range(first, last):
                    if j == bad_loss:  # its loss overflowed: diverged before its step
                        ok = False
                        break
                    rows, z, r, m, g = slots[j - run * per]
                    k = min(B, hi - j * B)
                    if k < B:  # the epoch's last, shorter batch
                        rows, z, r, m, g = slice(rows.start, rows.start + k), z[:k], r[:k], m[:k], g[:k]
                    g_sum = kernels.fused_block(Xc[rows], yc[rows], w, b, z, r, m, g, grad)
                    # sum g is finite only if every g is (an inf or NaN term makes the sum
                    # one), and then so is X^T g (|x| is bounded at load)
                    if not math.isfinite(g_sum):
                        ok = False
                        break
                    scale = 2.0 / k  # the batch's own N in the mean: grad = (2/k) X_b^T g
                    grad *= full_step if k == B else dtype.type(-lr * scale)
                    np.add(w, grad, out=w_prev)  # the new w; the old one stays for a rollback
                    w, w_prev = w_prev, w
                    grad_b = g_sum * scale
                    b, b_prev = (b - lr * grad_b if exact else dtype.type(b - dtype.type(lr * grad_b))), b
                    if careful and not _finite(w, b):  # the step overflowed: keep what it started from
                        w, b, ok = w_prev, b_prev, False
                        break
                    done = j + 1
                    if self._stop_requested and done < n_batches and (not careful or done >= seen):
                        stop = True
                        break
                # the loss and metrics of the run's batches that were done, in batch order
                s0, s1 = first * B - base, min(done * B, n) - base
                squares, abs_sums = _batch_sums(R[s0:s1], B, out=Z[s0:s1])
                # A step can overflow (a finite loss does not bound lr * grad), and a non-finite
                # weight stays non-finite, so one check at the end of a run tells whether any
                # step of it did; so does the run's loss for a residual whose square overflows.
                # Then the run is replayed from its start with a check after every step, which
                # stops at the step that overflowed, or before the batch whose loss did.
                if not careful and not (_finite(w, b) and all(map(math.isfinite, squares))):
                    w0, b = at_start
                    w, w_prev = w0, w0.copy()
                    bad_loss = next((first + i for i, v in enumerate(squares) if not math.isfinite(v)), None)
                    ok, stop, careful, seen = True, False, True, done
                    continue
                careful, bad_loss = False, None
                for v, a in zip(squares, abs_sums):
                    sq_total += v
                    abs_total += a
                rows_total += min(done * B, n) - first * B
                active_total += int(np.count_nonzero(M[s0:s1]))
                st.batch = done
        st.w, st.b = w, dtype.type(b)
        with np.errstate(over="ignore"):  # a huge last step's gradient norm is inf, not a warning
            grad_w_sq = float(grad.astype(np.float64) @ grad.astype(np.float64)) / lr ** 2 if ok else math.inf
        p.update(sq=sq_total, abs=abs_total, active=active_total, rows=rows_total,
                 grad_norm=math.hypot(math.sqrt(grad_w_sq), grad_b) if ok else math.inf)
        if not ok:
            self.stopped = STOP_DIVERGED
            self.message = self._diverged_message()
            return False
        if st.batch < n_batches:
            self.stopped = STOP_INTERRUPTED
            return False
        return True

    def _diverged_message(self) -> str:
        return (f"training diverged at epoch {self.state.epoch + 1}: the loss or a parameter became non-finite "
                f"(kept the last finite parameters); try a smaller training.learning_rate "
                f"(now {self.cfg.learning_rate:g})" + ("" if self.standardized else " or data.standardize: true"))

    def _record(self, at_w, at_b) -> EpochRecord:
        """The epoch's metrics; validation (and the recorded bias) at parameters ``at_w, at_b``."""
        st, p = self.state, self.state.partial
        loss = p["sq"] / p["rows"]
        val = evaluate(self.X_val, self.y_val, at_w, at_b) if self.has_validation else {}
        return EpochRecord(
            epoch=st.epoch,
            loss=loss,
            rmse=math.sqrt(loss),
            mae=p["abs"] / p["rows"],
            val_loss=val.get("mse"),
            val_rmse=val.get("rmse"),
            val_mae=val.get("mae"),
            grad_norm=p["grad_norm"],
            active_fraction=p["active"] / p["rows"],
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
            self.stopped = STOP_EARLY
            self.message = (f"early stopping: no improvement of {'validation' if record.val_loss is not None else 'training'} "
                            f"loss by more than {es.min_delta:g} for {es.patience} epochs; "
                            f"restored the best parameters (epoch {st.best_epoch})")
            st.w, st.b = st.best_w.copy(), st.best_b
            return True
        return False
