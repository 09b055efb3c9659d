"""Ray Job entrypoint: one nightly retrain → compare → promote.

    ray job submit --submission-id "ensemble-nightly-$(date +%F)" --working-dir . \
        -- python jobs/nightly.py deploy/nightly.yaml --registry /mnt/registry

Thin by design: it calls the CLI's ``nightly`` command (exit codes included).
"""

from __future__ import annotations

import sys

from ensemble.cli import app

if __name__ == "__main__":
    # Inside a Ray Job, RAY_ADDRESS points at the cluster; `nightly` connects to it.
    sys.exit(app(["nightly", *sys.argv[1:]], standalone_mode=True))
