"""Ray Job entrypoint: one ``ensemble fit`` run on the cluster the job runs in.

    ray job submit --working-dir . -- python jobs/train.py --data s3://…/t.parquet \
        --target y --out /mnt/shared/runs

Thin by design: it parses arguments and calls the CLI's ``fit`` command, so a job
and a local ``ensemble fit`` behave the same (exit codes included).
"""

from __future__ import annotations

import sys

from ensemble.cli import app

if __name__ == "__main__":
    # Inside a Ray Job, RAY_ADDRESS points at the cluster; `fit` connects to it.
    sys.exit(app(["fit", *sys.argv[1:]], standalone_mode=True))
