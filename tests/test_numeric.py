"""The finite differences and the kink test that gradcheck and derive share.

References: hand-worked examples in binary-exact numbers (arithmetic in comments), and for the
straddle test the sign of z at both ends of the step, computed exactly.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from neurocli import numeric


# Two samples, one feature: x = [2, 0.5], w = 0.25, b = -0.25, so z = [0.5 - 0.25, 0.125 - 0.25]
# = [0.25, -0.125], exact in binary.
X_TWO = np.array([[2.0], [0.5]])
Z_TWO = np.array([0.25, -0.125])


def test_two_samples_which_straddles_depends_on_the_parameter_and_the_step():
    assert (X_TWO @ [0.25] - 0.25).tolist() == Z_TWO.tolist()
    slope_w = numeric.z_slope(X_TWO, 0)  # dz/dw = x = [2, 0.5]
    slope_b = numeric.z_slope(X_TWO, 1)  # dz/db = 1
    assert slope_w.tolist() == [2.0, 0.5] and slope_b.tolist() == [1.0, 1.0]
    # w, h = 0.1: |z| <= h |x| is 0.25 <= 0.2 (no) and 0.125 <= 0.05 (no)
    assert numeric.straddles_kink(Z_TWO, slope_w, 0.1).tolist() == [False, False]
    # w, h = 0.125: 0.25 <= 0.25 (yes: z - h x = 0.25 - 0.25 lands on 0) and 0.125 <= 0.0625 (no)
    assert numeric.straddles_kink(Z_TWO, slope_w, 0.125).tolist() == [True, False]
    # w, h = 0.25: 0.25 <= 0.5 and 0.125 <= 0.125: both
    assert numeric.straddles_kink(Z_TWO, slope_w, 0.25).tolist() == [True, True]
    # b, h = 0.125: 0.25 <= 0.125 (no) and 0.125 <= 0.125 (yes): the other sample than for w
    assert numeric.straddles_kink(Z_TWO, slope_b, 0.125).tolist() == [False, True]


def test_margins_are_the_largest_steps_that_do_not_straddle():
    # w: |z| / |x| = [0.25 / 2, 0.125 / 0.5] = [0.125, 0.25]; b: |z| / 1 = [0.25, 0.125]
    assert numeric.kink_margins(Z_TWO, numeric.z_slope(X_TWO, 0)).tolist() == [0.125, 0.25]
    assert numeric.kink_margins(Z_TWO, numeric.z_slope(X_TWO, 1)).tolist() == [0.25, 0.125]
    # a sample that does not move has no margin to keep
    assert numeric.kink_margins(np.array([0.5]), np.array([0.0])).tolist() == [np.inf]
    # a sample straddles at step h exactly when its margin is <= h
    for h in (0.1, 0.125, 0.2, 0.25, 0.3):
        margins = numeric.kink_margins(Z_TWO, numeric.z_slope(X_TWO, 0))
        assert numeric.straddles_kink(Z_TWO, numeric.z_slope(X_TWO, 0), h).tolist() == (margins <= h).tolist()


def test_a_sample_that_does_not_move_never_straddles():
    # Sample 0 has x_1 = 0 and z = 0: moving w_1 leaves z at 0, so no step of w_1 reaches
    # the kink from the other side; moving b carries it across at any step.
    X = np.array([[0.0], [1.0]])
    z = np.array([0.0, 0.0])
    assert numeric.straddles_kink(z, numeric.z_slope(X, 0), 1e3).tolist() == [False, True]
    assert numeric.straddles_kink(z, numeric.z_slope(X, 1), 1e-300).tolist() == [True, True]
    assert numeric.at_kink(z, numeric.z_slope(X, 0)).tolist() == [False, True]
    assert numeric.at_kink(np.array([0.0, 1e-300]), np.ones(2)).tolist() == [True, False]


def test_straddling_means_z_reaches_zero_within_the_step():
    # z, dz small integers and h a power of two: z ± h dz is exact, so "the step reaches or
    # crosses 0" is the sign test (z + h dz)(z - h dz) <= 0, with no rounding to blur it.
    values = np.arange(-4.0, 5.0)
    for h in (0.5, 1.0, 2.0):
        z, dz = (np.array(v) for v in zip(*itertools.product(values, values)))
        reaches_zero = ((z + h * dz) * (z - h * dz) <= 0) & (dz != 0)
        assert numeric.straddles_kink(z, dz, h).tolist() == reaches_zero.tolist()


def test_slopes_of_z_along_a_parameter_and_along_a_direction():
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert numeric.z_slope(X, 0).tolist() == [1.0, 3.0]
    assert numeric.z_slope(X, 1).tolist() == [2.0, 4.0]
    assert numeric.z_slope(X, 2).tolist() == [1.0, 1.0]  # b
    # v = [1, -1, 0.5]: dz_i/dt = x_i1 - x_i2 + 0.5 = [1 - 2 + 0.5, 3 - 4 + 0.5]
    assert numeric.z_slope_along(X, np.array([1.0, -1.0, 0.5])).tolist() == [-0.5, -0.5]
    assert numeric.z_slope_along(X, np.array([0.0, 1.0, 0.0])).tolist() == [2.0, 4.0]


def test_steps():
    assert numeric.relative_step(0.5, 1e-3) == 1e-3  # below 1: absolute
    assert numeric.relative_step(-4.0, 1e-3) == 4e-3  # above 1: relative to |theta_j|
    assert numeric.representable_step(3.0, 0.25) == 0.25  # 3.25 is exact
    # 1 + 0.1 rounds to 1.100000000000000088817841970012523...; less 1 (exact) is not 0.1
    assert numeric.representable_step(1.0, 0.1) == 0.10000000000000009
    assert numeric.representable_step(1.0, 2.0 ** -60) == 0.0  # below half an ulp of 1 (2^-53)


def quadratic(t):
    # f = 3 t0^2 + 2 t0 t1 + t1: df/dt0 = 6 t0 + 2 t1, df/dt1 = 2 t0 + 1
    return 3 * t[0] ** 2 + 2 * t[0] * t[1] + t[1]


def test_central_difference_of_a_quadratic_is_exact():
    theta = np.array([1.0, 2.0])
    # t0, h = 0.5: f(1.5, 2) = 6.75 + 6 + 2 = 14.75, f(0.5, 2) = 0.75 + 2 + 2 = 4.75; 10 / 1 = 10 = 6 + 4
    assert numeric.central_difference(quadratic, theta, 0, 0.5) == 10.0
    # t1, h = 0.25: f(1, 2.25) = 3 + 4.5 + 2.25 = 9.75, f(1, 1.75) = 3 + 3.5 + 1.75 = 8.25; 1.5 / 0.5 = 3
    assert numeric.central_difference(quadratic, theta, 1, 0.25) == 3.0
    # any step: exact up to rounding
    assert numeric.central_difference(quadratic, theta, 0, 1e-3) == pytest.approx(10.0, rel=1e-10)
    assert theta.tolist() == [1.0, 2.0]  # not modified


def test_central_difference_of_a_cubic_has_the_truncation_error():
    # f = t^3 at 1, h = 0.5: (1.5^3 - 0.5^3) / 1 = 3.375 - 0.125 = 3.25, not f' = 3: the error
    # h^2 f''' / 6 = 0.25 * 6 / 6 = 0.25, which the quadratic above does not have.
    assert numeric.central_difference(lambda t: t[0] ** 3, np.array([1.0]), 0, 0.5) == 3.25


def test_activations_are_relu_of_z():
    X = np.array([[1.0, 2.0], [-1.0, 0.0], [0.5, -0.25]])
    # theta = [w, b] = [1, 1, -1]: z = [1 + 2 - 1, -1 + 0 - 1, 0.5 - 0.25 - 1] = [2, -2, -0.75]
    assert numeric.activations(X, np.array([1.0, 1.0, -1.0])).tolist() == [2.0, 0.0, 0.0]


def test_sample_differences_of_an_active_sample_are_its_derivatives():
    # x = 2, y = 1, w = 1, b = 0 along w, h = 0.25: z(t) = 2 (1 + t), all active, l = (z - 1)^2
    # t = 0: l = 1; t = +-0.25: z = 2.5, 1.5, l = 2.25, 0.25; t = +-0.5: z = 3, 1, l = 4, 0
    d = numeric.sample_differences(np.array([[2.0]]), np.array([1.0]), np.array([1.0, 0.0]),
                                   np.array([1.0, 0.0]), 0.25)
    assert d.activation.tolist() == [2.0]  # (2.5 - 1.5) / 0.5 = x
    assert d.loss.tolist() == [4.0]  # (2.25 - 0.25) / 0.5 = 2 (a - y) x = 2 * 1 * 2
    assert d.loss_left.tolist() == [4.0]  # (3 * 1 - 4 * 0.25 + 0) / 0.5
    assert d.loss_right.tolist() == [4.0]  # (-3 * 1 + 4 * 2.25 - 4) / 0.5


def test_sample_differences_at_a_tie_give_each_side_s_slope():
    # x = 1, y = 0.5, w = 1, b = -1 along b, h = 0.25: z(t) = t, a = max(0, t), l = (a - 0.5)^2
    # l at t = 0, 0.25, -0.25, 0.5, -0.5: 0.25, 0.0625, 0.25, 0, 0.25
    d = numeric.sample_differences(np.array([[1.0]]), np.array([0.5]), np.array([1.0, -1.0]),
                                   np.array([0.0, 1.0]), 0.25)
    # from below a = 0 throughout: (3 * 0.25 - 4 * 0.25 + 0.25) / 0.5 = 0, the ReLU'(0) = 0 side
    assert d.loss_left.tolist() == [0.0]
    # from above: (-3 * 0.25 + 4 * 0.0625 - 0) / 0.5 = -1 = 2 (0 - 0.5) * 1
    assert d.loss_right.tolist() == [-1.0]
    # the central differences mix the sides: neither is a derivative
    assert d.activation.tolist() == [0.5]  # (0.25 - 0) / 0.5
    assert d.loss.tolist() == [-0.375]  # (0.0625 - 0.25) / 0.5


def test_sample_differences_along_a_direction_follow_z_slope_along():
    # x = [1, 2], theta = [0.5, 0.25, 1]: z = 0.5 + 0.5 + 1 = 2 (active); v = [1, -1, 0.5]:
    # dz/dt = 1 - 2 + 0.5 = -0.5, so at h = 0.25 z = 2 -+ 0.125 and da/dt = -0.5
    X = np.array([[1.0, 2.0]])
    v = np.array([1.0, -1.0, 0.5])
    d = numeric.sample_differences(X, np.array([0.0]), np.array([0.5, 0.25, 1.0]), v, 0.25)
    assert d.activation.tolist() == numeric.z_slope_along(X, v).tolist() == [-0.5]
    # l = a^2 (y = 0): dl/dt = 2 a da/dt = 2 * 2 * -0.5 = -2; (1.875^2 - 2.125^2) / 0.5 = -1 / 0.5
    assert d.loss.tolist() == [-2.0]
