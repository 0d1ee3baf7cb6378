"""The config and the command line as users meet them: every config error at once, the
columns a config leaves out, the hint for text among the default features, the schema for
editors, the resolved config, the warning for a target a ReLU cannot reach, what model.json
records of its run, and the conventions of the command line (help, -h, usage lines,
completion, gradcheck's output on many points)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from neurocli import savedfiles
from neurocli.cli import app
from neurocli.config import Config, json_schema, parse_yaml
from tests.conftest import PENGUINS, QUICKSTART, ROOT, write

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], prog_name="neurocli")


def error_lines(r) -> list[str]:
    return r.stderr.splitlines()


def place(text: str, needle: str, occurrence: int = 0) -> tuple[int, int]:
    """(line, column), 1-based as an editor counts them, of ``needle`` in ``text``."""
    at = -1
    for _ in range(occurrence + 1):
        at = text.index(needle, at + 1)
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


# ---- every config error at once -----------------------------------------------------------

THREE_MISTAKES = """\
data:
  path: d.csv
  target: y
  validation_fraction: 2.5
training:
  learning_rat: 0.1
  epochs: 0
"""
GOOD_CSV = "x1,x2,y\n1,2,3\n2,1,4\n3,5,6\n4,3,9\n5,8,10\n6,2,12\n"


def test_three_mistakes_give_three_located_lines_in_the_order_of_the_file(tmp_path):
    write(tmp_path / "d.csv", GOOD_CSV)
    cfg = write(tmp_path / "c.yaml", THREE_MISTAKES)
    r = run("train", cfg)
    assert r.exit_code == 2 and r.stdout == ""
    lines = error_lines(r)
    assert len(lines) == 3, r.stderr
    expected = [place(THREE_MISTAKES, "2.5"), place(THREE_MISTAKES, "learning_rat"), place(THREE_MISTAKES, "0\n")]
    for line, (ln, col), what in zip(lines, expected, ["data.validation_fraction", "unknown key 'training.learning_rat'",
                                                       "training.epochs"]):
        assert line.startswith(f"error: {cfg}, line {ln}, column {col}: "), line
        assert what in line
    assert "did you mean 'training.learning_rate'" in lines[1]


def test_the_errors_of_set_come_after_the_file_s_each_naming_its_set(tmp_path):
    write(tmp_path / "d.csv", GOOD_CSV)
    cfg = write(tmp_path / "c.yaml", THREE_MISTAKES)
    r = run("train", cfg, "--set", "seed=-1", "--set", "training.batch_size=many")
    lines = error_lines(r)
    assert r.exit_code == 2 and len(lines) == 5, r.stderr
    assert lines[3].startswith("error: --set seed=-1: seed must be greater than or equal to 0")
    assert lines[4].startswith("error: --set training.batch_size=many: training.batch_size")


def test_a_single_mistake_is_still_one_line(tmp_path):
    write(tmp_path / "d.csv", GOOD_CSV)
    text = "data: {path: d.csv, target: y}\ntraining:\n  learning_rate: -0.1\n"
    cfg = write(tmp_path / "c.yaml", text)
    r = run("train", cfg)
    line, col = place(text, "-0.1")
    assert r.exit_code == 2
    assert r.stderr == (f"error: {cfg}, line {line}, column {col}: training.learning_rate must be greater than 0, "
                        f"got -0.1\n")


COLUMNS_AND_EPOCHS = """\
data:
  path: d.csv
  target: yy
  features: [x_1, x2]
  exclude: [specie]
training:
  epochs: 0
"""


def test_absent_columns_come_with_the_schema_s_errors_in_one_run(tmp_path):
    write(tmp_path / "d.csv", DATED)
    cfg = write(tmp_path / "c.yaml", COLUMNS_AND_EPOCHS)
    r = run("train", cfg)
    # difflib: 'yy' against 'y' is 2*1/3 = 0.67, 'x_1' against 'x1' 2*2/5 = 0.8, 'specie' against
    # 'species' 2*6/13 = 0.92: each above the cutoff 0.6
    expected = [("yy", "data.target: column 'yy' is not in d.csv; did you mean 'y'?"),
                ("x_1", "data.features[0]: column 'x_1' is not in d.csv; did you mean 'x1'?"),
                ("specie", "data.exclude[0]: column 'specie' is not in d.csv; did you mean 'species'?"),
                ("0\n", "training.epochs must be greater than or equal to 1, got 0")]
    lines = [f"error: {cfg}, line {place(COLUMNS_AND_EPOCHS, needle)[0]}, column "
             f"{place(COLUMNS_AND_EPOCHS, needle)[1]}: {said}" for needle, said in expected]
    assert r.exit_code == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert error_lines(r) == lines


def test_a_missing_data_file_comes_with_the_schema_s_errors_in_one_run(tmp_path):
    text = "data:\n  path: absent.csv\n  target: y\ntraining:\n  epochs: 0\n"
    cfg = write(tmp_path / "c.yaml", text)
    r = run("train", cfg)
    (pl, pc), (el, ec) = place(text, "absent.csv"), place(text, "0\n")
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert error_lines(r) == [
        f"error: {cfg}, line {pl}, column {pc}: data.path: data file {str(tmp_path / 'absent.csv')!r} not found "
        f"(a relative path is taken from the config file's folder)",
        f"error: {cfg}, line {el}, column {ec}: training.epochs must be greater than or equal to 1, got 0"]


def test_a_data_key_with_an_error_of_its_own_is_told_once_and_the_others_still_checked(tmp_path):
    write(tmp_path / "d.csv", DATED)
    text = "data:\n  path: d.csv\n  target: yy\n  features: [x1, x1]\n"
    r = run("train", write(tmp_path / "c.yaml", text))
    # data.features fails the schema (x1 twice): its one line, not a column check of its items
    assert r.exit_code == 2 and len(error_lines(r)) == 2, r.stderr
    assert "feature 'x1' is listed twice in data.features" in error_lines(r)[1]
    assert "data.target: column 'yy' is not in d.csv" in error_lines(r)[0]


def test_the_python_api_raises_every_line_of_a_dict_config_in_the_schema_s_order(in_tmp):
    import neurocli
    from neurocli.errors import ConfigErrors

    write(in_tmp / "d.csv", DATED)
    config = yaml.safe_load(COLUMNS_AND_EPOCHS)
    with pytest.raises(ConfigErrors) as caught:
        neurocli.train(config)
    assert [line.split(": ", 1)[0] for line in caught.value.lines()] == [
        "key data.target", "key data.features.0", "key data.exclude.0", "key training.epochs"]
    config["data"]["path"] = "absent.csv"
    with pytest.raises(ConfigErrors) as caught:
        neurocli.train(config)
    assert [line.split(": ", 1)[0] for line in caught.value.lines()] == ["key data.path", "key training.epochs"]


# ---- data.exclude and the hint for text among the default features -------------------------

DATED = ("date,x1,x2,species,y\n2012-01-01,1,2,adelie,3\n2012-01-02,2,1,gentoo,4\n2012-01-03,3,5,adelie,6\n"
         "2012-01-04,4,3,chinstrap,9\n2012-01-05,5,8,gentoo,10\n2012-01-06,6,2,adelie,12\n")


def trained_model(cfg: Path, *args) -> dict:
    r = run("train", cfg, "-q", *args)
    assert r.exit_code == 0, r.stderr
    run_dir = re.search(r"files: (\S+)/ \(", " ".join(r.stdout.split())).group(1)
    return json.loads((Path(run_dir) / "model.json").read_text())


def test_exclude_drops_columns_from_the_default_features(in_tmp):
    write(in_tmp / "d.csv", DATED)
    excluded = trained_model(write(in_tmp / "e.yaml", "data: {path: d.csv, target: y, exclude: [date, species]}\n"
                                                      "training: {epochs: 5}\noutput: {dir: runs/e}\n"))
    listed = trained_model(write(in_tmp / "f.yaml", "data: {path: d.csv, target: y, features: [x1, x2]}\n"
                                                    "training: {epochs: 5}\noutput: {dir: runs/f}\n"))
    assert excluded["features"] == ["x1", "x2"]  # the file's columns but the target, date and species, in order
    assert excluded["weights_standardized"] == listed["weights_standardized"]
    assert excluded["bias_standardized"] == listed["bias_standardized"]
    assert excluded["config"]["data"]["exclude"] == ["date", "species"]


def test_exclude_with_features_that_name_an_excluded_column_is_refused_at_its_line(tmp_path):
    write(tmp_path / "d.csv", DATED)
    text = "data:\n  path: d.csv\n  target: y\n  features: [x1, date]\n  exclude: [date]\n"
    r = run("train", write(tmp_path / "c.yaml", text))
    line, col = place(text, "[date]")
    assert r.exit_code == 2 and len(error_lines(r)) == 1
    assert f"c.yaml, line {line}, column {col}: data.exclude lists 'date', which data.features lists too" in r.stderr


def test_an_excluded_column_that_is_not_in_the_file_is_located_at_its_item(tmp_path):
    write(tmp_path / "d.csv", DATED)
    text = "data:\n  path: d.csv\n  target: y\n  exclude: [date, specie]\n"
    r = run("train", write(tmp_path / "c.yaml", text))
    line, col = place(text, "specie]")
    assert r.exit_code == 2
    assert r.stderr == (f"error: {tmp_path / 'c.yaml'}, line {line}, column {col}: data.exclude[1]: column "
                        f"'specie' is not in d.csv; did you mean 'species'?\n")



def test_every_absent_column_is_located_at_its_place_at_once_with_the_close_names(tmp_path):
    write(tmp_path / "d.csv", DATED)
    text = "data:\n  path: d.csv\n  target: yy\n  features: [x1, x_2, zzz]\n"
    r = run("train", write(tmp_path / "c.yaml", text))
    # difflib: 'yy' is close to 'y' (ratio 2*1/3 = 0.67), 'x_2' to 'x2' (2*2/5 = 0.8); 'zzz' to nothing
    names = ", ".join(DATED.splitlines()[0].split(","))
    expected = [("yy", "data.target", "; did you mean 'y'?"),
                ("x_2", "data.features[1]", "; did you mean 'x2'?"),
                ("zzz", "data.features[2]", f"; it has: {names}")]
    lines = []
    for name, key, hint in expected:
        line, col = place(text, name)
        lines.append(f"error: {tmp_path / 'c.yaml'}, line {line}, column {col}: {key}: column {name!r} is "
                     f"not in d.csv{hint}")
    assert r.exit_code == 2 and error_lines(r) == lines


def test_an_absent_target_from_set_is_located_at_the_set(tmp_path):
    write(tmp_path / "d.csv", DATED)
    r = run("gradcheck", write(tmp_path / "c.yaml", "data: {path: d.csv, target: y}\n"), "--set", "data.target=x22")
    assert r.exit_code == 2  # difflib: 'x22' against 'x2' is 2*2/5 = 0.8
    assert error_lines(r) == ["error: --set data.target=x22: data.target: column 'x22' is not in d.csv; did you "
                              "mean 'x2'?"]


def test_set_takes_key_value_and_max_rows_shows_one_default_in_help():
    for command in ("train", "gradcheck", "derive"):
        r = run(command, "--help")
        assert r.exit_code == 0 and "--set KEY=VALUE" in r.stdout and "<str>" not in r.stdout.split("--set")[1]
    shown = " ".join(run("gradcheck", "--help").stdout.split())
    assert shown.count("default: 100") == 1 and "[default: 100,000]" in shown
    assert "neurocli init --example" in " ".join(run("train", "--help").stdout.split())


def text_columns_by_reading(path: Path, target: str) -> list[str]:
    """The columns but the target with a cell that is not a number, by reading the CSV here."""
    rows = list(csv.DictReader(io.StringIO(path.read_text())))

    def number(cell):
        try:
            float(cell)
            return True
        except ValueError:
            return False

    return [c for c in rows[0] if c != target and not all(number(row[c]) for row in rows)]


def test_text_among_the_default_features_names_every_text_column_and_both_fixes(tmp_path):
    data = write(tmp_path / "d.csv", DATED)
    r = run("train", write(tmp_path / "c.yaml", "data: {path: d.csv, target: y}\n"))
    text = text_columns_by_reading(data, "y")
    assert text == ["date", "species"]
    assert r.exit_code == 2 and len(error_lines(r)) == 1
    line = r.stderr
    # the reader's first refusal, where it is (line 2: the first data row), then the hint
    assert line.startswith(f"error: {data}, line 2: column 'date': '2012-01-01' is not a number; ")
    assert f"not numeric: {', '.join(text)};" in line
    assert "data.features" in line and f"data.exclude: [{', '.join(text)}]" in line


def test_the_hint_with_exclude_suggests_the_whole_list(tmp_path):
    write(tmp_path / "d.csv", DATED)
    r = run("train", write(tmp_path / "c.yaml", "data: {path: d.csv, target: y, exclude: [date]}\n"))
    assert r.exit_code == 2
    assert "line 2: column 'species': 'adelie' is not a number" in r.stderr
    assert "not numeric: species;" in r.stderr and "data.exclude: [date, species]" in r.stderr


def test_the_hint_for_parquet_and_for_a_data_set_of_several_files(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pd.read_csv(io.StringIO(DATED)).to_parquet(tmp_path / "d.parquet")
    r = run("train", write(tmp_path / "p.yaml", "data: {path: d.parquet, target: y}\n"))
    assert r.exit_code == 2
    assert "d.parquet, row 1: column 'date': '2012-01-01' is not a number" in r.stderr
    assert "not numeric: date, species;" in r.stderr
    write(tmp_path / "parts" / "a.csv", DATED)
    write(tmp_path / "parts" / "b.csv", DATED)
    r = run("train", write(tmp_path / "s.yaml", "data: {path: parts, target: y}\n"))
    assert r.exit_code == 2 and "a.csv, line 2: column 'date'" in r.stderr and "not numeric: date, species;" in r.stderr


def test_text_past_the_first_megabyte_is_the_reader_s_to_report_at_its_line(tmp_path):
    rows = 32_000  # of 36 bytes: 1.15 MB, the text cell past the first megabyte
    body = "".join(f"{i % 7}.123456789,1.123456789,{i % 5}.123456789\n" for i in range(rows - 1)) + "3,abc,4\n"
    data = write(tmp_path / "d.csv", "x1,x2,y\n" + body)
    r = run("train", write(tmp_path / "c.yaml", "data: {path: d.csv, target: y}\n"))
    assert r.exit_code == 2
    assert r.stderr == f"error: {data}, line {rows + 1}: column 'x2': 'abc' is not a number\n"


@pytest.mark.parametrize("header", ["x1,,x2,note,y", "x1,,x2,,y", "x1,note,x2,note,y"],
                         ids=["empty-name", "two-empty-names", "repeated-name"])
@pytest.mark.parametrize("quoted", [False, True], ids=["pieces", "whole-file"])
def test_a_column_nobody_uses_is_not_checked(in_tmp, header, quoted):
    rows = ["1,a,2,b,3", "2,c,1,d,4", "3,e,5,f,6", "4,g,3,h,9", "5,i,8,j,10"]
    if quoted:  # a quote character: the file is read whole, not in pieces
        rows[0] = '1,"a",2,b,3'
    write(in_tmp / "d.csv", "\n".join([header, *rows]) + "\n")
    model = trained_model(write(in_tmp / "c.yaml", "data: {path: d.csv, target: y, features: [x1, x2]}\n"
                                                   "training: {epochs: 3}\noutput: {dir: runs/t}\n"))
    assert model["features"] == ["x1", "x2"]


def test_a_used_column_with_an_empty_name_is_still_refused(tmp_path):
    write(tmp_path / "d.csv", "x1,,y\n1,2,3\n2,1,4\n")
    r = run("train", write(tmp_path / "c.yaml", "data: {path: d.csv, target: y}\n"))
    assert r.exit_code == 2 and "d.csv, line 1: column 2 has an empty name in the header" in r.stderr


def test_a_data_set_whose_files_have_an_unused_empty_column(in_tmp):
    for name in ("a.csv", "b.csv"):
        write(in_tmp / "parts" / name, "x1,,x2,y\n1,z,2,3\n2,z,1,4\n3,z,5,6\n")
    model = trained_model(write(in_tmp / "c.yaml", "data: {path: parts, target: y, features: [x1, x2]}\n"
                                                   "training: {epochs: 3}\noutput: {dir: runs/t}\n"))
    assert model["data"]["rows_used"] == 6


# ---- the schema --------------------------------------------------------------------------

ANNOTATIONS = {"title", "description", "default", "$schema", "$defs"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def conforms(value, schema: dict, root: dict) -> bool:
    """Whether ``value`` satisfies ``schema``, for the keywords a config's schema may use; any
    other keyword fails the test, so that no part of the schema goes unchecked."""
    unknown = set(schema) - ANNOTATIONS - {"$ref", "anyOf", "type", "enum", "const", "properties", "required",
                                           "additionalProperties", "items", "minimum", "maximum", "exclusiveMinimum",
                                           "exclusiveMaximum", "minItems", "minLength"}
    assert not unknown, f"a keyword this check does not know: {unknown}"
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return conforms(value, target, root)
    if "anyOf" in schema and not any(conforms(value, s, root) for s in schema["anyOf"]):
        return False
    kind = schema.get("type")
    if kind == "number" and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return False
    if kind == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
        return False
    if kind in TYPES and not isinstance(value, TYPES[kind]):
        return False
    if "enum" in schema and value not in schema["enum"] or "const" in schema and value != schema["const"]:
        return False
    bounds = [("minimum", lambda v, b: v >= b), ("maximum", lambda v, b: v <= b),
              ("exclusiveMinimum", lambda v, b: v > b), ("exclusiveMaximum", lambda v, b: v < b)]
    if any(k in schema and not ok(value, schema[k]) for k, ok in bounds):
        return False
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return False
        if "items" in schema and not all(conforms(v, schema["items"], root) for v in value):
            return False
    if isinstance(value, dict):
        props = schema.get("properties", {})
        if any(k not in value for k in schema.get("required", [])):
            return False
        if schema.get("additionalProperties") is False and set(value) - set(props):
            return False
        return all(conforms(v, props[k], root) for k, v in value.items() if k in props)
    return True


def test_schema_prints_a_json_schema_that_the_quickstart_config_satisfies():
    r = run("schema")
    assert r.exit_code == 0
    schema = json.loads(r.stdout)
    assert schema == json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/") and schema["type"] == "object"
    assert schema["required"] == ["data"]
    quickstart, _ = parse_yaml(QUICKSTART.read_text(), QUICKSTART)
    assert conforms(quickstart, schema, schema)
    Config.model_validate(quickstart)  # and pydantic, the schema's source, agrees


@pytest.mark.parametrize("change", [
    {"training": {"learning_rat": 0.1}}, {"training": {"epochs": 0}}, {"data": {"missing": "skip"}},
    {"model": {"weights_init": "random"}}, {"data": {"validation_fraction": 1.0}}, {"seed": -1},
], ids=str)
def test_the_schema_refuses_what_the_config_refuses(change):
    schema = json_schema()
    config = {"data": {"path": "d.csv", "target": "y"}}
    for section, values in change.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    assert not conforms(config, schema, schema)
    with pytest.raises(Exception):
        Config.model_validate(config)


# ---- --print-config ----------------------------------------------------------------------

def test_print_config_is_the_resolved_config_and_trains_to_the_same_bits(in_tmp):
    write(in_tmp / "data" / "penguins.csv", PENGUINS.read_text())
    original = write(in_tmp / "configs" / "q.yaml", QUICKSTART.read_text())
    sets = ["--set", "data.features=null", "--set", "data.exclude=[species, island, sex, year]",
            "--set", "training.epochs=60"]
    r = run("train", original, "--print-config", *sets)
    assert r.exit_code == 0 and r.stderr == ""
    printed = yaml.safe_load(r.stdout)
    with open(PENGUINS, newline="") as fh:
        header = next(csv.reader(fh))
    assert printed["data"]["features"] == [c for c in header if c not in ("body_mass_g", "species", "island", "sex",
                                                                          "year")]
    assert printed["data"]["path"] == str((in_tmp / "data" / "penguins.csv").resolve())
    assert printed["training"]["epochs"] == 60 and printed["training"]["batch_size"] is None
    assert printed["engine"]["kind"] == "memory" and printed["seed"] == 0
    assert not (in_tmp / "runs").exists()  # nothing was trained
    elsewhere = write(in_tmp / "other" / "printed.yaml", r.stdout)
    a = trained_model(original, *sets, "--set", "output.dir=runs/a")
    b = trained_model(elsewhere, "--set", "output.dir=runs/b")
    for key in ("features", "weights_standardized", "bias_standardized", "weights", "bias", "metrics", "epochs"):
        assert a[key] == b[key], key
    assert (in_tmp / "runs/a/history.csv").read_bytes() == (in_tmp / "runs/b/history.csv").read_bytes()


def test_print_config_reports_the_data_s_problems_as_train_does(tmp_path):
    cfg = write(tmp_path / "c.yaml", "data: {path: nothere.csv, target: y}\n")
    printed, trained = run("train", cfg, "--print-config"), run("train", cfg)
    assert printed.exit_code == trained.exit_code == 2 and printed.stderr == trained.stderr


# ---- the warning for a negative target ---------------------------------------------------

NEGATIVE_CSV = "x1,x2,y\n1,2,3\n2,1,-4\n3,5,6\n4,3,-0.5\n5,8,10\n6,2,12\n7,1,-2.25\n8,4,5\n"


def test_a_negative_target_is_warned_of_at_the_start_with_its_count_and_minimum(in_tmp):
    write(in_tmp / "d.csv", NEGATIVE_CSV)
    cfg = write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\ntraining: {epochs: 3}\noutput: {dir: runs/n}\n")
    ys = [float(row["y"]) for row in csv.DictReader(io.StringIO(NEGATIVE_CSV))]
    negative = [v for v in ys if v < 0]  # no validation split: every row trains
    expected = f"{len(negative)} of the {len(ys)} training rows have a negative target (the smallest {min(negative):g})"
    r = run("train", cfg)
    assert r.exit_code == 0
    assert r.stderr.startswith(f"warning: {expected}"), r.stderr
    assert "ReLU" in r.stderr.splitlines()[0]
    r = run("train", cfg, "--json")
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["event"] == "summary" and summary["warning"].startswith(expected)
    assert r.stderr.count(expected) == 1  # said once, at the end, with the summary's other warnings


def test_a_target_of_no_negative_value_gets_no_warning(in_tmp):
    write(in_tmp / "d.csv", GOOD_CSV)
    r = run("train", write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\ntraining: {epochs: 3}\n"))
    assert r.exit_code == 0 and "warning" not in r.stderr


# ---- what model.json records of its run ---------------------------------------------------

def test_model_json_records_when_it_was_trained_and_the_best_epoch(in_tmp):
    write(in_tmp / "d.csv", PENGUINS.read_text())
    cfg = write(in_tmp / "c.yaml", "data: {path: d.csv, target: body_mass_g, missing: drop, validation_fraction: 0.2,\n"
                                   "       features: [bill_length_mm, bill_depth_mm, flipper_length_mm]}\n"
                                   "training: {epochs: 300, learning_rate: 0.1, early_stopping: {patience: 5}}\n"
                                   "output: {dir: runs/es}\n")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    model = trained_model(cfg)
    after = datetime.now(timezone.utc)
    trained_at = datetime.fromisoformat(model["trained_at"])
    assert trained_at.utcoffset() == timedelta(0) and before <= trained_at <= after
    with open(in_tmp / "runs/es/history.csv", newline="") as fh:
        val = [float(row["val_loss"]) for row in csv.DictReader(fh)]
    assert model["stopped"] == "early_stopping"
    assert model["best_epoch"] == val.index(min(val)) + 1  # the first epoch of the lowest validation loss


def test_without_early_stopping_there_is_no_best_epoch(in_tmp):
    write(in_tmp / "d.csv", GOOD_CSV)
    model = trained_model(write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\ntraining: {epochs: 3}\n"))
    assert model["best_epoch"] is None and model["trained_at"].endswith("Z")


def test_an_older_model_json_without_these_fields_still_loads_and_predicts(in_tmp):
    write(in_tmp / "d.csv", GOOD_CSV)
    model = trained_model(write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\ntraining: {epochs: 3}\n"))
    for key in ("trained_at", "best_epoch"):
        del model[key]
    assert "exclude" not in model["config"]["data"]  # a config without data.exclude is saved as before it existed
    old = write(in_tmp / "old.json", json.dumps(model))
    assert savedfiles.load_model(old)["features"] == ["x1", "x2"]
    r = run("predict", old, in_tmp / "d.csv")
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "x1,x2,y,prediction"


@pytest.mark.parametrize("field, value, says", [
    ("trained_at", "2024-05-01T12:00:00+02:00", "UTC"), ("trained_at", "yesterday", "ISO 8601"),
    ("best_epoch", 0, "greater than or equal to 1"), ("best_epoch", 10**6, "past the run's last epoch"),
])
def test_a_damaged_trained_at_or_best_epoch_is_named(in_tmp, field, value, says):
    write(in_tmp / "d.csv", GOOD_CSV)
    model = trained_model(write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\ntraining: {epochs: 3}\n"))
    model[field] = value
    r = run("predict", write(in_tmp / "bad.json", json.dumps(model)), in_tmp / "d.csv")
    assert r.exit_code == 2 and says in r.stderr and "model file is damaged" in r.stderr, r.stderr


# ---- the command line's conventions -------------------------------------------------------

def _modules_after(args: list[str]) -> set[str]:
    code = ("import sys\nsys.argv = ['neurocli', *sys.argv[1:]]\nfrom neurocli.cli import main\ntry:\n    main()\n"
            "except SystemExit:\n    pass\nprint(' '.join(sorted(sys.modules)), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    return set(out.stderr.split())


@pytest.mark.parametrize("args", [["--help"], ["train", "-h"]], ids=" ".join)
def test_help_imports_neither_numpy_nor_pandas(args):
    loaded = _modules_after(args)
    assert "typer" in loaded  # the help was shown
    assert not {m for m in loaded if m.split(".")[0] in ("numpy", "pandas")}


def _commands() -> dict:
    import typer.main

    return typer.main.get_command(app).commands


def test_dash_h_is_help_for_every_command():
    r, r_long = run("-h"), run("--help")
    assert r.exit_code == 0 and r.stdout == r_long.stdout
    for name, command in _commands().items():
        r, r_long = run(name, "-h"), run(name, "--help")
        assert r.exit_code == 0 and r.stdout == r_long.stdout and r.stdout.startswith("Usage: neurocli"), name
        for sub in getattr(command, "commands", {}):
            assert run(name, sub, "-h").stdout == run(name, sub, "--help").stdout


def test_usage_lines_name_arguments_as_users_read_them():
    for name in _commands():
        usage = run(name, "-h").stdout.splitlines()[0]
        assert "{" not in usage and "}" not in usage, usage
        assert not re.search(r"\b[a-z_]+\b", usage.split("[OPTIONS]", 1)[-1].replace("...", "")), usage
    assert run("train", "-h").stdout.startswith("Usage: neurocli train [OPTIONS] CONFIG\n")
    assert run("gradcheck", "-h").stdout.startswith("Usage: neurocli gradcheck [OPTIONS] [CONFIG]\n")
    assert run("predict", "-h").stdout.startswith("Usage: neurocli predict [OPTIONS] MODEL DATA\n")


def test_options_show_their_choices():
    assert "--format [text|markdown|latex|json]" in run("derive", "-h").stdout
    assert "--jacobian [auto|full|fast]" in run("gradcheck", "-h").stdout
    assert "--set KEY=VALUE" in run("train", "-h").stdout


def test_usage_errors_keep_their_one_line_form():
    r = run("train")
    assert r.exit_code == 2 and r.stderr == "error: Missing argument 'CONFIG'; see neurocli train --help\n"
    r = run("derive", "--format", "html")
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and r.stderr.endswith("see neurocli derive --help\n")


def test_shell_completion_is_on():
    r = run("--help")
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout
    env = {**os.environ, "_NEUROCLI_COMPLETE": "complete_bash", "COMP_WORDS": "neurocli derive --format ",
           "COMP_CWORD": "3"}
    out = subprocess.run([sys.executable, "-m", "neurocli"], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["text", "markdown", "latex", "json"]


def test_gradcheck_prints_the_worst_points_and_counts_the_others():
    points = 30
    r = run("gradcheck", "--points", points)
    d = json.loads(run("gradcheck", "--points", points, "--json").stdout)
    assert r.exit_code == 0 and len(d["points"]) == points + 1  # --json has every point

    def badness(pt):
        rank = {"fail": 2, "inconclusive": 1, "pass": 0}[pt["verdict"]]
        return rank, max(p["abs_error"] / p["tolerance"] if p["tolerance"] else 0.0 for p in pt["parameters"])

    worst = sorted(d["points"][1:], key=badness, reverse=True)[:19]
    shown = re.findall(r"^(random point \d+ \(seed 0\)): ", r.stdout, flags=re.M)
    assert shown == [pt["label"] for pt in worst]
    assert r.stdout.rstrip().endswith(f"shown: the 19 worst of {points} random points; {points - 19} more "
                                      f"({points - 19} pass) in --json")
