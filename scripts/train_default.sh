#!/usr/bin/env bash
# Reproduce the bundled default model models/crystal-seg.onnx (see models/README.md):
#   synthetic training and validation frames (both sieve fractions, separately seeded),
#   DeepLabV3+/ResNet-50 from random init at half resolution (0.5 -> 2.9 um/px),
#   FP16 ONNX export with metadata, evaluation (pixel accuracy, IoU, x50,3 vs truth).
#
# Two stages, as the committed model was trained on a shared 2-core CPU (random init, no
# ImageNet weights offline): stage 1 = 4 x 18 steps of 2 crops (320 px at half scale),
# stage 2 = continued from stage 1's best.pt with 4 crops per step (MAX_STEPS2 = the steps
# the committed run managed in its time box). Environment overrides (defaults = that recipe):
#   EPOCHS1 STEPS1 BATCH1 LR1 / EPOCHS2 STEPS2 BATCH2 LR2 MAX_STEPS2 (EPOCHS2=0: one stage)
#   CROP, AUGMENT, WEIGHTS (imagenet where reachable), DEVICE (auto|cpu|cuda), WORKERS,
#   NICE, WORK (scratch dir), OUT (target .onnx)
# A longer schedule, e.g. on a GPU:
#   make train-default WEIGHTS=imagenet EPOCHS1=50 STEPS1=100 BATCH1=8 EPOCHS2=0
set -euo pipefail

BIN=${BIN:-.venv/bin}
WORK=${WORK:-runs/default}
OUT=${OUT:-models/crystal-seg.onnx}
EPOCHS1=${EPOCHS1:-4}; STEPS1=${STEPS1:-18}; BATCH1=${BATCH1:-2}; LR1=${LR1:-5e-4}
EPOCHS2=${EPOCHS2:-9}; STEPS2=${STEPS2:-25}; BATCH2=${BATCH2:-4}; LR2=${LR2:-3e-4}
MAX_STEPS2=${MAX_STEPS2:-}
CROP=${CROP:-320}
AUGMENT=${AUGMENT:-light}
WEIGHTS=${WEIGHTS:-none}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-1}
NICE=${NICE:-5}
CT="nice -n $NICE $BIN/crystal-train"
DATA=$WORK/data

gen() {  # name fraction n seed
    if [ ! -f "$DATA/$1/truth.json" ]; then
        $CT synth --out "$DATA/$1" --fraction "$2" --n "$3" --seed "$4" --size 1024x768
    fi
}
merge() {  # dst limit part...   (hard links, stems prefixed by the part's name)
    local dst=$DATA/$1 limit=$2; shift 2
    rm -rf "$dst"; mkdir -p "$dst/images" "$dst/labels"
    for part in "$@"; do
        for f in $(ls "$DATA/$part/images" | sort | head -n "$limit"); do
            ln "$DATA/$part/images/$f" "$dst/images/${part}_$f"
            ln "$DATA/$part/labels/$f" "$dst/labels/${part}_$f"
        done
    done
    cp "$DATA/$part/classes.json" "$dst/classes.json"
}

gen train_a 90-125 80 101
gen train_b 125-180 80 102
gen val_a 90-125 12 201
gen val_b 125-180 12 202
merge train 100000 train_a train_b
merge val_small 4 val_a val_b

train() {  # run weights epochs steps batch lr warmup seed [extra...]
    local run=$1 w=$2 e=$3 st=$4 b=$5 lr=$6 wu=$7 seed=$8; shift 8
    $CT train --data "$DATA/train" --val "$DATA/val_small" --out "$run" \
        --backbone resnet50 --weights "$w" --aspp-rates 6,12,18 \
        --epochs "$e" --steps-per-epoch "$st" --batch-size "$b" --image-size "$CROP" \
        --input-scale 0.5 --augment "$AUGMENT" --lr "$lr" --warmup-steps "$wu" \
        --workers "$WORKERS" --seed "$seed" --device "$DEVICE" --no-progress "$@"
}
RUN=$WORK/stage1
train "$RUN" "$WEIGHTS" "$EPOCHS1" "$STEPS1" "$BATCH1" "$LR1" 8 0
if [ "$EPOCHS2" -gt 0 ]; then
    extra=()
    [ -n "$MAX_STEPS2" ] && extra+=(--max-steps "$MAX_STEPS2")
    train "$WORK/stage2" "$RUN/best.pt" "$EPOCHS2" "$STEPS2" "$BATCH2" "$LR2" 5 1 "${extra[@]}"
    RUN=$WORK/stage2
fi

mkdir -p "$(dirname "$OUT")"
$CT export --checkpoint "$RUN/best.pt" --out "$OUT" --fp16 --name crystal-seg \
    --parity-data "$DATA/val_a"
for v in val_a val_b; do
    $CT evaluate --model "$OUT" --data "$DATA/$v" --json "$WORK/eval_$v.json" --update-meta
done
merge val 100000 val_a val_b
$CT evaluate --model "$OUT" --data "$DATA/val" --no-measure --json "$WORK/eval_val.json" \
    --update-meta
echo "model: $OUT (+ $(basename "${OUT%.onnx}").json); run: $RUN; evaluations: $WORK/eval_*.json"
