"""The descent against an independent reference: a plain loop over batches that calls the
straightforward reference (``neuron.loss_and_gradient``) and steps ``w - lr * grad``, written
from the rule in the trainer's docstring, not from its loop. Every recorded metric is
recomputed from the data. Float64 and float32, in order and shuffled, n not divisible by the
batch, one gather run per epoch and several.
"""

import math
import warnings

import numpy as np
import pytest

from neurocli import neuron, train
from neurocli.engines import memory
from neurocli.config import EarlyStoppingConfig, TrainingConfig
from neurocli.engines import EpochSums, epoch_order
from neurocli.train import Trainer, TrainState, evaluate

W_TRUE = np.array([1.5, -2.0, 0.5])


def problem(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = np.maximum(X @ W_TRUE + 0.5, 0) + 0.3 * rng.normal(size=n)
    return X.astype(dtype), y.astype(dtype)


def reference_descent(X, y, w0, b0, lr, batch_size, epochs, shuffle, seed, X_val=None, y_val=None):
    """One epoch: the rows in order (or ``epoch_order``), batch after batch of ``batch_size``
    (the last one shorter), each a step ``theta <- theta - lr * dC_batch/dtheta`` with the batch's
    own N in the mean. The epoch's loss, MAE and active fraction are the per-row means of what
    each batch saw before its step; its gradient norm is the last batch's; validation is at the
    epoch's final parameters (mini-batch) or at its starting ones (full batch)."""
    dtype = X.dtype
    n = X.shape[0]
    B = n if batch_size is None else batch_size
    w, b = w0.astype(dtype), dtype.type(b0)
    lr = dtype.type(lr)
    records = []
    for epoch in range(epochs):
        order = epoch_order(seed, epoch, n) if shuffle and B < n else np.arange(n)
        w_start, b_start = w, b
        sq = ab = 0.0
        active = 0
        for lo in range(0, n, B):
            idx = order[lo:lo + B]
            lg = neuron.loss_and_gradient(X[idx], y[idx], w, b)
            sq += lg.loss * len(idx)
            ab += lg.abs_error_sum
            active += lg.n_active
            grad_norm = math.hypot(float(np.linalg.norm(lg.grad_w.astype(np.float64))), lg.grad_b)
            w = (w - lr * lg.grad_w.astype(dtype)).astype(dtype)
            b = dtype.type(b - lr * dtype.type(lg.grad_b))
        at_w, at_b = (w_start, b_start) if B == n else (w, b)
        rec = dict(epoch=epoch + 1, loss=sq / n, rmse=math.sqrt(sq / n), mae=ab / n,
                   grad_norm=grad_norm, active_fraction=active / n, bias=float(at_b))
        if X_val is not None:
            r = np.maximum(X_val.astype(np.float64) @ at_w.astype(np.float64) + float(at_b), 0) - y_val
            rec.update(val_loss=float(np.mean(r ** 2)), val_rmse=math.sqrt(np.mean(r ** 2)),
                       val_mae=float(np.mean(np.abs(r))))
        records.append(rec)
    return w, b, records


def trainer_run(X, y, w0, b0, cfg, seed, X_val=None, y_val=None):
    X_val = X[:0] if X_val is None else X_val
    y_val = y[:0] if y_val is None else y_val
    state = TrainState(w=w0.astype(X.dtype), b=X.dtype.type(b0))
    t = Trainer(X, y, X_val, y_val, cfg, seed, state)
    return t, list(t.run())


def assert_records_match(records, expected, rel):
    assert len(records) == len(expected)
    for rec, exp in zip(records, expected):
        got = rec.as_dict()
        assert got["epoch"] == exp["epoch"]
        for key, value in exp.items():
            if key != "epoch":
                assert got[key] == pytest.approx(value, rel=rel, abs=1e-300), (key, got["epoch"])


CASES = [
    # (n, batch_size, shuffle): 103 rows in batches of 16 is 6 full batches and one of 7
    (103, 16, False),
    (103, 16, True),
    (103, 7, True),   # 14 full batches and one of 5
    (96, 16, True),   # n divisible by the batch
    (103, None, False),  # full batch
]


@pytest.mark.parametrize("gather_runs", ["one", "several"])
@pytest.mark.parametrize("dtype, rel", [(np.float64, 1e-10), (np.float32, 2e-4)])
@pytest.mark.parametrize("n, batch_size, shuffle", CASES)
def test_trainer_follows_the_reference_descent(n, batch_size, shuffle, dtype, rel, gather_runs, monkeypatch):
    if gather_runs == "several":  # 2 batches a run: the second and later runs of an epoch
        monkeypatch.setattr(memory, "GATHER_BYTES", 2 * (batch_size or n) * 3 * np.dtype(dtype).itemsize)
    X, y = problem(n, dtype)
    Xv, yv = problem(40, dtype, seed=1)
    w0, b0, lr, epochs, seed = np.array([0.3, -0.2, 0.1]), 0.4, 0.05, 4, 11
    cfg = TrainingConfig(epochs=epochs, learning_rate=lr, batch_size=batch_size, shuffle=shuffle, dtype=dtype.__name__)
    t, records = trainer_run(X, y, w0, b0, cfg, seed, Xv, yv)
    w, b, expected = reference_descent(X, y, w0, b0, lr, batch_size, epochs, shuffle, seed, Xv, yv)
    assert t.stopped == "completed"
    assert t.state.w.dtype == dtype and t.state.epoch == epochs
    np.testing.assert_allclose(t.state.w, w, rtol=rel)
    assert float(t.state.b) == pytest.approx(float(b), rel=rel)
    assert_records_match(records, expected, rel=rel if dtype == np.float64 else 1e-3)


def test_the_first_step_by_hand():
    # X = [[1], [2], [3]], y = [2, 2, 2], w = 1, b = 0, lr = 0.1, batches of 2 in order.
    # Batch 1 (rows 1, 2): z = [1, 2], r = [-1, 0]; dC/dw = (2/2)(-1*1 + 0*2) = -1, dC/db = -1
    #   -> w = 1 + 0.1 = 1.1, b = 0.1; loss terms 1 + 0 = 1; |r| = 1; both active.
    # Batch 2 (row 3, the shorter one): z = 3.3 + 0.1 = 3.4, r = 1.4; dC/dw = (2/1)(1.4)(3) = 8.4,
    #   dC/db = 2.8 -> w = 1.1 - 0.84 = 0.26, b = 0.1 - 0.28 = -0.18; loss term 1.96.
    # Epoch: loss (1 + 1.96) / 3, MAE (1 + 1.4) / 3, all active, grad norm hypot(8.4, 2.8).
    X = np.array([[1.0], [2.0], [3.0]])
    y = np.array([2.0, 2.0, 2.0])
    cfg = TrainingConfig(epochs=1, learning_rate=0.1, batch_size=2, shuffle=False)
    t, (rec,) = trainer_run(X, y, np.array([1.0]), 0.0, cfg, 0)
    assert t.state.w[0] == pytest.approx(0.26, rel=1e-14) and float(t.state.b) == pytest.approx(-0.18, rel=1e-14)
    assert rec.loss == pytest.approx(2.96 / 3, rel=1e-14) and rec.rmse == pytest.approx(math.sqrt(2.96 / 3))
    assert rec.mae == pytest.approx(2.4 / 3, rel=1e-14) and rec.active_fraction == 1.0
    assert rec.grad_norm == pytest.approx(math.hypot(8.4, 2.8), rel=1e-14)
    assert rec.bias == pytest.approx(-0.18, rel=1e-14)


def test_the_first_full_batch_step_by_hand():
    # X = [[1], [-1], [2]], y = [1, 5, 1], w = 1, b = 0, lr = 0.1.
    # z = [1, -1, 2]: sample 2 inactive (a = 0, r = -5, adds 25 to the loss, nothing to the gradient).
    # r = [0, -5, 1]; loss = 26 / 3; MAE = 6 / 3 = 2; active 2 of 3.
    # dC/dw = (2/3)(0*1 + 1*2) = 4/3; dC/db = (2/3)(0 + 1) = 2/3; norm = hypot(4/3, 2/3).
    # After the step: w = 1 - 0.4/3, b = -0.2/3; the record's bias is the starting 0.
    X = np.array([[1.0], [-1.0], [2.0]])
    y = np.array([1.0, 5.0, 1.0])
    t, (rec,) = trainer_run(X, y, np.array([1.0]), 0.0, TrainingConfig(epochs=1, learning_rate=0.1), 0)
    assert t.state.w[0] == pytest.approx(1 - 0.4 / 3, rel=1e-14) and float(t.state.b) == pytest.approx(-0.2 / 3)
    assert rec.loss == pytest.approx(26 / 3, rel=1e-14) and rec.mae == pytest.approx(2.0, rel=1e-14)
    assert rec.active_fraction == pytest.approx(2 / 3) and rec.bias == 0.0
    assert rec.grad_norm == pytest.approx(math.hypot(4 / 3, 2 / 3), rel=1e-14)


@pytest.mark.parametrize("batch_size", [None, 3])
def test_early_stopping_fires_on_a_flat_loss_with_min_delta_zero(batch_size):
    # y is the neuron's own output at (w0, b0), so every residual and gradient is exactly 0:
    # the loss is 0 every epoch. Epoch 1 improves on inf; epochs 2..4 do not improve on 0 by
    # more than 0, so patience 3 stops after epoch 4 with the parameters of epoch 1.
    rng = np.random.default_rng(2)
    X = rng.normal(size=(9, 2))
    w0, b0 = np.array([0.5, -0.25]), 3.0
    y = neuron.predict(X, w0, b0)
    cfg = TrainingConfig(epochs=50, learning_rate=0.1, batch_size=batch_size, shuffle=False,
                         early_stopping=EarlyStoppingConfig(patience=3, min_delta=0.0))
    t, records = trainer_run(X, y, w0, b0, cfg, 0)
    assert [r.loss for r in records] == [0.0] * 4
    assert t.stopped == "early_stopping" and t.state.best_epoch == 1
    assert t.state.w.tolist() == w0.tolist() and float(t.state.b) == b0


def test_early_stopping_counts_patience_from_the_last_improvement():
    # Monitored losses fed by hand: 5, 4, 4.5, 3, 3.5, 3.2, 3.1 with min_delta 0.2, patience 3:
    # epoch 2 improves (4 < 5 - 0.2), 3 does not, 4 improves (3 < 3.8), 5..7 do not
    # (3.5, 3.2, 3.1 are all >= 3 - 0.2): stop at epoch 7 with the best of epoch 4.
    cfg = TrainingConfig(epochs=100, early_stopping=EarlyStoppingConfig(patience=3, min_delta=0.2))
    X = np.ones((2, 1))
    t = Trainer(X, np.ones(2), X[:0], np.ones(0)[:0], cfg, 0, TrainState(w=np.zeros(1), b=np.float64(0)))
    stops = []
    for epoch, loss in enumerate([5, 4, 4.5, 3, 3.5, 3.2, 3.1], start=1):
        rec = train.EpochRecord(epoch, loss, 0, 0, None, None, None, 0, 1, 0)
        w = np.full(1, float(epoch))
        stops.append(t._early_stop(rec, w, float(epoch)))
    assert stops == [False] * 6 + [True]
    assert t.state.best_epoch == 4 and t.state.w.tolist() == [4.0] and t.state.b == 4.0
    assert t.stopped == "early_stopping" and "epoch 4" in t.message and "for 3 epochs" in t.message
    assert "training loss by more than 0.2" in t.message


# Each case diverges: training stops before the step that would leave the finite numbers, with
# the parameters it had then and no record of the unfinished epoch. Fields: X, y, w0, b0, lr,
# batch size, bytes per gather run (None: the default), the batch it stops at (None: unchecked).
DIVERGENCES = {
    # x = 1, w = 1e155: z = 1e155 + 0.5, r ~ 1e155, r^2 overflows the loss to inf, while the
    # step lr * 2 r x ~ 2e152 would leave the parameters finite
    "loss overflows, step finite, full batch": ([[1.0]] * 4, [0.0] * 4, [1e155], 0.5, 1e-3, None, None, None),
    "loss overflows, step finite, batches of 2": ([[1.0]] * 4, [0.0] * 4, [1e155], 0.5, 1e-3, 2, None, 0),
    # batches of 1, two to a run. Run 1 (rows 0, 1: x = 0, y = 0.5 = b) moves nothing. Run 2
    # starts with row 2 (x = 1e5, w = 1e150): r ~ 1e155, whose square overflows
    "first batch of a later run": ([[0.0], [0.0], [1e5], [0.0]], [0.5, 0.5, 0.0, 0.5], [1e150], 0.5, 1e-3, 1, 16, 2),
    # x = 1e200, w = 1: the loss ~ 1e400 overflows at once, and so would the step
    "loss and step overflow, full batch": ([[1e200], [1.0]], [0.0, 1.0], [1.0], 0.0, 0.1, None, None, None),
    # batch 0 (x = 0, y = 0.5 = b) moves nothing; batch 1: x = 1e300, w = 1e10, so z = 1e310
    # overflows to inf, and so do r and g
    "activation overflows": ([[0.0], [0.0], [1e300], [1e300]], [0.5, 0.5, 0.0, 0.0], [1e10], 0.5, 1e-3, 2, None, 1),
    # row 1: x = [1e200, -1e200], w = [1e200, 1e200]: z = inf - inf, NaN (or inf, where the BLAS
    # fuses the multiply-add); row 0 (x = 0, y = 1 = b) moves nothing
    "activation undefined": ([[0.0, 0.0], [1e200, -1e200]], [1.0, 0.0], [1e200, 1e200], 1.0, 0.1, 1, None, 1),
    # row 0: x = [1e200, 0], w = [1e200, 1]: z overflows to inf, so r = g = inf, and X^T g has
    # 0 * inf = NaN in its second entry
    "gradient term undefined, full batch": ([[1e200, 0.0], [1.0, 1.0]], [0.0, 1.0], [1e200, 1.0], 0.0, 0.1, None, None, None),
    "gradient term undefined, batches of 1": ([[1e200, 0.0], [1.0, 1.0]], [0.0, 1.0], [1e200, 1.0], 0.0, 0.1, 1, None, 0),
}


@pytest.mark.filterwarnings("error")  # overflow is detected and reported, never a numpy warning
@pytest.mark.parametrize("case", DIVERGENCES.values(), ids=DIVERGENCES.keys())
def test_divergence_keeps_the_last_finite_parameters_without_warnings(case, monkeypatch):
    X, y, w0, b0, lr, batch_size, gather_bytes, batch = case
    if gather_bytes is not None:
        monkeypatch.setattr(memory, "GATHER_BYTES", gather_bytes)
    cfg = TrainingConfig(epochs=2, learning_rate=lr, batch_size=batch_size, shuffle=False)
    t, records = trainer_run(np.array(X), np.array(y), np.array(w0), b0, cfg, 0)
    assert t.stopped == "diverged" and records == []
    assert t.state.w.tolist() == w0 and float(t.state.b) == b0
    assert batch is None or t.state.batch == batch
    assert t.message.startswith("training diverged at epoch 1:") and f"(now {lr:g})" in t.message
    if batch_size is not None:  # the saved epoch sums say the gradient norm is unknown, not the last good one
        assert t.state.sums.grad_norm == math.inf


def test_dead_neuron_messages_name_the_fix():
    X = np.array([[1.0], [2.0]])
    cfg = TrainingConfig(epochs=5, learning_rate=0.25)
    state = TrainState(w=np.array([-1.0]), b=np.float64(0.0))
    t = Trainer(X, np.ones(2), X[:0], np.ones(0), cfg, 0, state, bias_from_target_mean=True)
    assert list(t.run()) == [] and t.stopped == "dead_neuron"
    assert t.message == (
        "dead neuron at the start: no training sample has w.x + b > 0, so every gradient is exactly zero "
        "and descent cannot move (ReLU'(z) = 0 for z <= 0); the bias starts at the target's mean, so the "
        "target is mostly <= 0 here or the initial weights push every sample below 0; a ReLU cannot output "
        "negative values: give model.bias_init a positive number or check the target's sign")
    # a target mostly <= 0: the bias and the target are the advice; a positive one: the step
    zero_target = Trainer(X, np.array([-1.0, 0.5]), X[:0], np.ones(0), cfg, 0, state)
    positive = Trainer(X, np.ones(2), X[:0], np.ones(0), cfg, 0, state, standardized=True)
    assert positive._dead_message("at epoch 3").endswith(
        "likely cause: a step too large: the target is positive (mean 1) and the neuron was alive, until a step "
        "pushed every sample below the kink: lower training.learning_rate (now 0.25)")
    later = zero_target._dead_message("at epoch 3")
    assert later == (
        "dead neuron at epoch 3: no training sample has w.x + b > 0, so every gradient is exactly zero "
        "and descent cannot move (ReLU'(z) = 0 for z <= 0); start with a positive bias (model.bias_init: "
        "target_mean) or random weights (model.weights_init: normal); a step pushed every sample below the "
        "kink, so also lower training.learning_rate (now 0.25)")


def test_diverged_message_suggests_standardizing_only_when_off():
    X = np.ones((1, 1))
    cfg = TrainingConfig(learning_rate=0.5)
    plain = Trainer(X, X[:, 0], X[:0], X[:0, 0], cfg, 0, TrainState(w=np.ones(1), b=np.float64(0)))
    std = Trainer(X, X[:, 0], X[:0], X[:0, 0], cfg, 0, TrainState(w=np.ones(1), b=np.float64(0)), standardized=True)
    assert plain._diverged_message().endswith("training.learning_rate (now 0.5) or data.standardize: true")
    assert std._diverged_message().endswith("training.learning_rate (now 0.5)")


def test_evaluate_by_hand():
    # X = [[1], [-1], [2]], y = [1, 5, 1], w = 1, b = 0: predictions [1, 0, 2], r = [0, -5, 1].
    # MSE 26/3, RMSE sqrt(26/3), MAE 6/3 = 2; mean(y) = 7/3, SST = (16 + 64 + 16)/9 = 96/9,
    # R^2 = 1 - 26 / (96/9) = 1 - 234/96.
    X = np.array([[1.0], [-1.0], [2.0]])
    m = evaluate(X, np.array([1.0, 5.0, 1.0]), np.array([1.0]), 0.0)
    assert m["mse"] == pytest.approx(26 / 3, rel=1e-15) and m["rmse"] == pytest.approx(math.sqrt(26 / 3), rel=1e-15)
    assert m["mae"] == pytest.approx(2.0, rel=1e-15) and m["r2"] == pytest.approx(1 - 234 / 96, rel=1e-14)
    assert evaluate(X[:0], np.ones(0), np.array([1.0]), 0.0) == {}
    assert math.isnan(evaluate(X, np.ones(3), np.array([1.0]), 0.0)["r2"])  # constant target: SST = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a diverged model's metrics are inf, not a warning
        huge = evaluate(np.array([[1e300], [1.0]]), np.array([0.0, 1.0]), np.array([1e300]), 0.0)
        undefined = evaluate(np.array([[1e300, -1e300]]), np.array([0.0]), np.array([1e300, 1e300]), 0.0)
    assert huge["mse"] == huge["rmse"] == math.inf
    assert not math.isfinite(undefined["mse"])
    # a target of small variance still has an R^2: y = [0, 0.1, 0.2], prediction 0.1 everywhere:
    # SST = 0.01 + 0 + 0.01 = 0.02, SSE = 0.02, R^2 = 0
    flat = evaluate(np.zeros((3, 1)), np.array([0.0, 0.1, 0.2]), np.array([1.0]), 0.1)
    assert flat["r2"] == pytest.approx(0.0, abs=1e-12)


def test_a_checkpoint_round_trip_keeps_every_field():
    st = TrainState(w=np.array([0.1, -0.2], dtype=np.float32), b=np.float32(0.3), epoch=4, batch=2,
                    sums=EpochSums(squared_error=1.5, abs_error=2.5, active=3, rows=4, grad_norm=0.5),
                    best_w=np.array([1.0, 2.0], dtype=np.float32), best_b=np.float32(0.7), best_loss=0.25,
                    best_epoch=3, wait=1)
    back = TrainState.from_dict(st.to_dict(), [{"epoch": 1}])
    for name in ("epoch", "batch", "sums", "best_loss", "best_epoch", "wait"):
        assert getattr(back, name) == getattr(st, name), name
    # the checkpoint's names for the running sums
    assert st.to_dict()["partial"] == {"sq": 1.5, "abs": 2.5, "active": 3, "rows": 4, "grad_norm": 0.5}
    assert back.w.tobytes() == st.w.tobytes() and back.w.dtype == np.float32 and back.b == st.b
    assert back.best_w.tobytes() == st.best_w.tobytes() and back.best_b == st.best_b
    assert back.history == [{"epoch": 1}]
    # the checkpoint is plain JSON: no Infinity for a best loss not yet seen
    import json
    fresh_dict = TrainState(w=np.zeros(1), b=np.float64(0)).to_dict()
    assert fresh_dict["best_loss"] is None and json.loads(json.dumps(fresh_dict, allow_nan=False)) == fresh_dict
    fresh = TrainState.from_dict(fresh_dict, [])
    assert fresh.best_w is None and fresh.best_b is None and fresh.best_loss == math.inf


def test_a_run_that_completes_has_no_message():
    X, y = problem(20, np.float64)
    t = Trainer(X, y, X[:0], y[:0], TrainingConfig(epochs=2, batch_size=5), 0,
                TrainState(w=np.full(3, 0.1), b=np.float64(0.5)))
    assert t.stopped is None and t.message is None
    assert len(list(t.run())) == 2 and t.stopped == "completed" and t.message is None


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_initial_parameters(dtype):
    from neurocli.config import ModelConfig
    from neurocli.train import initial_parameters
    y = np.array([1.0, 2.0, 4.5], dtype=dtype)
    # normal N(0, 1/n): over 4000 features the sample standard deviation is 1/sqrt(4000) to
    # within a few percent, and the mean within a few standard errors of 0
    w, b = initial_parameters(ModelConfig(), 4000, y, 3, dtype)
    assert w.dtype == np.dtype(dtype) and b.dtype == np.dtype(dtype) and w.shape == (4000,)
    assert abs(np.std(w) * math.sqrt(4000) - 1) < 0.05 and abs(np.mean(w)) < 4 / 4000
    assert b == np.dtype(dtype).type(2.5)  # the target's mean, (1 + 2 + 4.5) / 3
    again, _ = initial_parameters(ModelConfig(), 4000, y, 3, dtype)
    other, _ = initial_parameters(ModelConfig(), 4000, y, 4, dtype)
    assert again.tobytes() == w.tobytes() and other.tobytes() != w.tobytes()
    z, b0 = initial_parameters(ModelConfig(weights_init="zeros", bias_init=-0.5), 3, y, 0, dtype)
    assert z.dtype == np.dtype(dtype) and z.tolist() == [0.0, 0.0, 0.0] and b0 == -0.5
    given, _ = initial_parameters(ModelConfig(weights_init=[0.1, 0.2, 0.3]), 3, y, 0, dtype)
    assert given.dtype == np.dtype(dtype) and given.tolist() == np.array([0.1, 0.2, 0.3], dtype=dtype).tolist()
    # the target's mean is taken in float64, whatever the training dtype: float32 would sum
    # 2^24 + 1 + 1 + 1 as 2^24 (each 1 rounds away) and give 4194304, not 4194304.75
    big = np.array([2.0 ** 24, 1.0, 1.0, 1.0], dtype=np.float32)
    _, mean = initial_parameters(ModelConfig(), 1, big, 0, "float32")
    assert mean == np.float32(4194304.75) and mean != np.float32(4194304.0)


def test_a_resumed_run_whose_neuron_died_trains_one_epoch_and_says_so():
    # Resumed at the start of epoch 2 with every sample below the kink (w = -1 on x > 0): the
    # dead-at-start check belongs to a fresh run only; the resumed epoch runs, records an active
    # fraction of 0, and the run stops as dead at epoch 2.
    X = np.array([[1.0], [2.0]])
    state = TrainState(w=np.array([-1.0]), b=np.float64(0.0), epoch=1)
    t = Trainer(X, np.ones(2), X[:0], np.ones(0), TrainingConfig(epochs=5), 0, state)
    records = list(t.run())
    assert [r.epoch for r in records] == [2] and records[0].active_fraction == 0.0
    assert t.stopped == "dead_neuron" and t.message.startswith("dead neuron at epoch 2: ")


def test_early_stopping_on_validation_says_validation():
    X, y = problem(60, np.float64)
    cfg = TrainingConfig(epochs=500, learning_rate=0.05, early_stopping=EarlyStoppingConfig(patience=2, min_delta=10.0))
    t, records = trainer_run(X, y, np.array([0.3, -0.2, 0.1]), 0.4, cfg, 0, X[:20], y[:20])
    assert t.stopped == "early_stopping" and len(records) == 3
    assert t.message == ("early stopping: no improvement of validation loss by more than 10 for 2 epochs; "
                         "restored the best parameters (epoch 1)")


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("batch_size", [None, 1])
def test_a_gradient_norm_that_overflows_is_inf_without_warnings(batch_size):
    # Row 0: x = 0, z = b = 0, inactive: nothing moves (mini-batch). Row 1: x = 1e200, w = 1e-100,
    # y = 0: z = r = 1e100, a finite loss; dC/dw = (2/N) r x ~ 1e300, whose square overflows the
    # norm; the step 1e-3 * 1e300 leaves w finite. The epoch's norm is the last batch's: inf.
    X = np.array([[0.0], [1e200]])
    y = np.zeros(2)
    cfg = TrainingConfig(epochs=1, learning_rate=1e-3, batch_size=batch_size, shuffle=False)
    t, records = trainer_run(X, y, np.array([1e-100]), 0.0, cfg, 0)
    assert t.stopped == "completed" and records[0].grad_norm == math.inf and math.isfinite(records[0].loss)


def test_a_float32_run_steps_in_float32():
    # Every step of a float32 mini-batch run in float32: the batch's sums X_b^T g and sum g from
    # the fused block in float32 buffers (the kernel under test elsewhere), the weights' step
    # -lr (2/k) X_b^T g in float32, the bias's step lr (2/k) sum g in double, rounded once to
    # float32, and subtracted in float32.
    X, y = problem(23, np.float32)
    lr, B = 0.05, 4
    w, b = np.array([0.3, -0.2, 0.1], np.float32), np.float32(0.4)
    for lo in range(0, 23, B):
        Xb, yb = X[lo:lo + B], y[lo:lo + B]
        k = len(yb)
        z, r, g = (np.empty(k, np.float32) for _ in range(3))
        m, grad = np.empty(k, bool), np.empty(3, np.float32)
        g_sum = memory.fused_block(Xb, yb, w, b, z, r, m, g, grad)
        w = w + grad * np.float32(-lr * (2.0 / k))
        b = np.float32(b - np.float32(float(np.float32(lr)) * (g_sum * (2.0 / k))))
    cfg = TrainingConfig(epochs=1, learning_rate=lr, batch_size=B, shuffle=False, dtype="float32")
    t, _ = trainer_run(X, y, np.array([0.3, -0.2, 0.1]), 0.4, cfg, 0)
    assert t.state.w.dtype == np.float32 and t.state.w.tobytes() == w.tobytes()
    assert t.state.b == b


def test_an_epoch_of_many_gather_runs_follows_the_reference(monkeypatch):
    # 2000 rows in batches of 4: 500 batches, gathered two at a time (250 runs an epoch)
    monkeypatch.setattr(memory, "GATHER_BYTES", 2 * 4 * 3 * 8)
    X, y = problem(2000, np.float64)
    cfg = TrainingConfig(epochs=1, learning_rate=0.01, batch_size=4, shuffle=True)
    t, records = trainer_run(X, y, np.array([0.3, -0.2, 0.1]), 0.4, cfg, 5)
    w, b, expected = reference_descent(X, y, np.array([0.3, -0.2, 0.1]), 0.4, 0.01, 4, 1, True, 5)
    np.testing.assert_allclose(t.state.w, w, rtol=1e-10)
    assert_records_match(records, expected, rel=1e-10)
