"""A self-contained HTML report of a complete run (figures inlined as PNG).

``write_report(run_dir)`` reads only the run directory (no Ray): the
leaderboard, members vs fusions, fusion weights, ROC / PR curves and the
confusion matrix (classification) or predicted-vs-true and residuals
(regression), a calibration curve, Tune's trial history per learner and a
timeline of the fits on each worker, which shows the parallelism.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .artifacts import RunDirectory
from .metrics import to_loss

__all__ = ["parallel_efficiency", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#555}.meta span{margin-right:1.2rem}
table{border-collapse:collapse;font-size:.9rem}
td,th{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child,td:nth-child(2),th:nth-child(2){text-align:left}
tr.best{background:#e8f4ea;font-weight:600}
img{max-width:100%;height:auto}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
.note{color:#777;font-style:italic}
"""

# Sets data-images-loaded on <body> once every figure has decoded: a headless
# browser (tests/) reads it back to prove the page renders.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images-loaded', ok.length + '/' + imgs.length);
});
"""


def parallel_efficiency(fits: pd.DataFrame, slots: int) -> float:
    """Σ fit time / (wall time of the fit stage × slots), from fits.parquet.

    Parameters
    ----------
    fits : DataFrame
        ``fits.parquet`` (``started_at``, ``fit_s``, ``predict_s``).
    slots : int
        Actors that ran fits.

    Returns
    -------
    float
        1.0 when every slot was busy from the first fit's start to the last
        fit's end; NaN without fits.
    """
    if "resumed" in fits.columns:
        fits = fits[~fits["resumed"].astype(bool)]
    if fits.empty or slots < 1:
        return float("nan")
    start = pd.to_datetime(fits["started_at"], utc=True)
    busy = fits["fit_s"] + fits["predict_s"]
    end = start + pd.to_timedelta(busy, unit="s")
    wall = (end.max() - start.min()).total_seconds()
    return float(busy.sum() / max(wall * slots, 1e-9))


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _pred_matrix(frame: pd.DataFrame, classes: list[Any]) -> np.ndarray:
    cols = [f"pred_{c}" for c in classes] if classes else ["pred"]
    return frame[cols].to_numpy(dtype=np.float64)


def _codes(y_true: pd.Series, classes: list[Any]) -> np.ndarray:
    lookup = {str(c): i for i, c in enumerate(classes)}
    return np.array([lookup[str(v)] for v in y_true], dtype=np.int64)


def _fig_models(board: pd.DataFrame, metric: str) -> str:
    import matplotlib.pyplot as plt

    # Bars: the holdout score when the run has a holdout, else the OOF score.
    held = bool(board["holdout_score"].notna().any())
    bar = "holdout_score" if held else "oof_score"
    order = board.sort_values(
        bar, key=lambda s: [to_loss(metric, v) for v in s], ascending=False
    )
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(order) + 1.2))
    colors = ["#4c72b0" if k == "member" else "#dd8452" for k in order["kind"]]
    y = np.arange(len(order))
    ax.barh(y, order[bar], color=colors)
    ax.scatter(order["oof_score"], y, color="black", s=14, zorder=3, label="OOF")
    ax.set_yticks(y, order["model"])
    lo = min(order[bar].min(), order["oof_score"].min())
    hi = max(order[bar].max(), order["oof_score"].max())
    pad = (hi - lo) * 0.15 + 1e-9
    ax.set_xlim(lo - pad, hi + pad)
    what = "holdout" if held else "OOF (nested CV for fusions)"
    ax.set_xlabel(f"{metric} (bars: {what}; dots: OOF / nested CV)")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color="#4c72b0"),
        plt.Rectangle((0, 0), 1, 1, color="#dd8452"),
    ]
    ax.legend(handles, ["member", "fusion"], loc="lower right", fontsize=8)
    ax.set_title("Members vs fusions")
    return _png(fig)


def _fig_weights(weights: pd.DataFrame) -> str:
    import matplotlib.pyplot as plt

    if weights.empty:
        return '<p class="note">No fusion weights in this run.</p>'
    table = weights.groupby(["fusion", "member"], sort=False)["weight"].sum().unstack()
    table = table.fillna(0.0)
    fig, ax = plt.subplots(
        figsize=(1.0 * table.shape[1] + 3, 0.45 * table.shape[0] + 1.5)
    )
    scale = np.abs(table.to_numpy()).max() or 1.0
    ax.imshow(table.to_numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=45, ha="right")
    ax.set_yticks(range(table.shape[0]), table.index)
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            ax.text(
                j, i, f"{table.iat[i, j]:.2g}", ha="center", va="center", fontsize=7
            )
    ax.set_title(
        "Fusion weights (coefficients or selection counts, summed over outputs)"
    )
    return _png(fig)


def _fig_classification(
    hold: pd.DataFrame, models: list[str], classes: list[Any]
) -> list[str]:
    import matplotlib.pyplot as plt
    from sklearn.metrics import (
        auc,
        confusion_matrix,
        precision_recall_curve,
        roc_curve,
    )

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name in models:
        part = hold[hold["model"] == name].sort_values("row_id")
        y = _codes(part["y_true"], classes)
        P = _pred_matrix(part, classes)
        if len(classes) == 2:
            truth, score = (y == 1).astype(int), P[:, 1]
        else:  # micro-average over one-vs-rest
            truth = np.eye(len(classes), dtype=int)[y].ravel()
            score = P.ravel()
        fpr, tpr, _ = roc_curve(truth, score)
        prec, rec, _ = precision_recall_curve(truth, score)
        ax1.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.4f})")
        ax2.plot(rec, prec, label=name)
    ax1.plot([0, 1], [0, 1], "k:", lw=0.8)
    what = f"positive = {classes[1]!r}" if len(classes) == 2 else "micro-average"
    ax1.set(xlabel="false positive rate", ylabel="true positive rate")
    ax1.set_title(f"ROC, holdout ({what})")
    ax2.set(xlabel="recall", ylabel="precision", title=f"Precision-recall ({what})")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    curves = _png(fig)

    best = hold[hold["model"] == models[0]].sort_values("row_id")
    y = _codes(best["y_true"], classes)
    pred = _pred_matrix(best, classes).argmax(axis=1)
    cm = confusion_matrix(y, pred, labels=range(len(classes)))
    k = len(classes)
    size = min(12.0, 2.5 + 0.35 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), [str(c) for c in classes], rotation=90 if k > 6 else 0)
    ax.set_yticks(range(k), [str(c) for c in classes])
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(f"Confusion matrix, holdout ({models[0]})")
    fig.colorbar(im, ax=ax, fraction=0.04)
    return [curves, _png(fig)]


def _fig_calibration(hold: pd.DataFrame, models: list[str], classes: list[Any]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name in models:
        part = hold[hold["model"] == name].sort_values("row_id")
        if classes:
            y = _codes(part["y_true"], classes)
            P = _pred_matrix(part, classes)
            if len(classes) == 2:
                conf, hit = P[:, 1], (y == 1).astype(float)
            else:  # top-label confidence vs accuracy
                conf, hit = P.max(axis=1), (P.argmax(axis=1) == y).astype(float)
        else:
            conf = part["pred"].to_numpy(dtype=float)
            hit = part["y_true"].to_numpy(dtype=float)
        edges = np.unique(np.quantile(conf, np.linspace(0, 1, 11)))
        idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, len(edges) - 2)
        xs = [conf[idx == b].mean() for b in range(len(edges) - 1) if np.any(idx == b)]
        ys = [hit[idx == b].mean() for b in range(len(edges) - 1) if np.any(idx == b)]
        ax.plot(xs, ys, "o-", ms=3, label=name)
    lo, hi = ax.get_xlim()
    ax.plot([lo, hi], [lo, hi], "k:", lw=0.8)
    if classes:
        label = "predicted probability" if len(classes) == 2 else "top-label confidence"
        ax.set(xlabel=label, ylabel="observed frequency")
    else:
        ax.set(xlabel="mean prediction (decile bins)", ylabel="mean target")
    ax.set_title("Calibration, holdout")
    ax.legend(fontsize=8)
    return _png(fig)


def _fig_regression(hold: pd.DataFrame, best: str) -> list[str]:
    import matplotlib.pyplot as plt

    part = hold[hold["model"] == best]
    y = part["y_true"].to_numpy(dtype=float)
    p = part["pred"].to_numpy(dtype=float)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax1.scatter(y, p, s=4, alpha=0.4)
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax1.plot([lo, hi], [lo, hi], "k:", lw=0.8)
    ax1.set(xlabel="true", ylabel="predicted", title=f"Predicted vs true ({best})")
    ax2.scatter(p, y - p, s=4, alpha=0.4)
    ax2.axhline(0, color="k", lw=0.8, ls=":")
    ax2.set(xlabel="predicted", ylabel="residual (true - predicted)", title="Residuals")
    return [_png(fig)]


def _fig_trials(trials: pd.DataFrame, metric: str) -> str:
    import matplotlib.pyplot as plt

    done = trials[trials["status"] == "complete"] if not trials.empty else trials
    if done.empty:
        return '<p class="note">No hyperparameter search in this run (defaults).</p>'
    learners = list(dict.fromkeys(done["learner"]))
    cols = min(3, len(learners))
    rows = int(np.ceil(len(learners) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, key in zip(axes.ravel(), learners, strict=False):
        part = done[done["learner"] == key].reset_index(drop=True)
        scores = part["cv_score"].to_numpy(dtype=float)
        losses = np.array([to_loss(metric, s) for s in scores])
        best = np.minimum.accumulate(losses)
        best_scores = [
            scores[int(np.argmin(losses[: i + 1]))] for i in range(len(best))
        ]
        ax.scatter(range(1, len(scores) + 1), scores, s=10, alpha=0.6)
        ax.step(range(1, len(scores) + 1), best_scores, where="post", color="C3")
        ax.set_title(f"{key} ({len(scores)} finished trials)", fontsize=9)
        ax.set_xlabel("trial", fontsize=8)
        ax.set_ylabel(f"CV {metric}", fontsize=8)
    for ax in axes.ravel()[len(learners) :]:
        ax.axis("off")
    fig.suptitle("Tune trial history (red: best so far)")
    fig.tight_layout()
    return _png(fig)


def _fig_timeline(fits: pd.DataFrame, efficiency: float) -> str:
    import matplotlib.pyplot as plt

    if fits.empty:
        return '<p class="note">No fits.</p>'
    start = pd.to_datetime(fits["started_at"], utc=True)
    t0 = start.min()
    left = (start - t0).dt.total_seconds().to_numpy()
    width = (fits["fit_s"] + fits["predict_s"]).to_numpy(dtype=float)
    lanes = sorted(
        {
            f"{str(n)[:6]}/{w}"
            for n, w in zip(fits["node_id"], fits["worker"], strict=True)
        }
    )
    lane = [
        lanes.index(f"{str(n)[:6]}/{w}")
        for n, w in zip(fits["node_id"], fits["worker"], strict=True)
    ]
    members = list(dict.fromkeys(fits["member"]))
    cmap = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(lanes) + 1.8))
    for x, w, ln, m, k in zip(
        left, width, lane, fits["member"], fits["fold"], strict=True
    ):
        ax.barh(ln, w, left=x, color=cmap(members.index(m) % 20), edgecolor="white")
        if w > 0.06 * max(left + width):
            ax.text(x + w / 2, ln, f"{m}/{k}", ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(lanes)), lanes, fontsize=8)
    ax.set_xlabel("seconds since the first fit started")
    ax.set_ylabel("node/worker")
    title = "Fits per worker"
    if np.isfinite(efficiency):
        title += f" — parallel efficiency {efficiency:.2f}"
    ax.set_title(title)
    return _png(fig)


def _table(board: pd.DataFrame, best: str) -> str:
    extra = [c for c in board.columns if c not in ("model", "kind", "metric", "best")]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["model", "kind", *extra])
    rows = []
    for _, r in board.iterrows():
        cls = ' class="best"' if r["model"] == best else ""
        cells = [html.escape(str(r["model"])), html.escape(str(r["kind"]))]
        for c in extra:
            v = r[c]
            cells.append(f"{v:.4f}" if isinstance(v, float) else html.escape(str(v)))
        rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def write_report(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
) -> Path:
    """Write the run's self-contained ``report.html``.

    Parameters
    ----------
    run_dir : path-like
        A complete run directory (anything else is refused).
    out : path-like, optional
        Where to write; ``<run_dir>/report.html`` by default.

    Returns
    -------
    Path
        The report's path.
    """
    import matplotlib

    matplotlib.use("Agg")
    run = RunDirectory.for_reading(run_dir)
    manifest = run.require_complete()
    fits = run.read_table("fits.parquet")
    timing = manifest.get("timing") or {}
    slots = int(timing.get("slots") or 1)
    efficiency = parallel_efficiency(fits, slots)
    sections = _sections(run, manifest, fits, efficiency)
    meta = {
        "task": manifest["task"],
        "target": manifest["target"],
        "rows": manifest["n_rows"],
        "features": manifest["n_features"],
        "best": manifest["best"],
        "metric": manifest["metric"],
        "fits": len(fits),
        "slots": slots,
        "parallel efficiency": f"{efficiency:.2f}",
        "finished": manifest.get("finished_at"),
    }
    return _write_page(run, manifest, meta, sections, out)


def _sections(
    run: RunDirectory,
    manifest: dict[str, Any],
    fits: pd.DataFrame,
    efficiency: float,
) -> list[tuple[str, list[str]]]:
    """The report's sections: (title, figures and tables as HTML)."""
    board = run.read_table("leaderboard.parquet")
    metric = str(manifest["metric"])
    best = str(manifest["best"])
    classes = list(manifest.get("classes") or [])
    rows, where = _scored_rows(run)
    members = board[board["kind"] == "member"]
    top_member = members.iloc[
        int(np.argmin([to_loss(metric, s) for s in members["oof_score"]]))
    ]["model"]
    shown = [best] if top_member == best else [best, str(top_member)]
    sections = [
        ("Leaderboard", [_table(board, best)]),
        ("Members vs fusions", [_fig_models(board, metric)]),
        ("Fusion weights", [_fig_weights(run.read_table("fusion.parquet"))]),
    ]
    if classes:
        sections.append(
            (
                f"ROC, precision-recall, confusion ({where})",
                _fig_classification(rows, shown, classes),
            )
        )
    else:
        sections.append((f"Predicted vs true ({where})", _fig_regression(rows, best)))
    trials = run.read_table("trials.parquet")
    return [
        *sections,
        (f"Calibration ({where})", [_fig_calibration(rows, shown, classes)]),
        ("Hyperparameter search", [_fig_trials(trials, metric)]),
        ("Parallelism", [_fig_timeline(fits, efficiency)]),
    ]


def _scored_rows(run: RunDirectory) -> tuple[pd.DataFrame, str]:
    """Predictions of rows each model did not train on, and what they are.

    The holdout rows when the run has a holdout; else the OOF rows (members'
    OOF predictions, the fusions' cross-fitted ones).
    """
    if (run.path / "holdout.parquet").is_file():
        return run.read_table("holdout.parquet"), "holdout rows"
    oof = pd.read_parquet(run.path / "oof").rename(columns={"member": "model"})
    parts = [oof]
    if (run.path / "fusion_oof.parquet").is_file():
        parts.append(run.read_table("fusion_oof.parquet"))
    return pd.concat(parts, ignore_index=True), "OOF predictions"


def _write_page(
    run: RunDirectory,
    manifest: dict[str, Any],
    meta: dict[str, Any],
    sections: list[tuple[str, list[str]]],
    out: str | os.PathLike[str] | None,
) -> Path:
    meta_html = "".join(
        f"<span><b>{html.escape(k)}</b> {html.escape(str(v))}</span>"
        for k, v in meta.items()
    )
    body = "".join(
        f"<h2>{html.escape(title)}</h2>" + "".join(parts) for title, parts in sections
    )
    title = f"ensemble run {manifest['run_id']}"
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class='meta'>{meta_html}</p>{body}"
        f"<script>{_SCRIPT}</script></body></html>"
    )
    target = Path(out) if out is not None else run.path / "report.html"
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    if out is None:
        run.sync("report.html")
    return target
