"""Batch prediction over Ray Data: any number of rows, streamed.

The input is read as a Ray Dataset; an actor pool (each actor loads the fitted
ensemble once) maps batches to predictions; the driver streams the result,
in input order, into one Parquet file written atomically.

A small input (:func:`is_small`) is predicted in the driver instead, batch by
batch with the same models and the same writer: starting Ray and an actor pool
takes seconds, predicting a few thousand rows milliseconds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from . import storage
from .exceptions import DataError
from .model import load

__all__ = ["LOCAL_CSV_BYTES", "LOCAL_ROWS", "is_small", "parquet_rows", "predict_file"]

logger = logging.getLogger(__name__)

_CSV = (".csv", ".csv.gz", ".tsv", ".tsv.gz")

#: Inputs up to this many rows (Parquet, from its metadata) are predicted in
#: the driver, without Ray.
LOCAL_ROWS = 50_000
#: A CSV/TSV file has no row count: up to this size it is predicted in the driver.
LOCAL_CSV_BYTES = 8 * 2**20


class _Predictor:
    """Ray Data actor: loads the ensemble once, predicts each batch."""

    def __init__(
        self,
        run_dir: str,
        model: str | None,
        id_column: str | None,
        threads: int | None,
    ) -> None:
        self.ensemble = load(run_dir, model, threads=threads)
        self.id_column = id_column

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = self.ensemble.predict_frame(batch)
        if self.id_column is not None:
            out.insert(0, self.id_column, batch[self.id_column].to_numpy())
        return out


def _check_input(path: str) -> Path:
    """The input's path, or a DataError naming what is wrong with it."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {path!r} does not exist; check the --data path")
    if not (_is_parquet(p) or p.name.lower().endswith(_CSV)):
        raise DataError(
            f"data file {path!r} has an unsupported format; use Parquet or CSV/TSV"
        )
    return p


def _read(path: str) -> Any:
    """The input as a Ray Dataset (read lazily)."""
    p = _check_input(path).absolute()
    if _is_parquet(p):
        return ray.data.read_parquet(str(p))
    return ray.data.read_csv(str(p), parse_options=_csv_options(p))


def _is_parquet(p: Path) -> bool:
    return p.is_dir() or p.name.lower().endswith((".parquet", ".pq"))


def _csv_options(p: Path) -> Any:
    import pyarrow.csv as pacsv

    return pacsv.ParseOptions(delimiter="\t" if ".tsv" in p.name.lower() else ",")


def _parquet(p: Path) -> Any:
    import pyarrow.dataset as pads

    return pads.dataset(str(p), format="parquet", partitioning="hive")


def parquet_rows(data: str) -> int | None:
    """Rows of a Parquet input from its metadata; None for CSV or unreadable."""
    p = Path(data)
    if not (p.exists() and _is_parquet(p)):
        return None
    try:
        return int(_parquet(p).count_rows())
    except (OSError, pa.ArrowException):
        return None


def is_small(data: str, rows: int | None = None) -> bool:
    """Whether ``data`` is predicted in the driver, without Ray.

    Up to :data:`LOCAL_ROWS` rows of Parquet, or :data:`LOCAL_CSV_BYTES` of
    CSV/TSV. A missing file is not small (reading it gives the error).
    ``rows``: the Parquet input's :func:`parquet_rows`, when the caller has
    counted them already (the metadata is then not read again).
    """
    p = Path(data)
    if not p.exists():
        return False
    if _is_parquet(p):
        if rows is None:
            rows = parquet_rows(data)  # None: unreadable; reading it says so
        return rows is None or rows <= LOCAL_ROWS
    return p.stat().st_size <= LOCAL_CSV_BYTES


def _head(path: str, n: int | None) -> pd.DataFrame:
    """The first ``n`` rows (None: all) of a file ``_read`` accepts.

    Typed as its Ray Data reader types them (Parquet's own schema; CSV from its
    first block), read in the driver with pyarrow: a Ray Data job takes seconds.
    """
    p = Path(path)
    if _is_parquet(p):
        found = _parquet(p)
        table = found.to_table() if n is None else found.head(n)
        return table.to_pandas()
    import pyarrow.csv as pacsv

    reader = pacsv.open_csv(str(p), parse_options=_csv_options(p))
    batches, rows = [], 0
    for batch in reader:
        batches.append(batch)
        rows += batch.num_rows
        if n is not None and rows >= n:
            break
    table = pa.Table.from_batches(batches, schema=reader.schema)
    return (table if n is None else table.slice(0, n)).to_pandas()


def predict_file(
    run_dir: str | os.PathLike[str],
    data: str,
    out: str | os.PathLike[str],
    *,
    model: str | None = None,
    id_column: str | None = None,
    batch_size: int = 8192,
    on_batch: Callable[[int], None] | None = None,
    ignore_extra_columns: bool = False,
    local: bool | None = None,
) -> int:
    """Predict every row of ``data`` with a fitted run; write one Parquet file.

    Parameters
    ----------
    run_dir : path-like
        A complete run directory.
    data : str
        Parquet file/directory or CSV/TSV file with the training feature columns.
    out : path-like
        Output Parquet file: ``row_id`` (position in the input) or
        ``id_column``, then ``pred_<class>…`` and ``label``, or ``pred``.
    model : str, optional
        Member or fusion name; the run's best when None.
    id_column : str, optional
        Input column copied to the output instead of ``row_id``.
    batch_size : int, default=8192
        Rows per batch; bounds the memory of each actor.
    on_batch : callable, optional
        Called with the number of rows written so far.
    ignore_extra_columns : bool, default=False
        Predict even when ``data`` has columns the model never saw (by default
        that is an error: a renamed column is usually a mistake).
    local : bool, optional
        Predict in this process (True) or through Ray Data (False); by
        default in this process when :func:`is_small` says so. Both give the
        same file.

    Returns
    -------
    int
        Number of rows predicted.
    """
    # Manifest only: fails fast on a bad run or model name; actors load models.
    ensemble = load(run_dir, model, load_models=False)
    _check_input(data)
    if local is None:
        local = is_small(data)
    try:
        head = _head(data, None if local else 1000)
    except (OSError, pa.ArrowException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(
            f"cannot read data file {data!r} ({first[:160]}); check that it is "
            "Parquet or CSV/TSV with a header"
        ) from exc
    if id_column is not None and id_column not in head.columns:
        raise DataError(f"id column {id_column!r} is not in {data!r}")
    ensemble.check_frame(
        head, allow=(id_column,) if id_column else (), strict=not ignore_extra_columns
    )
    target = Path(out).absolute()
    if local:
        predictor = _Predictor(ensemble.run.location, ensemble.model, id_column, None)
        batches = (
            pa.Table.from_pandas(
                predictor(head.iloc[i : i + batch_size]), preserve_index=False
            )
            for i in range(0, len(head), batch_size)
        )
        n = _write_stream(
            batches, target, with_row_id=id_column is None, on_batch=on_batch
        )
        return _written(n, data, ensemble.model, target)
    ds = _read(data)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # output rows follow input rows
    # One CPU stays free for the read tasks: actors holding every CPU starve them.
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n_actors = max(1, cpus - 1)
    # Each actor predicts on its share of the CPUs, the one left for reading
    # included: reads are short, and the models wait for them anyway. (Ray would
    # set OpenMP to the one CPU an actor reserves.)
    threads = max(1, cpus // n_actors)
    env = {"OMP_NUM_THREADS": str(threads)}
    if ensemble.run.remote is not None:
        # A URI run is read by the actors too: they get the driver's credentials.
        env.update(storage.credentials_env())
    preds = ds.map_batches(
        _Predictor,
        fn_constructor_args=(ensemble.run.location, ensemble.model, id_column, threads),
        batch_format="pandas",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        num_cpus=1,
        runtime_env={"env_vars": env},
    )
    n = _write_stream(
        preds.iter_batches(batch_format="pyarrow", batch_size=None),
        target,
        with_row_id=id_column is None,
        on_batch=on_batch,
    )
    return _written(n, data, ensemble.model, target)


def _written(n: int, data: str, model: str, target: Path) -> int:
    if n == 0:
        raise DataError(f"{data!r} has no rows to predict")
    logger.info("predicted %d rows with %s into %s", n, model, target)
    return n


def _write_stream(
    preds: Iterable[pa.Table],
    target: Path,
    *,
    with_row_id: bool,
    on_batch: Callable[[int], None] | None,
) -> int:
    """Stream the predictions, in order, into one Parquet file; the row count.

    Written to a temporary name and renamed, so a reader never sees half a
    file; nothing is left behind on failure or when there are no rows.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    writer: pq.ParquetWriter | None = None
    n = 0
    try:
        for table in preds:
            if with_row_id:
                table = table.add_column(
                    0, "row_id", pa.array(range(n, n + len(table)), pa.int64())
                )
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema))
            n += len(table)
            if on_batch is not None:
                on_batch(n)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    if writer is None:
        return 0
    writer.close()
    os.replace(tmp, target)
    return n
