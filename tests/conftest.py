import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

# Mutation testing runs the suite thousands of times: the same examples each time, so that a
# mutant is killed or not by the tests, not by the draw.
settings.register_profile("mutation", derandomize=True)
settings.load_profile(os.environ.get("NEUROCLI_HYPOTHESIS_PROFILE", "default"))

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
PENGUINS = ROOT / "data" / "penguins.csv"

# Keep output deterministic and free of control codes in CliRunner tests.
os.environ.setdefault("NO_COLOR", "1")
os.environ.setdefault("COLUMNS", "100")
# The data cache lives under the user's cache folder; the tests get a throw-away one.
_CACHE = tempfile.mkdtemp(prefix="neurocli-test-cache-")
os.environ.setdefault("NEUROCLI_CACHE_DIR", _CACHE)
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(_CACHE, "compiled"))  # the fast path's machine code
atexit.register(shutil.rmtree, _CACHE, True)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run with the current directory in a fresh temporary folder (run dirs land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
