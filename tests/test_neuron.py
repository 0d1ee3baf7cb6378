"""The neuron's math against independent references: hand arithmetic, a loop over samples,
central differences, and the convention ReLU'(0) = 0 pinned at z = 0."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neurocli import neuron
from neurocli.engines import memory


def loop_reference(X, y, w, b):
    """One sample at a time, straight from docs/math.md (no numpy vector ops on samples)."""
    N, n = X.shape
    loss = 0.0
    grad_w = [0.0] * n
    grad_b = 0.0
    for i in range(N):
        z = sum(float(w[j]) * float(X[i, j]) for j in range(n)) + float(b)
        a = z if z > 0 else 0.0
        loss += (y[i] - a) ** 2
        if z > 0:  # active sample: e_i = w.x_i + b - y_i
            e = z - y[i]
            for j in range(n):
                grad_w[j] += 2.0 / N * e * X[i, j]
            grad_b += 2.0 / N * e
    return loss / N, np.array(grad_w), grad_b


def test_hand_worked_example():
    # X = [[1, 2], [3, -4], [0, 1]], y = [1, 2, 3], w = [0.5, 0.25], b = 0.5
    # z = [1*0.5 + 2*0.25 + 0.5, 3*0.5 - 4*0.25 + 0.5, 0 + 0.25 + 0.5] = [1.5, 1.0, 0.75]
    # all active; a = z; a - y = [0.5, -1.0, -2.25]
    # C = (0.25 + 1 + 5.0625) / 3 = 6.3125 / 3
    # grad_w = 2/3 * [0.5*1 - 1*3 - 2.25*0, 0.5*2 - 1*(-4) - 2.25*1] = 2/3 * [-2.5, 2.75]
    # grad_b = 2/3 * (0.5 - 1 - 2.25) = 2/3 * -2.75
    X = np.array([[1.0, 2.0], [3.0, -4.0], [0.0, 1.0]])
    y = np.array([1.0, 2.0, 3.0])
    w = np.array([0.5, 0.25])
    for fn in (neuron.loss_and_gradient, memory.loss_and_gradient):
        r = fn(X, y, w, 0.5)
        assert r.loss == pytest.approx(6.3125 / 3, rel=1e-15)
        np.testing.assert_allclose(r.grad_w, [2 / 3 * -2.5, 2 / 3 * 2.75], rtol=1e-15)
        assert r.grad_b == pytest.approx(2 / 3 * -2.75, rel=1e-15)
        assert r.n_active == 3


def test_inactive_sample_adds_loss_but_no_gradient_and_denominator_stays_n():
    # X = [[1], [-1]], y = [2, 3], w = [1], b = 0 -> z = [1, -1]; sample 2 inactive, a = [1, 0]
    # C = ((1-2)^2 + (0-3)^2) / 2 = (1 + 9) / 2 = 5       (the inactive sample adds y^2 = 9)
    # grad_w = 2/2 * (1-2) * 1 = -1 (only the active sample; N = 2, not 1)
    # grad_b = 2/2 * (1-2) = -1
    r = memory.loss_and_gradient(np.array([[1.0], [-1.0]]), np.array([2.0, 3.0]), np.array([1.0]), 0.0)
    assert r.loss == 5.0
    assert r.grad_w.tolist() == [-1.0]
    assert r.grad_b == -1.0
    assert r.n_active == 1


def test_relu_derivative_is_zero_at_the_kink():
    # z = [-1, 0, 1]: only z = 1 is active (ReLU'(0) = 0 by the paper's convention)
    z = np.array([-1.0, 0.0, 1.0])
    assert neuron.active_mask(z).tolist() == [False, False, True]
    assert neuron.relu(z).tolist() == [0.0, 0.0, 1.0]
    # A sample exactly at z = 0 contributes nothing to the gradient: x = [1], w = [1], b = -1 -> z = 0
    r = memory.loss_and_gradient(np.array([[1.0]]), np.array([5.0]), np.array([1.0]), -1.0)
    assert r.grad_w.tolist() == [0.0] and r.grad_b == 0.0 and r.n_active == 0
    assert r.loss == 25.0  # (0 - 5)^2 / 1


def test_zero_initialisation_gives_exactly_zero_gradient():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 4)), rng.normal(size=50) + 3
    r = memory.loss_and_gradient(X, y, np.zeros(4), 0.0)
    assert not r.grad_w.any() and r.grad_b == 0.0 and r.n_active == 0


finite = st.floats(-3, 3, allow_nan=False, allow_infinity=False)


@st.composite
def problems(draw, max_n=40, max_d=6):
    N = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    X = draw(arrays(np.float64, (N, d), elements=finite))
    y = draw(arrays(np.float64, (N,), elements=finite))
    w = draw(arrays(np.float64, (d,), elements=finite))
    b = draw(finite)
    return X, y, w, b


@settings(max_examples=150, deadline=None)
@given(problems())
def test_matches_loop_over_samples(problem):
    X, y, w, b = problem
    ref_loss, ref_w, ref_b = loop_reference(X, y, w, b)
    for fn in (neuron.loss_and_gradient, memory.loss_and_gradient):
        r = fn(X, y, w, b)
        assert r.grad_w.shape == w.shape
        np.testing.assert_allclose(r.loss, ref_loss, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(r.grad_w, ref_w, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(r.grad_b, ref_b, rtol=1e-10, atol=1e-10)


def numeric_loss(X, y, w, b):
    a = np.maximum(X @ w + b, 0.0)
    return float(np.mean((a - y) ** 2))


@settings(max_examples=150, deadline=None)
@given(problems())
def test_matches_central_differences_away_from_the_kink(problem):
    X, y, w, b = problem
    h = 1e-6
    z = X @ w + b
    # Skip draws where a step of h in any parameter could cross z = 0 for some sample.
    reach = h * (np.abs(X).sum(axis=1) + 1.0)
    if np.any(np.abs(z) <= 10 * reach):
        return
    r = memory.loss_and_gradient(X, y, w, b)
    num_w = []
    for j in range(len(w)):
        e = np.zeros_like(w)
        e[j] = h
        num_w.append((numeric_loss(X, y, w + e, b) - numeric_loss(X, y, w - e, b)) / (2 * h))
    num_b = (numeric_loss(X, y, w, b + h) - numeric_loss(X, y, w, b - h)) / (2 * h)
    scale = 1.0 + np.abs(r.grad_w).max(initial=0.0) + abs(r.grad_b)
    np.testing.assert_allclose(r.grad_w, num_w, atol=1e-6 * scale * 10)
    assert abs(r.grad_b - num_b) <= 1e-5 * scale


def test_float32_kernels_stay_float32():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 3)).astype(np.float32)
    y = rng.normal(size=100).astype(np.float32)
    w = rng.normal(size=3).astype(np.float32)
    r = memory.loss_and_gradient(X, y, w, np.float32(0.5))
    assert r.grad_w.dtype == np.float32
    ref = neuron.loss_and_gradient(X.astype(np.float64), y.astype(np.float64), w.astype(np.float64), 0.5)
    np.testing.assert_allclose(r.grad_w, ref.grad_w, rtol=1e-4, atol=1e-5)


def test_descent_step_by_hand():
    # w = [1, -2], b = 0.5, grad_w = [0.5, -1], grad_b = 2, lr = 0.1:
    # w - 0.1 [0.5, -1] = [0.95, -1.9]; b - 0.1 * 2 = 0.3
    w, b = neuron.descent_step(np.array([1.0, -2.0]), np.float64(0.5), np.array([0.5, -1.0]), 2.0, np.float64(0.1))
    np.testing.assert_allclose(w, [0.95, -1.9], rtol=1e-15)
    assert b == pytest.approx(0.3, rel=1e-15) and isinstance(b, np.float64)
    # float32 parameters step in float32, whatever the gradient's dtype
    w32, b32 = neuron.descent_step(np.array([1.0], dtype=np.float32), np.float32(0.5), np.array([0.5]), 2.0,
                                   np.float32(0.1))
    assert w32.dtype == np.float32 and isinstance(b32, np.float32)
    assert w32[0] == np.float32(1.0) - np.float32(0.1) * np.float32(0.5)
    assert b32 == np.float32(np.float32(0.5) - np.float32(0.1) * np.float32(2.0))
