#!/usr/bin/env bash
# Runs pending units of the evidence queue on a lent GPU machine and packs their files into
# $OUT/units.tar, to be added here with
#   python experiments/bench_learning.py --import_units=<that folder>/units.tar --git_commit
# The device call's command comes from `bash experiments/device/command.sh` (it checks that the tree
# is committed and names the commit: the copy that travels has no git history); .device/ from
# bundle.sh travels in carry:
#   run(command="QSM_JAX_COMMIT=<sha> WORKERS=14 MINUTES=8 bash experiments/device/units.sh",
#       carry=[".device"], timeout_s=600)
# WORKERS unit processes share the GPU (JAX's preallocation off, so none takes the whole GPU), each
# pinned to one CPU core; MAX_UNITS (default WORKERS) units run in all; MINUTES is the time budget
# after which unfinished units stop (a fresh machine keeps nothing: they start over next time).
# SUITE (default: the queue), PYTHON and EXTRA (more bench_learning.py flags) are for tests on CPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?OUT must name the folder whose files come back}"
WORKERS=${WORKERS:-14}
MINUTES=${MINUTES:-8}
MAX_UNITS=${MAX_UNITS:-$WORKERS}
SUITE=${SUITE:-queue}
PYTHON=${PYTHON:-python3}
: "${QSM_JAX_COMMIT:?QSM_JAX_COMMIT must name the commit of this copy (experiments/device/command.sh)}"
export QSM_JAX_COMMIT
if [ -d .device ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .device/wheels/*.whl || exit 1
  export PYTHONPATH="$PWD:$PWD/.device/site:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false MUJOCO_GL=disable PYTHONUNBUFFERED=1
mkdir -p "$OUT/units"
"$PYTHON" - <<'PY' > "$OUT/device.txt" 2>&1
import jax, os
print("devices:", jax.devices(), "cores:", len(os.sched_getaffinity(0)))
PY
# --pin= : this copy has no git history; each unit file names the commit the copy was made from.
"$PYTHON" experiments/bench_learning.py --suite="$SUITE" --pin= --workers="$WORKERS" --max_units="$MAX_UNITS" \
  --time_budget="$MINUTES" --units_dir="$OUT/units" --runs_dir=/tmp/runs ${EXTRA:-} 2>&1 | tee "$OUT/runner.log"
tail -n 30 /tmp/runs/*.log > "$OUT/unit_logs.txt" 2>/dev/null
tar -cf "$OUT/units.tar" -C "$OUT/units" . && rm -rf "$OUT/units"
echo "unit files in units.tar: $(tar -tf "$OUT/units.tar" | grep -c '\.json$')"
