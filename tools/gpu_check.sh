#!/usr/bin/env bash
# The GPU device check (tools/gpu_check.py), on a GPU machine that has PyTorch, Lightning and
# timm but not the rest of clipfuse's needs: run `make gpu-check-prepare` first where ../shared
# and the package registry are at hand, send the working tree with .gpu-check/, then run
# `make gpu-check` there. The report lands in $OUT (or gpu-check-out/).
set -euo pipefail
cd "$(dirname "$0")/.."
report_dir=${OUT:-gpu-check-out}
work=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" .gpu-check/wheels/*.whl
export PYTHONPATH="$PWD/src:$work/site" CLIPFUSE_SHARED="$PWD/.gpu-check/shared"
export CLIPFUSE_CACHE="$work/cache" PYTHONUNBUFFERED=1
status=0
python3 tools/gpu_check.py run --out "$work/check" "$@" || status=$?
mkdir -p "$report_dir"
cp "$work/check/gpu_check.json" "$work/check/bench.json" "$report_dir"/ 2>/dev/null || true
exit $status
