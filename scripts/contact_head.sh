#!/usr/bin/env bash
# Grow the learned contact channel on a finished model without touching its class output:
# the contact step of the default model models/crystal-seg.onnx (models/README.md).
#   data:   330 generated frames of every habit with the generator's exact contact labels,
#           a third of them agglomerate-rich (trainer.synth presets), 12 for validation;
#   train:  crystal-train train --contact-only --head-kernel 3 from BASE: only the contact
#           row of a 3x3 final convolution learns, the class output stays BASE's;
#   export: FP16 (parity checked on val_a), the four card sets evaluated into its metadata
#           and the per-domain table ($WORK/domain_card.json; DOMAIN_FRAMES=0 skips it).
# The committed model: BASE = the blend of scripts/finetune_broad.sh, STEPS=800, on a
# 2-core CPU (about 25 min of training).
# Overrides: BIN, WORK, BASE, OUT, STEPS, LR, HEAD_KERNEL, DEVICE, WORKERS, NICE, JOBS,
# DOMAIN_FRAMES; for a quick smoke run (tests): BACKBONE, SIZE (frame WxH), CROP,
# FRAMES_DIV (divide every set's frame count).
set -euo pipefail

WORK=${WORK:-runs/contact}
BASE=${BASE:-models/crystal-seg.onnx}
OUT=${OUT:-$WORK/crystal-seg.onnx}
STEPS=${STEPS:-800}
LR=${LR:-3e-3}
HEAD_KERNEL=${HEAD_KERNEL:-3}
source "$(dirname "$0")/datasets.sh"

SETS=$CONTACT_SETS
VAL="v_aggl:agglomerates:8:2311 v_crowded:crowded:4:2312"

train_val_sets  # DATA/train from SETS, DATA/val from VAL, the card sets

train_run "$STEPS" 80 --lr "$LR" --warmup-steps 20 \
    --contact-weight 1 --contact-only --head-kernel "$HEAD_KERNEL" --seed 21 --no-progress
export_and_card "$WORK/run/checkpoint.pt" "$OUT"
echo "model: $OUT ($BASE with a learned contact channel); evaluations: $WORK/eval_*.json"
