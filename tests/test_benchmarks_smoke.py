"""The benchmark suite still runs (tiny sizes, no timing asserted: CI machines are noisy)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_benchmark_suite_runs_at_a_tiny_size(tmp_path):
    results = tmp_path / "RESULTS.md"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--write", str(results)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "machine: neurocli " in out and "cores:" in out and "numpy" in out
    for case in ("gradient float64", "gradient float32", "mini-batch epoch", "CSV parse", "served from the cache",
                 "quickstart", "full-batch epoch", "scaling: fitted log-log slope"):
        assert case in out, case
    assert "bit-identical" in out and "are NOT" not in out
    # --write: the same table as a page that names the command that wrote it
    page = results.read_text()
    assert page.startswith("# Benchmark results") and "`python benchmarks/run.py --quick --write " in page
    table = out[:out.index("wrote ")].strip()
    assert table in page
