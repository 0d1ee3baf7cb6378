"""The neuron and its loss, forward and backward, as pure numpy functions: the math only.

Notation and layout follow Parr & Howard (docs/math.md): ``z = X w + b``, ``a = max(0, z)``,
``C = (1/N) ||a - y||^2`` (mean, no 1/2 factor). A gradient of a scalar is a row in the
paper's numerator layout; here it is held as a 1-d array of the same entries, so
``grad_w`` is both the row ``dC/dw`` and the column ``nabla_w C`` that descent subtracts.

Convention at the kink: ReLU'(0) = 0, so a sample with ``z_i == 0`` is *inactive*.
No function here modifies its arguments, prints, or reads files. The faster forms that
training runs (``neurocli.engines``) are each tested against the function here they name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LossGrad:
    """Loss and gradient of the MSE of one ReLU neuron over a set of samples.

    loss : float, ``(1/N) sum_i (a_i - y_i)^2``
    grad_w : ndarray of shape (n_features,), ``(2/N) X^T ((a - y) * m)``
    grad_b : float, ``(2/N) 1^T ((a - y) * m)``
    n_active : int, number of samples with ``z_i > 0``
    abs_error_sum : float, ``sum_i |a_i - y_i|`` (for the MAE)
    n_samples : int, N
    """

    loss: float
    grad_w: np.ndarray
    grad_b: float
    n_active: int
    abs_error_sum: float
    n_samples: int


def pre_activation(X: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """``z = X w + b 1``.

    X : ndarray of shape (n_samples, n_features); w : ndarray of shape (n_features,).
    Returns z : ndarray of shape (n_samples,).
    """
    return X @ w + b


def relu(z: np.ndarray) -> np.ndarray:
    """``a = max(0, z)`` element-wise; same shape as z."""
    return np.maximum(z, 0)


def active_mask(z: np.ndarray) -> np.ndarray:
    """``m = 1[z > 0]``: strictly positive, so ReLU'(0) = 0 (a sample at the kink is inactive).

    z : ndarray of shape (n_samples,). Returns a bool ndarray of the same shape.
    """
    return z > 0


def forward(X: np.ndarray, w: np.ndarray, b: float) -> tuple[np.ndarray, tuple]:
    """Activation of every sample.

    X : ndarray of shape (n_samples, n_features); w : ndarray of shape (n_features,); b : float.
    Returns ``(a, cache)``: a of shape (n_samples,); cache = (X, z) for :func:`backward`.
    """
    z = pre_activation(X, w, b)
    return relu(z), (X, z)


def backward(upstream: np.ndarray, cache: tuple) -> tuple[np.ndarray, float]:
    """Gradient of a scalar through the neuron, given ``upstream = dL/da`` of shape (n_samples,).

    ``dL/dw = sum_i upstream_i 1[z_i > 0] x_i^T`` and ``dL/db = sum_i upstream_i 1[z_i > 0]``.
    Returns ``(grad_w of shape (n_features,), grad_b)``.
    """
    X, z = cache
    g = upstream * active_mask(z)
    grad_w = X.T @ g
    assert grad_w.shape == (X.shape[1],)
    return grad_w, float(g.sum())


def mse_forward(a: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """``C = (1/N) ||a - y||^2`` (mean, no 1/2).

    a, y : ndarrays of shape (n_samples,). Returns ``(C, residual a - y of shape (n_samples,))``.
    """
    residual = a - y
    return float(residual @ residual) / a.shape[0], residual


def mse_backward(residual: np.ndarray) -> np.ndarray:
    """``dC/da = (2/N) (a - y)``, shape (n_samples,)."""
    return (2.0 / residual.shape[0]) * residual


def loss_and_gradient(X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> LossGrad:
    """The loss and its gradient, straightforwardly: the reference every faster form equals.

    X : ndarray of shape (n_samples, n_features); y : ndarray of shape (n_samples,);
    w : ndarray of shape (n_features,); b : float.
    """
    a, cache = forward(X, w, b)
    loss, residual = mse_forward(a, y)
    grad_w, grad_b = backward(mse_backward(residual), cache)
    return LossGrad(
        loss=loss,
        grad_w=grad_w,
        grad_b=grad_b,
        n_active=int(np.count_nonzero(active_mask(cache[1]))),
        abs_error_sum=float(np.abs(residual).sum()),
        n_samples=X.shape[0],
    )


def predict(X: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """``max(0, X w + b)``, shape (n_samples,)."""
    return relu(pre_activation(X, w, b))


def descent_step(w: np.ndarray, b, grad_w: np.ndarray, grad_b: float, lr) -> tuple[np.ndarray, np.floating]:
    """One step of gradient descent: ``w - lr nabla_w C`` and ``b - lr dC/db``.

    w : ndarray of shape (n_features,) of the training dtype; b : scalar of that dtype;
    grad_w : ndarray of shape (n_features,); lr : the learning rate in the training dtype.
    Both are computed in the training dtype (a float32 run steps in float32).
    """
    dtype = w.dtype
    return w - lr * grad_w.astype(dtype, copy=False), dtype.type(b - lr * dtype.type(grad_b))
