"""Ours against AutoGluon on every shared table, at one time limit.

For each table: one stratified 80/20 split (seed 0). Both systems train on the
same 80% and are scored on the same 20%, which neither saw. Ours runs as a
user would run it (``ensemble fit --time-limit S`` in a subprocess, then the
fitted run predicts the test rows); AutoGluon runs ``TabularPredictor.fit``
with ``presets="best_quality"`` and ``"medium_quality"`` at the same limit in
its own venv (``make bench-autogluon``). Wall time and the peak RSS of each
process tree are recorded, and for ours the run directory's size and the
chosen model as deployed: its exported bundle's size, load time, one-row
latency and the time for 10,000 rows (in-process, no Ray).

AutoGluon's rows depend only on its version, the split and the machine: they
are kept in ``benchmarks/results/autogluon-<table>-<preset>-tl<S>.parquet``
and reused (``--rerun-autogluon`` measures them again). Ours are measured on
every call.

Usage::

    python benchmarks/quality.py [--time-limit 300] [--tables adult,letter]
        [--systems ours,best_quality,medium_quality]

Writes ``benchmarks/results/quality-tl<S>.parquet`` (one row per table and
system) and prints the table as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _measure import latency, run_measured  # noqa: E402

from ensemble.data import infer_task  # noqa: E402
from ensemble.metrics import default_metric, score  # noqa: E402
from ensemble.model import load  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"
#: table -> (file, target column)
TABLES = {
    "adult": ("adult.tsv.gz", "target"),
    "bank_marketing": ("bank_marketing.csv", "y"),
    "letter": ("letter.tsv.gz", "target"),
    "california_housing": ("california_housing.tsv.gz", "target"),
    "house_8L": ("house_8L.tsv.gz", "target"),
    "pendigits": ("pendigits.tsv.gz", "target"),
    "krkopt": ("krkopt.tsv.gz", "target"),
    "shuttle": ("shuttle.tsv.gz", "target"),
    "sleep": ("sleep.tsv.gz", "target"),
    "fars": ("fars.tsv.gz", "target"),
}
AG_METRIC = {
    "roc_auc": "roc_auc",
    "log_loss": "log_loss",
    "rmse": "root_mean_squared_error",
}
AG_PYTHON = ROOT / ".venv-autogluon" / "bin" / "python"
ENSEMBLE = ROOT / ".venv" / "bin" / "ensemble"


def split(name: str, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, str, str]:
    """The table's 80/20 split (stratified for classes), its target and task."""
    file, target = TABLES[name]
    path = SHARED / file
    frame = pd.read_csv(path) if file.endswith(".csv") else pd.read_csv(path, sep="\t")
    task = infer_task(frame[target])
    strat = frame[target] if task != "regression" else None
    train, test = train_test_split(
        frame, test_size=0.2, random_state=seed, shuffle=True, stratify=strat
    )
    return train.reset_index(drop=True), test.reset_index(drop=True), target, task


def encode(y: pd.Series, classes: list[Any]) -> np.ndarray:
    """Class labels as the codes of ``classes`` (the run's order)."""
    index = {str(c): i for i, c in enumerate(classes)}
    return y.astype(str).map(index).to_numpy(dtype=int)


def run_ours(
    train: pd.DataFrame,
    test: pd.DataFrame,
    target: str,
    time_limit: float,
    work: Path,
    extra: list[str],
    big_rows: int = 0,
    keep: Path | None = None,
) -> list[dict[str, Any]]:
    """``ensemble fit`` on train; the chosen model and each member on test.

    The chosen model is scored as it predicts by default (its members
    refitted on every row, when the run refits) and with its members' fold
    models (``test_score_folds``); each member with its fold models, and a
    refitted member with its refit too (``test_score_refit``: which members'
    refits beat their fold models, table by table). With
    ``keep``, the run's top-level files (manifest, fits, leaderboard, OOF…),
    ``oof/`` and the fit's stderr (``fit.log``) are copied there, to look into
    later.
    """
    train.to_parquet(work / "train.parquet")
    cmd = [
        str(ENSEMBLE),
        "fit",
        "--data",
        str(work / "train.parquet"),
        "--target",
        target,
        "--out",
        str(work / "runs"),
        "--run-id",
        "ours",
        "--time-limit",
        str(time_limit),
        # every member is scored on the test rows below; the size a default
        # run keeps (its chosen model's members) is reckoned from this one
        "--keep-models",
        "all",
        # kept runs keep the stage-by-stage log (INFO) in fit.log, to look into
        "-v" if keep is not None else "-q",
        *extra,
    ]
    log = keep / "fit.log" if keep is not None else None
    _, wall, peak = run_measured(cmd, "ensemble fit", log)
    run = work / "runs" / "ours"
    manifest = json.loads((run / "manifest.json").read_text())
    board = pd.read_parquet(run / "leaderboard.parquet").set_index("model")
    classes = list(manifest["classes"] or [])
    metric = str(manifest["metric"])
    y = encode(test[target], classes) if classes else test[target].to_numpy(float)
    features = test.drop(columns=[target])

    def test_score(model: str, folds: bool) -> float:
        pred = load(run, model, folds=folds).predict_proba(features)
        return score(metric, y, pred, len(classes))

    best = manifest["best"]
    rows: list[dict[str, Any]] = []
    for model in [best, *manifest["members"]]:
        chosen = model == best and not rows
        rows.append(
            {
                "system": "ours" if chosen else "ours member",
                "model": model,
                "metric": metric,
                "test_score": test_score(model, folds=not chosen),
                "oof_score": float(board.loc[model, "oof_score"]),
                "wall_s": wall if chosen else np.nan,
                "peak_rss_mib": peak if chosen else np.nan,
            }
        )
    rows[0]["test_score_folds"] = test_score(best, folds=True)
    refitted = _refitted(manifest)
    for row in rows[1:]:
        if row["model"] in refitted:
            row["test_score_refit"] = test_score(row["model"], folds=False)
    rows[0]["refitted"] = ",".join(refitted)
    rows[0]["run_dir_mib"] = _default_size(run, manifest) / 2**20
    # every member's fold models and the refits: `--keep-models all`
    rows[0]["run_dir_all_mib"] = _size(run) / 2**20
    rows[0].update(deployment(run, work / "bundle", features, big_rows))
    rows[0]["parallel_efficiency"] = manifest["timing"]["parallel_efficiency"]
    rows[0]["members"] = ",".join(manifest["members"])
    for row in rows:
        row["commit"] = COMMIT
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        for f in run.iterdir():
            if f.is_file():
                shutil.copy(f, keep / f.name)
        # the members' OOF predictions: what a new fusion is tried on offline
        if (run / "oof").is_dir():
            shutil.copytree(run / "oof", keep / "oof", dirs_exist_ok=True)
    return rows


def _commit() -> str:
    """The product code's commit, ``+dirty`` when the tree has changes."""
    import subprocess

    def git(*a: str) -> str:
        return subprocess.run(
            ["git", *a], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (
        "+dirty" if git("status", "--porcelain", "ensemble") else ""
    )


#: Taken once, at the start: the editable install means later edits would
#: change the code of the runs still to come, which the row could not tell.
COMMIT = _commit()


def _refitted(manifest: dict[str, Any]) -> list[str]:
    """The members the run refitted on every row (none when it did not refit)."""
    return list((manifest.get("refit") or {}).get("members") or [])


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _default_size(run: Path, manifest: dict[str, Any]) -> int:
    """Bytes the run would hold with the default ``--keep-models chosen``.

    All of it less the fold models of members its chosen model does not
    use, the fold models of the members refitted on every row, and the other
    fusions' files.
    """
    chosen = load(run, manifest["best"])
    needed = {m for m in chosen.member_names_ if m not in chosen.unused_}
    models = run / "models"
    gone = [models / m for m in manifest["members"] if m not in needed]
    for m in _refitted(manifest):
        gone += [d for d in (models / m).iterdir() if d.name != "full"]
    fusions = models / "fusion"
    if fusions.is_dir():
        gone += [f for f in fusions.iterdir() if f.stem != manifest["best"]]
    return _size(run) - sum(_size(p) for p in gone)


def deployment(
    run: Path, dest: Path, features: pd.DataFrame, big_rows: int = 0
) -> dict[str, float]:
    """The chosen model as deployed: bundle size, load, one row, 10,000 rows.

    In-process, as a service would hold it: ``ensemble.load`` of the exported
    bundle (no Ray), then the median of 5 one-row predictions and one
    prediction of 10,000 test rows (repeated when the test has fewer). With
    ``big_rows``, also ``ensemble predict`` of that many rows (the test rows
    repeated) from a Parquet file: the whole command, Ray's start included.
    """
    from ensemble.bundle import export

    export(run, dest)
    bundle_mib = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    t0 = time.perf_counter()
    model = load(dest)
    load_s = time.perf_counter() - t0
    out = {
        "bundle_mib": bundle_mib / 2**20,
        "load_s": load_s,
        **latency(model.predict_proba, features),
    }
    if big_rows:
        big = dest.parent / "big.parquet"
        features.iloc[np.arange(big_rows) % len(features)].reset_index(
            drop=True
        ).to_parquet(big)
        cmd = [str(ENSEMBLE), "predict", str(dest), "--data", str(big)]
        cmd += ["--out", str(dest.parent / "big-pred.parquet"), "-q"]
        _, out["rows_big_s"], out["predict_rss_mib"] = run_measured(
            cmd, "ensemble predict"
        )
        out["big_rows"] = big_rows
    return out


def run_autogluon(
    train: pd.DataFrame,
    test: pd.DataFrame,
    target: str,
    task: str,
    preset: str,
    time_limit: float,
    work: Path,
    *,
    deploy: bool = False,
    big_rows: int = 0,
) -> dict[str, Any]:
    """AutoGluon ``preset`` at ``time_limit`` in its own venv; its test score.

    With ``deploy``, also its predictor as deployed (size on disk, load, one
    row, 10,000 rows and ``big_rows`` rows, in-process), as for ours.
    """
    train.to_parquet(work / "train.parquet")
    test.to_parquet(work / "test.parquet")
    metric = default_metric(task)
    cmd = [
        str(AG_PYTHON),
        str(HERE / "_autogluon.py"),
        "--train",
        str(work / "train.parquet"),
        "--test",
        str(work / "test.parquet"),
        "--label",
        target,
        "--problem-type",
        task,
        "--eval-metric",
        AG_METRIC[metric],
        "--presets",
        preset,
        "--time-limit",
        str(time_limit),
        "--path",
        str(work / f"ag-{preset}"),
        "--out",
        str(work / "pred.parquet"),
    ]
    if deploy:
        cmd += ["--deployment", "--big-rows", str(big_rows)]
    out, wall, peak = run_measured(cmd, "AutoGluon")
    info = json.loads(out.strip().splitlines()[-1])
    pred = pd.read_parquet(work / "pred.parquet")
    shutil.rmtree(work / f"ag-{preset}", ignore_errors=True)
    if task == "regression":
        P: np.ndarray = pred["pred"].to_numpy()
        y: np.ndarray = test[target].to_numpy(float)
        k = 0
    else:
        seen = set(train[target].unique().tolist())
        classes = sorted(seen, key=lambda c: (str(type(c)), c))
        P = pred[[f"pred_{c}" for c in classes]].to_numpy()
        y = encode(test[target], classes)
        k = len(classes)
    return {
        "system": f"autogluon {preset}",
        "model": info["best"],
        "metric": metric,
        "test_score": score(metric, y, P, k),
        "wall_s": wall,
        "peak_rss_mib": peak,
        "autogluon_version": info.get("version"),
        **(
            {
                "bundle_mib": info["dir_mib"],
                "load_s": info["load_s"],
                "one_row_ms": info["one_row_ms"],
                "rows_10k_s": info["rows_10k_s"],
                "rows_big_s": info.get("rows_big_s", np.nan),
                "big_rows": big_rows or np.nan,
            }
            if deploy
            else {}
        ),
    }


def markdown(table: pd.DataFrame) -> str:
    """One line per table: ours, best member, AutoGluon best and medium."""
    lines = [
        "| table | metric | ours | our best member | AG best_quality | AG medium |"
        " wall s: ours / AG best / AG medium | peak RSS MiB: ours / AG best |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, part in table.groupby("dataset", sort=False):
        by = dict(list(part.groupby("system")))

        def get(system: str, col: str = "test_score", by: dict = by) -> float:
            g = by.get(system)
            return float(g[col].iloc[0]) if g is not None else float("nan")

        members = by.get("ours member")
        metric = part["metric"].iloc[0]
        best_member = float("nan")
        if members is not None:
            losses = members.test_score * (1 if metric != "roc_auc" else -1)
            best_member = float(members.test_score.iloc[int(np.argmin(losses))])
        lines.append(
            f"| {name} | {metric} | {get('ours'):.5g} | {best_member:.5g} | "
            f"{get('autogluon best_quality'):.5g} | "
            f"{get('autogluon medium_quality'):.5g} | "
            f"{get('ours', 'wall_s'):.0f} / "
            f"{get('autogluon best_quality', 'wall_s'):.0f} / "
            f"{get('autogluon medium_quality', 'wall_s'):.0f} | "
            f"{get('ours', 'peak_rss_mib'):.0f} / "
            f"{get('autogluon best_quality', 'peak_rss_mib'):.0f} |"
        )
    return "\n".join(lines)


def deployment_markdown(table: pd.DataFrame) -> str:
    """One line per table and system: the chosen model as deployed."""
    lines = [
        "| table | system | chosen | test score: as deployed / fold models |"
        " run dir MiB | bundle MiB | load s | one row ms | 10,000 rows s |"
        " big rows s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    deployed = table[table.system.isin(["ours", "autogluon best_quality"])]
    for _, r in deployed.iterrows():
        if "one_row_ms" not in r or r.one_row_ms != r.one_row_ms:
            continue
        folds = r.get("test_score_folds", np.nan)
        size = r.get("run_dir_mib", np.nan)
        big = r.get("rows_big_s", np.nan)
        lines.append(
            f"| {r.dataset} | {r.system} | {r.model} | {r.test_score:.5g} / "
            f"{folds:.5g} | {size:.1f} | {r.bundle_mib:.1f} | {r.load_s:.2f} | "
            f"{r.one_row_ms:.0f} | {r.rows_10k_s:.2f} | {big:.1f} |"
        )
    return "\n".join(lines)


def _merge_results(path: Path, table: pd.DataFrame) -> None:
    """Write ``table`` into ``path``, replacing only its (table, system) rows.

    A call measures some tables; the rows of the others stay as they were
    (each row says its ``commit``).
    """
    if path.is_file():
        old = pd.read_parquet(path)
        key = ["dataset", "system"]
        done = pd.MultiIndex.from_frame(old[key]).isin(
            pd.MultiIndex.from_frame(table[key])
        )
        table = pd.concat([old[~done], table], ignore_index=True)
    table.to_parquet(path)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--time-limit", type=float, default=300.0)
    p.add_argument("--tables", default=",".join(TABLES))
    p.add_argument("--systems", default="ours,best_quality,medium_quality")
    p.add_argument("--rerun-autogluon", action="store_true")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--fit-args", default="", help="extra flags for our `ensemble fit`")
    p.add_argument(
        "--keep-run-files",
        default=None,
        help="copy each of our runs' top-level files (manifest, fits, "
        "leaderboard, OOF) into DIR/<table>/",
    )
    p.add_argument(
        "--deployment",
        action="store_true",
        help="measure AutoGluon's predictor as deployed too (refits it when its "
        "cached row lacks that)",
    )
    p.add_argument(
        "--big-rows",
        type=int,
        default=0,
        help="also predict this many rows: `ensemble predict` of a Parquet "
        "file for ours, in-process predict for AutoGluon",
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tl = int(args.time_limit)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    frames = []
    for name in [t.strip() for t in args.tables.split(",") if t.strip()]:
        train, test, target, task = split(name)
        rows: list[dict[str, Any]] = []
        for system in systems:
            with tempfile.TemporaryDirectory(prefix=f"quality-{name}-") as tmp:
                work = Path(tmp)
                if system == "ours":
                    extra = args.fit_args.split()
                    keep = (
                        Path(args.keep_run_files) / name
                        if args.keep_run_files
                        else None
                    )
                    rows += run_ours(
                        train,
                        test,
                        target,
                        args.time_limit,
                        work,
                        extra,
                        args.big_rows,
                        keep,
                    )
                    continue
                cache = out / f"autogluon-{name}-{system}-tl{tl}.parquet"
                cached = pd.read_parquet(cache) if cache.exists() else None
                if (
                    cached is not None
                    and not args.rerun_autogluon
                    and (not args.deployment or "one_row_ms" in cached)
                ):
                    rows += cached.to_dict("records")
                    continue
                row = run_autogluon(
                    train,
                    test,
                    target,
                    task,
                    system,
                    args.time_limit,
                    work,
                    deploy=args.deployment,
                    big_rows=args.big_rows,
                )
                row["date"] = date.today().isoformat()
                pd.DataFrame([row]).to_parquet(cache)
                rows.append(row)
            print(f"{name} {system}: done", flush=True)
        part = pd.DataFrame(rows)
        part.insert(0, "dataset", name)
        part["n_train"], part["n_test"] = len(train), len(test)
        frames.append(part)
        table = pd.concat(frames, ignore_index=True)
        _merge_results(out / f"quality-tl{tl}.parquet", table)
        print(markdown(part), flush=True)
    table = pd.concat(frames, ignore_index=True)
    print(markdown(table))
    if "ours" in systems:
        print(deployment_markdown(table))
    return table


if __name__ == "__main__":
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    main()
