#!/usr/bin/env bash
# The learning benchmark: train the small synthetic-scene SegCLIP four ways (contrastive only;
# + superpixel KL; + reconstruction; all three) with fixed seeds, then report zero-shot mIoU on
# fresh test scenes for seen classes and for held-out colour/shape combinations.
#
#   bash benches/learning.sh            # after `cargo build --release`
#
# Each run is one epoch over the first 6400 scenes (400 steps of 16, lr 5e-4), about 7 minutes on
# 2 cores; the same 200 fresh test scenes evaluate all four.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/segclip
[ -d data/synth-train ] || $bin synth --out data/synth-train --count 12000 --seed 1
for v in con con_kl con_mae all; do
  rm -rf "runs/ablation-$v"
  /usr/bin/time -f "$v: %e s, peak RSS %M KB" $bin train --config "datasets/synth/ablation-$v.toml" > /dev/null
  ck=$(ls -d runs/ablation-$v/checkpoint-* | tail -1)
  $bin eval --dataset synth --seed 1000 --count 200 --weights "$ck/model.safetensors" --out "runs/ablation-$v/eval" | tail -3
done
