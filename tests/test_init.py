"""neurocli init: a scaffolded config that trains at once, with every key and its default, the
columns it leaves out and the rows with gaps named; never over a file; the packaged example."""

import csv
import json

import numpy as np
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from neurocli.cli import app
from neurocli.config import Config
from neurocli.scaffold import example_files, learning_rate
from tests.conftest import PENGUINS, QUICKSTART, ROOT, write

runner = CliRunner()

NA = ("", "NA")


def _columns_by_hand(path):
    """(numeric columns, text columns, rows) of a CSV read with the csv module: a column is
    numeric when every cell that is not empty or NA reads as a float."""
    rows = list(csv.DictReader(open(path, newline="")))

    def numeric(name):
        try:
            [float(r[name]) for r in rows if r[name] not in NA]
            return True
        except ValueError:
            return False

    names = list(rows[0])
    return [c for c in names if numeric(c)], [c for c in names if not numeric(c)], rows


def _trained(config) -> dict:
    r = runner.invoke(app, ["train", str(config), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_init_on_the_penguins_trains_at_once_and_names_what_it_left_out(in_tmp):
    r = runner.invoke(app, ["init", str(PENGUINS), "--target", "body_mass_g", "-o", "configs/p.yaml"])
    assert r.exit_code == 0, r.output
    text = (in_tmp / "configs/p.yaml").read_text()
    numeric, texts, rows = _columns_by_hand(PENGUINS)
    config = yaml.safe_load(text)
    assert config["data"]["features"] == [c for c in numeric if c != "body_mass_g"]
    assert texts == ["species", "island", "sex"]
    assert any(line.strip().startswith("#") and "not numbers: species, island, sex" in line
               for line in text.splitlines())
    # the path is the data's, taken from the config's folder
    assert (in_tmp / "configs" / config["data"]["path"]).resolve() == PENGUINS.resolve()
    assert all(len(line) <= 80 for line in text.splitlines())
    summary = _trained(in_tmp / "configs/p.yaml")
    assert summary["r2"] > 0 and summary["val_r2"] > 0  # better than predicting the mean
    assert summary["stopped"] in ("completed", "early_stopping")


def test_na_cells_give_missing_drop_with_their_count(in_tmp):
    write(in_tmp / "d.csv", "x1,x2,note,y\n1,2,a,3\n2,NA,b,5\n3,1,,4\n4,3,c,\n5,5,d,9\n6,4,e,8\n7,7,f,12\n"
                            "8,6,g,11\n")
    r = runner.invoke(app, ["init", "d.csv", "--target", "y"])
    assert r.exit_code == 0, r.output
    numeric, _, rows = _columns_by_hand(in_tmp / "d.csv")
    gaps = sum(any(row[c] in NA for c in numeric) for row in rows)  # x1, x2 and y: the note is text
    assert gaps == 2  # the NA of x2 and the empty y; the empty note is not a used column
    missing = next(line for line in r.stdout.splitlines() if line.strip().startswith("missing:"))
    assert missing.split("#")[0].split() == ["missing:", "drop"]
    assert f"{gaps} rows have empty or NA cells" in missing
    write(in_tmp / "full.csv", "x1,x2,y\n1,2,3\n2,1,5\n3,3,4\n")
    r = runner.invoke(app, ["init", "full.csv", "--target", "y"])
    assert yaml.safe_load(r.stdout)["data"]["missing"] == "error"


def test_every_key_of_the_schema_is_written_with_its_default_in_its_comment(in_tmp):
    text = runner.invoke(app, ["init", str(PENGUINS), "--target", "body_mass_g"]).stdout
    lines = text.splitlines()
    config = yaml.safe_load(text)

    def comment_of(keys):
        """The comment beside the key's line, and the one above it."""
        indent = "  " * (len(keys) - 1)
        start = 0 if len(keys) == 1 else lines.index(f"{keys[0]}:")
        i = next(i for i in range(start, len(lines)) if lines[i].startswith(f"{indent}{keys[-1]}:"))
        above = lines[i - 1].strip() if lines[i - 1].strip().startswith("#") else ""
        return lines[i].partition("#")[2] + " " + above

    for section, info in Config.model_fields.items():
        model = info.annotation
        fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else None
        for key, field in (fields or {section: info}).items():
            keys = (section, key) if fields else (section,)
            node = config
            for k in keys:
                assert k in node, keys
                node = node[k]
            if field.is_required():
                continue
            default = yaml.safe_dump(field.default, default_flow_style=True).strip().removesuffix("\n...")
            assert f"default: {default}" in comment_of(keys), keys


def test_o_never_overwrites_a_file(in_tmp):
    existing = write(in_tmp / "c.yaml", "mine\n")
    r = runner.invoke(app, ["init", str(PENGUINS), "--target", "body_mass_g", "-o", "c.yaml"])
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("error: c.yaml: already exists") and r.stdout == ""
    assert existing.read_text() == "mine\n"


def test_init_refuses_a_text_target_and_an_absent_one(in_tmp):
    r = runner.invoke(app, ["init", str(PENGUINS), "--target", "species"])
    assert r.exit_code == 2 and "the target must be numeric" in r.stderr and "line 2" in r.stderr
    r = runner.invoke(app, ["init", str(PENGUINS), "--target", "mass"])
    assert r.exit_code == 2 and "target column 'mass' not in the file" in r.stderr
    r = runner.invoke(app, ["init", str(PENGUINS)])
    assert r.exit_code == 2 and "--target" in r.stderr


def _housing(path, n=1500, seed=7):
    """A data set shaped like the California housing census data: counts per block that move
    together (rooms, bedrooms, people, households), coordinates, an income, a text column,
    bedroom counts missing here and there, a target in dollars."""
    rng = np.random.default_rng(seed)
    households = rng.lognormal(6.0, 0.6, n).round()
    rooms = (households * rng.normal(5.3, 0.8, n)).round()
    bedrooms = (rooms * rng.normal(0.21, 0.02, n)).round()
    population = (households * rng.normal(2.9, 0.5, n)).round()
    income = rng.lognormal(1.3, 0.45, n)
    age = rng.integers(1, 53, n)
    lat = rng.uniform(32.5, 42, n)
    lon = -124 + (42 - lat) + rng.normal(0, 0.8, n)
    ocean = rng.choice(["NEAR BAY", "INLAND", "<1H OCEAN", "NEAR OCEAN"], n)
    value = 40000 * income + 900 * age - 80000 * (ocean == "INLAND") + 30000 * rooms / households
    value = np.clip(value + rng.normal(0, 40000, n), 15000, 500001).round()
    lines = ["longitude,latitude,housing_median_age,total_rooms,total_bedrooms,population,households,"
             "median_income,ocean_proximity,median_house_value"]
    for i in range(n):
        bed = "" if i % 97 == 5 else int(bedrooms[i])
        lines.append(f"{lon[i]:.2f},{lat[i]:.2f},{age[i]},{rooms[i]:.0f},{bed},{population[i]:.0f},"
                     f"{households[i]:.0f},{income[i]:.4f},{ocean[i]},{value[i]:.0f}")
    return write(path, "\n".join(lines) + "\n")


def test_a_second_real_shaped_data_set_trains_better_than_the_mean(in_tmp):
    _housing(in_tmp / "housing.csv")
    r = runner.invoke(app, ["init", "housing.csv", "--target", "median_house_value", "-o", "h.yaml"])
    assert r.exit_code == 0, r.output
    config = yaml.safe_load((in_tmp / "h.yaml").read_text())
    assert "ocean_proximity" not in config["data"]["features"] and len(config["data"]["features"]) == 8
    assert config["data"]["missing"] == "drop"
    summary = _trained(in_tmp / "h.yaml")
    assert summary["r2"] > 0.3 and summary["val_r2"] > 0.3


def test_the_learning_rate_is_stable_on_features_that_all_move_together(in_tmp):
    # 12 copies of one signal: the correlation matrix's largest eigenvalue is about 12, so a
    # full-batch step on z-scores is stable below 1/12 = 0.083 (the Hessian of the MSE in w is
    # 2 x the correlation matrix while every sample is active): init's 0.5/12 is, 0.1 overshoots
    rng = np.random.default_rng(0)
    signal = rng.normal(size=400)
    X = signal[:, None] + 0.01 * rng.normal(size=(400, 12))
    y = 50 + 10 * signal + rng.normal(size=400)
    header = ",".join(f"x{j}" for j in range(12)) + ",y"
    write(in_tmp / "same.csv", header + "\n" + "\n".join(",".join(f"{v:.6f}" for v in (*X[i], y[i]))
                                                        for i in range(400)) + "\n")
    runner.invoke(app, ["init", "same.csv", "--target", "y", "-o", "s.yaml"])
    rate = yaml.safe_load((in_tmp / "s.yaml").read_text())["training"]["learning_rate"]
    top = np.linalg.eigvalsh(np.corrcoef(np.round(X, 6), rowvar=False))[-1]
    assert 11.99 < top <= 12 and rate == learning_rate(top) and rate <= 0.5 / top
    assert _trained(in_tmp / "s.yaml")["r2"] > 0.9
    r = runner.invoke(app, ["train", "s.yaml", "--json", "--set", "training.learning_rate=0.1"])
    assert json.loads(r.stdout.strip().splitlines()[-1])["r2"] < 0  # worse than the mean
    # 0.5 / eigenvalue rounded down to two digits: 0.0833.., 0.0416.., 0.00714..
    assert [learning_rate(v) for v in (1, 5, 6, 12, 70)] == [0.1, 0.1, 0.083, 0.041, 0.0071]


def test_the_packaged_example_is_the_repositorys_quickstart():
    files = example_files()
    assert files["configs/quickstart.yaml"] == QUICKSTART.read_bytes()
    assert files["data/penguins.csv"] == (ROOT / "data/penguins.csv").read_bytes()


def test_init_example_writes_the_quickstart_that_trains(in_tmp):
    r = runner.invoke(app, ["init", "--example", "-o", "ex"])
    assert r.exit_code == 0, r.output
    assert (in_tmp / "ex/configs/quickstart.yaml").read_bytes() == QUICKSTART.read_bytes()
    assert (in_tmp / "ex/data/penguins.csv").read_bytes() == PENGUINS.read_bytes()
    r = runner.invoke(app, ["train", "ex/configs/quickstart.yaml", "-q", "--set", "training.epochs=5"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["init", "--example", "-o", "ex"])
    assert r.exit_code == 2 and "already exists" in r.stderr and len(r.stderr.splitlines()) == 1
    r = runner.invoke(app, ["init", "--example"])
    assert r.exit_code == 0 and (in_tmp / "configs/quickstart.yaml").exists()
    r = runner.invoke(app, ["init", str(PENGUINS), "--example"])
    assert r.exit_code == 2 and "--example" in r.stderr


def test_a_text_column_with_no_header_name_is_named_by_its_place(in_tmp):
    # y = 2a + 1 on 12 rows; the second column has no name in the header and holds text
    write(in_tmp / "d.csv", "a,,y\n" + "".join(f"{a},t{a},{2 * a + 1}\n" for a in range(12)))
    r = runner.invoke(app, ["init", "d.csv", "--target", "y", "-o", "c.yaml"])
    assert r.exit_code == 0, r.output
    text = (in_tmp / "c.yaml").read_text()
    assert "left out, not numbers: the unnamed column 2" in text
    assert yaml.safe_load(text)["data"]["features"] == ["a"]
    assert _trained(in_tmp / "c.yaml")["stopped"] in ("completed", "early_stopping")
