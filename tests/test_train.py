"""The descent loop: recovers known parameters, reruns bit-identically, and diagnoses
divergence and dead neurons instead of returning a silent flat curve."""

import numpy as np
import pytest

from neurocli import neuron
from neurocli.config import EarlyStoppingConfig, ModelConfig, TrainingConfig
from neurocli.train import Trainer, TrainState, initial_parameters

W_TRUE = np.array([1.5, -2.0, 0.5])
B_TRUE = 3.0


def synthetic(n=2000, seed=0, noise=0.01):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = np.maximum(X @ W_TRUE + B_TRUE, 0) + noise * rng.normal(size=n)
    return X, y


def run(X, y, cfg, seed=0, w0=None, b0=0.5, X_val=None, y_val=None):
    w0 = np.full(X.shape[1], 0.1) if w0 is None else w0
    X_val = np.empty((0, X.shape[1])) if X_val is None else X_val
    y_val = np.empty(0) if y_val is None else y_val
    state = TrainState(w=np.asarray(w0, dtype=X.dtype), b=X.dtype.type(b0))
    t = Trainer(X, y, X_val, y_val, cfg, seed, state)
    records = list(t.run())
    return t, records


@pytest.mark.parametrize("batch_size", [None, 64])
def test_recovers_known_parameters(batch_size):
    X, y = synthetic()
    cfg = TrainingConfig(epochs=300 if batch_size is None else 60, learning_rate=0.1 if batch_size is None else 0.02,
                         batch_size=batch_size)
    t, records = run(X, y, cfg)
    assert t.stopped == "completed"
    # noise 0.01 on 2000 samples: the least-squares optimum is within ~1e-3 of the truth
    np.testing.assert_allclose(t.state.w, W_TRUE, atol=0.01)
    assert abs(float(t.state.b) - B_TRUE) < 0.01
    assert records[-1].loss < 2e-4  # about noise^2 = 1e-4
    assert records[-1].loss < records[0].loss / 1000


@pytest.mark.parametrize("batch_size", [None, 37])
def test_same_seed_same_bits(batch_size):
    X, y = synthetic(500)
    cfg = TrainingConfig(epochs=20, learning_rate=0.05, batch_size=batch_size, shuffle=True)
    a, ra = run(X, y, cfg, seed=7)
    b, rb = run(X, y, cfg, seed=7)
    assert a.state.w.tobytes() == b.state.w.tobytes() and float(a.state.b) == float(b.state.b)
    assert [r.as_dict() for r in ra] == [r.as_dict() for r in rb]
    if batch_size:
        c, _ = run(X, y, cfg, seed=8)  # another seed shuffles differently
        assert c.state.w.tobytes() != a.state.w.tobytes()


def test_divergence_stops_with_last_finite_parameters():
    X, y = synthetic(200)
    X = X * 1e3  # unstandardized, huge features with a large step blow up
    t, records = run(X, y, TrainingConfig(epochs=500, learning_rate=10.0))
    assert t.stopped == "diverged"
    assert np.all(np.isfinite(t.state.w)) and np.isfinite(t.state.b)
    assert "learning_rate" in t.message and "standardize" in t.message
    assert len(records) < 500


def test_dead_neuron_at_start_with_zero_init():
    X, y = synthetic(100)
    w0, b0 = initial_parameters(ModelConfig(weights_init="zeros", bias_init=0.0), 3, y, 0, "float64")
    assert not w0.any() and b0 == 0.0
    t, records = run(X, y, TrainingConfig(epochs=50), w0=w0, b0=b0)
    assert t.stopped == "dead_neuron"
    assert records == []
    assert "no training sample has w.x + b > 0" in t.message and "bias_init" in t.message


def test_dead_neuron_during_training():
    # one feature, targets all 0: every step pushes z down until no sample is active
    X = np.linspace(1, 2, 50)[:, None]
    y = np.zeros(50)
    t, records = run(X, y, TrainingConfig(epochs=1000, learning_rate=1.0), w0=np.array([1.0]), b0=0.0)
    assert t.stopped == "dead_neuron"
    assert records[-1].active_fraction == 0.0
    assert len(records) < 1000


def test_early_stopping_restores_best_parameters():
    X, y = synthetic(300, noise=0.5)
    Xv, yv = synthetic(100, seed=1, noise=0.5)
    cfg = TrainingConfig(epochs=5000, learning_rate=0.05, early_stopping=EarlyStoppingConfig(patience=5, min_delta=1e-3))
    t, records = run(X, y, cfg, X_val=Xv, y_val=yv)
    assert t.stopped == "early_stopping"
    best = min(records, key=lambda r: r.val_loss)
    # an improvement smaller than min_delta does not count, so the kept epoch is within it of the minimum
    assert records[t.state.best_epoch - 1].val_loss <= best.val_loss + 1e-3
    # restored parameters are the ones recorded at the best epoch (bias is in the record)
    best_record = records[t.state.best_epoch - 1]
    assert float(t.state.b) == best_record.bias
    assert len(records) == t.state.best_epoch + 5


def test_explicit_initial_values_are_used_exactly():
    w0, b0 = initial_parameters(ModelConfig(weights_init=[0.1, -0.2], bias_init=0.5), 2, np.array([9.0]), 0, "float64")
    assert w0.tolist() == [0.1, -0.2] and b0 == 0.5
    w1, b1 = initial_parameters(ModelConfig(), 2, np.array([2.0, 4.0]), 0, "float64")
    assert b1 == 3.0  # target_mean
    w2, _ = initial_parameters(ModelConfig(), 2, np.array([2.0, 4.0]), 0, "float64")
    assert w1.tobytes() == w2.tobytes() and np.all(w1 != 0)


def test_float32_training_runs_in_float32():
    X, y = synthetic(500)
    t, _ = run(X.astype(np.float32), y.astype(np.float32), TrainingConfig(epochs=200, learning_rate=0.1, dtype="float32"))
    assert t.state.w.dtype == np.float32
    np.testing.assert_allclose(t.state.w, W_TRUE, atol=0.02)


def test_full_batch_metrics_of_an_epoch_are_measured_at_its_starting_parameters():
    from neurocli.train import evaluate

    X, y = synthetic(300, noise=0.5)
    Xv, yv = synthetic(100, seed=1, noise=0.5)
    w0 = np.full(3, 0.1)
    t, records = run(X, y, TrainingConfig(epochs=1, learning_rate=0.05), w0=w0, b0=0.5, X_val=Xv, y_val=yv)
    # epoch 1 describes (w0, b0): the training loss and the validation loss both at w0, b0
    assert records[0].loss == neuron.loss_and_gradient(X, y, w0, 0.5).loss
    assert records[0].val_loss == evaluate(Xv, yv, w0, 0.5)["mse"]
    assert records[0].bias == 0.5


def test_early_stopping_on_training_loss_restores_the_parameters_of_the_best_record():
    from neurocli.engines import memory

    X, y = synthetic(300, noise=0.5)
    cfg = TrainingConfig(epochs=5000, learning_rate=0.05, early_stopping=EarlyStoppingConfig(patience=3, min_delta=1e-2))
    t, records = run(X, y, cfg)
    assert t.stopped == "early_stopping"
    best = records[t.state.best_epoch - 1]
    # the restored parameters give exactly the loss recorded for the best epoch
    assert memory.loss_and_gradient(X, y, t.state.w, t.state.b).loss == best.loss


def test_minibatch_divergence_keeps_the_last_finite_pair():
    # Batch 0 (x = 0, both rows active, r = b - 1 = -0.5): b <- 0.5 - 10 * (2/2) * (-0.5 * 2 / 2 ...)
    # precisely b1 = b0 - lr * (2/2) * sum(r) = 0.5 - 10 * (-1.0) = 10.5, w unchanged (x = 0).
    # Batch 1 (x = 3e153): z = 7e153 + 10.5 > 0, a finite loss per row (|r| ~ 7e153, r^2 ~ 5e307,
    # summed ~ 1e308 < 1.8e308) but the step w - lr * (2/2) * sum(r x) overflows to -inf. The
    # loop must keep (w, b) after batch 0, not -inf (a -inf weight makes every z = -inf, whose
    # batch is inactive with a finite loss, so the loss alone would not notice).
    import warnings
    X = np.array([[0.0], [0.0], [3e153], [3e153], [1.0], [1.0]])
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    w0, b0, lr = 7e153 / 3e153, 0.5, 10.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, _ = run(X, y, TrainingConfig(epochs=1, learning_rate=lr, batch_size=2, shuffle=False), w0=[w0], b0=b0)
    assert t.stopped == "diverged"
    assert t.state.w.tolist() == [w0] and float(t.state.b) == 10.5


def test_minibatch_with_a_huge_but_finite_weight_is_not_divergence():
    # x = 0 everywhere, so z = b and w = 1e155 never moves; w.w would overflow to inf, but the
    # weight is finite and training on b alone completes: b -> mean(y) = 1.
    X = np.zeros((8, 1))
    y = np.ones(8)
    t, records = run(X, y, TrainingConfig(epochs=50, learning_rate=0.1, batch_size=2, shuffle=False),
                     w0=[1e155], b0=0.5)
    assert t.stopped == "completed" and len(records) == 50
    assert t.state.w.tolist() == [1e155] and abs(float(t.state.b) - 1.0) < 1e-6


def test_minibatch_loss_overflow_mid_run_stops_before_that_batch():
    # One run of three batches of 2 (shuffle off). Batch 0 (x = 0, y = 1): z = b = 0.5, r = -0.5
    # twice, sum g = -1, so b1 = 0.5 - 1e-3 * (2/2) * (-1) = 0.501 and w stays 1e155. Batch 1
    # (x = 1, y = 0): z ~ 1e155, r^2 ~ 1e310 overflows the loss while sum g ~ 2e155 and the
    # step (w - 1e-3 * 2e155, b - 1e-3 * 2e155) stay finite, so only the run's loss can tell.
    # Batch 2 (x = 0) is then inactive and finite. Training must stop before batch 1's step.
    X = np.array([[0.0], [0.0], [1.0], [1.0], [0.0], [0.0]])
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    t, records = run(X, y, TrainingConfig(epochs=1, learning_rate=1e-3, batch_size=2, shuffle=False),
                     w0=[1e155], b0=0.5)
    assert t.stopped == "diverged" and records == []
    assert t.state.w.tolist() == [1e155] and float(t.state.b) == 0.5 - 1e-3 * -1.0


@pytest.mark.parametrize("X, y, w0, lr, stop_in_call", [
    # batch size 1: batches 0 and 1 (x = 0, y = 1) move b to 0.501 then 0.501998; batch 2
    # (x = 1e5) has r ~ 1e155, whose square overflows the loss; the stop lands in batch 3
    ([[0.0], [0.0], [1e5], [0.0], [0.0]], [1.0, 1.0, 0.0, 1.0, 1.0], 1e150, 1e-3, 4),
    # the step of batch 1 overflows w to -inf (see the test above, batch size 1 here: x = 3e153,
    # 2 * 7e153 * 3e153 overflows); the stop lands in batch 2
    ([[0.0], [3e153], [1.0], [1.0]], [1.0, 0.0, 1.0, 1.0], 7e153 / 3e153, 10.0, 3),
])
def test_minibatch_stop_request_after_an_overflow_in_the_same_run_still_reports_it(X, y, w0, lr, stop_in_call, monkeypatch):
    # The overflow is found at the run's end and the run replayed step by step; the stop
    # request seen in the first pass must not cut the replay short before the overflow.
    import warnings

    from neurocli.engines import memory
    X, y = np.array(X), np.array(y)
    cfg = TrainingConfig(epochs=1, learning_rate=lr, batch_size=1, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain, _ = run(X, y, cfg, w0=[w0], b0=0.5)
        t = Trainer(X, y, X[:0], y[:0], cfg, 0, TrainState(w=np.array([w0]), b=np.float64(0.5)))
        calls, real = [0], memory.fused_block

        def counting(*a):
            calls[0] += 1
            if calls[0] == stop_in_call:
                t.request_stop()
            return real(*a)
        monkeypatch.setattr(memory, "fused_block", counting)
        list(t.run())
    assert plain.stopped == t.stopped == "diverged"
    assert t.state.w.tobytes() == plain.state.w.tobytes() and float(t.state.b) == float(plain.state.b)
    assert np.isfinite(t.state.w).all() and t.state.batch == plain.state.batch


def test_minibatch_grad_norm_of_a_huge_batch_gradient_is_inf_not_an_error():
    # Batch 0: x = 0 and a = b = y, so nothing moves. Batch 1 (the epoch's last): z = 1e154 + 0.5,
    # r = z - 0 ~ 1e154, a finite loss r^2 ~ 1e308, grad_b = (2/1) r ~ 2e154 whose square
    # overflows: the recorded gradient norm is inf, not an OverflowError of Python's float **.
    X = np.array([[0.0], [1.0]])
    y = np.array([0.5, 0.0])
    t, records = run(X, y, TrainingConfig(epochs=1, learning_rate=1e-3, batch_size=1, shuffle=False),
                     w0=[1e154], b0=0.5)
    assert t.stopped == "completed" and len(records) == 1
    assert records[0].grad_norm == float("inf") and np.isfinite(records[0].loss)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shuffle", [True, False])
def test_a_run_stopped_after_any_batch_and_resumed_ends_bit_identical(dtype, shuffle, monkeypatch):
    # 100 rows in batches of 16: 7 batches an epoch, the last of 4 rows; runs of 3 batches per
    # gather, so stops fall inside runs, at their ends, and on the shorter batch.
    import json

    from neurocli.engines import memory
    monkeypatch.setattr(memory, "GATHER_BYTES", 16 * 3 * np.dtype(dtype).itemsize * 3)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3)).astype(dtype)
    y = (np.maximum(X @ W_TRUE + 1.0, 0) + 0.1 * rng.normal(size=100)).astype(dtype)
    cfg = TrainingConfig(epochs=3, learning_rate=0.05, batch_size=16, shuffle=shuffle)

    def fresh():
        return TrainState(w=np.full(3, 0.1, dtype=dtype), b=np.dtype(dtype).type(0.5))

    def go(state, stop_after=None):
        t = Trainer(X, y, X[:0], y[:0], cfg, 7, state)
        calls, real = [0], memory.fused_block

        def counting(*a):
            out = real(*a)
            calls[0] += 1
            if calls[0] == stop_after:
                t.request_stop()
            return out
        monkeypatch.setattr(memory, "fused_block", counting)
        list(t.run())
        monkeypatch.setattr(memory, "fused_block", real)
        return t

    straight = go(fresh())
    assert straight.stopped == "completed"
    for stop_after in range(1, 3 * 7):
        cut = go(fresh(), stop_after)
        assert cut.stopped == "interrupted"
        saved = json.loads(json.dumps(cut.state.to_dict()))  # as the checkpoint holds it
        resumed = go(TrainState.from_dict(saved, json.loads(json.dumps(cut.state.history))))
        assert resumed.state.w.tobytes() == straight.state.w.tobytes(), stop_after
        assert float(resumed.state.b) == float(straight.state.b) and resumed.state.history == straight.state.history


def test_the_shuffle_helper_thread_ends_with_the_run():
    import threading

    from neurocli.config import EarlyStoppingConfig

    def helpers():
        return [t for t in threading.enumerate() if t.name.startswith("neurocli-shuffle")]
    X, y = synthetic(3000)
    run(X, y, TrainingConfig(epochs=20, learning_rate=0.01, batch_size=32))
    assert not helpers()
    t, _ = run(X, y, TrainingConfig(epochs=50, learning_rate=0.01, batch_size=32,
                                    early_stopping=EarlyStoppingConfig(patience=1, min_delta=10.0)))
    assert t.stopped == "early_stopping" and not helpers()
    gen = Trainer(X, y, X[:0], y[:0], TrainingConfig(epochs=50, learning_rate=0.01, batch_size=32), 0,
                  TrainState(w=np.full(3, 0.1), b=np.float64(0.5))).run()
    next(gen)
    assert helpers()  # drawing epoch 2's shuffle, or waiting for the next
    gen.close()
    assert not helpers()
    # the first epoch's shuffle is set drawing before the start is checked; a neuron dead at
    # the start ends the run, and the helper with it
    t, records = run(X, y, TrainingConfig(epochs=5, learning_rate=0.01, batch_size=32), w0=np.zeros(3), b0=-1.0)
    assert t.stopped == "dead_neuron" and records == [] and not helpers()


def test_every_epoch_shuffle_is_drawn_on_the_helper_thread(monkeypatch):
    # the first one too (while the start is checked), so the loop never waits for a draw
    # it could have had ready; the orders are the same epoch_order(seed, epoch, n)
    import threading

    from neurocli.engines import memory
    drawn, real = [], memory.epoch_order

    def recording(seed, epoch, n):
        drawn.append((epoch, threading.current_thread().name.startswith("neurocli-shuffle")))
        return real(seed, epoch, n)
    monkeypatch.setattr(memory, "epoch_order", recording)
    X, y = synthetic(500)
    t, records = run(X, y, TrainingConfig(epochs=3, learning_rate=0.01, batch_size=32))
    assert t.stopped == "completed" and len(records) == 3
    assert sorted(drawn) == [(0, True), (1, True), (2, True)]


@pytest.mark.parametrize("batch_size", [None, 16])
def test_the_trainer_runs_any_engine_it_is_given(batch_size):
    # an engine of its own (here one that delegates and counts) is all the trainer needs:
    # the same records and parameters as the in-memory engine it would build itself
    from neurocli.engines.memory import MemoryEngine

    X, y = synthetic(100)
    cfg = TrainingConfig(epochs=3, learning_rate=0.05, batch_size=batch_size)
    built, _ = run(X, y, cfg)

    class Counting:
        def __init__(self, inner):
            self.inner, self.calls = inner, []
            for name in ("n_samples", "n_features", "dtype", "batch_size", "n_batches"):
                setattr(self, name, getattr(inner, name))

        def __getattr__(self, name):
            self.calls.append(name)
            return getattr(self.inner, name)

    engine = Counting(MemoryEngine(X, y, batch_size=batch_size or 100, shuffle=True, seed=0, epochs=3,
                                   lr=0.05))
    t = Trainer(None, None, X[:0], y[:0], cfg, 0, TrainState(w=np.full(3, 0.1), b=np.float64(0.5)), engine=engine)
    records = list(t.run())
    assert [r.as_dict() for r in records] == built.state.history
    assert t.state.w.tobytes() == built.state.w.tobytes() and float(t.state.b) == float(built.state.b)
    step = "loss_and_gradient" if batch_size is None else "minibatch_epoch"
    assert engine.calls.count(step) == 3 and "close" in engine.calls
