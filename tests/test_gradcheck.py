"""neurocli gradcheck: the checker catches wrong gradients, passes the true kernels, and says
what it did at the kink (docs/math.md: a difference across z = 0 is wrong).

References are independent of the checker: hand-worked numbers (arithmetic in comments),
mutant gradient functions written out from the wrong formula, and a torch-style plain
central difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from neurocli import gradcheck as gc
from neurocli import neuron
from neurocli.engines import memory
from neurocli.cli import app
runner = CliRunner()
QUICKSTART = Path(__file__).resolve().parent.parent / "configs" / "quickstart.yaml"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def by_name(point):
    return {p.name: p for p in point.parameters}


# ---- a hand-worked example ------------------------------------------------------------------

def test_hand_worked_gradient_and_numeric_value():
    # X = [[1, 2], [-1, 1]], w = [1, 0.5], b = 0, y = [1, 1]
    # z = [1 + 1 + 0, -1 + 0.5 + 0] = [2, -0.5];  a = [2, 0];  active: sample 0 only
    # e_0 = a_0 - y_0 = 1;  dC/dw = (2/N) e_0 x_0 = (2/2) * 1 * [1, 2] = [1, 2];  dC/db = (2/2) * 1 = 1
    X = np.array([[1.0, 2.0], [-1.0, 1.0]])
    y = np.array([1.0, 1.0])
    report = gc.check(X, y, np.array([1.0, 0.5]), 0.0, names=["p", "q"])
    p = by_name(report.base)
    for name, expected in (("w[p]", 1.0), ("w[q]", 2.0), ("b", 1.0)):
        assert p[name].analytic == pytest.approx(expected, abs=1e-15)
        assert p[name].numeric == pytest.approx(expected, rel=1e-8)
        assert p[name].passed
    assert report.verdict == "pass" and report.base.n_active == 1
    assert report.base.kink.straddling == 0


def test_symmetric_relative_error_and_both_zero():
    assert gc._passes(0.0, 0.0, 1e-5, 0.0, 0.0) == (0.0, 0.0, 0.0, True)  # both zero: agreement
    abs_e, rel_e, _, ok = gc._passes(1.0, 3.0, 1e-5, 1e-8, 0.0)
    assert abs_e == 2.0 and rel_e == pytest.approx(2.0 / 3.0) and not ok  # |1 - 3| / max(1, 3)


# ---- mutants: each wrong gradient must fail -------------------------------------------------

def _lossgrad(X, y, grad_w, grad_b):
    a = np.maximum(X @ np.zeros(X.shape[1]), 0)  # only .grad_w/.grad_b are read by the checker
    return neuron.LossGrad(0.0, np.asarray(grad_w, dtype=np.float64), float(grad_b), 0, float(np.abs(a - y).sum()), X.shape[0])


def _parts(X, y, w, b):
    z = X @ w + b
    m = z > 0
    e = z - y  # prediction minus target (valid on the active set)
    return z, m, e


def drop_factor_2(X, y, w, b):
    z, m, e = _parts(X, y, w, b)
    return _lossgrad(X, y, X.T @ (e * m) / len(y), (e * m).sum() / len(y))


def drop_mean(X, y, w, b):
    z, m, e = _parts(X, y, w, b)
    return _lossgrad(X, y, 2 * X.T @ (e * m), 2 * (e * m).sum())


def mean_over_active(X, y, w, b):
    z, m, e = _parts(X, y, w, b)
    k = max(1, int(m.sum()))
    return _lossgrad(X, y, 2 / k * X.T @ (e * m), 2 / k * (e * m).sum())


def mask_ge_zero(X, y, w, b):
    z = X @ w + b
    m = z >= 0  # wrong at z = 0: ReLU'(0) taken as 1
    e = np.maximum(z, 0) - y
    n = len(y)
    return _lossgrad(X, y, 2 / n * X.T @ (e * m), 2 / n * (e * m).sum())


def sign_flipped(X, y, w, b):
    z, m, e = _parts(X, y, w, b)
    n = len(y)
    return _lossgrad(X, y, 2 / n * X.T @ (-e * m), 2 / n * (-e * m).sum())


def bias_over_all(X, y, w, b):
    z, m, e = _parts(X, y, w, b)
    r = np.maximum(z, 0) - y
    n = len(y)
    return _lossgrad(X, y, 2 / n * X.T @ (e * m), 2 / n * r.sum())  # inactive samples leak into grad_b


def w_without_mask(X, y, w, b):
    z, m, e = _parts(X, y, w, b)
    r = np.maximum(z, 0) - y
    n = len(y)
    return _lossgrad(X, y, 2 / n * X.T @ r, 2 / n * (e * m).sum())  # x_i used for inactive samples too


MUTANTS = [drop_factor_2, drop_mean, mean_over_active, mask_ge_zero, sign_flipped, bias_over_all, w_without_mask]


def test_the_mutants_are_written_from_the_right_formula():
    # On the built-in problem the true kernel and a re-implementation agree, so each mutant
    # differs from the truth by exactly its one change.
    X, y, w, b, _ = gc.builtin_problem()
    z, m, e = _parts(X, y, w, b)
    truth = memory.loss_and_gradient(X, y, w, b)
    np.testing.assert_allclose(2 / len(y) * X.T @ (e * m), truth.grad_w, rtol=1e-14)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda f: f.__name__)
def test_every_mutant_fails_on_the_builtin_problem(mutant):
    # The built-in problem has inactive samples with y != 0, an exact tie (sample 3, y = 0.75)
    # and a sample at z ~ 1e-8: every mutant changes at least one gradient.
    X, y, w, b, names = gc.builtin_problem()
    report = gc.check(X, y, w, b, grad_fn=mutant, names=names)
    assert report.verdict == "fail", (mutant.__name__, [(p.name, p.analytic, p.numeric) for p in report.base.parameters])
    assert any(p.status == "fail" for p in report.base.parameters)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda f: f.__name__)
def test_every_mutant_fails_at_random_points_too(mutant):
    X, y, w, b, names = gc.builtin_problem()
    report = gc.check(X, y, w, b, grad_fn=mutant, names=names, points=3, seed=1)
    assert report.verdict == "fail"


def test_mask_ge_zero_is_caught_by_the_tie_convention_only():
    # Data whose only tie is sample 0: x_0 = [1, 2], w = [1, -0.5] -> z_0 = 1 - 1 + b, b = 0 -> z_0 = 0.
    # Sample 1: z = 2 - 0.5 = 1.5 (active);  sample 2: z = -1 - 1 = -2 (inactive).
    X = np.array([[1.0, 2.0], [2.0, 1.0], [-1.0, 2.0]])
    y = np.array([1.0, 1.0, 0.5])
    w = np.array([1.0, -0.5])
    report = gc.check(X, y, w, 0.0, grad_fn=mask_ge_zero)
    assert report.verdict == "fail"
    p = by_name(report.base)
    # The mutant's value for the tie is the steep side's: it still lies between the one-sided
    # differences, so it is the convention ReLU'(0) = 0 that exposes it.
    assert p["w[x1]"].tie_check.within and p["w[x1]"].status == "fail"
    assert gc.check(X, y, w, 0.0).verdict == "pass"


# ---- the true kernels pass, with ties and near-ties -----------------------------------------

@st.composite
def kink_problems(draw):
    n = draw(st.integers(1, 3))
    N = draw(st.integers(2, 8))
    ints = st.integers(-3, 3).map(float)
    X = np.array(draw(st.lists(st.lists(ints, min_size=n, max_size=n), min_size=N, max_size=N)))
    w = np.array(draw(st.lists(st.integers(-2, 2).map(float), min_size=n, max_size=n)))
    k = draw(st.integers(0, N - 1))
    # Sample k at the kink exactly or within 1e-9 of it; integer data keeps z_k exact.
    delta = draw(st.sampled_from([0.0, 0.0, 1e-9, -1e-9, 3e-10, -4e-10, 1e-12]))
    b = -float(X[k] @ w) + delta
    y = np.array(draw(st.lists(st.floats(-2, 3, allow_nan=False).map(lambda v: round(v, 3)), min_size=N, max_size=N)))
    return X, y, w, b, k


@settings(max_examples=80, deadline=None)
@given(kink_problems())
def test_true_kernels_pass_on_data_at_and_near_the_kink(problem):
    X, y, w, b, k = problem
    for grad_fn in (memory.loss_and_gradient, neuron.loss_and_gradient):
        report = gc.check(X, y, w, b, grad_fn=grad_fn)
        point = report.base
        assert point.verdict != "fail", [(p.name, p.analytic, p.numeric, p.tolerance, p.action) for p in point.parameters]
        if point.n_active and all(p.status != "inconclusive" for p in point.parameters):
            assert point.verdict == "pass"
        if np.any(X[k] != 0):  # sample k moves with some parameter, so it straddles at the default step
            z_k = X[k] @ w + b
            assert abs(z_k) <= 2e-9  # delta plus the rounding of b = -(x_k . w) + delta
            assert k in point.kink.indices or point.kink.straddling > gc.SHOWN_INDICES


@settings(max_examples=50, deadline=None)
@given(kink_problems(), st.sampled_from(MUTANTS))
def test_mutants_never_pass_where_they_differ_from_the_truth(problem, mutant):
    X, y, w, b, _ = problem
    truth = neuron.loss_and_gradient(X, y, w, b)
    wrong = mutant(X, y, w, b)
    gap = np.max(np.abs(np.append(truth.grad_w - wrong.grad_w, truth.grad_b - wrong.grad_b)))
    report = gc.check(X, y, w, b, grad_fn=mutant)
    if gap > 1e-3 and report.base.kink.action == "none":
        assert report.verdict == "fail"


# ---- the kink: straddling, shrinking, excluding, ties ---------------------------------------

def _torch_style_mismatch(X, y, w, b, eps=1e-6, atol=1e-5, rtol=1e-3) -> bool:
    """A plain central difference of the whole loss at a fixed step, compared like torch's
    gradcheck (|a - n| <= atol + rtol * |n|), with no look at the kink."""
    truth = neuron.loss_and_gradient(X, y, w, b)
    theta = np.append(w, b)
    analytic = np.append(truth.grad_w, truth.grad_b)

    def loss(t):
        return neuron.mse_forward(neuron.predict(X, t[:-1], t[-1]), y)[0]

    for j in range(theta.size):
        e = np.zeros(theta.size)
        e[j] = eps
        numeric = (loss(theta + e) - loss(theta - e)) / (2 * eps)
        if abs(analytic[j] - numeric) > atol + rtol * abs(numeric):
            return True
    return False


def _near_kink_problem():
    # w = [1, 1], b = 0. Sample 0: x = [0.5, 0.5 + 1e-8] -> z = 1 + 1e-8 - 1 = 1e-8 after b = -1... set so:
    X = np.array([[0.5, 0.5], [2.0, 1.0], [-1.0, -2.0], [1.0, 0.0]])
    y = np.array([3.0, 1.0, 2.0, 0.5])
    w = np.array([1.0, 1.0])
    b = -1.0 + 1e-8  # z = [1e-8, 2 + 1e-8, -4 + 1e-8, 1e-8]: samples 0 and 3 sit 1e-8 above the kink
    return X, y, w, b


def test_torch_style_check_reports_a_false_mismatch_that_neurocli_corrects():
    X, y, w, b = _near_kink_problem()
    # The truth is known: samples 0 and 3 are active (z = 1e-8 > 0). A step of 1e-6 moves their
    # z across 0 on one side, so the plain central difference is wrong.
    assert _torch_style_mismatch(X, y, w, b)
    report = gc.check(X, y, w, b)
    assert report.verdict == "pass"
    assert report.base.kink.straddling == 2 and report.base.kink.indices == [0, 3]
    assert report.base.kink.min_margin == pytest.approx(1e-8, rel=1e-6)  # |z| / |x| = 1e-8 / 1 for sample 3
    assert {p.action for p in report.base.parameters} <= {"shrunk_step", "excluded"}


def test_shrunk_step_is_below_the_smallest_margin():
    X, y, w, b = _near_kink_problem()
    for p in gc.check(X, y, w, b).base.parameters:
        if p.action == "shrunk_step":
            assert p.step < p.min_margin and p.step < p.requested_step


def test_exclusion_when_precision_forbids_a_smaller_step():
    # Sample 0 at z ~ 1e-14: a step below that margin would drown the difference in rounding,
    # so the sample is excluded from both sides and the rest is checked.
    X = np.array([[1.0, 0.0], [2.0, 1.0], [-1.0, -2.0], [1.0, 3.0]])
    y = np.array([3.0, 1.0, 2.0, 0.5])
    w = np.array([1.0, 1.0])
    b = -1.0 + 1e-14
    report = gc.check(X, y, w, b)
    assert report.verdict == "pass"
    p = by_name(report.base)["b"]
    assert p.action == "excluded" and p.excluded == 1 and p.n_used == 3 and 0 in p.indices
    # The analytic side was recomputed on the rest: samples 1..3 only, N = 3.
    rest = neuron.loss_and_gradient(X[1:], y[1:], w, b)
    assert p.analytic == pytest.approx(rest.grad_b, abs=1e-15)


def test_tie_one_sided_differences_match_the_hand_values():
    # Built-in problem, tie at sample 3: x = [0.5, 1.5, 0], y = 0.75, N = 8. Moving w[x1] up makes
    # z_3 > 0, and that side adds (2/N) (a - y) x = (2/8)(0 - 0.75)(0.5) = -0.09375 to the slope;
    # the other side (z_3 < 0) adds 0, which is the convention ReLU'(0) = 0.
    X, y, w, b, names = gc.builtin_problem()
    p = by_name(gc.check(X, y, w, b, names=names).base)
    t = p["w[x1]"].tie_check
    assert t.n_ties == 1 and t.within
    assert t.right - t.left == pytest.approx(-0.09375, rel=1e-6)
    assert p["w[x1]"].analytic == pytest.approx(t.left, rel=1e-7)  # the flat side
    # w[x2]: x = 1.5 -> (2/8)(-0.75)(1.5) = -0.28125
    assert p["w[x2]"].tie_check.right - p["w[x2]"].tie_check.left == pytest.approx(-0.28125, rel=1e-6)
    assert p["w[x3]"].tie_check is None  # x_33 = 0: the tie does not move with w[x3]


def test_vacuous_pass_is_inconclusive():
    X = np.array([[1.0, 2.0], [-1.0, 1.0]])
    report = gc.check(X, np.array([1.0, 2.0]), np.array([1.0, 1.0]), -10.0)  # z = [-7, -10]
    assert report.verdict == "inconclusive" and "proves nothing" in report.reason
    assert all(p.analytic == 0 and p.numeric == 0 and p.passed for p in report.base.parameters)


def test_a_leaky_gradient_on_a_dead_neuron_still_fails():
    X = np.array([[1.0, 2.0], [-1.0, 1.0]])
    report = gc.check(X, np.array([1.0, 2.0]), np.array([1.0, 1.0]), -10.0, grad_fn=bias_over_all)
    assert report.verdict == "fail"


def test_nondeterministic_gradient_fails():
    rng = np.random.default_rng(0)

    def noisy(X, y, w, b):
        lg = memory.loss_and_gradient(X, y, w, b)
        return neuron.LossGrad(lg.loss, lg.grad_w * (1 + 1e-15 * rng.standard_normal()), lg.grad_b, lg.n_active,
                                lg.abs_error_sum, lg.n_samples)

    X, y, w, b, _ = gc.builtin_problem()
    report = gc.check(X, y, w, b, grad_fn=noisy)
    assert report.verdict == "fail" and not report.base.deterministic and "nondeterministic" in report.reason


@pytest.mark.parametrize("mode", ["full", "projection"])
def test_jacobian_check_in_both_modes(mode):
    X, y, w, b, names = gc.builtin_problem()
    jac = gc.check(X, y, w, b, names=names, jacobian=mode).base.jacobian
    assert jac.mode == mode and jac.passed and jac.max_abs_error < 1e-6


def test_analytic_jacobian_is_the_masked_design_matrix():
    # w = [1, 0.5], b = 0: z = [1 + 1, -1 + 0.5, 0.5 - 0.5] = [2, -0.5, 0]
    # -> rows: [x_0, 1], 0, 0 (the tie is inactive by ReLU'(0) = 0)
    X = np.array([[1.0, 2.0], [-1.0, 1.0], [0.5, -1.0]])
    J = gc.neuron_jacobian(X, np.array([1.0, 0.5]), 0.0)
    np.testing.assert_array_equal(J, [[1, 2, 1], [0, 0, 0], [0, 0, 0]])


def test_sweep_covers_1e2_to_1e10_and_float32_is_checked():
    X, y, w, b, names = gc.builtin_problem()
    rows = gc.check(X, y, w, b, names=names, sweep=True).base.sweep
    assert [r.step for r in rows] == pytest.approx([10.0 ** -k for k in range(2, 11)])
    report = gc.check(X.astype(np.float32), y.astype(np.float32), w.astype(np.float32), np.float32(b), names=names)
    assert report.dtype == "float32" and report.verdict != "fail"


# ---- the command ----------------------------------------------------------------------------

def test_cli_builtin_problem_passes_and_reports_the_kink():
    r = runner.invoke(app, ["gradcheck"])
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output and "straddle" in r.output and "ReLU'(0) = 0" in r.output


def test_cli_json_has_the_documented_fields():
    r = runner.invoke(app, ["gradcheck", "--json"])
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["verdict"] == "pass" and d["rtol"] == gc.DEFAULT_RTOL and d["atol"] == gc.DEFAULT_ATOL
    assert d["eps"] == pytest.approx(gc.DEFAULT_EPS)
    assert {p["name"] for p in d["parameters"]} == {"w[x1]", "w[x2]", "w[x3]", "b"}
    for p in d["parameters"]:
        assert set(p) >= {"name", "analytic", "numeric", "abs_error", "rel_error", "passed"}
    assert set(d["jacobian"]) >= {"max_abs_error", "how"}
    assert set(d["kink"]) >= {"straddling", "indices", "min_margin", "action"}
    assert d["kink"]["indices"] == [3, 7] and d["kink"]["min_margin"] == 0.0  # sample 3 is an exact tie


def test_cli_quickstart_passes_with_points_and_sweep():
    r = runner.invoke(app, ["gradcheck", str(QUICKSTART), "--points", "2", "--sweep", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert len(d["points"]) == 3 and d["verdict"] == "pass"
    assert "w[flipper_length_mm]" in {p["name"] for p in d["parameters"]}
    assert len(d["sweep"]["steps"]) == 9


def _tiny_config(tmp, extra=""):
    write(tmp / "d.csv", "x1,x2,y\n1,2,3\n2,1,4\n3,5,6\n4,3,9\n5,8,10\n6,2,12\n")
    return write(tmp / "c.yaml", "data: {path: d.csv, target: y, standardize: false}\n" + extra)


def test_cli_inconclusive_exit_3(in_tmp):
    cfg = _tiny_config(in_tmp, "model: {weights_init: [-1, -1], bias_init: -1}\n")  # every z < 0
    r = runner.invoke(app, ["gradcheck", str(cfg)])
    assert r.exit_code == 3, r.output
    assert "INCONCLUSIVE" in r.output


def test_cli_set_override_and_fail_exit_1(in_tmp, monkeypatch):
    cfg = _tiny_config(in_tmp)
    r = runner.invoke(app, ["gradcheck", str(cfg), "--set", "model.bias_init=-100", "--json"])
    assert r.exit_code == 3 and json.loads(r.stdout)["verdict"] == "inconclusive"
    monkeypatch.setattr(gc.memory, "loss_and_gradient", sign_flipped)
    r = runner.invoke(app, ["gradcheck", str(cfg)])
    assert r.exit_code == 1 and "FAIL" in r.output


def test_cli_model_option_and_feature_mismatch(in_tmp):
    cfg = _tiny_config(in_tmp, "training: {epochs: 5}\noutput: {dir: runs/t}\n")
    assert runner.invoke(app, ["train", str(cfg), "-q"]).exit_code == 0
    r = runner.invoke(app, ["gradcheck", "--model", "runs/t/model.json"])
    assert r.exit_code in (0, 3), r.output
    assert "trained parameters" in r.output
    other = write(in_tmp / "o.yaml", "data: {path: d.csv, target: y, features: [x1], standardize: false}\n")
    r = runner.invoke(app, ["gradcheck", str(other), "--model", "runs/t/model.json"])
    assert r.exit_code == 2 and "differ" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["--eps", "0"], ["--rtol", "-1"], ["--points", "-2"], ["--jacobian", "half"],
                                  ["--set", "seed=1"]])
def test_cli_bad_options_exit_2(args):
    r = runner.invoke(app, ["gradcheck", *args])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1


def test_help_documents_exit_codes_and_defaults():
    r = runner.invoke(app, ["gradcheck", "--help"])
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    for fragment in ("0 pass", "1 fail", "2 bad input", "3 inconclusive", "--eps", "--rtol", "--atol", "--sweep"):
        assert fragment in text, fragment


def test_a_step_too_small_for_float64_is_inconclusive_never_a_pass():
    # At eps = 1e-12 the rounding of a central difference on this data exceeds a tenth of the
    # gradient, so even a gradient off by a factor of two would fit the tolerance: the check
    # must say it proves nothing, and at the default step the same mutant must fail.
    from pathlib import Path

    from neurocli.pipeline import load_inputs

    inputs = load_inputs(Path(__file__).resolve().parent.parent / "configs" / "quickstart.yaml")
    X, y, w, b = inputs.prepared.X_train, inputs.prepared.y_train, inputs.w0, inputs.b0

    def half(X, y, w, b):
        r = memory.loss_and_gradient(X, y, w, b)
        return neuron.LossGrad(r.loss, r.grad_w / 2, r.grad_b / 2, r.n_active, r.abs_error_sum, r.n_samples)

    assert gc.check(X, y, w, b, half, eps=1e-12).verdict == "inconclusive"
    assert gc.check(X, y, w, b, half).verdict == "fail"
    assert gc.check(X, y, w, b).verdict == "pass"
