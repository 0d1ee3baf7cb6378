"""Finite differences of the neuron's loss, and the test for a step that crosses the ReLU kink.

Both ``gradcheck`` and ``derive`` compare analytic gradients with differences of the loss
taken here, in float64, from :func:`neuron.forward` (or any loss the caller passes) alone.

Parameters are held as one vector ``theta = [w_1 .. w_n, b]`` of shape (n+1,). Moving theta
along a direction v (a unit vector for one parameter) moves each sample's pre-activation
``z_i = w·x_i + b`` at the rate ``dz_i/dt = x_i·v[:-1] + v[-1]``: ``x_ij`` for ``w_j``, 1 for b.

The kink (docs/math.md, "Where it goes wrong"): a step ±h *straddles* the kink for sample i
when ``|z_i| <= h |dz_i/dt|``, i.e. when ``z_i ± h dz_i/dt`` reaches or crosses 0. A central
difference is exact up to rounding for a quadratic, and each loss term is quadratic on either
side of the kink, so a difference is trustworthy exactly when no sample straddles. A sample's
*margin* ``|z_i| / |dz_i/dt|`` is the largest step that keeps it on one side; a sample with
``dz_i/dt = 0`` never moves and never straddles.

Nothing here decides what to do about a straddling sample: that policy is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from neurocli import neuron


# ----------------------------------------------------------------------------- the kink


def z_slope(X: np.ndarray, j: int) -> np.ndarray:
    """``dz_i/dtheta_j`` per sample: column j of X for ``w_j`` (j < n), ones for b (j = n).

    X : ndarray of shape (N, n). Returns an ndarray of shape (N,).
    """
    return X[:, j] if j < X.shape[1] else np.ones(X.shape[0])


def z_slope_along(X: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``dz_i/dt`` along ``theta + t * direction``: ``X direction[:-1] + direction[-1]``.

    X : ndarray of shape (N, n); direction : ndarray of shape (n+1,). Returns shape (N,).
    """
    return X @ direction[:-1] + direction[-1]


def straddles_kink(z: np.ndarray, dz: np.ndarray, h: float) -> np.ndarray:
    """Which samples a step of ±h carries onto or across z = 0: ``dz_i != 0 and |z_i| <= h |dz_i|``.

    z : pre-activations, shape (N,); dz : their slope along the step (:func:`z_slope`), shape
    (N,); h : the step (> 0). Returns a bool ndarray of shape (N,). A tie (z_i = 0) that moves
    straddles at every step.
    """
    # `<=`, not `<`: a step that lands exactly on 0 already mixes the kink's two sides.
    return (dz != 0) & (np.abs(z) <= h * np.abs(dz))


def at_kink(z: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """Exact ties: samples with ``z_i == 0`` that move (``dz_i != 0``); bool, shape (N,).

    No step keeps a tie on one side, so only one-sided differences say anything about it.
    """
    return (dz != 0) & (z == 0)


def kink_margins(z: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """The largest step that keeps each sample on its side of the kink: ``|z_i| / |dz_i|``.

    z, dz : shape (N,). Returns shape (N,), inf for a sample that does not move (dz_i = 0).
    A sample straddles at step h exactly when its margin is <= h.
    """
    moving = dz != 0
    # The placeholder divisor 1.0 only avoids dividing by 0; those entries become inf.
    return np.where(moving, np.abs(z) / np.where(moving, np.abs(dz), 1.0), np.inf)


# ----------------------------------------------------------------------------- steps


def relative_step(theta_j: float, rel: float) -> float:
    """The step for a parameter of value ``theta_j``: ``rel * max(1, |theta_j|)``.

    Relative for large parameters (so that theta_j + h differs from theta_j), absolute below 1.
    """
    return rel * max(1.0, abs(theta_j))


def representable_step(theta_j: float, h: float) -> float:
    """The step actually taken: ``(theta_j + h) - theta_j`` (a float step, not the ideal one).

    Dividing by this instead of h removes the error of rounding theta_j + h; it is 0 when h is
    below half an ulp of theta_j.
    """
    return float((theta_j + h) - theta_j)


# ----------------------------------------------------------------------------- differences


def central_difference(loss: Callable[[np.ndarray], float], theta: np.ndarray, j: int, h: float) -> float:
    """``(loss(theta + h e_j) - loss(theta - h e_j)) / 2h``: the central difference in theta_j.

    loss : maps a parameter vector of shape (n+1,) to a float (or to an ndarray, differenced
    entry by entry); theta : shape (n+1,), not modified. Exact up to rounding when loss is
    quadratic in theta_j on [theta_j - h, theta_j + h].
    """
    plus, minus = theta.copy(), theta.copy()
    plus[j] += h
    minus[j] -= h
    return (loss(plus) - loss(minus)) / (2 * h)


def activations(X64: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``a = max(0, X w + b)`` at ``theta = [w, b]``, from :func:`neuron.forward` only; shape (N,)."""
    a, _ = neuron.forward(X64, theta[:-1], float(theta[-1]))
    return a


@dataclass
class SampleDifferences:
    """Per-sample differences along ``theta + t * direction`` at step h, each of shape (N,).

    ``l_i = (a_i - y_i)^2`` is sample i's loss term. The one-sided differences are the
    three-point formulas ``s (-3 f(0) + 4 f(s h) - f(2 s h)) / 2h`` (s = -1 left, +1 right), exact
    for a quadratic piece, so they are each side's slope even when the sample sits at z = 0.
    """

    activation: np.ndarray  # (a_i(h) - a_i(-h)) / 2h
    loss: np.ndarray  # (l_i(h) - l_i(-h)) / 2h
    loss_left: np.ndarray  # from below: t = 0, -h, -2h
    loss_right: np.ndarray  # from above: t = 0, h, 2h


def sample_differences(X64: np.ndarray, y64: np.ndarray, theta: np.ndarray, direction: np.ndarray,
                       h: float) -> SampleDifferences:
    """Central and one-sided differences of every a_i and l_i along ``theta + t * direction``.

    X64 : ndarray of shape (N, n); y64 : shape (N,); theta, direction : shape (n+1,); h > 0.
    """
    def at(t):
        return activations(X64, theta + t * direction)

    a0, ap, am, ap2, am2 = at(0.0), at(h), at(-h), at(2 * h), at(-2 * h)
    l0, lp, lm, lp2, lm2 = ((a - y64) ** 2 for a in (a0, ap, am, ap2, am2))
    return SampleDifferences(
        activation=(ap - am) / (2 * h),
        loss=(lp - lm) / (2 * h),
        loss_left=(3 * l0 - 4 * lm + lm2) / (2 * h),
        loss_right=(-3 * l0 + 4 * lp - lp2) / (2 * h),
    )
