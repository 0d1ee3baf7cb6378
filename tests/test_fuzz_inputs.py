"""Property tests: malformed CSVs and configs only ever end in a clean error (exit 2, one
located line, no traceback) or a valid run. Bounded in examples and time."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from neurocli.cli import app

runner = CliRunner()

CELLS = st.one_of(
    st.integers(-5, 5).map(str),
    st.floats(-1e3, 1e3, allow_nan=False).map(repr),
    st.sampled_from(["", "NA", "nan", "inf", "-inf", "abc", '"1"', '"a,b"', "1e400", "1e200", " 3 ", "0x10", "1,5", "\"", "\xff"]),
)


@st.composite
def csv_files(draw):
    n_cols = draw(st.integers(1, 4))
    header = draw(st.lists(st.sampled_from(["x1", "x2", "y", "x1", "", "z;w", "y "]), min_size=n_cols, max_size=n_cols))
    if draw(st.booleans()):
        header = ["x1", "x2", "y"][:n_cols] if n_cols >= 3 else header
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=n_cols + 1), min_size=0, max_size=8))
    sep = draw(st.sampled_from([",", ",", ";"]))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join([sep.join(header)] + [sep.join(r) for r in rows]) + draw(st.sampled_from(["", eol, eol + eol]))
    raw = text.encode("utf-8", errors="surrogateescape")
    if draw(st.booleans()):
        raw = raw.replace("\xff".encode(), b"\xff")  # a byte that is not UTF-8
    if draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw
    return raw


def assert_clean(result, run_root: Path, one_line: bool = True):
    """A located error (one line; a config's several mistakes: one line each) or a valid run."""
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        err = result.stderr.strip()
        lines = err.splitlines()
        assert (len(lines) == 1 or not one_line) and all(line.startswith("error: ") for line in lines), err
        assert not (run_root / "runs").exists()
    else:
        assert result.exit_code in (0, 1), (result.exit_code, result.output)
        model = json.loads((run_root / "runs" / "f" / "model.json").read_text())
        assert model["epochs"] >= 0


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=csv_files(), missing=st.sampled_from(["error", "drop"]), standardize=st.booleans())
def test_malformed_csv_gives_a_clean_error_or_a_valid_run(raw, missing, standardize):
    root = Path(tempfile.mkdtemp())
    try:
        (root / "d.csv").write_bytes(raw)
        (root / "c.yaml").write_text(
            f"data: {{path: d.csv, target: y, missing: {missing}, standardize: {str(standardize).lower()}}}\n"
            f"training: {{epochs: 3}}\noutput: {{dir: {root / 'runs' / 'f'}}}\n"
        )
        assert_clean(runner.invoke(app, ["train", str(root / "c.yaml"), "-q"]), root)
    finally:
        shutil.rmtree(root)


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 1000), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.lists(st.integers(-2, 2), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
KEYS = st.sampled_from([
    "data.target", "data.features", "data.standardize", "data.missing", "data.validation_fraction", "data.delimiter",
    "model.weights_init", "model.bias_init", "training.epochs", "training.learning_rate", "training.batch_size",
    "training.shuffle", "training.early_stopping", "training.early_stopping.patience", "training.dtype", "seed",
    "training.learnin_rate", "modle", "data",
])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=3))
def test_mutated_config_gives_a_clean_error_or_a_valid_run(edits):
    import yaml

    root = Path(tempfile.mkdtemp())
    try:
        (root / "d.csv").write_text("x1,x2,y\n1,2,3\n2,1,4\n3,5,6\n4,3,9\n5,8,10\n6,2,12\n")
        config = {"data": {"path": "d.csv", "target": "y"}, "training": {"epochs": 3},
                  "output": {"dir": str(root / "runs" / "f")}}
        for dotted, value in edits:
            node = config
            keys = dotted.split(".")
            for k in keys[:-1]:
                if not isinstance(node.get(k), dict):
                    node[k] = {}
                node = node[k]
            node[keys[-1]] = value
        (root / "c.yaml").write_text(yaml.safe_dump(config))
        result = runner.invoke(app, ["train", str(root / "c.yaml"), "-q"])
        if result.exit_code == 0 and not (root / "runs" / "f").exists():
            raise AssertionError(result.output)
        assert_clean(result, root, one_line=False)
    finally:
        shutil.rmtree(root)
