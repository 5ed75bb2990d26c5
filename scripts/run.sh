#!/usr/bin/env bash
# The main job: install, simulate a default history if none exists, then (as later stages land)
# train a default model and start the scoring service.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
DATA="${PAYROUTE_DATA:-$ROOT/data/default}"
if [ ! -f "$DATA/attempts.parquet" ]; then
  payroute simulate --txns 200000 --days 30 --seed 7 --out "$DATA"
fi
echo "history in $DATA"
# Train a default champion on that history if none exists, then serve on localhost (Ctrl-C to stop).
exec payroute serve --history "$DATA" --models-dir "$ROOT/models" --state-dir "$ROOT/data/state" \
  --port "${PAYROUTE_PORT:-3000}"
