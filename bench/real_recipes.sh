#!/usr/bin/env bash
# Every recipe on the kitti preset, one seed, 1000 steps each, then scored on synthetic val and the real scans.
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-runs/synth_kitti}   # m2s-synth --preset kitti, as in MODEL_CARD.md
CFG=config/train_polar_kitti.yaml
OUT=runs/real_recipes
mkdir -p $OUT
export OMP_NUM_THREADS=2
train() { name=$1; shift; [ -f $OUT/$name/last.pt ] || nice -n 5 .venv/bin/m2s-train --config $CFG --data $DATA --out $OUT/$name --device cpu --set train.max_steps=1000 "$@" > $OUT/$name.log 2>&1; }
train student
train teacher --mode teacher --set model.width=1.0 --set fusion.k_previous=4 --set loss.fused_weight=0.2
train distilled --mode distill --teacher $OUT/teacher/last.pt --set fusion.k_previous=4 \
    --set distill.ramp_steps=300 --set distill.class_weighted_logits=true
M2SKD_FUSION="--set fusion.k_previous=4 --set fusion.placement=centroid --set fusion.full_history_only=true --set fusion.hard_classes=[bicycle,motorcycle,truck,other-vehicle,person,bicyclist,motorcyclist]"
train m2skd --mode m2skd $M2SKD_FUSION --set loss.class_weight_power=0.0
for name in student teacher distilled m2skd; do
  for split in val all; do
    data=$DATA; [ $split = all ] && data=${REAL:-../shared/real/semantickitti}
    .venv/bin/m2s-eval --checkpoint $OUT/$name/last.pt --data $data --split $split --out $OUT/eval_${name}_$split --device cpu > $OUT/eval_${name}_$split.log 2>&1
  done
done
echo done > $OUT/DONE
