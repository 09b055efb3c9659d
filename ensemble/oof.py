"""The OOF step: every member's out-of-fold rows as one Ray Dataset.

The fit results become a Ray Dataset, written as the run's ``oof/`` Parquet
dataset; the fusion stage reads its inputs back from that same Dataset, so
what is fused is exactly what the run directory holds.
"""

from __future__ import annotations

import pandas as pd
import ray.data

from .artifacts import RunDirectory

__all__ = ["write_oof"]


def write_oof(run: RunDirectory, frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Write ``frames`` (one per (member, fold)) as ``oof/``; return the rows.

    The Dataset is written into a temporary directory and renamed into place
    (``write_parquet`` appends to an existing directory by default).
    """
    ds = ray.data.from_pandas(frames)
    tmp = run.tmp_dir("oof")
    ds.write_parquet(str(tmp), mode=ray.data.SaveMode.OVERWRITE)
    run.commit_dir(tmp, "oof")
    return ds.to_pandas()
