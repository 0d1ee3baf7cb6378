"""Summarize a finished mutmut run: the survivors with their diffs, then the score line.

Usage: python tools/mutation_summary.py RUN_DIR EQUIVALENTS_FILE

Each line of EQUIVALENTS_FILE names one mutant that cannot change what any caller observes,
by what it changes, not by mutmut's number (which shifts when the code around it changes):
four fields separated by tabs, the function (``neurocli.module.x_name``), the line as written,
the line as mutated (both stripped), and why in one line. Blank lines and ``#`` comments are
ignored. A listed mutant that is no longer a survivor is reported, so the list stays true.
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


def equivalents(path: Path) -> dict[tuple[str, str, str], str]:
    listed = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip() and not line.startswith("#"):
            fields = line.split("\t")
            if len(fields) != 4 or not fields[3].strip():
                sys.exit(f"{path}:{number}: expected function, line, mutated line and reason, tab-separated")
            listed[tuple(f.strip() for f in fields[:3])] = fields[3].strip()
    return listed


def change(run_dir: Path, name: str) -> tuple[tuple[str, str, str], str]:
    """The mutant's key (function, line, mutated line) and its diff, indented."""
    out = subprocess.run(["mutmut", "show", name], cwd=run_dir, capture_output=True, text=True).stdout
    lines = [ln for ln in out.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    old = next((ln[1:].strip() for ln in lines if ln.startswith("-")), "")
    new = next((ln[1:].strip() for ln in lines if ln.startswith("+")), "")
    return (name.rsplit("__mutmut_", 1)[0], old, new), "\n".join(f"    {ln}" for ln in lines)


def main() -> None:
    run_dir, listed = Path(sys.argv[1]), equivalents(Path(sys.argv[2]))
    codes = exit_codes(run_dir)
    unchecked = [k for k, v in codes.items() if v is None]
    if unchecked:
        sys.exit(f"{len(unchecked)} mutants were not checked (the run did not finish), e.g. {unchecked[0]}")
    killed = [k for k, v in codes.items() if v in KILLED]
    survived = sorted(k for k, v in codes.items() if v not in KILLED)
    matched, equivalent = set(), 0
    for name in survived:
        key, diff = change(run_dir, name)
        if key in listed:
            matched.add(key)
            equivalent += 1
        else:
            print(f"survived: {name}\n{diff}")
    for key in sorted(set(listed) - matched):
        print(f"listed as equivalent but not a survivor (killed, or the code changed): {key[0]}: {key[2]}")
    total, k = len(codes), len(killed)
    print(f"mutation score: {k}/{total} killed ({100.0 * k / max(1, total - equivalent):.1f}%), "
          f"{equivalent} equivalent")


if __name__ == "__main__":
    main()
