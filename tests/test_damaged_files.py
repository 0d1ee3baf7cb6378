"""Every field of the files neurocli reads back, damaged every way: never an internal error.

A saved model.json and checkpoint.json are taken apart leaf by leaf (and list by list, object
by object); each is replaced by a value of another type, a huge, negative or non-finite number,
a list of the wrong length, a 400-digit integer, or removed. The command that reads the file
(predict and gradcheck --model for the model, train --resume for the checkpoint) must then end
in exit 2 with one located line naming the file, or, when the change is still a valid file (a
negative bias, a weight a million times larger), in the command's own verdict: predict writes
finite predictions, gradcheck passes or is inconclusive (never FAIL: the gradients are right at
any point), a resumed run completes or stops as diverged or dead. Never exit 70, never a
traceback, and a refused resume leaves the run as it was.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurocli.cli import app
from neurocli.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_TRAINING_FAILED
from tests.conftest import write

runner = CliRunner()

CSV = "x1,x2,y\n1,2,3\n2,1,4\n3,5,6\n4,3,9\n5,8,10\n6,2,12\n"
HUGE_INT = "1" + "0" * 400  # a JSON integer no float holds


def _paths(node, prefix=()):
    """Every place in a JSON document: objects, lists and leaves."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _replacements(value):
    """(name, new value or a marker) for one place; markers are spliced into the JSON text."""
    out = [("missing", _MISSING), ("null", None), ("string", "x"), ("true", True), ("object", {}),
           ("empty-list", []), ("huge", 1e308), ("huge-int", _HUGE), ("negative", -1),
           ("nan", _NAN), ("infinity", _INF), ("float-for-int", 2.5), ("deep", _DEEP)]
    if isinstance(value, list):
        out += [("longer", value + value[:1] if value else [1.0]), ("shorter", value[:-1])]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out += [("times-1e6", value * 1e6 if value else 1e6), ("zero", 0), ("big-int", 2**70)]
    return out


class _Raw(str):
    """JSON text spliced in as it is: what json.dumps cannot write."""


_MISSING = object()
_HUGE, _NAN, _INF = _Raw(HUGE_INT), _Raw("NaN"), _Raw("-Infinity")
_DEEP = _Raw("[" * 100_000 + "]" * 100_000)  # past any parser's recursion limit


def _mutated(doc: dict, path: tuple, new) -> str:
    doc = json.loads(json.dumps(doc))
    if not path:
        return new if isinstance(new, _Raw) else json.dumps(new)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if new is _MISSING:
        del parent[path[-1]]
        return json.dumps(doc)
    if isinstance(new, _Raw):
        parent[path[-1]] = "@@RAW@@"
        return json.dumps(doc).replace('"@@RAW@@"', new)
    parent[path[-1]] = new
    return json.dumps(doc)


def _cases(doc: dict):
    for path in _paths(doc):
        node = doc
        for key in path:
            node = node[key]
        for name, new in _replacements(node):
            if path == () and new is _MISSING:
                continue
            yield ".".join(map(str, path)) or "(whole)", name, _mutated(doc, path, new)


def _check(r, file_name: str, what: str, verdicts: tuple[int, ...] = (0,)):
    assert r.exit_code in (2, *verdicts), (what, r.exit_code, r.output[-2000:])
    assert "Traceback" not in r.output and "Warning" not in r.output, what
    if r.exit_code == 2:
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: "), (what, err)
        assert file_name in err, (what, err)


def _snapshot(directory: Path) -> dict:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


@pytest.fixture
def run(in_tmp):
    write(in_tmp / "d.csv", CSV)
    write(in_tmp / "c.yaml", "data: {path: d.csv, target: y}\ntraining: {epochs: 3, batch_size: 2}\n"
                             "output: {dir: runs/m}\n")
    assert runner.invoke(app, ["train", "c.yaml", "-q"]).exit_code == 0
    return in_tmp / "runs/m"


def test_every_damaged_model_field_is_a_located_error_or_still_a_model(run, in_tmp):
    model = json.loads((run / "model.json").read_text())
    seen = 0
    for where, name, text in _cases(model):
        write(in_tmp / "m.json", text)
        what = f"model.json {where} {name}"
        r = runner.invoke(app, ["predict", "m.json", "d.csv", "-o", "out.csv"])
        _check(r, "m.json", what)
        if r.exit_code == 0:
            out = (in_tmp / "out.csv").read_text().splitlines()
            assert len(out) == CSV.count("\n"), what
            assert all(math.isfinite(float(line.rsplit(",", 1)[1])) for line in out[1:]), (what, out)
            (in_tmp / "out.csv").unlink()
        else:
            assert not (in_tmp / "out.csv").exists(), what
        _check(runner.invoke(app, ["gradcheck", "c.yaml", "--model", "m.json"]), "m.json", what,
               (EXIT_OK, EXIT_INCONCLUSIVE))
        seen += 1
    assert seen > 300


def test_every_damaged_checkpoint_field_is_a_located_error_or_resumes(run):
    path = run / "checkpoint.json"
    good = path.read_text()
    ckpt = json.loads(good)
    seen = 0
    for where, name, text in _cases(ckpt):
        path.write_text(text)
        before = _snapshot(run)
        what = f"checkpoint.json {where} {name}"
        r = runner.invoke(app, ["train", str(run / "config.yaml"), "--resume", str(run), "-q",
                                "--set", "training.epochs=5"])
        _check(r, "checkpoint.json", what, (EXIT_OK, EXIT_TRAINING_FAILED))
        if r.exit_code == EXIT_TRAINING_FAILED:
            assert "diverged" in r.stderr or "dead neuron" in r.stderr, (what, r.stderr)
        if r.exit_code == 2:
            assert _snapshot(run) == before, what
        for name_, content in before.items():  # the run as it was, for the next case
            (run / name_).write_bytes(content)
        path.write_text(good)
        seen += 1
    assert seen > 200


WRITTEN_CASES = {  # every way a run can end, and data at the edges of float64
    "completed": ("x1,x2,y\n1,2,3\n2,1,4\n3,5,6\n4,3,9\n5,8,10\n6,2,12\n", ""),
    "early-stopping": (CSV, "training: {epochs: 200, learning_rate: 0.9, early_stopping: {patience: 2}}\n"),
    "diverged": ("x,y\n1e100,3e100\n2e100,6e100\n1.5e100,4.5e100\n",
                 "data: {standardize: false}\nmodel: {weights_init: [1.0], bias_init: 0}\n"
                 "training: {epochs: 50, learning_rate: 1.0}\n"),
    "dead-neuron": (CSV, "model: {bias_init: -1.0e6}\n"),
    "float32": (CSV, "training: {dtype: float32, batch_size: 4}\n"),
    "huge-target": ("x1,x2,y\n1,2,3e150\n2,1,4e150\n3,5,6e150\n4,3,9e150\n5,8,1e151\n6,2,1.2e151\n",
                    "training: {epochs: 20}\n"),
}


@pytest.mark.parametrize("case", WRITTEN_CASES, ids=list(WRITTEN_CASES))
def test_every_file_a_run_writes_reads_back(case, in_tmp):
    from neurocli import io as nio
    from neurocli import savedfiles

    data, extra = WRITTEN_CASES[case]
    write(in_tmp / "d.csv", data)
    config = "data: {path: d.csv, target: y}\n" + extra
    if extra.startswith("data:"):  # one data section
        config = extra.replace("data: {", "data: {path: d.csv, target: y, ", 1)
    write(in_tmp / "c.yaml", config + "output: {dir: runs/w}\n")
    r = runner.invoke(app, ["train", "c.yaml", "-q"])
    assert r.exit_code in (EXIT_OK, EXIT_TRAINING_FAILED), r.output
    run = in_tmp / "runs/w"
    savedfiles.load_model(run / "model.json")
    ckpt = savedfiles.load_checkpoint(run / "checkpoint.json")
    _, history = nio.read_history_text(run / "history.csv")
    assert len(history) >= ckpt.state.epoch
    r = runner.invoke(app, ["predict", str(run / "model.json"), "d.csv", "-o", "p.csv"])
    assert r.exit_code in (EXIT_OK, 2) and "Traceback" not in r.output, r.output


HISTORY_DAMAGE = {
    "renamed-column": lambda t: t.replace("val_loss", "validation_loss", 1),
    "changed-value": lambda t: t.replace(t.splitlines()[2].split(",")[1], "1.5", 1),
    "row-missing": lambda t: "".join(t.splitlines(keepends=True)[:-1]),
    "header-only": lambda t: t.splitlines(keepends=True)[0],
    "empty": lambda t: "",
    "garbage-row": lambda t: t.replace("\n", "\nnot,a,row\n", 1),
    "not-utf8": lambda t: t.encode().replace(b"1", b"\xff", 1),
    "a-row-added": lambda t: t + t.splitlines(keepends=True)[-1],  # a history ahead of its checkpoint
    "short-row": lambda t: t.replace(t.splitlines()[2], t.splitlines()[2].rsplit(",", 2)[0], 1),
    "long-row": lambda t: t.replace(t.splitlines()[2], t.splitlines()[2] + ",7,8", 1),
    "cut-mid-row": lambda t: t[: len(t) - 30],
}


@pytest.mark.parametrize("damage", HISTORY_DAMAGE, ids=list(HISTORY_DAMAGE))
def test_a_damaged_history_is_refused_in_one_line_naming_it(damage, run):
    path = run / "history.csv"
    damaged = HISTORY_DAMAGE[damage](path.read_text())
    path.write_bytes(damaged if isinstance(damaged, bytes) else damaged.encode())
    before = _snapshot(run)
    r = runner.invoke(app, ["train", str(run / "config.yaml"), "--resume", str(run), "-q",
                            "--set", "training.epochs=5"])
    if damage == "a-row-added":  # a kill between the history's and the checkpoint's writes: resumable
        assert r.exit_code == 0, r.output
        return
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and "history.csv" in r.stderr and "Traceback" not in r.output
    assert _snapshot(run) == before
