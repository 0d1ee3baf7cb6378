"""One row per bad input (issue: every error explained, nothing lost).

For each: the exit code is 2, stderr is one line that names the file and the place, there is
no traceback, and no output file appeared or changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurocli.cli import app
from tests.conftest import write

runner = CliRunner()

GOOD_CSV = "x1,x2,y\n1,2,3\n2,1,4\n3,5,6\n4,3,9\n5,8,10\n6,2,12\n"
BASE = "data: {path: d.csv, target: y}\n"


def cfg(extra: str = "", data: str | None = None) -> str:
    return (data if data is not None else BASE) + extra


# (id, config text, csv bytes, expected fragments of the error line: the place and the reason)
CONFIG_CASES = [
    ("yaml-syntax", "data: [\n", GOOD_CSV, ["c.yaml", "line 2", "YAML error"]),
    ("float32-weight-too-big", cfg("model: {weights_init: [1.0, 1.0e39]}\ntraining: {dtype: float32}\n"), GOOD_CSV,
     ["c.yaml", "line 2", "model.weights_init[1] = 1e+39 does not fit training.dtype float32"]),
    ("float32-bias-too-big", cfg("model: {bias_init: -1.0e39}\ntraining: {dtype: float32}\n"), GOOD_CSV,
     ["c.yaml", "line 2", "model.bias_init = -1e+39 does not fit training.dtype float32"]),
    ("yaml-nested-deep", "data: " + "[" * 60 + "]" * 60 + "\n", GOOD_CSV, ["c.yaml", "nested more than 50 levels"]),
    ("yaml-nested-past-recursion", "data: " + "[" * 5000 + "]" * 5000 + "\n", GOOD_CSV,
     ["c.yaml", "nested more than 50 levels"]),
    ("yaml-empty", "", GOOD_CSV, ["c.yaml", "empty"]),
    ("yaml-not-mapping", "- a\n- b\n", GOOD_CSV, ["c.yaml", "line 1", "mapping"]),
    ("unknown-key", cfg("training: {learning_rat: 0.1}\n"), GOOD_CSV, ["c.yaml", "line 2", "did you mean 'training.learning_rate'"]),
    ("unknown-section", cfg("trainig: {epochs: 3}\n"), GOOD_CSV, ["c.yaml", "line 2", "did you mean 'training'"]),
    ("wrong-type", cfg("training: {epochs: many}\n"), GOOD_CSV, ["c.yaml", "line 2", "training.epochs", "'many'"]),
    ("lr-zero", cfg("training: {learning_rate: 0}\n"), GOOD_CSV, ["c.yaml", "line 2", "training.learning_rate", "greater than 0"]),
    ("lr-negative", cfg("training:\n  learning_rate: -0.1\n"), GOOD_CSV, ["c.yaml", "line 3, column 18", "-0.1"]),
    ("epochs-zero", cfg("training: {epochs: 0}\n"), GOOD_CSV, ["c.yaml", "line 2", "training.epochs"]),
    ("batch-zero", cfg("training: {batch_size: 0}\n"), GOOD_CSV, ["c.yaml", "line 2", "training.batch_size"]),
    ("batch-too-big", cfg("training: {batch_size: 100}\n"), GOOD_CSV, ["c.yaml", "line 2", "batch_size is 100", "6 rows"]),
    ("val-fraction-1", cfg("", "data: {path: d.csv, target: y, validation_fraction: 1.0}\n"), GOOD_CSV, ["c.yaml", "line 1", "validation_fraction"]),
    ("val-fraction-neg", cfg("", "data: {path: d.csv, target: y, validation_fraction: -0.1}\n"), GOOD_CSV, ["c.yaml", "line 1", "validation_fraction"]),
    ("patience-zero", cfg("training: {early_stopping: {patience: 0}}\n"), GOOD_CSV, ["c.yaml", "line 2", "patience"]),
    ("weights-length", cfg("model: {weights_init: [1, 2, 3]}\n"), GOOD_CSV, ["c.yaml", "line 2", "3 numbers", "2 features"]),
    ("weights-word", cfg("model: {weights_init: random}\n"), GOOD_CSV, ["c.yaml", "line 2", "'normal', 'zeros' or a list"]),
    ("python-tag", cfg("seed: !!python/object/apply:os.system ['true']\n"), GOOD_CSV, ["c.yaml", "line 2", "tag"]),
    ("alias-bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                   "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                   "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n", GOOD_CSV, ["c.yaml", "line", "aliases"]),
    ("duplicate-key", "data: {path: d.csv, target: y}\ndata: {path: d.csv, target: y}\n", GOOD_CSV, ["c.yaml", "line 2", "twice"]),
    ("target-is-feature", cfg("", "data: {path: d.csv, target: y, features: [x1, y]}\n"), GOOD_CSV, ["c.yaml", "line 1", "also listed"]),
    ("lr-infinite", cfg("training: {learning_rate: .inf}\n"), GOOD_CSV, ["c.yaml", "line 2", "finite"]),
    ("weights-nan", cfg("model: {weights_init: [.nan, 1]}\n"), GOOD_CSV, ["c.yaml", "line 2", "weights_init[0]", "finite"]),
    ("bias-infinite", cfg("model: {bias_init: -.inf}\n"), GOOD_CSV, ["c.yaml", "line 2", "finite"]),
    ("output-dir-dot", cfg("output: {dir: .}\n"), GOOD_CSV, ["c.yaml", "line 2", "output.dir must name a folder"]),
    ("duplicate-feature", cfg("", "data:\n  path: d.csv\n  target: y\n  features: [x1, x1]\n"), GOOD_CSV,
     ["c.yaml", "line 4", "listed twice"]),
    ("val-fraction-rounds-to-zero", cfg("", "data: {path: d.csv, target: y, validation_fraction: 0.01}\n"), GOOD_CSV,
     ["c.yaml", "line 1", "0 validation"]),
    ("data-missing", cfg("", "data: {path: nothere.csv, target: y}\n"), None, ["nothere.csv", "not found", "data.path"]),
    ("data-is-dir", cfg("", "data: {path: ., target: y}\n"), None, ["c.yaml", "line 1", "holds no CSV or Parquet file"]),
]

FILE_CASES = [
    ("csv-empty", b"", ["d.csv", "empty"]),
    ("csv-header-only", b"x1,x2,y\n", ["d.csv", "line 2", "no data rows"]),
    ("csv-not-utf8", b"x1,x2,y\n1,2,3\n2,\xff,4\n", ["d.csv", "line 3", "UTF-8"]),
    ("csv-semicolon", b"x1;x2;y\n1;2;3\n2;1;4\n", ["d.csv", "line 1", "data.delimiter"]),
    ("csv-duplicate-columns", b"x1,x1,y\n1,2,3\n2,1,4\n", ["d.csv", "line 1", "'x1' appears twice"]),
    ("csv-target-absent", b"x1,x2,z\n1,2,3\n2,1,4\n",
     ["c.yaml", "line 1", "data.target: column 'y' is not in d.csv", "x1, x2, z"]),
    ("csv-text-cell", b"x1,x2,y\n1,2,3\n2,1,4\n3,abc,5\n", ["d.csv", "line 4", "'x2'", "'abc'"]),
    ("csv-empty-cell", b"x1,x2,y\n1,2,3\n2,,4\n3,4,5\n", ["d.csv", "line 3", "'x2'", "missing: drop"]),
    ("csv-na-cell", b"x1,x2,y\n1,2,3\n2,3,4\n3,4,NA\n", ["d.csv", "line 4", "'y'"]),
    ("csv-infinity", b"x1,x2,y\n1,2,3\n2,inf,4\n3,4,5\n", ["d.csv", "line 3", "'x2'", "infinite"]),
    ("csv-overflow", b"x1,x2,y\n1,2,3\n2,3,1e200\n3,4,5\n", ["d.csv", "line 3", "'y'", "too large"]),
    ("csv-constant-feature", b"x1,x2,y\n1,7,3\n2,7,4\n3,7,5\n", ["d.csv", "'x2'", "constant"]),
    ("csv-one-row", b"x1,x2,y\n1,2,3\n", ["d.csv", "too few"]),
    ("csv-blank-lines-counted", b"x1,x2,y\n1,2,3\n\n2,1,4\n3,oops,5\n", ["d.csv", "line 5", "'oops'"]),
    ("csv-extra-field-first-row", b"x1,x2,y\n1,2,3,4\n2,1,4\n3,2,5\n", ["d.csv", "line 2", "4 fields but the header has 3"]),
    ("csv-extra-field-later-row", b"x1,x2,y\n1,2,3\n2,1,4\n3,2,5,9\n", ["d.csv", "line 4", "4 fields but the header has 3"]),
    ("csv-extra-field-after-blank", b"x1,x2,y\n\n1,2,3,4\n2,1,4\n3,2,5\n", ["d.csv", "line 3", "4 fields but the header has 3"]),
    ("csv-boolean-cells", b"x1,x2,y\n1,True,3\n2,False,4\n3,True,5\n", ["d.csv", "line 2", "'x2'", "a true/false cell is not a number"]),
    ("csv-cr-only-line-ends", b"x1,x2,y\r1,2,3\r2,1,4\r3,2,5\r", ["d.csv", "line 1", "lone CR"]),
    ("csv-unclosed-quote", b'x1,x2,y\n1,2,3\n2,"1,4\n3,2,5\n', ["d.csv", "line 3", "never closed"]),
    ("csv-unclosed-quote-after-blanks", b'x1,x2,y\n\n \n1,2,3\n2,"1,4\n3,2,5\n', ["d.csv", "line 5", "never closed"]),
]


def _snapshot(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _check_clean_error(r, before: dict, root: Path, fragments: list[str]):
    assert r.exit_code == 2, (r.exit_code, r.output)
    err = r.stderr.strip()
    assert "Traceback" not in r.output
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert _snapshot(root) == before, "an output file appeared or changed"
    assert not (root / "runs").exists()


COMMANDS = ["train", "gradcheck", "derive"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(case, command, in_tmp):
    _, text, csv_text, fragments = case
    write(in_tmp / "c.yaml", text)
    if csv_text is not None:
        write(in_tmp / "d.csv", csv_text)
    before = _snapshot(in_tmp)
    r = runner.invoke(app, [command, "c.yaml"])
    _check_clean_error(r, before, in_tmp, fragments)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_csv(case, command, in_tmp):
    _, raw, fragments = case
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\n")
    (in_tmp / "d.csv").write_bytes(raw)
    before = _snapshot(in_tmp)
    r = runner.invoke(app, [command, "c.yaml"])
    _check_clean_error(r, before, in_tmp, fragments)


def test_debug_shows_the_traceback(in_tmp):
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\ntraining: {epochs: 0}\n")
    write(in_tmp / "d.csv", GOOD_CSV)
    r = runner.invoke(app, ["train", "c.yaml", "--debug"])
    assert r.exit_code == 2 and "Traceback" in r.stderr


@pytest.mark.parametrize("variant", ["bom", "crlf", "bom+crlf"])
def test_bom_and_crlf_are_read_like_plain_files(variant, in_tmp):
    raw = GOOD_CSV.replace("\n", "\r\n") if "crlf" in variant else GOOD_CSV
    data = (b"\xef\xbb\xbf" if "bom" in variant else b"") + raw.encode()
    (in_tmp / "d.csv").write_bytes(data)
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\ntraining: {epochs: 3}\n")
    r = runner.invoke(app, ["train", "c.yaml", "--json"])
    assert r.exit_code == 0, r.output
    assert '"x1"' in r.stdout.splitlines()[-1]


def test_a_line_of_tabs_in_a_tab_separated_file_is_a_row_not_a_blank_line(in_tmp):
    # line 3 is three empty cells (a row the parser keeps), so 'x' is on line 4
    (in_tmp / "d.csv").write_bytes(b"x1\tx2\ty\n1\t2\t3\n\t\t\n4\tx\t6\n")
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y, delimiter: \"\\t\"}\n")
    r = runner.invoke(app, ["train", "c.yaml"])
    assert r.exit_code == 2 and "line 4" in r.stderr and "'x'" in r.stderr, r.output


def test_semicolon_file_works_with_delimiter(in_tmp):
    write(in_tmp / "d.csv", GOOD_CSV.replace(",", ";"))
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y, delimiter: ';'}\ntraining: {epochs: 3}\n")
    assert runner.invoke(app, ["train", "c.yaml", "-q"]).exit_code == 0


def test_unreadable_data_file(in_tmp, monkeypatch):
    write(in_tmp / "d.csv", GOOD_CSV)
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\n")
    if os.geteuid() != 0:
        os.chmod(in_tmp / "d.csv", 0)
    else:  # root reads anything: make the open fail the way a permission problem does
        real_open = open

        def deny(path, *a, **k):
            if str(path).endswith("d.csv"):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *a, **k)

        monkeypatch.setattr("builtins.open", deny)
    before = _snapshot(in_tmp)
    r = runner.invoke(app, ["train", "c.yaml"])
    _check_clean_error(r, before, in_tmp, ["d.csv", "Permission denied"])


# ---- models -------------------------------------------------------------------------------

def _trained_model(root: Path) -> Path:
    write(root / "d.csv", GOOD_CSV)
    write(root / "c.yaml", "data: {path: d.csv, target: y}\ntraining: {epochs: 3}\noutput: {dir: runs/m}\n")
    assert runner.invoke(app, ["train", "c.yaml", "-q"]).exit_code == 0
    return root / "runs/m/model.json"


MODEL_CASES = [
    ("not-json", lambda t: "hello\n", ["m.json", "line 1", "not a valid model file"]),
    ("truncated", lambda t: t[: len(t) // 2], ["m.json", "line", "truncated"]),
    ("other-version", lambda t: t.replace("neurocli.model/2", "neurocli.model/99"), ["m.json", "incompatible"]),
    ("absent-features", lambda t: t.replace('"x2"', '"x9"'), ["d.csv", "'x9' not in the file"]),
    ("no-standardization", lambda t: _edit(t, lambda m: m.pop("standardization")), ["m.json", "standardization"]),
    ("zero-scale", lambda t: _edit(t, lambda m: m["standardization"].update(scale=[0.0, 1.0])), ["m.json", "standardization.scale[0]", "greater than 0"]),
    ("nan-weight", lambda t: _edit(t, lambda m: m["weights_standardized"].__setitem__(0, float("nan"))),
     ["m.json", "finite"]),
]


def _edit(text: str, change) -> str:
    import json

    model = json.loads(text)
    change(model)
    return json.dumps(model)


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_file_for_predict(case, in_tmp):
    _, mutate, fragments = case
    model = _trained_model(in_tmp)
    write(in_tmp / "m.json", mutate(model.read_text()))
    before = _snapshot(in_tmp)
    r = runner.invoke(app, ["predict", "m.json", "d.csv", "-o", "out.csv"])
    assert r.exit_code == 2, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    for fragment in fragments:
        assert fragment in r.stderr, (fragment, r.stderr)
    assert _snapshot(in_tmp) == before


@pytest.mark.parametrize("command", ["gradcheck", "derive"])
@pytest.mark.parametrize("case", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_file_for_model_option(case, command, in_tmp):
    _, mutate, fragments = case
    model = _trained_model(in_tmp)
    write(in_tmp / "m.json", mutate(model.read_text()))
    before = _snapshot(in_tmp)
    r = runner.invoke(app, [command, "c.yaml", "--model", "m.json"])
    assert r.exit_code == 2, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert "m.json" in r.stderr or "x9" in r.stderr
    assert _snapshot(in_tmp) == before


# ---- outputs ------------------------------------------------------------------------------

def test_output_dir_under_a_file_is_a_clean_error(in_tmp):
    write(in_tmp / "d.csv", GOOD_CSV)
    write(in_tmp / "blocker", "not a folder\n")
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\noutput: {dir: blocker/run}\n")
    r = runner.invoke(app, ["train", "c.yaml"])
    assert r.exit_code == 2 and "blocker" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "c.yaml, line 2" in r.stderr and "output.dir" in r.stderr


def test_set_is_blamed_for_what_it_set(in_tmp):
    write(in_tmp / "d.csv", GOOD_CSV)
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\ntraining: {epochs: 3}\n")
    for item in ["training.foo.bar=1", "trainin.epochs=5", "training.epochs.x=1", "data.features=[x1, y]"]:
        r = runner.invoke(app, ["train", "c.yaml", "--set", item])
        assert r.exit_code == 2 and f"--set {item}" in r.stderr, (item, r.stderr)


def test_a_pipe_as_data_is_refused(in_tmp):
    os.mkfifo(in_tmp / "d.csv")
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\n")
    r = runner.invoke(app, ["train", "c.yaml"])
    assert r.exit_code == 2 and "not a regular file" in r.stderr and "data.path" in r.stderr


def test_disk_full_while_saving_keeps_earlier_files(in_tmp, monkeypatch):
    model = _trained_model(in_tmp)
    before = {p: p.read_bytes() for p in model.parent.iterdir()}
    import neurocli.io as nio

    real_fsync = os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nio.os, "fsync", full)
    r = runner.invoke(app, ["train", "c.yaml", "-q", "--set", "training.epochs=4", "--set", "output.dir=runs/m"])
    monkeypatch.setattr(nio.os, "fsync", real_fsync)
    assert r.exit_code == 2 and "No space left on device" in r.stderr
    assert {p: p.read_bytes() for p in model.parent.iterdir()} == before  # the earlier run is untouched
    leftovers = [p for p in in_tmp.rglob("*.tmp")]
    assert leftovers == []
    assert sorted(p.name for p in (in_tmp / "runs").iterdir()) == ["m"]  # the failed run left no folder


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    import neurocli.io as nio

    target = tmp_path / "f.json"
    nio.atomic_write_text(target, "old\n")
    monkeypatch.setattr(nio.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(nio.OutputError):
        nio.atomic_write_text(target, "new\n" * 1000)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


# ---- special files where a whole file is read ----------------------------------------------

SPECIAL = ["fifo", "device"]
READERS = [  # (what is replaced, the command line, the kind of file the error names)
    ("c.yaml", ["train", "c.yaml"], "config"), ("c.yaml", ["gradcheck", "c.yaml"], "config"),
    ("c.yaml", ["derive", "c.yaml"], "config"),
    ("m.json", ["predict", "m.json", "d.csv"], "model"), ("m.json", ["gradcheck", "c.yaml", "--model", "m.json"], "model"),
    ("m.json", ["derive", "c.yaml", "--model", "m.json"], "model"),
]


@pytest.mark.parametrize("special", SPECIAL)
@pytest.mark.parametrize("replaced, args, kind", READERS, ids=[" ".join(r[1][:1] + [r[0]]) for r in READERS])
def test_a_fifo_or_device_where_a_file_is_read_ends_at_once(special, replaced, args, kind, in_tmp):
    _trained_model(in_tmp)
    path = in_tmp / replaced
    path.unlink(missing_ok=True)
    if special == "fifo":
        os.mkfifo(path)  # opening it would wait for a writer forever
    else:
        path.symlink_to("/dev/zero")  # reading it would never end
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == f"error: {replaced}: is not a regular file (a FIFO, socket or device); give the {kind} file itself"


def test_a_fifo_as_the_checkpoint_or_history_of_a_resume_ends_at_once(in_tmp):
    write(in_tmp / "c.yaml", cfg("training: {epochs: 2}\noutput: {dir: r}\n"))
    write(in_tmp / "d.csv", GOOD_CSV)
    assert runner.invoke(app, ["train", "c.yaml", "-q"]).exit_code == 0
    for name in ("history.csv", "checkpoint.json"):
        saved = (in_tmp / "r" / name).read_bytes()
        (in_tmp / "r" / name).unlink()
        os.mkfifo(in_tmp / "r" / name)
        r = runner.invoke(app, ["train", "r/config.yaml", "--resume", "r", "--set", "training.epochs=3"])
        assert r.exit_code == 2 and "is not a regular file" in r.stderr and name in r.stderr, (name, r.output)
        (in_tmp / "r" / name).unlink()
        (in_tmp / "r" / name).write_bytes(saved)


def test_a_config_or_model_far_larger_than_any_neurocli_writes_is_refused_unread(in_tmp, monkeypatch):
    from neurocli import config as config_module
    from neurocli import io as nio

    write(in_tmp / "m.json", _trained_model(in_tmp).read_text())
    monkeypatch.setattr(config_module, "CONFIG_MAX_BYTES", 10)
    r = runner.invoke(app, ["train", "c.yaml"])
    assert r.exit_code == 2 and "larger than a config file can be" in r.stderr
    monkeypatch.setattr(nio, "JSON_MAX_BYTES", 10)
    r = runner.invoke(app, ["predict", "m.json", "d.csv"])
    assert r.exit_code == 2 and "m.json: is " in r.stderr and "bytes, larger than a model file can be" in r.stderr


def _alias_bomb(levels: int) -> str:
    text = "{a0: &a0 [x, x, x, x, x, x, x, x, x]"
    for i in range(1, levels):
        text += f", a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]"
    return text + "}"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("value, reason", [
    (_alias_bomb(9), "expands to more than 10000 nodes"),  # 9^9 nodes if expanded
    ("[" * 5000 + "]" * 5000, "nested more than 50 levels"),
    ("x" * 100_000, "model.weights_init"),  # a huge value echoed back: the line stays short
])
def test_set_values_meet_the_files_limits_in_one_short_line(command, value, reason, in_tmp):
    write(in_tmp / "c.yaml", cfg())
    write(in_tmp / "d.csv", GOOD_CSV)
    r = runner.invoke(app, [command, "c.yaml", "--set", f"model.weights_init={value}"])
    assert r.exit_code == 2, r.output
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and len(line) <= 410 and reason in line and "--set model.weights_init=" in line


@pytest.mark.parametrize("delimiter, reason", [
    ("", "must be one character"), (";;", "must be one character"), ("\n", "cannot be a line break"),
    ("\r", "cannot be a line break"), ('"', "the quote character"),
])
def test_a_delimiter_that_cannot_separate_fields_is_refused_everywhere(delimiter, reason, in_tmp):
    model = _trained_model(in_tmp)
    r = runner.invoke(app, ["predict", str(model), "d.csv", "--delimiter", delimiter])
    assert r.exit_code == 2 and reason in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    for command in COMMANDS:
        import json  # a JSON string is a double-quoted YAML string, escapes and all

        r = runner.invoke(app, [command, "c.yaml", "--set", f"data.delimiter={json.dumps(delimiter)}"])
        assert r.exit_code == 2 and reason in r.stderr and "data.delimiter" in r.stderr, (command, r.output)


def test_backslash_t_is_a_tab_as_users_type_it(in_tmp):
    model = _trained_model(in_tmp)
    write(in_tmp / "t.csv", GOOD_CSV.replace(",", "\t"))
    r = runner.invoke(app, ["predict", str(model), "t.csv"])
    assert r.exit_code == 2 and "set data.delimiter: '\\t'" in r.stderr  # the hint, as it must be typed
    r = runner.invoke(app, ["predict", str(model), "t.csv", "--delimiter", "\\t"])
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "x1\tx2\ty\tprediction"  # the file's own delimiter
    write(in_tmp / "ct.yaml", "data: {path: t.csv, target: y, delimiter: '\\t'}\ntraining: {epochs: 2}\n")
    assert runner.invoke(app, ["train", "ct.yaml", "-q"]).exit_code == 0


def test_a_relative_step_below_float64_precision_is_refused(in_tmp):
    r = runner.invoke(app, ["gradcheck", "--eps", "1e-300"])
    assert r.exit_code == 2 and "at least 1e-15" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_warning_reaches_the_user_as_one_line_and_numpy_overflow_not_at_all(capsys):
    import warnings

    import numpy as np

    from neurocli.cli import handle_errors

    with handle_errors(debug=False):
        warnings.warn("the first line\nand a second one", UserWarning)
        np.float64(1e300) * np.float64(1e300)  # overflow: neurocli checks for inf itself
    assert capsys.readouterr().err == "warning: the first line\n"


@pytest.mark.parametrize("reader, command, quoted", [("read_pieces", "train", False),
                                                     ("read_pieces", "predict", False),
                                                     ("_parse_whole", "train", True)])
@pytest.mark.parametrize("change", ["truncated", "appended", "replaced"])
def test_a_file_that_changes_while_it_is_read_is_refused(reader, command, quoted, change, in_tmp, monkeypatch):
    import neurocli.data as data

    rows = "".join(f"{i},{i % 7},{2 * i}\n" for i in range(1, 400))
    if quoted:  # a quote anywhere: the file is read whole
        rows = rows.replace("7,0,14", '7,"0",14')
    write(in_tmp / "d.csv", "x1,x2,y\n" + rows)
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\ntraining: {epochs: 2}\n")
    args = ["train", "c.yaml"]
    if command == "predict":
        assert runner.invoke(app, ["train", "c.yaml", "-q", "--set", "output.dir=runs/m"]).exit_code == 0
        args = ["predict", "runs/m/model.json", "d.csv", "-o", "out.csv"]
    real = getattr(data, reader)

    def changing_under_the_reader(path, *a, **k):
        result = real(path, *a, **k)  # the reader got the old rows; now a writer acts
        text = (in_tmp / "d.csv").read_text()
        if change == "truncated":
            (in_tmp / "d.csv").write_text(text[: len(text) // 2])
        elif change == "appended":
            with open(in_tmp / "d.csv", "a") as fh:
                fh.write("1000,1,2000\n")
        else:
            write(in_tmp / "new.csv", text)
            os.replace(in_tmp / "new.csv", in_tmp / "d.csv")
        return result

    monkeypatch.setattr(data, reader, changing_under_the_reader)
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "d.csv" in err and "changed while neurocli read it" in err
    assert not (in_tmp / "out.csv").exists() and not (in_tmp / "runs/run").exists()
