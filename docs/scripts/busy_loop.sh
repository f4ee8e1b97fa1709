#!/usr/bin/env bash
# train.threads: auto beside other work (docs/research/robustness.md, "A CPU shared with other work"):
# a 300-step training alone, then with a one-core busy loop started with it for 5 s, for 15 s
# and for the whole run; prints each command's wall time, mIoU and thread notes. Run it from
# the repository root on an otherwise idle machine: bash docs/scripts/busy_loop.sh OUT_DIR
set -euo pipefail
out=${1:?usage: busy_loop.sh OUT_DIR}
mkdir -p "$out"
config=configs/plain_mobilenetv2_camvid_192x256_140.yaml
settings=(train.max_steps=300 train.val_every=300 train.checkpoint_every=300 train.log_every=25
  data.batch_size=4 'data.crop_size=[128,160]' 'data.val_size=[120,160]')
spin=(.venv/bin/python -c 'while True: pass')
# the precision probe, cached before the timed runs
.venv/bin/python -c "from clipfuse.precision import resolve_precision as r; r('auto', 'auto', 'cpu')"
for case in alone 5 15 all; do
  case $case in
    5 | 15) timeout "$case" "${spin[@]}" & ;;
    all) "${spin[@]}" & spinner=$! ;;
  esac
  start=$(date +%s.%N)
  .venv/bin/clipfuse train --config $config --out "$out/$case" "${settings[@]}" \
    >"$out/$case.out" 2>"$out/$case.err"
  end=$(date +%s.%N)
  if [ "$case" = all ]; then kill "$spinner"; fi
  wait
  miou=$(python3 -c "import json; print(json.load(open('$out/$case/metrics.json'))['mIoU'])")
  echo "busy loop: $case, $(echo "$end - $start" | bc) s, mIoU $miou"
  grep "thread" "$out/$case.err" || true
done
