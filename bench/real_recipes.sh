#!/usr/bin/env bash
# Every recipe on the kitti preset, 1000 steps each, then scored on synthetic val and the real scans.
#   SEED=0 bench/real_recipes.sh          # trains the teacher too (seed 0)
#   SEED=1 bench/real_recipes.sh          # student, distilled and m2skd with seed 1; distilled uses the seed-0 teacher
# Outputs of seed 0 keep their old names (runs/real_recipes/student, ...); other seeds get a suffix (_s1).
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-runs/synth_kitti}   # m2s-synth --preset kitti, as in MODEL_CARD.md
SEED=${SEED:-0}
CFG=config/train_polar_kitti.yaml
OUT=runs/real_recipes
mkdir -p $OUT
export OMP_NUM_THREADS=2
suffix=""; [ "$SEED" != 0 ] && suffix="_s$SEED"
train() {
  name=$1$suffix; shift
  [ -f $OUT/$name/last.pt ] || nice -n 5 .venv/bin/m2s-train --config $CFG --data $DATA --out $OUT/$name --device cpu \
    --set train.max_steps=1000 --set train.seed=$SEED "$@" > $OUT/$name.log 2>&1
}
recipes="student distilled m2skd"
train student
if [ "$SEED" = 0 ]; then
  train teacher --mode teacher --set model.width=1.0 --set fusion.k_previous=4 --set loss.fused_weight=0.2
  recipes="student teacher distilled m2skd"
fi
train distilled --mode distill --teacher $OUT/teacher/last.pt --set fusion.k_previous=4 \
    --set distill.ramp_steps=300 --set distill.class_weighted_logits=true
M2SKD_FUSION="--set fusion.k_previous=4 --set fusion.placement=centroid --set fusion.full_history_only=true --set fusion.hard_classes=[bicycle,motorcycle,truck,other-vehicle,person,bicyclist,motorcyclist]"
train m2skd --mode m2skd $M2SKD_FUSION --set loss.class_weight_power=0.0
for recipe in $recipes; do
  name=$recipe$suffix
  for split in val all; do
    data=$DATA; [ $split = all ] && data=${REAL:-../shared/real/semantickitti}
    [ -f $OUT/eval_${name}_$split/metrics.json ] || .venv/bin/m2s-eval --checkpoint $OUT/$name/last.pt --data $data \
      --split $split --out $OUT/eval_${name}_$split --device cpu > $OUT/eval_${name}_$split.log 2>&1
  done
done
echo done > $OUT/DONE$suffix
