"""The checker's verdict where it can go wrong: a wrong Jacobian and a wrong gradient must
fail, the options given must be the ones applied, the kink must be found at every scale of
|x|, ties from either side must be bracketed, and every report's words must match its numbers.

References: hand-worked values (arithmetic in comments), gradients written out by hand,
and plain central differences computed here.
"""

from __future__ import annotations

import numpy as np
import pytest

from neurocli import gradcheck as gc
from neurocli import neuron, numeric
from neurocli.engines import memory


def by_name(point):
    return {p.name: p for p in point.parameters}


def loop_gradient(X, y, w, b):
    """The true gradient one sample at a time (no call into the kernels)."""
    N, n = X.shape
    gw, gb = np.zeros(n), 0.0
    for i in range(N):
        z = float(np.dot(X[i].astype(np.float64), np.asarray(w, dtype=np.float64))) + float(b)
        if z > 0:
            e = z - float(y[i])
            gw += 2.0 / N * e * X[i]
            gb += 2.0 / N * e
    return neuron.LossGrad(0.0, gw, gb, 0, 0.0, N)


def scaled(factor, offset=0.0):
    """The true gradient times ``factor`` plus ``offset`` on every entry."""
    def grad_fn(X, y, w, b):
        g = loop_gradient(X, y, w, b)
        return neuron.LossGrad(0.0, g.grad_w * factor + offset, g.grad_b * factor + offset, 0, 0.0, g.n_samples)
    return grad_fn


# A plain problem away from the kink: z = [2, -0.5, 1.25, 0.75] (w = [1, 0.5], b = 0).
X_PLAIN = np.array([[1.0, 2.0], [-1.0, 1.0], [0.5, 1.5], [1.5, -1.5]])
Y_PLAIN = np.array([1.0, 1.0, 0.5, 2.0])
W_PLAIN = np.array([1.0, 0.5])


# ---- the Jacobian check can fail ------------------------------------------------------------

@pytest.mark.filterwarnings("error")
def test_a_wrong_jacobian_fails_in_full_mode(monkeypatch):
    # The Jacobian without the mask: rows of inactive samples (sample 1) are [x_1, 1], not 0.
    monkeypatch.setattr(gc, "neuron_jacobian", lambda X, w, b: np.hstack([X, np.ones((X.shape[0], 1))]))
    point = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, grad_fn=loop_gradient, jacobian="full").base
    assert all(p.status == "pass" for p in point.parameters)
    assert point.jacobian.mode == "full" and not point.jacobian.passed
    # sample 1's entries are off by |x| = [1, 1, 1]: the worst error is 1, relative 1
    assert point.jacobian.max_abs_error == pytest.approx(1.0, rel=1e-6)
    assert point.jacobian.max_rel_error == pytest.approx(1.0, rel=1e-6)
    assert point.verdict == "fail" and point.reason == "the per-sample Jacobian disagrees with finite differences"


@pytest.mark.filterwarnings("error")
def test_a_scaled_jacobian_has_the_relative_error_of_its_scale(monkeypatch):
    # 1.5 J: every nonzero entry is off by 0.5 |J_ik| against the true 1 |J_ik|, relative to the
    # larger of the two: 0.5 / 1.5 = 1/3, whatever |x|; the largest absolute error is 0.5 * 2
    # (sample 0's x2 = 2). Zero entries (inactive samples) are 0 on both sides: relative 0.
    true_jacobian = gc.neuron_jacobian
    monkeypatch.setattr(gc, "neuron_jacobian", lambda X, w, b: 1.5 * true_jacobian(X, w, b))
    jac = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, grad_fn=loop_gradient, jacobian="full").base.jacobian
    assert not jac.passed
    assert jac.max_rel_error == pytest.approx(1 / 3, rel=1e-6)
    assert jac.max_abs_error == pytest.approx(1.0, rel=1e-6)



@pytest.mark.filterwarnings("error")
def test_relative_errors_of_entries_smaller_than_one(monkeypatch):
    # The unmasked Jacobian on X / 10: sample 1 (inactive) gets [-0.1, 0.1, 1] where the truth is
    # 0. Its x-entries are off by 0.1 against a larger side of 0.1: relative error 1, not 0.1.
    monkeypatch.setattr(gc, "neuron_jacobian", lambda X, w, b: np.hstack([X, np.ones((X.shape[0], 1))]))
    jac = gc.check(X_PLAIN / 10, Y_PLAIN, W_PLAIN, 0.0, grad_fn=loop_gradient, jacobian="full").base.jacobian
    assert jac.max_rel_error == pytest.approx(1.0, rel=1e-6)
    assert jac.max_abs_error == pytest.approx(1.0, rel=1e-6)  # the bias column: 1 against 0


def test_a_wrong_jacobian_fails_in_projection_mode(monkeypatch):
    # J^T u without the mask, as a backward pass that forgot ReLU'(z).
    def leaky_backward(upstream, cache):
        X, _ = cache
        return X.T @ upstream, float(upstream.sum())
    monkeypatch.setattr(gc.neuron, "backward", leaky_backward)
    point = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, grad_fn=loop_gradient, jacobian="projection").base
    assert all(p.status == "pass" for p in point.parameters)
    assert point.jacobian.mode == "projection" and not point.jacobian.passed
    assert point.jacobian.entries == gc.N_PROJECTIONS and point.jacobian.max_abs_error > 0.1
    assert point.verdict == "fail"


@pytest.mark.parametrize("mode", ["full", "projection"])
def test_the_true_jacobian_passes_with_a_sample_excluded_at_the_kink(mode):
    # Sample 0 sits 1e-14 above the kink, active, with x = [1, 1]: no step can stay on one side
    # and above the rounding floor, so it is left out of the comparison on both sides.
    # z = [1e-14, 1.5, -2.5, 0.5] (w = [1, 0.5], b = -1.5 + 1e-14).
    X = np.array([[1.0, 1.0], [2.0, 2.0], [-1.0, 0.0], [1.0, 2.0]])
    y = np.array([1.0, 2.0, 0.5, 1.5])
    point = gc.check(X, y, W_PLAIN, -1.5 + 1e-14, jacobian=mode).base
    jac = point.jacobian
    assert jac.passed and jac.excluded >= 1 and point.verdict == "pass"
    # the excluded entries (whose difference crossed the kink) count in no error
    assert jac.max_abs_error < 1e-5 and jac.max_rel_error < 1e-5
    if mode == "full":
        assert jac.entries + jac.excluded == 4 * 3
        assert jac.detail == f"full 4 x 3 matrix, column by column; {jac.excluded} entries excluded at the kink"
    else:  # each projection leaves out the one sample at the kink
        assert jac.excluded == gc.N_PROJECTIONS and isinstance(jac.max_rel_error, float)
        assert jac.detail == (f"{gc.N_PROJECTIONS} seeded random projections u^T J v (J is 4 x 3; --jacobian "
                              f"full for the whole matrix); {jac.excluded} samples excluded at the kink")


def test_jacobian_details_without_exclusions():
    full = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, jacobian="full").base.jacobian
    assert (full.entries, full.excluded, full.detail) == (12, 0, "full 4 x 3 matrix, column by column")
    proj = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, jacobian="projection").base.jacobian
    assert proj.detail == (f"{gc.N_PROJECTIONS} seeded random projections u^T J v (J is 4 x 3; "
                           "--jacobian full for the whole matrix)")
    assert proj.passed and proj.max_abs_error < 1e-6 and proj.excluded == 0
    assert full.max_rel_error < 1e-6 and proj.max_rel_error < 1e-6
    # the projections are seeded: the same check gives the same numbers, another seed others
    again = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, jacobian="projection").base.jacobian
    other = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, jacobian="projection", seed=5).base.jacobian
    assert (again.max_abs_error, again.max_rel_error) == (proj.max_abs_error, proj.max_rel_error)
    assert (other.max_abs_error, other.max_rel_error) != (proj.max_abs_error, proj.max_rel_error)


def test_auto_mode_switches_to_projections_above_the_size_limit(monkeypatch):
    monkeypatch.setattr(gc, "FULL_JACOBIAN_MAX_ENTRIES", 12)  # 4 x 3 = 12: still full
    assert gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0).base.jacobian.mode == "full"
    monkeypatch.setattr(gc, "FULL_JACOBIAN_MAX_ENTRIES", 11)
    assert gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0).base.jacobian.mode == "projection"


# ---- a wrong gradient fails, and the tolerances given are the ones applied -----------------

def test_tolerances_are_applied_as_given_at_every_point():
    # The gradient 1e-4 too large, relative: fails at the default rtol 1e-5, passes at 1e-3,
    # at the given point and at three random ones.
    off = scaled(1 + 1e-4)
    assert gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, off, points=3, seed=2).verdict == "fail"
    loose = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, off, rtol=1e-3, points=3, seed=2)
    assert loose.verdict == "pass" and loose.rtol == 1e-3 and len(loose.points) == 4
    # 1e-6 added to every entry: with rtol = 0 the default atol 1e-8 fails it, atol 1e-5 passes.
    shifted = scaled(1.0, 1e-6)
    strict = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, shifted, rtol=0.0, points=3, seed=2)
    assert strict.verdict == "fail" and all(r.verdict == "fail" for r in strict.points)
    ok = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, shifted, rtol=0.0, atol=1e-5, points=3, seed=2)
    assert ok.verdict == "pass" and ok.atol == 1e-5
    for point in ok.points:
        for p in point.parameters:
            # tolerance = atol + rtol * max(|a|, |n|) + roundoff, with rtol = 0
            assert p.tolerance == pytest.approx(1e-5 + p.roundoff, rel=1e-12)
            assert p.abs_error == pytest.approx(1e-6, rel=1e-3)


def test_the_step_given_is_the_step_taken():
    # eps is relative: h_j = eps * max(1, |theta_j|); theta = [1, 0.5, 3] -> [1e-4, 1e-4, 3e-4]
    point = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 3.0, eps=1e-4, points=1).base
    steps = [p.requested_step for p in point.parameters]
    assert steps == pytest.approx([1e-4, 1e-4, 3e-4], rel=1e-9)
    assert [p.step for p in point.parameters] == steps  # nothing straddles: the step is used as is
    report = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 3.0, eps=1e-4, points=1)
    assert report.eps == 1e-4 and report.points[1].parameters[0].requested_step != pytest.approx(gc.DEFAULT_EPS)


def test_a_wrong_gradient_names_the_parameters_that_disagree():
    # Only grad_b wrong: the reason names b alone, in the singular.
    def wrong_b(X, y, w, b):
        g = loop_gradient(X, y, w, b)
        return neuron.LossGrad(0.0, g.grad_w, g.grad_b + 0.5, 0, 0.0, g.n_samples)
    point = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, wrong_b, names=["p", "q"]).base
    assert point.reason == "b disagrees with central differences"
    assert [p.status for p in point.parameters] == ["pass", "pass", "fail"]
    assert by_name(point)["b"].abs_error == pytest.approx(0.5, rel=1e-6)
    both = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, scaled(2.0), names=["p", "q"]).base
    assert both.reason == "w[p], w[q], b disagree with central differences"


def test_the_combined_reason_counts_the_points():
    report = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, scaled(2.0), points=2, seed=1)
    assert report.verdict == "fail"
    assert report.reason == f"given parameters: {report.points[0].reason} (and 2 more point(s))"
    one = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, scaled(2.0))
    assert one.reason == f"given parameters: {one.points[0].reason}"
    good = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, points=2, seed=1)
    assert good.reason == "3 of 3 points pass"
    two = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, scaled(2.0), points=1, seed=1)
    assert two.reason == f"given parameters: {two.points[0].reason} (and 1 more point(s))"
    assert [r.label for r in good.points] == ["given parameters", "random point 1 (seed 1)", "random point 2 (seed 1)"]
    single = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0)
    # z = [2, -0.5, 1.25, 0.75]: 3 of 4 active
    assert single.reason == "all 3 gradients agree with central differences (3 of 4 samples active)"
    assert single.verdict == "pass" and single.dtype == "float64" and single.n_samples == 4
    assert single.feature_names == ["x1", "x2"]


def test_inconclusive_points_are_counted_beside_passing_ones():
    # The given point has no active sample (b = -10): inconclusive; the random points put the
    # kink inside the data, so they pass.
    report = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, -10.0, points=2, seed=3)
    assert [r.verdict for r in report.points] == ["inconclusive", "pass", "pass"]
    assert report.verdict == "pass" and report.reason == "2 of 3 points pass; 1 inconclusive (see below)"
    alone = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, -10.0)
    assert alone.verdict == "inconclusive" and alone.reason == alone.points[0].reason


# ---- every sample excluded: inconclusive, never a pass -------------------------------------

def test_every_sample_at_the_kink_is_inconclusive():
    # Both samples 1e-14 above the kink with x = 1: no usable step, everything excluded.
    X = np.array([[1.0], [1.0]])
    point = gc.check(X, np.array([1.0, 2.0]), np.array([1.0]), -1.0 + 1e-14).base
    for p in point.parameters:
        assert p.status == "inconclusive" and p.passed is None and p.n_used == 0 and p.excluded == 2
        assert np.isnan([p.analytic, p.numeric, p.abs_error, p.rel_error, p.tolerance, p.roundoff]).all()
        assert p.badness == -1.0
    assert point.verdict == "inconclusive"
    assert point.reason == "every sample straddles the kink for w[x1], b: nothing left to compare"


def test_a_wrong_gradient_is_not_hidden_by_an_inconclusive_parameter():
    X = np.array([[1.0], [1.0]])
    point = gc.check(X, np.array([1.0, 2.0]), np.array([1.0]), -1.0 + 1e-14, grad_fn=scaled(2.0)).base
    assert point.verdict == "inconclusive"  # nothing could be compared, so nothing failed
    assert point.n_active == 2


# ---- the kink at every scale of |x| ---------------------------------------------------------

def test_straddling_scales_with_the_size_of_x():
    # Sample 0: x = [1000, 0], z = 1000 * 0.001 + 0 - 1 + 1e-5 = 1e-5. The default step
    # h ~ 6.06e-6 moves z by h * |x| = 6.06e-3 for w[x1]: it straddles (margin 1e-8); for b it
    # moves z by 6.06e-6 < 1e-5: no straddle; w[x2] does not move it (x = 0).
    # Sample 1: x = [1e-3, 1], z = 1e-6 + 1 - 1 + 1e-5 ~ 1.1e-5: for w[x1] h * 1e-3 ~ 6e-9 is far
    # below its z (no straddle); for w[x2] and b 6.06e-6 < 1.1e-5 (none).
    # Sample 2: x = [1, 2], z = 0.001 + 2 - 1 + 1e-5, active, far from the kink.
    X = np.array([[1000.0, 0.0], [1e-3, 1.0], [1.0, 2.0]])
    y = np.array([0.5, 1.0, 2.0])
    w, b = np.array([0.001, 1.0]), -1.0 + 1e-5
    point = gc.check(X, y, w, b).base
    p = by_name(point)
    assert (p["w[x1]"].straddling, p["w[x2]"].straddling, p["b"].straddling) == (1, 0, 0)
    assert p["w[x1]"].indices == [0] and p["w[x1]"].min_margin == pytest.approx(1e-8, rel=1e-6)
    assert p["w[x1]"].action == "shrunk_step" and p["w[x1]"].step < 1e-8 < p["w[x1]"].requested_step
    assert p["b"].action == "none" and p["b"].min_margin is None and p["b"].step == p["b"].requested_step
    assert point.kink.straddling == 1 and point.kink.indices == [0] and point.kink.action == "shrunk_step"
    assert point.kink.ties == 0 and point.kink.closest == 0
    assert point.kink.closest_margin == pytest.approx(1e-8, rel=1e-6)
    assert point.verdict == "pass"


def test_a_sample_with_small_x_near_the_kink_straddles_only_for_the_bias():
    # Sample 0: x = [1e-3], w = 1, b = -1e-3 + 1e-8 -> z = 1e-8. For w the step moves z by
    # h * 1e-3 ~ 6e-9 < 1e-8 (no straddle, margin 1e-5); for b by 6.06e-6 > 1e-8 (straddles,
    # margin 1e-8).
    X = np.array([[1e-3], [2.0], [-1.0]])
    y = np.array([0.5, 1.0, 1.0])
    point = gc.check(X, y, np.array([1.0]), -1e-3 + 1e-8).base
    p = by_name(point)
    assert p["w[x1]"].straddling == 0 and p["w[x1]"].action == "none"
    assert p["b"].straddling == 1 and p["b"].indices == [0] and p["b"].min_margin == pytest.approx(1e-8, rel=1e-5)
    assert point.kink.straddling == 1 and point.kink.min_margin == pytest.approx(1e-8, rel=1e-5)
    assert point.verdict == "pass"


def test_the_kink_report_counts_every_parameter_and_the_strongest_action():
    # w = [1e-8, 1], b = 1e-14. Sample 0: x = [1000, 0], z = 1e-5 + 1e-14: it straddles for
    # w[x1] only (h * 1000 ~ 6e-3 >= 1e-5; for b h ~ 6e-6 < 1e-5), margin 1e-8, shrunk.
    # Sample 1: x = [0, 0], z = 1e-14: straddles for b only, and no step above the rounding
    # floor stays on one side: excluded. Sample 2: x = [0, 2], z = 2, far.
    # Two distinct samples; "excluded" outranks "shrunk_step"; the smallest margin is b's.
    X = np.array([[1000.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    y = np.array([0.5, 1.0, 2.0])
    w, b = np.array([1e-8, 1.0]), 1e-14
    point = gc.check(X, y, w, b).base
    p = by_name(point)
    assert p["w[x1]"].straddling == 1 and p["w[x1]"].indices == [0] and p["w[x1]"].action == "shrunk_step"
    assert p["w[x2]"].straddling == 0 and p["w[x2]"].action == "none"
    assert p["b"].straddling == 1 and p["b"].indices == [1] and p["b"].action == "excluded"
    assert point.kink.straddling == 2 and point.kink.indices == [0, 1]
    assert point.kink.action == "excluded" and point.kink.ties == 0
    assert point.kink.min_margin == p["b"].min_margin == pytest.approx(1e-14, rel=1e-3)
    assert point.kink.closest == 1 and point.kink.closest_margin == pytest.approx(1e-14, rel=1e-3)
    assert point.verdict == "pass"


# ---- ties from both sides -------------------------------------------------------------------

def test_a_tie_approached_from_below():
    # Sample 0: x = [-0.5, 1], w = [1, 0.5], b = 0: z = -0.5 + 0.5 = 0, a tie, y = 1. Raising w[x1]
    # lowers z (dz/dw1 = -0.5), so the flat side (the convention's) is the right one and the
    # active side the left: there the term adds (2/N)(a - y) dz/dw1 = (2/3)(0 - 1)(-0.5) = 1/3.
    # Samples 1, 2: x = [1, 2] (z = 2, y = 1) and [2, 0] (z = 2, y = 3), active, N = 3.
    # The rest's slope for w[x1]: (2/3)((2 - 1) * 1 + (2 - 3) * 2) = -2/3.
    X = np.array([[-0.5, 1.0], [1.0, 2.0], [2.0, 0.0]])
    y = np.array([1.0, 1.0, 3.0])
    point = gc.check(X, y, W_PLAIN, 0.0).base
    t = by_name(point)["w[x1]"].tie_check
    assert t.n_ties == 1 and t.within
    assert t.right == pytest.approx(-2 / 3, rel=1e-6)  # flat side: the rest alone
    assert t.left == pytest.approx(-2 / 3 + 1 / 3, rel=1e-6)
    assert (t.lo, t.hi) == (pytest.approx(t.right), pytest.approx(t.left))
    assert t.analytic == pytest.approx(-2 / 3, rel=1e-12) == by_name(point)["w[x1]"].analytic
    # w[x2]: dz/dw2 = +1 for the tie, so the flat side is the left one; the active side adds
    # (2/3)(0 - 1)(1) = -2/3; the rest: (2/3)((1)(2) + (-1)(0)) = 4/3.
    t2 = by_name(point)["w[x2]"].tie_check
    assert t2.left == pytest.approx(4 / 3, rel=1e-6) and t2.right == pytest.approx(4 / 3 - 2 / 3, rel=1e-6)
    assert point.kink.ties == 1 and point.kink.closest == 0 and point.kink.closest_margin == 0.0
    assert point.verdict == "pass"


def test_ties_moving_in_opposite_directions_are_bracketed_per_sample():
    # Two ties for w[x1]: x = [+1, -1] and [-1, +1], w = [1, 1], b = 0 (z = 0 for both), with
    # targets of opposite sign, y = +1 and -1, and one active sample x = [2, 0] (z = 2, y = 1).
    # N = 3. The rest's slope for w[x1]: (2/3)(2 - 1)(2) = 4/3.
    # Tie A (x = +1, y = 1) is active to the right: adds (2/3)(0 - 1)(+1) = -2/3 there, 0 on the left.
    # Tie B (x = -1, y = -1) is active to the left: adds (2/3)(0 + 1)(-1) = -2/3 there, 0 on the right.
    # So left = right = 4/3 - 2/3 = 2/3: the whole loss's one-sided slopes agree, and the analytic
    # 4/3 (both ties inactive) lies outside [min(left, right), max(left, right)] = [2/3, 2/3].
    # Per sample the bracket is lo = 4/3 + min(0, -2/3) + min(-2/3, 0) = 0, hi = 4/3 + 0 + 0 = 4/3.
    X = np.array([[1.0, -1.0], [-1.0, 1.0], [2.0, 0.0]])
    y = np.array([1.0, -1.0, 1.0])
    p = by_name(gc.check(X, y, np.array([1.0, 1.0]), 0.0).base)["w[x1]"]
    t = p.tie_check
    assert t.n_ties == 2 and t.within and p.status == "pass"
    assert t.left == pytest.approx(2 / 3, rel=1e-6) and t.right == pytest.approx(2 / 3, rel=1e-6)
    assert t.lo == pytest.approx(0.0, abs=1e-6) and t.hi == pytest.approx(4 / 3, rel=1e-6)
    assert t.analytic == pytest.approx(4 / 3, rel=1e-12)


def test_a_gradient_outside_the_tie_bracket_fails():
    # The built-in problem's tie (sample 3): w[x1]'s one-sided slopes are -0.3828 and -0.2891
    # (their difference -0.09375, worked in test_gradcheck); a value of 0 lies outside both.
    X, y, w, b, names = gc.builtin_problem()

    def tie_wrong(X, y, w, b):
        g = loop_gradient(X, y, w, b)
        gw = g.grad_w.copy()
        gw[0] = 0.0
        return neuron.LossGrad(0.0, gw, g.grad_b, 0, 0.0, g.n_samples)
    p = by_name(gc.check(X, y, w, b, tie_wrong, names=names).base)["w[x1]"]
    assert p.status == "fail" and not p.tie_check.within and p.tie_check.analytic == 0.0


# ---- float32: samples whose sign of z float32 cannot resolve -------------------------------

def _float32_sign_flip():
    """A float32 problem where the kernel's z for sample 0 has the other sign than the exact z.

    x_0 = [u, 1], w = [v, -fl32(u v)]: the exact z is u v - fl32(u v) + b, the rounding of one
    float32 product (up to ~3e-5 for u v ~ 1000); b puts the exact and the float32 z on either
    side of 0, each about half that rounding away from it. Sample 1 is active, far from the kink.
    """
    rng = np.random.default_rng(5)
    for _ in range(200):
        u, v = np.float32(rng.uniform(500, 1500)), np.float32(rng.uniform(1, 2))
        w = np.array([v, -np.float32(u * v)], dtype=np.float32)
        X = np.array([[u, 1.0], [1.0, 0.0]], dtype=np.float32)
        s32 = float(neuron.pre_activation(X, w, np.float32(0))[0])
        s64 = float(X[0].astype(np.float64) @ w.astype(np.float64))
        if abs(s32 - s64) < 1e-6:
            continue
        b = np.float32(-(s32 + s64) / 2)
        z32 = float(neuron.pre_activation(X, w, b)[0])
        z64 = s64 + float(b)
        if (z32 > 0) != (z64 > 0):
            return X, np.array([0.5, 2.0], dtype=np.float32), w, b
    pytest.fail("no float32 product with a rounding error found")


def test_float32_samples_of_unresolvable_sign_are_excluded_not_failed():
    X, y, w, b = _float32_sign_flip()
    report = gc.check(X, y, w, b)
    point = report.base
    assert report.dtype == "float32"
    assert point.verdict == "pass", point.reason
    for p in point.parameters:  # sample 0 left out on both sides, for every parameter
        assert p.excluded == 1 and p.n_used == 1 and p.status == "pass"
    # for b sample 0 does not even straddle (|z| ~ 1e-5 > h ~ 6e-6): float32 alone excludes it
    assert by_name(point)["b"].straddling == 0 and by_name(point)["b"].action == "excluded"
    # the comparison is of sample 1 alone: dC/dtheta on it, N = 1
    rest = loop_gradient(X[1:], y[1:], w, b)
    assert by_name(point)["b"].analytic == pytest.approx(rest.grad_b, rel=1e-6)


# ---- random points, the sweep ---------------------------------------------------------------

def test_random_points_put_the_kink_inside_the_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3)) + 2.0  # not centred: X w is not symmetric about 0
    points = gc.random_points(X, np.array([3.0, 4.0, 0.0]), 300, seed=4)
    assert len(points) == 300
    fractions = [np.mean(X @ wk + bk > 0) for wk, bk in points]
    # b is minus a quantile q ~ U(0.1, 0.9) of X w: a fraction 1 - q of the samples is active
    assert 0.09 <= min(fractions) < 0.15 and 0.85 < max(fractions) <= 0.91
    assert abs(np.mean(fractions) - 0.5) < 0.05
    # w ~ N(0, rms(w)^2), rms(w) = sqrt((9 + 16 + 0) / 3) = 2.887: 900 draws
    weights = np.concatenate([wk for wk, _ in points])
    assert abs(np.std(weights) - 2.887) < 0.2 and abs(np.mean(weights)) < 0.3
    # below rms 1 the scale is 1
    small = np.concatenate([wk for wk, _ in gc.random_points(X, np.full(3, 0.5), 300, seed=4)])
    assert abs(np.std(small) - 1.0) < 0.07
    again = gc.random_points(X, np.array([3.0, 4.0, 0.0]), 300, seed=4)
    assert all(np.array_equal(a[0], c[0]) and a[1] == c[1] for a, c in zip(points, again))
    # the points take the checked dtype: result_type(X, w)
    X32, w32 = X.astype(np.float32), np.zeros(3, np.float32)
    assert gc.random_points(X32, w32, 1, 0)[0][0].dtype == np.float32
    assert gc.random_points(X32, np.zeros(3), 1, 0)[0][0].dtype == np.float64
    assert gc.random_points(X, w32, 1, 0)[0][0].dtype == np.float64


def test_the_sweep_is_a_plain_central_difference_at_each_step():
    X, y, w, b, names = gc.builtin_problem()
    rows = gc.check(X, y, w, b, names=names, sweep=True).base.sweep
    truth = neuron.loss_and_gradient(X, y, w, b)
    analytic = np.append(truth.grad_w, truth.grad_b)
    theta = np.append(w, b)
    z = X @ w + b

    def loss(t):
        return float(np.mean((np.maximum(X @ t[:-1] + t[-1], 0) - y) ** 2))
    for row in rows:
        for j in range(4):
            h = (theta[j] + row.step * max(1.0, abs(theta[j]))) - theta[j]
            e = np.zeros(4)
            e[j] = h
            numeric = (loss(theta + e) - loss(theta - e)) / (2 * h)
            # the two differences round alike only up to eps * loss / h
            assert row.abs_errors[j] == pytest.approx(abs(analytic[j] - numeric), rel=1e-6, abs=1e-14 / h)
            d = X[:, j] if j < 3 else np.ones(8)
            assert row.straddling[j] == int(np.sum((d != 0) & (np.abs(z) <= h * np.abs(d))))
    # at 1e-2 both kink samples straddle for b (|z| = 0 and 1e-8 <= 1e-2); at 1e-10 only the tie
    assert rows[0].straddling[3] == 2 and rows[-1].straddling[3] == 1


def test_badness_orders_by_error_over_tolerance():
    common = dict(name="b", analytic=1.0, numeric=1.0, rel_error=0.0, roundoff=0.0, requested_step=1e-6,
                  step=1e-6, straddling=0, indices=[], min_margin=None, action="none", excluded=0, n_used=1)
    assert gc.ParameterResult(abs_error=2.0, tolerance=4.0, status="pass", **common).badness == 0.5
    assert gc.ParameterResult(abs_error=1.0, tolerance=0.0, status="fail", **common).badness == float("inf")
    assert gc.ParameterResult(abs_error=0.0, tolerance=0.0, status="pass", **common).badness == 0.0
    assert gc.ParameterResult(abs_error=0.0, tolerance=0.0, status="fail", **common).passed is False


def test_a_gradient_of_the_wrong_shape_is_a_located_error():
    def short(X, y, w, b):
        return neuron.LossGrad(0.0, np.zeros(1), 0.0, 0, 0.0, X.shape[0])
    with pytest.raises(ValueError, match=r"grad_fn returned grad_w of shape \(1,\), expected \(2,\)"):
        gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, short)


def test_the_builtin_problem_is_the_one_its_docstring_works_out():
    X, y, w, b, names = gc.builtin_problem()
    assert names == ["x1", "x2", "x3"] and w.tolist() == [0.5, -0.25, 1.0] and b == 0.125
    assert X.shape == (8, 3) and y.shape == (8,)
    z = X @ w + b
    np.testing.assert_allclose(z, [0.75, 1.875, -1.375, 0.0, 0.125, -1.875, 1.3125, 1e-8], rtol=1e-7, atol=1e-17)
    assert z[3] == 0.0 and 0 < z[7] < 2e-8
    # Active: samples 0, 1, 4, 6, 7 with residuals z - y = -0.25, -0.625, -0.125, 0.3125, 1e-8 - 0.5;
    # inactive (a = 0): samples 2, 5 and the tie 3, residuals -0.5, -1.0, -0.75.
    # C = (0.0625 + 0.390625 + 0.015625 + 0.09765625 + 0.25 + 0.25 + 1 + 0.5625) / 8 = 2.62890625 / 8
    # dC/db = (2/8)(-0.25 - 0.625 - 0.125 + 0.3125 - 0.5) = -0.296875 (plus 2.5e-9 from z_7)
    # dC/dw1 = (2/8)(-0.25 * 1 - 0.625 * 2 - 0.125 * 0 + 0.3125 * 1.5 - 0.5 * 0.25) = -0.2890625
    truth = memory.loss_and_gradient(X, y, w, b)
    assert truth.loss == pytest.approx(2.62890625 / 8, rel=1e-7)
    assert truth.grad_b == pytest.approx(-0.296875, rel=1e-7)
    assert truth.grad_w[0] == pytest.approx(-0.2890625, rel=1e-7)
    # dC/dw2 = (2/8)(-0.25 * 0.5 - 0.625 * -1 + 0 + 0.3125 * 0.25 - 0.5 * 0.5) = 0.08203125
    assert truth.grad_w[1] == pytest.approx(0.08203125, rel=1e-7)
    assert truth.n_active == 5


def test_a_sample_exactly_at_the_step_s_reach_straddles():
    # w = 1: the step for w is h = (1 + DEFAULT_EPS) - 1, exactly. b = h - 1 (exact), so sample 0
    # (x = 1) has z = 1 + (h - 1) = h exactly: |z| <= h |x| holds with equality, it straddles,
    # and the step is shrunk to half its margin, h / 2.
    h = numeric.representable_step(1.0, gc.DEFAULT_EPS)
    X = np.array([[1.0], [2.0], [-1.0]])
    y = np.array([0.5, 1.0, 1.0])
    point = gc.check(X, y, np.array([1.0]), h - 1.0).base
    p = by_name(point)["w[x1]"]
    assert X[0, 0] * 1.0 + (h - 1.0) == h
    assert p.requested_step == h and p.straddling == 1 and p.min_margin == h
    assert p.action == "shrunk_step" and p.step == h / 2
    assert point.verdict == "pass"


def test_zero_tolerances_still_check():
    # atol = rtol = 0: nothing may be shrunk below a rounding floor of infinity, so straddlers are
    # excluded; the rest is compared within the rounding estimate alone. No error, no pass of a
    # wrong gradient.
    X, y, w, b, names = gc.builtin_problem()
    report = gc.check(X, y, w, b, names=names, rtol=0.0, atol=0.0)
    assert report.verdict in ("pass", "inconclusive")
    straddled = [p for p in report.base.parameters if p.straddling and p.status != "inconclusive"]
    assert straddled  # the built-in problem's tie and near-tie straddle for every parameter
    for p in straddled:
        assert p.action == "excluded" and p.tolerance == p.roundoff
    assert gc.check(X, y, w, b, scaled(1.01), names=names, rtol=0.0, atol=0.0).verdict == "fail"


# ---- the report's fields and words ----------------------------------------------------------

def test_check_point_defaults_and_the_point_it_reports():
    w = np.array([1.0, 0.5])
    point = gc.check_point(X_PLAIN, Y_PLAIN, w, 0.25)
    assert point.label == "given parameters" and point.sweep is None and point.jacobian.mode == "full"
    assert [p.name for p in point.parameters] == ["w[x1]", "w[x2]", "b"]
    assert point.w.tolist() == [1.0, 0.5] and point.b == 0.25 and point.n_samples == 4
    assert point.deterministic is True and point.kink.action == "none" and point.kink.straddling == 0
    # z = [2.25, -0.25, 1.5, 1.0]: 3 active
    assert point.n_active == 3
    projected = gc.check_point(X_PLAIN, Y_PLAIN, w, 0.25, jacobian="projection")
    seeded = gc.check_point(X_PLAIN, Y_PLAIN, w, 0.25, jacobian="projection", seed=0)
    assert projected.jacobian.max_abs_error == seeded.jacobian.max_abs_error  # the default seed is 0
    report = gc.check(X_PLAIN, Y_PLAIN, w, 0.25, jacobian="projection")
    assert report.base.jacobian.max_abs_error == seeded.jacobian.max_abs_error and report.base.sweep is None


def test_the_report_s_dtype_is_that_of_x_and_w_together():
    X32, w32 = X_PLAIN.astype(np.float32), W_PLAIN.astype(np.float32)
    assert gc.check(X32, Y_PLAIN, W_PLAIN, 0.0).dtype == "float64"
    assert gc.check(X_PLAIN, Y_PLAIN, w32, 0.0).dtype == "float64"
    assert gc.check(X32, Y_PLAIN, w32, 0.0).dtype == "float32"


def test_the_check_s_random_points_are_random_points_of_the_given_weights():
    w = np.array([3.0, 4.0])  # rms 3.54: the points' weights are drawn at that scale
    report = gc.check(X_PLAIN, Y_PLAIN, w, 0.0, points=2, seed=6)
    expected = gc.random_points(X_PLAIN, w, 2, 6)
    for point, (wk, bk) in zip(report.points[1:], expected):
        assert point.w.tolist() == wk.tolist() and point.b == bk


def test_random_points_get_the_seed_and_options_of_the_check():
    report = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, points=1, seed=3, jacobian="projection", eps=1e-5)
    wk, bk = gc.random_points(X_PLAIN, W_PLAIN, 1, 3)[0]
    alone = gc.check_point(X_PLAIN, Y_PLAIN, wk, bk, jacobian="projection", eps=1e-5, seed=3)
    got = report.points[1]
    assert got.jacobian.mode == "projection" and got.sweep is None
    assert got.jacobian.max_abs_error == alone.jacobian.max_abs_error
    assert [p.requested_step for p in got.parameters] == [p.requested_step for p in alone.parameters]


def test_integer_data_is_checked():
    # z = [3, 0, 2]: sample 1 is a tie; the true gradient passes, a doubled one fails
    X = np.array([[1, 2], [-1, 1], [2, 0]])
    report = gc.check(X, np.array([1, 2, 1]), np.array([1, 1]), 0)
    assert report.verdict == "pass" and report.dtype == "int64" and report.base.kink.ties == 1
    assert gc.check(X, np.array([1, 2, 1]), np.array([1, 1]), 0, scaled(2.0)).verdict == "fail"


def test_a_gradient_held_as_a_column_is_read_as_its_entries():
    def column(X, y, w, b):
        g = loop_gradient(X, y, w, b)
        return neuron.LossGrad(0.0, g.grad_w.reshape(-1, 1), np.array([g.grad_b]), 0, 0.0, g.n_samples)
    assert gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, column).verdict == "pass"


def test_a_gradient_that_is_nan_every_time_fails_and_is_deterministic():
    nan = scaled(float("nan"))
    point = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, nan).base
    assert point.verdict == "fail" and point.deterministic
    assert point.reason == "w[x1], w[x2], b disagree with central differences"


def test_the_reasons_word_for_word():
    # no sample active
    dead = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, -10.0).base
    assert dead.reason == ("no sample is active (every z_i <= 0): both gradients are zero by construction, "
                           "so their agreement proves nothing")
    # nondeterministic, beside a wrong b: two reasons joined by "; "
    rng = np.random.default_rng(1)

    def noisy_wrong_b(X, y, w, b):
        g = loop_gradient(X, y, w, b)
        return neuron.LossGrad(0.0, g.grad_w * (1 + 1e-15 * rng.standard_normal()), g.grad_b + 1.0, 0, 0.0, 4)
    both = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, noisy_wrong_b).base
    assert both.reason == ("b disagrees with central differences; the analytic gradient differs between two "
                           "identical calls (nondeterministic)")


def test_a_wrong_gradient_and_a_wrong_jacobian_give_both_reasons(monkeypatch):
    monkeypatch.setattr(gc, "neuron_jacobian", lambda X, w, b: np.hstack([X, np.ones((X.shape[0], 1))]))
    point = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, scaled(2.0)).base
    assert point.reason == ("w[x1], w[x2], b disagree with central differences; the per-sample Jacobian "
                            "disagrees with finite differences")


def test_a_step_too_small_for_float64_names_the_parameters_and_keeps_its_numbers():
    # At eps = 1e-13 the rounding of the difference exceeds a tenth of w[x1]'s and b's gradients
    # on this data (w[x2]'s is larger and still conclusive).
    point = gc.check(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0, eps=1e-13).base
    noisy = [p.name for p in point.parameters if p.status == "inconclusive"]
    assert noisy and point.verdict == "inconclusive"
    assert point.reason == (
        f"the step is too small for float64 for {', '.join(noisy)}: rounding in the difference exceeds a tenth of "
        "the gradient, so a wrong gradient could pass; use a larger --eps (--sweep shows the error against the step)")
    truth = loop_gradient(X_PLAIN, Y_PLAIN, W_PLAIN, 0.0)
    for p, exact in zip(point.parameters, list(truth.grad_w) + [truth.grad_b]):
        assert p.analytic == pytest.approx(exact, rel=1e-12) and p.passed in (None, True)
        assert p.abs_error == pytest.approx(abs(p.analytic - p.numeric), rel=1e-12)
        assert np.isfinite([p.numeric, p.rel_error, p.tolerance, p.roundoff]).all() and p.n_used == 4


def test_a_point_where_the_loss_overflows_is_inconclusive_not_a_failure():
    # w = 1e200 puts z_i near 1e200, so (a_i - y_i)^2 ~ 1e400 overflows float64: no difference
    # of the loss exists there, and calling the gradients wrong would blame the wrong thing.
    w = np.full(X_PLAIN.shape[1], 1e200)
    point = gc.check(X_PLAIN, Y_PLAIN, w, 0.0).base
    assert point.verdict == "inconclusive"
    assert point.reason.startswith("the loss overflows float64 at or beside these parameters")
    # 1e150 squares to 1e300, still finite: the comparison is made (and rounding decides it)
    assert gc.check(X_PLAIN, Y_PLAIN, np.full(X_PLAIN.shape[1], 1e100), 0.0).base.reason.find("overflows") == -1
