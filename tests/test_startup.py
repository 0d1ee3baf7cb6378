"""What each fast path of the command line loads: help, the version and a config that fails
its checks start without numpy, pandas and the other heavy libraries; a run imports only
what it uses. Each case is a fresh interpreter that runs the console script's entry and then
lists sys.modules (timings are the benchmarks', not these tests')."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PENGUINS = ROOT / "data" / "penguins.csv"

# never on these paths: a run may need numpy and pandas, none of them the rest
HEAVY = ("numpy", "pandas", "pyarrow", "matplotlib", "dask", "distributed", "fsspec", "sympy")
NEVER_IN_A_RUN = ("matplotlib", "dask", "distributed", "fsspec", "sympy")


def run_listing_modules(args: list[str], cwd: Path) -> tuple[int, str, set[str]]:
    """``neurocli ARGS`` through the console script's entry in a new interpreter: its exit
    code, its stderr and the top-level names and dotted modules it had loaded at the end."""
    code = ("import sys\nsys.argv = ['neurocli', *sys.argv[1:]]\nfrom neurocli.entry import main\ncode = 0\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
            "print('MODULES', ' '.join(sorted(sys.modules)), file=sys.stderr)\nsys.exit(code)")
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    *said, listing = p.stderr.splitlines()
    assert listing.startswith("MODULES "), p.stderr
    return p.returncode, "\n".join(said), set(listing.split()[1:])


def loaded(modules: set[str], names) -> set[str]:
    """Which of the packages ``names`` (or any of their submodules) are in ``modules``."""
    return {n for n in names if any(m == n or m.startswith(n + ".") for m in modules)}


@pytest.mark.parametrize("args", [["--help"], ["--version"]], ids=" ".join)
def test_help_and_version_load_only_typer(args, tmp_path):
    code, _, modules = run_listing_modules(args, tmp_path)
    assert code == 0
    assert not loaded(modules, HEAVY + ("rich", "pydantic", "yaml"))
    assert not {m for m in modules if m.startswith("neurocli.") and m not in
                ("neurocli.entry", "neurocli.cli", "neurocli.errors")}


def test_train_help_loads_no_data_library_nor_the_config_schema(tmp_path):
    code, _, modules = run_listing_modules(["train", "--help"], tmp_path)
    assert code == 0
    # pydantic itself is typer's (it coerces the options with it), the config's models are not built
    assert not loaded(modules, HEAVY + ("rich", "yaml", "neurocli.config"))


def config_errors(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """A config for each error, and the words its one line must hold."""
    bad_key = tmp_path / "bad-key.yaml"
    bad_key.write_text(f"data:\n  path: {PENGUINS}\n  target: body_mass_g\n  colour: blue\n")
    no_data = tmp_path / "no-data.yaml"
    no_data.write_text("data:\n  path: absent.csv\n  target: body_mass_g\n")
    bad_value = tmp_path / "bad-value.yaml"
    bad_value.write_text(f"data: {{path: {PENGUINS}, target: body_mass_g}}\ntraining: {{learning_rate: -1}}\n")
    columns = tmp_path / "columns.yaml"  # the header is read for the columns, with neither numpy nor pandas
    columns.write_text(f"data: {{path: {PENGUINS}, target: body_mas}}\ntraining: {{epochs: 0}}\n")
    return {
        "an unknown key": ([str(bad_key)], "bad-key.yaml, line 4, column 3: unknown key 'data.colour'"),
        "an absent column": ([str(columns)], "data.target: column 'body_mas' is not in penguins.csv"),
        "a missing data file": ([str(no_data)], "no-data.yaml, line 2, column 9: data.path: data file"),
        "a value out of range": ([str(bad_value)], "training.learning_rate must be greater than 0"),
        "a missing config file": ([str(tmp_path / "absent.yaml")], "absent.yaml: config file not found"),
        "a bad --set": ([str(bad_value), "--set", "training.epochs=0"],
                        "--set training.epochs=0: training.epochs must be greater than or equal to 1"),
    }


@pytest.mark.parametrize("case", ["an unknown key", "an absent column", "a missing data file",
                                  "a value out of range", "a missing config file", "a bad --set"])
def test_a_config_error_is_told_before_any_data_library_loads(case, tmp_path):
    args, says = config_errors(tmp_path)[case]
    code, stderr, modules = run_listing_modules(["train", *args], tmp_path)
    assert code == 2 and says in stderr and stderr.startswith("error: "), stderr
    assert "Traceback" not in stderr
    assert not loaded(modules, HEAVY + ("rich", "neurocli.pipeline", "neurocli.data", "neurocli.savedfiles"))


@pytest.mark.parametrize("flag", ["--quiet", "--json"])
def test_the_quickstart_loads_neither_the_plots_nor_the_cluster_nor_the_live_view(flag, tmp_path):
    code, stderr, modules = run_listing_modules(
        ["train", str(ROOT / "configs" / "quickstart.yaml"), flag, "--set", f"output.dir={tmp_path / 'run'}"],
        tmp_path)
    assert code == 0, stderr
    assert (tmp_path / "run" / "model.json").is_file()
    assert {"numpy", "pandas"} <= modules  # the run itself: the data read, the neuron trained
    assert not loaded(modules, NEVER_IN_A_RUN + ("rich.live", "rich.progress", "neurocli.plot",
                                                 "neurocli.engines.dask_engine", "neurocli.gradcheck"))


@pytest.mark.parametrize("users_setting", [None, "logfire"])
def test_the_console_script_skips_pydantics_plugin_search_unless_the_user_chose(users_setting, tmp_path):
    # the search reads every installed package's entry points on each run; a program that
    # imports neurocli keeps its own plugins
    code = ("import os, sys\nsys.argv = ['neurocli', '--version']\nimport neurocli\n"
            "print('API', os.environ.get('PYDANTIC_DISABLE_PLUGINS'))\nfrom neurocli.entry import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('CLI', os.environ.get('PYDANTIC_DISABLE_PLUGINS'))")
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if users_setting:
        env["PYDANTIC_DISABLE_PLUGINS"] = users_setting
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=120)
    said = dict(line.split(" ", 1) for line in p.stdout.splitlines() if line.startswith(("API", "CLI")))
    assert said == {"API": str(users_setting), "CLI": users_setting or "__all__"}, p.stdout + p.stderr
