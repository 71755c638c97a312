#!/usr/bin/env bash
# The command-line path of docs/dask.md on one machine: a dask scheduler and two
# single-threaded worker processes started by hand (as on a real cluster, where
# they run on other nodes), `sccr impute --backend dask --scheduler`, and the
# same imputation on the local backend; prints both times and the largest difference.
#
# Usage: bash benchmarks/dask_cli.sh [PORT]     (run from the repository root)
set -euo pipefail
PORT=${1:-8799}
BIN=.venv/bin
TMP=$(mktemp -d)
trap 'kill $WORKERS $SCHEDULER 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT

$BIN/dask scheduler --port "$PORT" --dashboard-address :0 >"$TMP/scheduler.log" 2>&1 &
SCHEDULER=$!
$BIN/dask worker "tcp://127.0.0.1:$PORT" --nworkers 2 --nthreads 1 >"$TMP/workers.log" 2>&1 &
WORKERS=$!
$BIN/python - "$PORT" <<'EOF'
import sys
from distributed import Client
with Client(f"tcp://127.0.0.1:{sys.argv[1]}", timeout=60) as client:
    client.wait_for_workers(2, timeout=60)
EOF

INPUT=src/sccr/data/worm_neuron.h5ad
run() {  # run NAME ARGS...: time one `sccr impute` of the bundled raw counts
  local name=$1; shift
  local start=$(date +%s.%N)
  $BIN/sccr impute "$INPUT" "$TMP/$name.h5ad" --preprocess paper --n-jobs 2 --quiet "$@"
  echo "$name: $(echo "$(date +%s.%N) - $start" | bc) s (whole command: read, preprocess, impute, write)"
}
run dask --backend dask --scheduler "tcp://127.0.0.1:$PORT"
run local
$BIN/python - "$TMP" <<'EOF'
import sys
import anndata as ad
import numpy as np
dask, local = (ad.read_h5ad(f"{sys.argv[1]}/{name}.h5ad") for name in ("dask", "local"))
print("max |dask - local| =", float(np.abs(dask.layers["sccr"] - local.layers["sccr"]).max()))
print("cell graphs identical:", (dask.obsp["sccr_connectivities"] != local.obsp["sccr_connectivities"]).nnz == 0)
print("scheduler recorded:", dask.uns["sccr"]["params"]["scheduler"])
EOF
