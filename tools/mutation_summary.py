"""Summarize a finished mutmut run: the survivors with their diffs, then the score line.

Usage: python tools/mutation_summary.py RUN_DIR EQUIVALENTS_FILE

Each line of EQUIVALENTS_FILE is ``mutant-name  reason`` (blank lines and ``#`` comments
ignored): a mutant that cannot change what any caller observes, with why in one line. A
listed mutant that was killed, or that no longer exists, is reported, so the list stays true.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

KILLED = {1, 3, -11, -9, 24, -24, 36, 152, 255}  # failed, errored, crashed or timed out


def exit_codes(run_dir: Path) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for meta in sorted((run_dir / "mutants").rglob("*.py.meta")):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def equivalents(path: Path) -> dict[str, str]:
    listed = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            if not reason.strip():
                sys.exit(f"{path}: {name} has no reason")
            listed[name] = reason.strip()
    return listed


def diff(run_dir: Path, name: str) -> str:
    out = subprocess.run(["mutmut", "show", name], cwd=run_dir, capture_output=True, text=True).stdout
    return "\n".join(f"    {ln}" for ln in out.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---"))


def main() -> None:
    run_dir, listed = Path(sys.argv[1]), equivalents(Path(sys.argv[2]))
    codes = exit_codes(run_dir)
    unchecked = [k for k, v in codes.items() if v is None]
    if unchecked:
        sys.exit(f"{len(unchecked)} mutants were not checked (the run did not finish), e.g. {unchecked[0]}")
    killed = [k for k, v in codes.items() if v in KILLED]
    survived = [k for k, v in codes.items() if v not in KILLED]
    equivalent = [k for k in survived if k in listed]
    for name in sorted(set(listed) - set(codes)):
        print(f"listed as equivalent but no such mutant (renumbered?): {name}")
    for name in sorted(set(listed) & set(killed)):
        print(f"listed as equivalent but killed: {name}")
    for name in sorted(set(survived) - set(listed)):
        print(f"survived: {name}\n{diff(run_dir, name)}")
    total, k, e = len(codes), len(killed), len(equivalent)
    print(f"mutation score: {k}/{total} killed ({100.0 * k / max(1, total - e):.1f}%), {e} equivalent")


if __name__ == "__main__":
    main()
