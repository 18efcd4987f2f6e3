#!/usr/bin/env bash
# Weight averaging (optim.average_from) and an ensemble teacher (train.teacher list) on CUDA with
# AMP, 40 steps each on tiny synthetic data: the paths the CPU tests cannot reach. OUT must be set.
set -x
: "${OUT:?set OUT to an output folder}"
export PYTHONPATH=$PWD
D=${1:?usage: bench/gpu_training_smoke.sh DATA (e.g. m2s-synth --out DATA --preset tiny --sequences 00 08 --scans 8); writes under $OUT}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
T="python3 -m m2s_training.train --config config/train_polar_kitti.yaml --data $D --device cuda --set train.max_steps=40 --set train.val_every=20 --set data.num_workers=0 --set data.max_val_scans=4"
$T --out $OUT/a --set optim.average_from=0.5 2>&1 | grep -v "it/s" | tail -4
$T --out $OUT/b --set train.seed=1 2>&1 | grep -v "it/s" | tail -2
$T --out $OUT/kd --set train.mode=distill --set "train.teacher=[$OUT/a/last.pt, $OUT/b/last.pt]" --set distill.feature=0 --set distill.instance_affinity=0 2>&1 | grep -v "it/s" | tail -3
for c in a/last.pt a/averaged.pt kd/last.pt; do
  python3 -m m2s_training.evaluate --checkpoint $OUT/$c --data $D --split val --out $OUT/eval_${c%%/*}_$(basename $c .pt) --device cuda 2>&1 | grep -E "^mIoU"
done
