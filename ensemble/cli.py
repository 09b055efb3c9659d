"""The ``ensemble`` command line (thin: parse, connect, call the library).

Errors a user can fix (``EnsembleError``) print one line and exit 2 (bad usage,
config or data) or 1 (a run that failed); a traceback only with ``--verbose``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .exceptions import ConfigError, EnsembleError

app = typer.Typer(
    name="ensemble",
    help="Distributed ensemble training on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@app.callback()
def _root() -> None:
    """Distributed ensemble training on Ray."""


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 1 else logging.INFO
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    if verbose <= 1:
        logging.getLogger("ensemble").setLevel(logging.WARNING)


def _fail(exc: BaseException, verbose: int) -> None:
    if verbose >= 2:
        err_console.print_exception()
    code = exc.exit_code if isinstance(exc, EnsembleError) else 1
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    err_console.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def fit(
    config_file: Annotated[
        Path | None, typer.Argument(help="YAML config; flags override its values.")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Parquet/CSV/TSV path or sklearn:NAME.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Target column.")] = None,
    out: Annotated[
        str | None, typer.Option(help="Parent directory of run directories.")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="auto, binary, multiclass or regression.")
    ] = None,
    learners: Annotated[
        str | None, typer.Option(help="Comma-separated learner keys.")
    ] = None,
    portfolio: Annotated[
        bool | None,
        typer.Option(
            "--portfolio/--no-portfolio",
            help="Fit each family's portfolio configurations beside its defaults.",
        ),
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option(
            help="Fold assignments per member (repeated bagging); default: as "
            "time allows under --time-limit, else 1."
        ),
    ] = None,
    fusions: Annotated[
        str | None, typer.Option(help="Comma-separated fusion keys.")
    ] = None,
    folds: Annotated[int | None, typer.Option(help="Number of CV folds.")] = None,
    holdout: Annotated[
        float | None,
        typer.Option(
            help="Fraction of rows held out to score on (default 0: every row "
            "trains; models are scored on OOF predictions)."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    time_limit: Annotated[
        float | None, typer.Option(help="Budget of the run in seconds.")
    ] = None,
    tune: Annotated[
        bool | None,
        typer.Option(
            "--tune/--no-tune",
            help="Search hyperparameters (default: when --time-limit or --n-trials).",
        ),
    ] = None,
    n_trials: Annotated[
        int | None, typer.Option(help="Tune trials per learner family.")
    ] = None,
    top_n: Annotated[
        int | None, typer.Option(help="Tuned configs per family kept as members.")
    ] = None,
    search: Annotated[
        str | None, typer.Option(help="Tune search: optuna or random.")
    ] = None,
    metric: Annotated[str | None, typer.Option(help="Ranking metric.")] = None,
    drop_columns: Annotated[
        str | None,
        typer.Option(help="Comma-separated columns that are not features (ids)."),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray address (default: RAY_ADDRESS or local).")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Name of the run directory.")
    ] = None,
    num_cpus: Annotated[
        int | None, typer.Option(help="CPUs of a new local Ray.")
    ] = None,
    object_store_memory: Annotated[
        str | None,
        typer.Option(help="Object store of a new local Ray, e.g. 2GB or 512MB."),
    ] = None,
    warm_start: Annotated[
        str | None,
        typer.Option(
            help="An earlier complete run whose MLP weights this run starts from "
            "(same feature schema)."
        ),
    ] = None,
    report: Annotated[
        bool | None,
        typer.Option(
            "--report/--no-report", help="Write report.html at the end (default)."
        ),
    ] = None,
    keep_models: Annotated[
        str | None,
        typer.Option(
            help="Models to keep: 'chosen' (what the chosen model needs to "
            "predict, the default) or 'all' (every member's fold models too)."
        ),
    ] = None,
    refit: Annotated[
        bool | None,
        typer.Option(
            "--refit/--no-refit",
            help="Refit the chosen model's members on every row and predict with "
            "them: one model per member instead of one per fold (default).",
        ),
    ] = None,
    config_json: Annotated[
        str | None,
        typer.Option(hidden=True, help="The whole config as JSON (ensemble submit)."),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue an interrupted run directory: finished trials and fits "
            "are kept. Its own config is used."
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only the final summary.")
    ] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="More detail; -vv shows Ray's logs and tracebacks.",
        ),
    ] = 0,
) -> None:
    """Fit base learners on Ray, fuse them, and write a run directory."""
    from .config import RunConfig, resolve
    from .runner import resume_config

    params = dict(locals())  # every flag, by parameter name
    level = 0 if quiet else 1 + verbose
    _setup_logging(level)
    try:
        store = _parse_bytes(object_store_memory) if object_store_memory else None
        if resume is not None and config_file is not None:
            raise ConfigError("--resume takes the run's own config; drop CONFIG.yaml")
        overrides = _overrides(params)
        if resume is not None:
            config = resume_config(resume, overrides)
            if _already_complete(resume):
                return
        elif config_json is not None:
            config = RunConfig.from_dict(
                {**json.loads(config_json), **_given(overrides)}
            )
        else:
            config = resolve(config_file, overrides)
        config = config.replace(verbose=level)
        _fit(
            config,
            num_cpus=num_cpus,
            object_store_memory=store,
            resume=resume is not None,
        )
    except EnsembleError as exc:
        _fail(exc, level)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _parse_bytes(text: str) -> int:
    """``2GB``, ``512MB``, ``1.5GiB`` or a plain number of bytes."""
    units = {"": 1, "B": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    t = text.strip().upper().replace("IB", "B")
    num = t.rstrip("KMGTB")
    unit = t[len(num) :].rstrip("B")
    try:
        value = float(num) * units[unit]
    except (ValueError, KeyError):
        raise ConfigError(
            f"--object-store-memory {text!r} is not a size; use e.g. 2GB or 512MB"
        ) from None
    if value < 80e6:
        raise ConfigError(
            f"--object-store-memory {text!r} is below Ray's minimum of 80MB; give more"
        )
    return int(value)


def _already_complete(run_dir: str) -> bool:
    from .artifacts import RunDirectory

    manifest = RunDirectory.peek(run_dir)[0]
    if manifest.get("status") == "complete":
        console.print(
            f"run {manifest.get('run_id')} is already complete; nothing to do"
        )
        return True
    return False


def _fit(
    config: Any,
    *,
    num_cpus: int | None,
    object_store_memory: int | None = None,
    resume: bool = False,
) -> None:
    from . import runtime
    from .runner import fit_run, load_and_prepare
    from .specs import REFIT_FOLD

    level = config.verbose
    tuned: dict[str, tuple[int, float]] = {}  # family -> (trials done, best CV)

    def flush_tuning(upto: str | None = None) -> None:
        # One compact line per family, printed once its search has ended.
        for learner, (n, best) in list(tuned.items()):
            if learner != upto:
                console.print(f"tuned {learner:<8} {n:>5} trials  best cv {best:.4f}")
                del tuned[learner]

    def on_trial(learner: str, done: int, best: float) -> None:
        if level >= 1:
            flush_tuning(upto=learner)
            tuned[learner] = (done, best)

    progress = _progress()
    bar: list[Any] = []  # the fit task, created with the first result

    def on_fit(r: Any, done: int, total: int) -> None:
        if level >= 1:
            flush_tuning()
            if not progress.live.is_started:  # each stage of fits shows its bar
                progress.start()
            if not bar:
                bar.append(progress.add_task("fits", total=total, completed=done - 1))
            rep = f"r{r.repeat} " if r.repeat else ""
            what = "refit on every row" if r.fold == REFIT_FOLD else f"fold {r.fold}"
            progress.console.print(
                f"[{done:>3}/{total}] {r.member:<10} {rep}{what}  "
                f"fit {r.fit_s:6.1f}s  predict {r.predict_s:5.2f}s  "
                f"worker {r.worker}{'  gpu' if r.gpu else ''}"
            )
            progress.update(bar[0], completed=done, total=total)
            if done == total and progress.live.is_started:
                progress.stop()

    data = load_and_prepare(config)  # bad input fails fast, before Ray starts
    started = runtime.connect(
        config.address,
        num_cpus=num_cpus,
        object_store_memory=object_store_memory,
        verbose=level,
    )
    try:
        result = fit_run(
            config, data=data, on_fit=on_fit, on_trial=on_trial, resume=resume
        )
        flush_tuning()
    finally:
        if progress.live.is_started:
            progress.stop()
        runtime.shutdown(started)
    _print_board(result.leaderboard, result.best)
    console.print(f"run directory: {result.run_dir.location}", soft_wrap=True)
    timing = result.manifest["timing"]
    console.print(
        f"best: {result.best}  (fit wall {timing['fit_wall_s']:.1f}s, "
        f"parallel efficiency {timing['parallel_efficiency']:.2f})"
    )


_FIT_ONLY = (
    "--resume",
    "--address",
    "--config-json",
    "--num-cpus",
    "--object-store-memory",
)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def submit(
    ctx: typer.Context,
    address: Annotated[
        str | None,
        typer.Option(
            help="The cluster's dashboard, http://HEAD:8265 (default: "
            "RAY_API_SERVER_ADDRESS or an http RAY_ADDRESS)."
        ),
    ] = None,
    working_dir: Annotated[
        str | None, typer.Option(help="Local folder shipped with the job.")
    ] = None,
    ship_package: Annotated[
        bool,
        typer.Option(
            help="Ship this ensemble package with the job (py_modules), so the "
            "cluster runs the client's version."
        ),
    ] = True,
    submission_id: Annotated[
        str | None, typer.Option(help="Job id (default ensemble-<run id>).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the job to its end.")
    ] = True,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Do not stream the job's logs.")
    ] = False,
) -> None:
    """Submit a fit to a Ray cluster as a Ray Job.

    Takes fit's arguments as well: ``[CONFIG.yaml] --data … --target …``.
    Streams the job's logs, prints the job id and the run directory, and exits
    1 with the job's error when it fails.
    """
    from . import submit as sub
    from .config import resolve

    level = 0 if quiet else 1
    _setup_logging(level)
    try:
        config_file, overrides = _fit_arguments(list(ctx.args))
        address = address or sub.default_address()
        if not address:
            raise ConfigError(
                "no cluster given; pass --address http://HEAD:8265 (or set "
                "RAY_API_SERVER_ADDRESS)"
            )
        config = sub.prepare_config(resolve(config_file, overrides))
        result = sub.submit_fit(
            config,
            address,
            working_dir=working_dir,
            ship_package=ship_package,
            submission_id=submission_id,
            wait=wait,
            on_log=sub.print_log if level >= 1 else None,
        )
    except EnsembleError as exc:
        _fail(exc, level)
    console.print(f"job: {result.job_id} ({result.status})")
    console.print(f"run directory: {result.run_dir}", soft_wrap=True)
    if not wait:
        console.print(
            f"follow it with `ray job logs --follow {result.job_id} --address "
            f"{address}`",
            soft_wrap=True,
        )


def _fit_arguments(args: list[str]) -> tuple[Path | None, dict[str, Any]]:
    """Parse fit flags given to ``submit`` with the ``fit`` command's own parser."""
    for a in args:
        if a.split("=")[0] in _FIT_ONLY:
            raise ConfigError(f"{a.split('=')[0]} is not available with submit")
    command = typer.main.get_command(app)
    fit_cmd = command.commands["fit"]  # type: ignore[attr-defined]
    try:
        ctx = fit_cmd.make_context("fit", list(args), resilient_parsing=False)
    except Exception as exc:  # typer's (vendored) click UsageError
        if not hasattr(exc, "format_message"):
            raise
        raise ConfigError(f"{exc.format_message()} (in the fit flags)") from None
    return ctx.params.get("config_file"), _given(_overrides(ctx.params))


# fit flag (parameter name) -> RunConfig field
_FLAG_FIELDS = {
    "data": "data",
    "target": "target",
    "out": "out",
    "task": "task",
    "learners": "learners",
    "portfolio": "portfolio",
    "repeats": "repeats",
    "fusions": "fusions",
    "folds": "n_folds",
    "holdout": "holdout",
    "seed": "seed",
    "time_limit": "time_limit",
    "tune": "tune",
    "n_trials": "n_trials",
    "top_n": "top_n",
    "search": "search",
    "metric": "metric",
    "drop_columns": "drop_columns",
    "address": "address",
    "run_id": "run_id",
    "warm_start": "warm_start",
    "report": "report",
    "keep_models": "keep_models",
    "refit": "refit",
}


def _overrides(params: dict[str, Any]) -> dict[str, Any]:
    """RunConfig values from the fit command's parameters (None = not given)."""
    return {field: params.get(flag) for flag, field in _FLAG_FIELDS.items()}


@app.command()
def nightly(
    config_file: Annotated[
        Path, typer.Argument(help="The run's YAML config (data: file, dir or glob).")
    ],
    registry: Annotated[
        str, typer.Option(help="Registry directory: champion, history, runs.")
    ],
    margin: Annotated[
        float,
        typer.Option(help="Promote only when better by more than this (metric units)."),
    ] = 0.0,
    date: Annotated[
        str | None,
        typer.Option(help="The date this run counts for, YYYY-MM-DD (default today)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Run although the date was already settled.")
    ] = False,
    warm_start: Annotated[
        bool,
        typer.Option(help="MLP members start from the champion's weights."),
    ] = True,
    address: Annotated[
        str | None, typer.Option(help="Ray address (default: RAY_ADDRESS or local).")
    ] = None,
    num_cpus: Annotated[
        int | None, typer.Option(help="CPUs of a new local Ray.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Retrain on the latest snapshot; promote it only when it beats the champion.

    Both are scored on the same rows of the new holdout (rows the champion
    trained on left out). One attempt per date: a second run the same day does
    nothing unless --force. History: REGISTRY/history.parquet.
    """
    from . import runtime
    from .config import resolve
    from .registry import nightly as run_nightly

    level = 0 if quiet else 1
    _setup_logging(level)
    try:
        config = resolve(config_file, {"address": address}).replace(verbose=level)
        outcome = None
        from .registry import Registry

        settled = None if force else Registry(registry).settled(date or _today())
        if settled is None:  # connect only when there is work to do
            started = runtime.connect(config.address, num_cpus=num_cpus, verbose=level)
            try:
                outcome = run_nightly(
                    config,
                    registry,
                    day=date,
                    margin=margin,
                    force=force,
                    warm_start=warm_start,
                )
            finally:
                runtime.shutdown(started)
        else:
            outcome = run_nightly(config, registry, day=date, margin=margin)
    except EnsembleError as exc:
        _fail(exc, level)
    assert outcome is not None
    line = f"{outcome.date}: {outcome.status}"
    if outcome.run_id:
        line += f" run {outcome.run_id}"
    if outcome.challenger_score is not None:
        line += f" ({outcome.metric} {outcome.challenger_score:.5f}"
        if outcome.champion_score is not None:
            line += f" vs champion {outcome.champion_score:.5f}"
        line += f" on {outcome.n_scored} holdout rows)"
    console.print(f"{line}: {outcome.reason}", soft_wrap=True)


def _today() -> str:
    from datetime import date

    return date.today().isoformat()


@app.command()
def predict(
    run_dir: Annotated[
        str, typer.Argument(help="A complete run directory (path or URI).")
    ],
    data: Annotated[str, typer.Option(help="Parquet or CSV/TSV with the features.")],
    out: Annotated[Path, typer.Option(help="Output Parquet file.")],
    model: Annotated[
        str | None, typer.Option(help="Member or fusion (default: the run's best).")
    ] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Input column copied to the output.")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray address (default: RAY_ADDRESS or local).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per batch.")] = 8192,
    ignore_extra_columns: Annotated[
        bool, typer.Option(help="Predict although the data has unknown columns.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True)] = 0,
) -> None:
    """Predict new rows with a fitted run (streamed through Ray Data).

    Up to 50,000 rows (8 MiB of CSV) are predicted in this process, without Ray.
    """
    from . import runtime
    from .model import load
    from .predict import is_small, parquet_rows, predict_file

    level = 0 if quiet else 1 + verbose
    _setup_logging(level)
    try:
        load(run_dir, model, load_models=False)  # fails before Ray starts
        rows = parquet_rows(data)  # None for CSV: the bar has no total
        local = is_small(data, rows)  # predicted here: Ray would only add seconds
        started = False if local else runtime.connect(address, verbose=level)
        progress = _progress()
        task = progress.add_task("rows", total=rows)

        def on_batch(done: int) -> None:
            if level >= 1 and not progress.live.is_started:
                progress.start()  # only once rows flow: errors stay one line
            progress.update(task, completed=done)

        try:
            n = predict_file(
                run_dir,
                data,
                out,
                model=model,
                id_column=id_column,
                batch_size=batch_size,
                ignore_extra_columns=ignore_extra_columns,
                on_batch=on_batch,
                local=local,
            )
        finally:
            if progress.live.is_started:
                progress.stop()
            runtime.shutdown(started)
    except EnsembleError as exc:
        _fail(exc, level)
    if level >= 1:
        console.print(f"predicted {n} rows -> {out}")


@app.command()
def distill(
    run_dir: Annotated[
        str, typer.Argument(help="A complete run directory (path or URI).")
    ],
    student: Annotated[
        str, typer.Option(help="The compact model: lgbm or mlp.")
    ] = "lgbm",
    augment: Annotated[
        float,
        typer.Option(help="Synthetic rows per training row, labelled by the ensemble."),
    ] = 1.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Train one compact student that mimics the run's chosen model.

    Adds ``distilled_<student>`` to the run (leaderboard, holdout, models/):
    holdout score, fidelity to the ensemble, prediction time per 1,000 rows.
    """
    from .compress import distill as run_distill

    level = 0 if quiet else 1
    _setup_logging(level)
    try:
        row = run_distill(run_dir, student=student, augment=augment)
    except EnsembleError as exc:
        _fail(exc, level)
    console.print(
        f"{row.name}: holdout {row['metric']} {row['holdout_score']:.5f} "
        f"(teacher {row['teacher']}), fidelity {row['fidelity']:.4f}, "
        f"{row['predict_ms_per_1k']:.2f} ms per 1,000 rows "
        f"({row['speedup']:.1f}x faster than the teacher)",
        soft_wrap=True,
    )


@app.command()
def prune(
    run_dir: Annotated[
        str, typer.Argument(help="A complete run directory (path or URI).")
    ],
    sparsity: Annotated[
        float, typer.Option(help="Share of the MLP weights set to zero.")
    ] = 0.5,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 5,
    members: Annotated[
        str | None, typer.Option(help="Comma-separated MLP members (default all).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Magnitude-prune the MLP members, fine-tune, and add them to the run.

    Adds ``<member>_pruned`` (leaderboard, holdout, models/) and prune.parquet
    (sparsity against the change in score).
    """
    from .compress import prune as run_prune

    level = 0 if quiet else 1
    _setup_logging(level)
    names = [m.strip() for m in members.split(",") if m.strip()] if members else None
    try:
        table = run_prune(run_dir, sparsity=sparsity, epochs=epochs, members=names)
    except EnsembleError as exc:
        _fail(exc, level)
    for _, r in table.iterrows():
        console.print(
            f"{r['pruned_member']}: sparsity {r['sparsity']:.3f}, holdout "
            f"{r['metric']} {r['holdout_before']:.5f} -> {r['holdout_after']:.5f} "
            f"({r['holdout_delta']:+.5f})",
            soft_wrap=True,
        )


@app.command()
def report(
    run_dir: Annotated[
        str, typer.Argument(help="A complete run directory (path or URI).")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Output file (default RUN_DIR/report.html).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Write the run's self-contained HTML report (plots inlined)."""
    from .report import write_report

    level = 0 if quiet else 1
    _setup_logging(level)
    try:
        path = write_report(run_dir, out)
    except EnsembleError as exc:
        _fail(exc, level)
    if level >= 1:
        console.print(f"report: {path}")


@app.command()
def export(
    run_dir: Annotated[
        str, typer.Argument(help="A complete run directory (path or URI).")
    ],
    out: Annotated[Path, typer.Option(help="A new folder for the bundle.")],
    model: Annotated[
        str | None, typer.Option(help="Member or fusion (default: the chosen).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Write one model of a run as a self-contained bundle (no Ray to load it)."""
    from .bundle import export as run_export

    level = 0 if quiet else 1
    _setup_logging(level)
    try:
        path = run_export(run_dir, out, model=model)
    except EnsembleError as exc:
        _fail(exc, level)
    if level >= 1:
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        info = json.loads((path / "bundle.json").read_text())
        console.print(f"exported {info['model']} to {path} ({size / 2**20:.1f} MiB)")


def _progress() -> Any:
    """A rich progress bar (a live bar on a terminal; one final line otherwise)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def _print_board(board: Any, best: str) -> None:
    metric = board["metric"].iloc[0]
    held = bool(board["holdout_score"].notna().any())
    where = "on the holdout" if held else "on OOF predictions"
    table = Table(
        title=f"leaderboard ({metric}; oof = nested CV for fusions; "
        f"other metrics {where})"
    )
    extra = [
        c for c in ("accuracy", "log_loss", "r2") if c in board.columns and c != metric
    ]
    cols = ["model", "kind", "oof", *(["holdout"] if held else []), *extra, "fit_s"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "kind") else "right")
    for _, row in board.iterrows():
        name = f"{row['model']} *" if row["model"] == best else row["model"]
        table.add_row(
            name,
            row["kind"],
            _fmt(row["oof_score"]),
            *([_fmt(row["holdout_score"])] if held else []),
            *[_fmt(row[c]) for c in extra],
            f"{row['fit_s']:.1f}",
        )
    console.print(table)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
