#!/usr/bin/env bash
# Prints the command for the device tool's run (experiments/device/units.sh), after checking that
# the working tree that will travel is committed: units must run committed code, and the copy on
# the device has no git history, so the command names the commit. Usage:
#   bash experiments/device/command.sh [WORKERS] [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -n "$(git status --porcelain --untracked-files=normal)" ]; then
  echo "command.sh: error: the working tree has uncommitted changes; commit them first (units run committed code)" >&2
  exit 1
fi
[ -d .device ] || { echo "command.sh: error: no .device/; run bash experiments/device/bundle.sh first" >&2; exit 1; }
echo "QSM_JAX_COMMIT=$(git rev-parse HEAD) WORKERS=${1:-14} MINUTES=${2:-8} bash experiments/device/units.sh"
