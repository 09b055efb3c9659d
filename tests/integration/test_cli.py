"""The ``ensemble`` CLI: exit codes and the key output lines."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from ensemble.cli import app
from ensemble.config import DEFAULT_FUSIONS
from tests.conftest import make_table

runner = CliRunner()


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "t.csv"
    make_table(300).to_csv(path, index=False)
    return path


@pytest.mark.ray
def test_fit_from_flags(ray_session, data_file, tmp_path):
    out = tmp_path / "runs"
    res = runner.invoke(
        app,
        [
            "fit",
            "--data",
            str(data_file),
            "--target",
            "target",
            "--out",
            str(out),
            "--learners",
            "linear,lgbm",
            "--folds",
            "3",
            "--run-id",
            "r1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "linear" in res.output and "fold 2" in res.output
    assert "leaderboard" in res.output and "run directory:" in res.output
    board = pd.read_parquet(out / "r1" / "leaderboard.parquet")
    # the default portfolio comes with LightGBM
    assert set(board.model) == {
        "linear",
        "lgbm",
        "lgbm_xt",
        "lgbm_large",
        *DEFAULT_FUSIONS,
    }


@pytest.mark.ray
def test_fit_from_yaml_with_flag_override(ray_session, data_file, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {data_file}\ntarget: target\nlearners: [linear, hgb]\n"
        f"n_folds: 4\nout: {tmp_path / 'runs'}\nfusions: [average]\nholdout: 0.2\n"
    )
    res = runner.invoke(app, ["fit", str(cfg), "--folds", "3", "--run-id", "y", "-q"])
    assert res.exit_code == 0, res.output
    assert "fold" not in res.output  # quiet: no per-fit lines
    folds = pd.read_parquet(tmp_path / "runs" / "y" / "folds.parquet")
    assert sorted(folds.fold.unique()) == [-1, 0, 1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--folds", "1"], "`n_folds` must be an integer >= 2; got 1"),
        (["--learners", "lgbm,svm"], "unknown learner 'svm'"),
        (["--target", "nope"], "target column 'nope' is not in the table"),
        (["--time-limit", "-3"], "`time_limit` must be > 0 seconds"),
    ],
)
def test_bad_input_one_line_exit_2(data_file, tmp_path, args, message):
    base = {
        "--data": str(data_file),
        "--target": "target",
        "--out": str(tmp_path / "o"),
    }
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    flat = [x for kv in base.items() for x in kv]
    res = runner.invoke(app, ["fit", *flat])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], res.output
    assert not (tmp_path / "o").exists()


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: x.csv\ntarget: y\nseeed: 3\n")
    res = runner.invoke(app, ["fit", str(cfg)])
    assert res.exit_code == 2
    assert "unknown config key 'seeed' (did you mean 'seed'?)" in res.output


def test_missing_data_file(tmp_path):
    res = runner.invoke(
        app, ["fit", "--data", str(tmp_path / "no.csv"), "--target", "y"]
    )
    assert res.exit_code == 2
    assert "does not exist; check the --data path" in res.output


@pytest.mark.ray
def test_drop_columns_flag_removes_columns_from_the_features(ray_session, tmp_path):
    frame = make_table(300)
    frame["customer_id"] = range(len(frame))  # an id: unique, useless
    frame["flag"] = 1  # constant: dropped with a warning whether named or not
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    args = ["fit", "--data", str(path), "--target", "target", "--out"]
    args += [str(tmp_path / "runs"), "--learners", "linear", "--fusions", "average"]
    res = runner.invoke(
        app, [*args, "--run-id", "a", "-q", "--drop-columns", "customer_id"]
    )
    assert res.exit_code == 0, res.output
    import json

    manifest = json.loads((tmp_path / "runs" / "a" / "manifest.json").read_text())
    assert manifest["dropped_columns"] == {"flag": "constant"}
    assert manifest["schema"]["columns"] == ["x1", "x2", "colour"]
    res = runner.invoke(
        app, [*args, "--run-id", "b", "-q", "--drop-columns", "customer_id,flag"]
    )
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "runs" / "b" / "manifest.json").read_text())
    assert manifest["config"]["drop_columns"] == ["customer_id", "flag"]
    assert manifest["schema"]["columns"] == ["x1", "x2", "colour"]
