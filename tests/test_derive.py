"""neurocli derive: each step against SymPy, each Jacobian against finite differences, the
three-way agreement on random data, golden renderings, LaTeX that compiles, the command's exit codes.

Golden files: regenerate with ``NEUROCLI_UPDATE_GOLDEN=1 pytest tests/test_derive.py`` and read the diff.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from neurocli import derive as dv
from neurocli import neuron
from neurocli.cli import app
from neurocli.render import derive as rd

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
STEP_NAMES = ["du/dw", "dy/du", "dy/dw", "dz/dw", "dz/db", "da/dz", "da/dw", "da/db", "dC/dw", "dC/db"]


def numerator(expr_by_array) -> sp.Matrix:
    """SymPy's derive_by_array is indexed [variable][function] (denominator layout): transpose it."""
    return sp.Matrix(sp.Array(expr_by_array).tolist()).T  # rank 1 -> column -> row; rank 2 -> transposed


def heaviside0(expr):
    """The paper's ReLU'(0) = 0: SymPy's Heaviside(z) is 1/2 at 0 by default."""
    return expr.replace(sp.Heaviside, lambda *args: sp.Heaviside(args[0], 0))


def values(x, w, b):
    return {s.name: s.value for s in dv.neuron_steps(len(x), np.array(x), np.array(w), b)}


# ----------------------------------------------------------------------------- SymPy, symbolic steps


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_each_symbolic_step_matches_sympy(n):
    x = sp.Matrix(sp.symbols(f"x1:{n + 1}", real=True))
    w = sp.Matrix(sp.symbols(f"w1:{n + 1}", real=True))
    b = sp.Symbol("b", real=True)
    u = w.multiply_elementwise(x)
    y = sum(u)
    z = y + b
    a = sp.Max(0, z)
    du_dw = numerator(sp.derive_by_array(list(u), list(w)))
    # y as a function of u: the sum of n free variables
    us = sp.Matrix(sp.symbols(f"u1:{n + 1}"))
    dy_du = numerator(sp.derive_by_array(sum(us), list(us)))
    dy_dw = numerator(sp.derive_by_array(y, list(w)))
    dz_db = sp.Matrix([[sp.diff(z, b)]])
    zs = sp.Symbol("z", real=True)
    da_dz = heaviside0(sp.diff(sp.Max(0, zs), zs))
    da_dw = heaviside0(numerator(sp.derive_by_array(a, list(w))))
    da_db = heaviside0(sp.diff(a, b))

    # the paper's closed forms, which the Unicode/LaTeX formulas state
    assert du_dw == sp.diag(*x) and du_dw.shape == (n, n)
    assert dy_du == sp.ones(1, n)
    assert dy_dw == x.T and dy_dw.shape == (1, n)
    assert dy_du * du_dw == dy_dw  # the chain rule, symbolically
    assert dz_db == sp.Matrix([[1]])
    assert da_dz == sp.Heaviside(zs, 0)
    assert sp.simplify(da_dw - sp.Heaviside(z, 0) * x.T) == sp.zeros(1, n)
    assert sp.simplify(da_db - sp.Heaviside(z, 0)) == 0

    # the numeric values derive.py produces, at points on both sides of the kink and on it
    rng = np.random.default_rng(n)
    for target_z in (-1.3, 0.0, 0.7):
        xv = rng.normal(size=n)
        wv = rng.normal(size=n)
        bv = target_z - float(xv @ wv)
        if target_z == 0.0:  # exactly on the kink: integers so that z is exactly 0
            xv, wv = np.arange(1.0, n + 1), np.ones(n)
            bv = -float(np.sum(xv))
        got = values(xv, wv, bv)
        subs = {**dict(zip(x, xv)), **dict(zip(w, wv)), b: bv}
        for name, sym in (("du/dw", du_dw), ("dy/du", dy_du), ("dy/dw", dy_dw), ("dz/dw", dy_dw),
                          ("dz/db", dz_db), ("da/dw", da_dw), ("da/db", sp.Matrix([[da_db]]))):
            expected = np.array(sym.subs(subs).evalf(), dtype=float)
            assert got[name].shape == expected.shape, name
            np.testing.assert_allclose(got[name], expected, rtol=1e-12, atol=1e-12, err_msg=name)
        zv = float(np.sum(xv * wv) + bv)
        np.testing.assert_array_equal(got["da/dz"], [[float(da_dz.subs(zs, zv))]])


def test_relu_derivative_is_zero_at_the_kink():
    # z = w·x + b for x = [1, 1], w = [1, 1]: b = -3, -2, -1 give z = -1, 0, 1
    for b, expected in ((-3.0, 0.0), (-2.0, 0.0), (-1.0, 1.0)):
        got = values([1.0, 1.0], [1.0, 1.0], b)
        assert got["da/dz"][0, 0] == expected
        np.testing.assert_array_equal(got["da/dw"], [[expected, expected]])


def test_loss_gradient_matches_sympy():
    N, n = 4, 2
    X = sp.Matrix(N, n, sp.symbols(f"x1:{N * n + 1}", real=True))
    Y = sp.symbols(f"y1:{N + 1}", real=True)
    w = sp.Matrix(sp.symbols(f"w1:{n + 1}", real=True))
    b = sp.Symbol("b", real=True)
    C = sum((Y[i] - sp.Max(0, (X[i, :] * w)[0] + b)) ** 2 for i in range(N)) / N
    dC_dw = heaviside0(numerator(sp.derive_by_array(C, list(w))))
    dC_db = heaviside0(sp.diff(C, b))
    rng = np.random.default_rng(7)
    for _ in range(5):
        Xv, yv, wv, bv = rng.normal(size=(N, n)), rng.normal(size=N), rng.normal(size=n), float(rng.normal())
        subs = {**dict(zip(list(X), Xv.ravel())), **dict(zip(Y, yv)), **dict(zip(w, wv)), b: bv}
        d = dv.derive_neuron(n_features=n, feature_names=["p", "q"], source="t", units="t", X=Xv, y=yv, w=wv, b=bv)
        np.testing.assert_allclose(d.step("dC/dw").value, np.array(dC_dw.subs(subs).evalf(), dtype=float), rtol=1e-10)
        np.testing.assert_allclose(d.step("dC/db").value[0, 0], float(dC_db.subs(subs).evalf()), rtol=1e-10, atol=1e-14)


def test_vector_chain_rule_matches_sympy():
    xs = sp.Symbol("x", real=True)
    y = sp.Matrix([sp.log(xs ** 2), sp.sin(3 * xs)])
    g = sp.Matrix([xs ** 2, 3 * xs])
    gs = sp.symbols("g1:3", real=True)
    f = sp.Matrix([sp.log(gs[0]), sp.sin(gs[1])])
    df_dg = numerator(sp.derive_by_array(list(f), list(gs)))
    dg_dx = sp.Matrix(2, 1, list(sp.derive_by_array(list(g), xs)))
    dy_dx = sp.Matrix(2, 1, list(sp.derive_by_array(list(y), xs)))
    assert sp.simplify((df_dg.subs(dict(zip(gs, g))) * dg_dx) - dy_dx) == sp.zeros(2, 1)
    for xv in (2.0, -0.5, 3.7):
        v = dv.derive_vector_chain_rule(xv)
        gsub = dict(zip(gs, [xv ** 2, 3 * xv]))
        np.testing.assert_allclose(v.step("df/dg").value, np.array(df_dg.subs(gsub).evalf(), dtype=float), rtol=1e-12)
        np.testing.assert_allclose(v.step("dg/dx").value, np.array(dg_dx.subs(xs, xv).evalf(), dtype=float), rtol=1e-12)
        np.testing.assert_allclose(v.step("dy/dx").value, np.array(dy_dx.subs(xs, xv).evalf(), dtype=float), rtol=1e-12)
        assert v.ok


# ----------------------------------------------------------------------------- finite differences


def fd_jacobian(f, at: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central-difference Jacobian of f: R^k -> R^m, numerator layout (m x k)."""
    cols = []
    for j in range(len(at)):
        e = np.zeros(len(at))
        e[j] = h
        cols.append((np.atleast_1d(f(at + e)) - np.atleast_1d(f(at - e))) / (2 * h))
    return np.column_stack(cols)


@pytest.mark.parametrize("seed", range(6))
def test_each_numeric_jacobian_matches_finite_differences(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    x, w = rng.normal(size=n), rng.normal(size=n)
    b = float(rng.normal())
    if abs(float(x @ w) + b) < 1e-3:  # away from the kink, where a difference is a derivative
        b += 0.5
    got = values(x, w, b)
    z = float(x @ w + b)
    relu = lambda t: np.maximum(t, 0.0)  # noqa: E731
    ref = {
        "du/dw": fd_jacobian(lambda ww: ww * x, w),
        "dy/du": fd_jacobian(lambda uu: np.sum(uu), w * x),
        "dy/dw": fd_jacobian(lambda ww: np.sum(ww * x), w),
        "dz/dw": fd_jacobian(lambda ww: np.sum(ww * x) + b, w),
        "dz/db": fd_jacobian(lambda bb: np.sum(w * x) + bb[0], np.array([b])),
        "da/dz": fd_jacobian(lambda zz: relu(zz), np.array([z])),
        "da/dw": fd_jacobian(lambda ww: relu(np.sum(ww * x) + b), w),
        "da/db": fd_jacobian(lambda bb: relu(np.sum(w * x) + bb[0]), np.array([b])),
    }
    for name, expected in ref.items():
        assert got[name].shape == expected.shape, name
        np.testing.assert_allclose(got[name], expected, rtol=1e-6, atol=1e-8, err_msg=name)


def loop_gradient(X, y, w, b):
    """Loop-over-samples reference, straight from docs/math.md's sums over the active samples."""
    N = len(y)
    gw, gb = np.zeros(X.shape[1]), 0.0
    for i in range(N):
        z = sum(X[i, j] * w[j] for j in range(X.shape[1])) + b
        if z > 0:
            e = z - y[i]
            gw += (2.0 / N) * e * X[i]
            gb += (2.0 / N) * e
    return gw, gb


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 5), N=st.integers(1, 40), seed=st.integers(0, 2 ** 32 - 1),
       scale=st.sampled_from([1e-2, 1.0, 1e2]))
def test_three_way_agreement_on_random_data(n, N, seed, scale):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, n)) * scale
    y = rng.normal(size=N) * scale + scale
    w = rng.normal(size=n)
    b = float(rng.normal()) * scale
    d = dv.derive_neuron(n_features=n, feature_names=[f"f{j}" for j in range(n)], source="t", units="t",
                         X=X, y=y, w=w, b=b, sample=int(rng.integers(0, N)))
    c = d.check
    gw, gb = loop_gradient(X, y, w, b)
    np.testing.assert_allclose(c.chain, np.append(gw, gb), rtol=1e-9, atol=1e-12 * scale ** 2)
    np.testing.assert_allclose(c.kernel, np.append(gw, gb), rtol=1e-9, atol=1e-12 * scale ** 2)
    assert c.ok, (c.chain, c.kernel, c.numeric, c.kink, c.max_rel_error)
    # the per-sample table sums to the gradient
    if not d.loss.n_omitted:
        np.testing.assert_allclose(sum(r.grad_w for r in d.loss.rows_head), gw, rtol=1e-9, atol=1e-12 * scale ** 2)


def test_kink_is_flagged_and_left_out():
    # sample 0 sits exactly on the kink (z = 0): a difference step in b crosses it
    X = np.array([[1.0, 2.0], [2.0, 1.0], [1.0, -1.0]])
    w = np.array([1.0, 1.0])
    b = -3.0
    y = np.array([1.0, 2.0, 0.5])
    d = dv.derive_neuron(n_features=2, feature_names=["p", "q"], source="t", units="t", X=X, y=y, w=w, b=b)
    assert d.z == 0.0 and not d.loss.rows_head[0].active
    assert d.check.kink[-1]
    assert d.check.ok
    assert "kink" in rd.kink_line(d)


def test_table_is_capped_for_large_data():
    rng = np.random.default_rng(0)
    N = 100_000
    X = rng.normal(size=(N, 2))
    y = rng.normal(size=N) + 1
    d = dv.derive_neuron(n_features=2, feature_names=["p", "q"], source="t", units="t", X=X, y=y,
                         w=np.array([0.5, -0.5]), b=0.3)
    lo = d.loss
    assert len(lo.rows_head) == len(lo.rows_tail) == dv.TABLE_ROWS_EACH_END
    assert lo.n_omitted == N - 2 * dv.TABLE_ROWS_EACH_END
    assert lo.rows_tail[-1].index == N - 1
    gw, gb = loop_gradient(X[:2000], y[:2000], np.array([0.5, -0.5]), 0.3)  # spot-check the sum's form
    assert d.check.ok
    text = rd.to_text(d)
    assert f"{lo.n_omitted} more rows" in text and len(text.splitlines()) < 150


# ----------------------------------------------------------------------------- renderings


def _golden(name: str, text: str):
    path = GOLDEN / name
    if os.environ.get("NEUROCLI_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; regenerate and review the diff"


@pytest.mark.parametrize("fmt,render", [("txt", rd.to_text), ("md", rd.to_markdown)])
def test_golden_example(fmt, render):
    _golden(f"derive_example.{fmt}", render(dv.derive_example(True, 0)))
    _golden(f"derive_example_symbolic.{fmt}", render(dv.derive_example(False)))
    _golden(f"derive_vector_chain_rule.{fmt}", render(dv.derive_vector_chain_rule(2.0)))


def test_json_has_the_documented_shape():
    d = dv.derive_example(True, 1)
    data = json.loads(rd.to_json(d))
    assert [s["name"] for s in data["steps"]] == STEP_NAMES
    for s in data["steps"]:
        assert set(s) >= {"name", "formula", "latex", "shape", "value"}
        assert np.array(s["value"]).shape == tuple(s["shape"])
    assert np.array(data["steps"][0]["value"]).tolist() == np.diag(dv.EXAMPLE_X[1]).tolist()
    assert set(data["check"]) >= {"chain", "kernel", "numeric", "max_rel_error"}
    assert data["sample"]["index"] == 1


def latex_engine():
    return next((e for e in ("pdflatex", "lualatex") if shutil.which(e)), None)


@pytest.mark.parametrize("which", ["example", "symbolic", "vector-chain-rule"])
def test_latex_compiles(which, tmp_path):
    obj = {"example": lambda: dv.derive_example(True, 0), "symbolic": lambda: dv.derive_example(False),
           "vector-chain-rule": lambda: dv.derive_vector_chain_rule(2.0)}[which]()
    tex = rd.to_latex(obj)
    assert tex.startswith(r"\documentclass") and tex.rstrip().endswith(r"\end{document}")
    engine = latex_engine()
    if engine is None:
        pytest.skip("no TeX engine (pdflatex or lualatex) on PATH")
    (tmp_path / "d.tex").write_text(tex, encoding="utf-8")
    run = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "d.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
    assert (tmp_path / "d.pdf").exists()


# ----------------------------------------------------------------------------- the command

runner = CliRunner()


def write_config(tmp_path: Path, csv: Path, **data) -> Path:
    cfg = yaml.safe_load(QUICKSTART.read_text())
    cfg["data"]["path"] = str(csv)
    cfg["data"].update(data)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_help_text():
    r = runner.invoke(app, ["derive", "--help"])
    assert r.exit_code == 0 and "--show-jacobians" in r.output and "Exit codes" in r.output


def test_cli_example_and_formats():
    r = runner.invoke(app, ["derive"])
    assert r.exit_code == 0 and "∂u/∂w = diag(x)" in r.output and "--show-jacobians" in r.output
    for fmt in ("text", "markdown", "latex", "json"):
        r = runner.invoke(app, ["derive", "--show-jacobians", "--format", fmt])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["derive", "--example", "vector-chain-rule", "--x", "1.5", "--format", "json"])
    data = json.loads(r.output)
    assert r.exit_code == 0 and data["check"]["agree"]
    np.testing.assert_allclose(np.ravel(data["check"]["chain"]), [2 / 1.5, 3 * np.cos(4.5)], rtol=1e-12)


def test_cli_quickstart_json_checks_against_kernel():
    from neurocli.engines.memory import loss_and_gradient
    from neurocli.pipeline import load_inputs

    r = runner.invoke(app, ["derive", str(QUICKSTART), "--show-jacobians", "--sample", "3", "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    inputs = load_inputs(QUICKSTART)
    p = inputs.prepared
    lg = loss_and_gradient(p.X_train.astype(float), p.y_train.astype(float), inputs.w0.astype(float), float(inputs.b0))
    np.testing.assert_allclose(data["steps"][-2]["value"][0], lg.grad_w, rtol=1e-9)
    np.testing.assert_allclose(data["steps"][0]["value"], np.diag(p.X_train[3]), rtol=1e-12)
    assert data["sample"]["line"] == p.line_of_train_sample(3)
    assert "standardized" in data["units"]


@pytest.mark.parametrize("args,option", [
    (["--show-jacobians", "--sample", "99"], "--sample"),
    (["--format", "html"], "--format"),
    (["--example", "nope"], "--example"),
    (["--example", "vector-chain-rule", "--x", "0"], "--x"),
    (["--model", "m.json"], "--model"),
])
def test_cli_bad_options_exit_2(args, option):
    r = runner.invoke(app, ["derive", *args])
    assert r.exit_code == 2
    assert option in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_sample_out_of_range_with_config():
    r = runner.invoke(app, ["derive", str(QUICKSTART), "--show-jacobians", "--sample", "100000"])
    assert r.exit_code == 2 and "--sample" in r.stderr


def test_cli_model_feature_mismatch(tmp_path):
    model = {"format": "neurocli.model/1", "features": ["a", "b", "c"], "weights_standardized": [1, 2, 3],
             "bias_standardized": 0.0, "standardization": None}
    (tmp_path / "model.json").write_text(json.dumps(model))
    r = runner.invoke(app, ["derive", str(QUICKSTART), "--show-jacobians", "--model", str(tmp_path / "model.json")])
    assert r.exit_code == 2 and "--model" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_model_parameters_are_used(tmp_path):
    from neurocli.pipeline import load_inputs

    p = load_inputs(QUICKSTART).prepared
    model = {"format": "neurocli.model/1", "features": p.feature_names, "weights_standardized": [10.0, -20.0, 300.0],
             "bias_standardized": 4000.0, "standardization": p.standardization.to_dict()}
    (tmp_path / "model.json").write_text(json.dumps(model))
    r = runner.invoke(app, ["derive", str(QUICKSTART), "--show-jacobians", "--format", "json",
                            "--model", str(tmp_path / "model.json")])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["parameters"]["w"] == [10.0, -20.0, 300.0]
    gw, gb = loop_gradient(p.X_train.astype(float), p.y_train.astype(float), np.array([10.0, -20.0, 300.0]), 4000.0)
    np.testing.assert_allclose(data["check"]["chain"], np.append(gw, gb), rtol=1e-9)


def test_cli_disagreement_exits_1(monkeypatch):
    from neurocli.engines import memory

    real = memory.loss_and_gradient

    def broken(X, y, w, b):  # a kernel with the 2 of the derivative forgotten
        lg = real(X, y, w, b)
        return neuron.LossGrad(lg.loss, lg.grad_w / 2, lg.grad_b / 2, lg.n_active, lg.abs_error_sum, lg.n_samples)

    monkeypatch.setattr(memory, "loss_and_gradient", broken)
    r = runner.invoke(app, ["derive", "--show-jacobians"])
    assert r.exit_code == 1 and "DISAGREE" in r.output


def test_cli_large_csv_table_capped(tmp_path):
    rng = np.random.default_rng(1)
    N = 5000
    X = rng.normal(size=(N, 2))
    y = 2 + X @ [1.0, -0.5] + rng.normal(size=N) * 0.1
    csv = tmp_path / "big.csv"
    csv.write_text("p,q,t\n" + "\n".join(f"{a},{b},{c}" for (a, b), c in zip(X, y)) + "\n")
    cfg = write_config(tmp_path, csv, target="t", features=["p", "q"], missing="error")
    r = runner.invoke(app, ["derive", str(cfg), "--show-jacobians"])
    assert r.exit_code == 0, r.output
    assert "more rows" in r.output and len(r.output.splitlines()) < 150


def test_the_worked_example_holds_over_the_whole_range_it_accepts():
    from neurocli.problems import EXAMPLE_X_RANGE, derivation

    lo, hi = EXAMPLE_X_RANGE
    for x in [*np.geomspace(lo, hi, 60), *-np.geomspace(lo, hi, 20)]:
        assert derivation(example="vector-chain-rule", x=float(x)).ok, x
    for x in (lo / 2, hi * 2, float("nan"), float("inf")):
        r = runner.invoke(app, ["derive", "--example", "vector-chain-rule", "--x", str(x)])
        assert r.exit_code == 2 and "--x" in r.stderr, (x, r.stderr)
