"""The cores behind the commands, called from Python; the exit-code table the help is made from;
option bounds declared on the options, each refused in one line with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import typing

import numpy as np
import pytest
from typer.testing import CliRunner

from neurocli import cli, errors
from neurocli import savedfiles
from neurocli.cli import app
from neurocli.derive import Derivation, VectorChainRule
from neurocli.errors import ConfigError, ModelFileError, OutputError
from neurocli.pipeline import TrainRun, load_inputs, predict_csv
from neurocli.problems import WORKED_EXAMPLES, derivation, gradcheck_problem, model_parameters
from tests.conftest import QUICKSTART, write

runner = CliRunner()

TINY_CSV = "x1,x2,y\n1,2,3\n2,1,4\n3,5,6\n4,3,9\n5,8,10\n6,2,12\n"


def _tiny_run(root, standardize=False):
    write(root / "d.csv", TINY_CSV)
    cfg = write(root / "c.yaml", f"data: {{path: d.csv, target: y, standardize: {str(standardize).lower()}}}\n"
                                 "training: {epochs: 5}\noutput: {dir: runs/t}\n")
    assert runner.invoke(app, ["train", str(cfg), "-q"]).exit_code == 0
    return cfg, root / "runs/t/model.json"


# ---- the exit codes: one table --------------------------------------------------------------

def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("command", [None, *errors.COMMANDS])
def test_every_help_ends_with_the_table_of_its_command(command):
    r = runner.invoke(app, [command, "--help"] if command else ["--help"])
    assert r.exit_code == 0
    assert _flat(errors.exit_codes_help(command)) in _flat(r.stdout)


def test_the_table_names_every_exit_code_once():
    constants = sorted(v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int))
    assert [code for code, _, _ in errors.EXIT_CODES] == constants == [0, 1, 2, 3, 70, 74, 129, 130, 143]
    assert [code for code, _ in errors.exit_codes()] == constants
    assert "70 internal error" in errors.exit_codes_help()


def test_each_command_lists_the_codes_it_can_return():
    codes = {c: [code for code, _ in errors.exit_codes(c)] for c in errors.COMMANDS}
    assert codes == {"train": [0, 1, 2, 70, 74, 129, 130, 143], "predict": [0, 2, 70, 74, 130],
                     "evaluate": [0, 2, 70, 74, 130], "init": [0, 2, 70, 74, 130],
                     "gradcheck": [0, 1, 2, 3, 70, 74, 130], "derive": [0, 1, 2, 70, 74, 130],
                     "plot": [0, 2, 70, 74, 130]}
    assert dict(errors.exit_codes("gradcheck"))[0].startswith("pass")
    with pytest.raises(ValueError):
        errors.exit_codes("trian")


# ---- option bounds: declared, refused in one line -----------------------------------------

@pytest.mark.parametrize("args", [
    ["gradcheck", "--eps", "0"], ["gradcheck", "--eps", "1"], ["gradcheck", "--eps", "nan"],
    ["gradcheck", "--rtol", "-1"], ["gradcheck", "--rtol", "inf"], ["gradcheck", "--atol", "nan"],
    ["gradcheck", "--points", "-1"], ["gradcheck", "--points", "many"], ["gradcheck", "--seed", "-1"],
    ["gradcheck", "--jacobian", "projection"], ["derive", "--format", "JSON"], ["derive", "--example", "nope"],
])
def test_a_bad_option_value_is_one_line_and_exit_2(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and f"'{args[1]}'" in err
    assert r.stdout == ""


@pytest.mark.parametrize("args, message", [
    (["predict"], "error: Missing argument 'MODEL'; see neurocli predict --help"),
    (["train", "c.yaml", "--bogus"], "error: No such option: --bogus; see neurocli train --help"),
    (["nosuch"], "error: No such command 'nosuch'; see neurocli --help"),
    (["train", "c.yaml", "--set"], "error: Option '--set' requires an argument"),
    (["gradcheck", "--points", "x"], "error: Invalid value for '--points'"),
])
def test_a_usage_error_is_one_line_naming_the_help_to_read(args, message):
    r = runner.invoke(app, args, prog_name="neurocli")
    assert r.exit_code == 2 and r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr


def test_values_inside_the_bounds_are_taken():
    r = runner.invoke(app, ["gradcheck", "--eps", "1e-6", "--rtol", "0", "--atol", "0", "--points", "0", "--seed", "0",
                            "--jacobian", "fast", "--json"])
    assert r.exit_code in (0, 1, 3), r.output  # the bounds themselves are taken: the verdict is the check's
    assert json.loads(r.stdout)["eps"] == 1e-6


def test_the_options_choices_are_the_cores():
    hints = typing.get_type_hints(cli.derive)
    assert set(typing.get_args(typing.get_args(hints["example"])[0])) == set(WORKED_EXAMPLES)
    assert set(typing.get_args(typing.get_type_hints(cli.gradcheck)["jacobian"])) == set(cli.JACOBIAN_MODES)


def test_importing_the_cli_does_not_import_numpy():
    code = "import sys, neurocli.cli; print('numpy' in sys.modules, 'neurocli.pipeline' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---- gradcheck's and derive's problems ----------------------------------------------------

def test_gradcheck_problem_from_python():
    builtin = gradcheck_problem()
    assert builtin.label == "built-in parameters" and builtin.place_of is None and builtin.seed == 0
    problem = gradcheck_problem(QUICKSTART, ["seed=3"])
    assert problem.seed == 3 and problem.names == ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
    assert (problem.source, problem.split, problem.standardized) == (str(QUICKSTART), "training", True)
    report = problem.check(points=1)
    assert report.verdict == "pass" and "seed 3" in report.points[1].label
    assert "seed 5" in problem.check(points=1, seed=5).points[1].label
    with pytest.raises(ConfigError, match="--set needs a CONFIG"):
        gradcheck_problem(None, ["seed=1"])


def test_a_model_is_checked_at_its_trained_parameters_on_the_config_beside_it(in_tmp):
    _, model = _tiny_run(in_tmp)
    problem = gradcheck_problem(model=model)
    m = json.loads(model.read_text())
    assert problem.label == f"trained parameters ({model})"
    assert problem.w.tolist() == m["weights_standardized"] and float(problem.b) == m["bias_standardized"]
    lone = in_tmp / "lone" / "model.json"
    write(lone, model.read_text())
    for build in (lambda: gradcheck_problem(model=lone), lambda: derivation(model=lone)):
        with pytest.raises(ModelFileError, match="no config.yaml next to the model") as caught:
            build()
        assert str(caught.value).startswith(f"{lone}, --model: ")  # it names the model file and the option


def test_the_one_model_check_names_what_differs(in_tmp):
    cfg, model = _tiny_run(in_tmp)
    m = savedfiles.load_model(model)
    p = load_inputs(cfg).prepared
    w, b = model_parameters(m, model, p, np.float32)
    assert w.dtype == np.float32 and isinstance(b, np.float32)
    fewer = load_inputs(write(in_tmp / "o.yaml",
                              "data: {path: d.csv, target: y, features: [x1], standardize: false}\n"))
    with pytest.raises(ModelFileError, match=r"features \(x1, x2\) differ from the config's data.features \(x1\)"):
        model_parameters(m, model, fewer.prepared, np.float64)
    scaled = load_inputs(write(in_tmp / "s.yaml", "data: {path: d.csv, target: y, standardize: true}\n"))
    with pytest.raises(ModelFileError, match="trained without standardized features, the config has data.standardize"):
        model_parameters(m, model, scaled.prepared, np.float64)
    for command in ("gradcheck", "derive"):  # both commands say the same
        r = runner.invoke(app, [command, "s.yaml", "--model", str(model)])
        assert r.exit_code == 2 and r.stderr.strip() == (
            f"error: {model}: --model: the model was trained without standardized features, "
            f"the config has data.standardize: true")


def test_derivation_from_python():
    assert isinstance(derivation(), Derivation) and derivation().check is None
    assert derivation(show_jacobians=True, sample=3).check.ok
    vcr = derivation(example="vector-chain-rule", x=1.5)
    assert isinstance(vcr, VectorChainRule) and vcr.ok
    d = derivation(QUICKSTART, ["seed=2"], show_jacobians=True, sample=1)
    assert d.check.ok and "seed 2" in d.parameters_from
    for kwargs, where in [({"example": "nope"}, "--example"), ({"example": "vector-chain-rule", "x": 0.0}, "--x"),
                          ({"example": "vector-chain-rule", "config": QUICKSTART}, "--example"),
                          ({"show_jacobians": True, "sample": 4}, "--sample"),
                          ({"config": QUICKSTART, "sample": -1}, "--sample")]:
        with pytest.raises(ConfigError) as exc:
            derivation(**kwargs)
        assert exc.value.where == where, kwargs


# ---- predict and the training run's folder ----------------------------------------------

def test_predict_csv_from_python(in_tmp):
    _, model = _tiny_run(in_tmp)
    data = write(in_tmp / "new.csv", "x1,x2,prediction\n1,2,old\n,1,old\n")
    result = predict_csv(model, data)
    assert result.column == "prediction_neurocli" and result.n_missing == 1
    lines = result.csv.splitlines()
    assert lines[0] == "x1,x2,prediction,prediction_neurocli" and lines[2].endswith(",old,")
    m = json.loads(model.read_text())
    expected = max(0.0, 1 * m["weights"]["x1"] + 2 * m["weights"]["x2"] + m["bias"])
    assert float(lines[1].split(",")[-1]) == pytest.approx(expected, rel=1e-12)
    r = runner.invoke(app, ["predict", str(model), str(data)])
    assert r.exit_code == 0 and r.stdout == result.csv


def test_a_new_run_claims_a_fresh_folder_and_leaves_none_when_it_fails_unsaved(in_tmp):
    cfg, _ = _tiny_run(in_tmp)
    inputs = load_inputs(cfg)
    run = TrainRun.start(inputs)
    assert run.fresh and run.run_dir.name == "t-2" and run.run_dir.is_dir()
    with pytest.raises(RuntimeError), run.discarded_unless_saved():
        raise RuntimeError("disk on fire")
    assert not run.run_dir.exists()
    saved = TrainRun.start(inputs)
    with pytest.raises(RuntimeError), saved.discarded_unless_saved():
        saved.run()
        raise RuntimeError("after the checkpoint")
    assert (saved.run_dir / "model.json").exists()


def test_a_run_folder_that_cannot_be_made_is_blamed_on_output_dir(in_tmp):
    write(in_tmp / "d.csv", TINY_CSV)
    write(in_tmp / "blocker", "a file\n")
    inputs = load_inputs(write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\noutput: {dir: blocker/run}\n"))
    with pytest.raises(ConfigError, match="output.dir") as exc:
        TrainRun.start(inputs)
    assert "c.yaml" in str(exc.value) and not isinstance(exc.value, OutputError)


def test_the_readme_table_lists_every_exit_code_and_no_other():
    import re
    from pathlib import Path

    from neurocli.errors import EXIT_CODES

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    listed = {int(c) for row in re.findall(r"^\| ([0-9 /]+) \|", table, flags=re.M) for c in row.split("/")}
    assert listed == {code for code, _, _ in EXIT_CODES}
