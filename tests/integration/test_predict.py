"""Batch prediction through Ray Data, and loading a fitted run."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ensemble.artifacts import RunDirectory
from ensemble.cli import app
from ensemble.config import RunConfig
from ensemble.exceptions import DataError, RunStateError
from ensemble.model import load
from ensemble.predict import is_small, predict_file
from ensemble.runner import fit_run
from tests.conftest import make_table

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def fitted(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pred")
    path = tmp / "train.parquet"
    make_table(500).to_parquet(path)
    cfg = RunConfig(
        data=str(path),
        target="target",
        out=str(tmp / "runs"),
        n_folds=3,
        learners=("linear", "lgbm", "mlp"),
        portfolio=False,
        holdout=0.2,
        fusions=("average", "stacking_lgbm", "neural"),
        learner_params={
            "lgbm": {"max_rounds": 100},
            "mlp": {"width": 32, "max_epochs": 4},
        },
        run_id="r",
        report=False,
        keep_models="all",  # predictions of single members are compared too
    )
    return fit_run(cfg)


def test_predict_file_matches_in_process_predictions_and_keeps_order(fitted, tmp_path):
    new = make_table(3000, seed=7).drop(columns=["target"])
    new.loc[5, "colour"] = "purple"  # unseen category: handled, not an error
    new["extra"] = 1  # an unknown column: ignored only when asked
    src = tmp_path / "new.parquet"
    new.to_parquet(src)
    assert is_small(str(src))
    expect = load(fitted.run_dir.path).predict_frame(new)
    files = {}
    for local in (False, True):  # Ray Data's actors, and this process
        files[local] = tmp_path / f"pred_{local}.parquet"
        n = predict_file(
            fitted.run_dir.path,
            str(src),
            files[local],
            batch_size=500,
            ignore_extra_columns=True,
            local=local,
        )
        assert n == 3000
        pred = pd.read_parquet(files[local])
        assert list(pred.row_id) == list(range(3000))
        np.testing.assert_allclose(pred.pred_yes, expect.pred_yes, rtol=1e-12)
        assert (pred.label == expect.label).all()
        assert set(pred.label) <= {"no", "yes"}
    pd.testing.assert_frame_equal(
        pd.read_parquet(files[False]), pd.read_parquet(files[True])
    )


def test_small_inputs_counted_in_rows_of_parquet_and_bytes_of_csv(
    tmp_path, monkeypatch
):
    import ensemble.predict as predict

    src = tmp_path / "new.parquet"
    make_table(300, seed=7).drop(columns=["target"]).to_parquet(src)
    csv = tmp_path / "new.csv"
    csv.write_text("x1,x2,colour\n" * 10)
    assert is_small(str(src)) and is_small(str(csv))
    monkeypatch.setattr(predict, "LOCAL_ROWS", 299)
    monkeypatch.setattr(predict, "LOCAL_CSV_BYTES", csv.stat().st_size - 1)
    assert not is_small(str(src)) and not is_small(str(csv))
    # rows the caller counted already are used as they are (the CLI's bar)
    assert predict.parquet_rows(str(src)) == 300
    assert is_small(str(src), rows=299) and not is_small(str(src), rows=300)


@pytest.mark.parametrize("model", ["linear", "lgbm", "stacking_lgbm", "mlp", "neural"])
def test_batches_change_no_prediction_beyond_the_stated_tolerance(
    fitted, tmp_path, model
):
    """Trees (and a stack over them) predict a row the same to the bit in any
    batch; a linear model or a torch network (the MLP, neural fusion) runs in
    float64, where the order of a matrix product's sums (which depends on the
    rows beside it) moves its output by ~1e-16..1e-14: ``ensemble predict``
    equals in-process prediction to 1e-12 (relative), one row at a time as in
    batches of 500. (In float32 the same rows moved by ~1e-7.) Through Ray
    Data's actors for the network, in this process for all (both give the same
    file: the test above)."""
    new = make_table(1000, seed=11).drop(columns=["target"])
    src = tmp_path / "new.parquet"
    new.to_parquet(src)
    m = load(fitted.run_dir.path, model)
    whole = m.predict_frame(new).pred_yes.to_numpy()
    single = np.concatenate(
        [m.predict_frame(new.iloc[i : i + 1]).pred_yes.to_numpy() for i in range(50)]
    )
    for local in (True, False) if model == "neural" else (True,):
        out = tmp_path / f"pred_{local}.parquet"
        predict_file(
            fitted.run_dir.path, str(src), out, model=model, batch_size=500, local=local
        )
        got = pd.read_parquet(out).pred_yes.to_numpy()
        if model in ("linear", "mlp", "neural"):
            np.testing.assert_allclose(got, whole, rtol=1e-12)
        else:
            np.testing.assert_array_equal(got, whole)
    if model in ("linear", "mlp", "neural"):
        np.testing.assert_allclose(single, whole[:50], rtol=1e-12)
    else:
        np.testing.assert_array_equal(single, whole[:50])


def test_predictions_of_holdout_rows_equal_holdout_parquet(fitted, tmp_path):
    run = fitted.run_dir
    manifest = run.read_manifest()
    frame = pd.read_parquet(manifest["config"]["data"])
    for model in ("linear", "stacking_lgbm", "mlp"):
        hold = run.read_table("holdout.parquet")
        hold = hold[hold.model == model].sort_values("row_id")
        # holdout.parquet holds the fold models' predictions (the leaderboard's)
        got = load(run.path, model, folds=True).predict_frame(frame.iloc[hold.row_id])
        np.testing.assert_allclose(got.pred_yes, hold.pred_yes, rtol=1e-9)


def test_id_column_csv_and_cli(fitted, tmp_path):
    new = make_table(200, seed=3).drop(columns=["target"])
    new.insert(0, "customer", [f"c{i}" for i in range(200)])
    src = tmp_path / "new.csv"
    new.to_csv(src, index=False)
    out = tmp_path / "p.parquet"
    res = CliRunner().invoke(
        app,
        [
            "predict",
            str(fitted.run_dir.path),
            "--data",
            str(src),
            "--out",
            str(out),
            "--id-column",
            "customer",
            "--model",
            "linear",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "predicted 200 rows" in res.output
    pred = pd.read_parquet(out)
    assert list(pred.customer) == list(new.customer)
    assert "row_id" not in pred.columns


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda f: f.drop(columns=["x2"]), r"columns missing for prediction: \['x2'\]"),
        (lambda f: f.assign(x1=["a"] * len(f)), "column 'x1' was numeric in training"),
    ],
)
def test_bad_prediction_input(fitted, tmp_path, change, match):
    src = tmp_path / "bad.parquet"
    change(make_table(50).drop(columns=["target"])).to_parquet(src)
    with pytest.raises(DataError, match=match):
        predict_file(fitted.run_dir.path, str(src), tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()


def test_incomplete_run_and_unknown_model(fitted, tmp_path):
    with pytest.raises(RunStateError, match="model 'nope' is not in run"):
        load(fitted.run_dir.path, "nope")
    broken = RunDirectory.create(tmp_path, "half")
    broken.write_manifest(run_id="half", status="running")
    with pytest.raises(RunStateError, match="run 'half' is running, not complete"):
        load(broken.path)
