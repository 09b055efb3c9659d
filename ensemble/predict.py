"""Batch prediction over Ray Data: any number of rows, streamed.

The input is read as a Ray Dataset; an actor pool (each actor loads the fitted
ensemble once) maps batches to predictions; the driver streams the result,
in input order, into one Parquet file written atomically.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
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

__all__ = ["predict_file"]

logger = logging.getLogger(__name__)


class _Predictor:
    """Ray Data actor: loads the ensemble once, predicts each batch."""

    def __init__(
        self, run_dir: str, model: str | None, id_column: str | None, threads: int
    ) -> None:
        self.ensemble = load(run_dir, model, threads=threads)
        self.id_column = id_column

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = self.ensemble.predict_frame(batch)
        if self.id_column is not None:
            out.insert(0, self.id_column, batch[self.id_column].to_numpy())
        return out


def _read(path: str) -> Any:
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {path!r} does not exist; check the --data path")
    name = p.name.lower()
    if p.is_dir() or name.endswith((".parquet", ".pq")):
        return ray.data.read_parquet(str(p.absolute()))
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        import pyarrow.csv as pacsv

        sep = "\t" if ".tsv" in name else ","
        return ray.data.read_csv(
            str(p.absolute()), parse_options=pacsv.ParseOptions(delimiter=sep)
        )
    raise DataError(
        f"data file {path!r} has an unsupported format; use Parquet or CSV/TSV"
    )


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

    Returns
    -------
    int
        Number of rows predicted.
    """
    # Manifest only: fails fast on a bad run or model name; actors load models.
    ensemble = load(run_dir, model, load_models=False)
    ds = _read(data)
    columns = ds.columns()
    if id_column is not None and id_column not in columns:
        raise DataError(f"id column {id_column!r} is not in {data!r}")
    ensemble.check_frame(
        ds.limit(1000).to_pandas(),
        allow=(id_column,) if id_column else (),
        strict=not ignore_extra_columns,
    )
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
    target = Path(out).absolute()
    n = _write_stream(preds, target, with_row_id=id_column is None, on_batch=on_batch)
    if n == 0:
        raise DataError(f"{data!r} has no rows to predict")
    logger.info("predicted %d rows with %s into %s", n, ensemble.model, target)
    return n


def _write_stream(
    preds: Any,
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
        for table in preds.iter_batches(batch_format="pyarrow", batch_size=None):
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
