#!/usr/bin/env bash
# Submit tonight's `ensemble nightly` to a running Ray cluster (cron / systemd).
#
#   RAY_ADDRESS=http://HEAD:8265 REGISTRY=/mnt/registry deploy/nightly-submit.sh
#
# - one submission id per date (ensemble-nightly-YYYY-MM-DD): Ray refuses a second
#   job with the same id, so a re-fired timer cannot start the date twice;
# - flock on LOCK_FILE: a night that is still running blocks the next one (exit 75);
# - exits with the job's status (ray job submit waits and follows the logs).
# A cluster with token auth: export RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN).
set -euo pipefail

cd "$(dirname "$0")/.."
: "${RAY_ADDRESS:?set RAY_ADDRESS to the dashboard, e.g. http://127.0.0.1:8265}"
: "${REGISTRY:?set REGISTRY to the registry directory the cluster sees}"
CONFIG="${CONFIG:-deploy/nightly.yaml}"
DAY="${DAY:-$(date -u +%F)}"
LOCK_FILE="${LOCK_FILE:-${XDG_RUNTIME_DIR:-/tmp}/ensemble-nightly.lock}"
RAY="${RAY:-ray}"

exec 9>"$LOCK_FILE"
if ! flock -n 9; then
    echo "ensemble nightly: another run holds $LOCK_FILE; not starting" >&2
    exit 75
fi

exec "$RAY" job submit \
    --address "$RAY_ADDRESS" \
    --submission-id "ensemble-nightly-$DAY" \
    --working-dir . \
    -- python jobs/nightly.py "$CONFIG" --registry "$REGISTRY" --date "$DAY"
