#!/usr/bin/env bash
# Reproduce the bundled default model models/crystal-seg.onnx (see models/README.md):
#   synthetic training and validation frames (both sieve fractions, separately seeded),
#   DeepLabV3+/ResNet-50 from random init at half resolution (0.5 -> 2.9 um/px),
#   FP16 ONNX export with metadata, evaluation (pixel accuracy, IoU, x50,3 vs truth).
#
# Environment overrides (defaults = the committed model's recipe):
#   EPOCHS, STEPS_PER_EPOCH, MAX_STEPS   schedule (cosine over EPOCHS*STEPS_PER_EPOCH steps;
#                                        MAX_STEPS stops early, as the committed run did)
#   BATCH, CROP, LR, AUGMENT, WEIGHTS    training settings (WEIGHTS=imagenet where reachable)
#   DEVICE (auto|cpu|cuda), WORKERS, NICE, WORK (scratch dir), OUT (target .onnx)
# A longer schedule, e.g. on a GPU:  make train-default EPOCHS=60 STEPS_PER_EPOCH=100 BATCH=8
set -euo pipefail

BIN=${BIN:-.venv/bin}
WORK=${WORK:-runs/default}
OUT=${OUT:-models/crystal-seg.onnx}
EPOCHS=${EPOCHS:-4}
STEPS_PER_EPOCH=${STEPS_PER_EPOCH:-18}
MAX_STEPS=${MAX_STEPS:-}
BATCH=${BATCH:-2}
CROP=${CROP:-320}
LR=${LR:-5e-4}
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

RUN=$WORK/run
extra=()
[ -n "$MAX_STEPS" ] && extra+=(--max-steps "$MAX_STEPS")
$CT train --data "$DATA/train" --val "$DATA/val_small" --out "$RUN" \
    --backbone resnet50 --weights "$WEIGHTS" --aspp-rates 6,12,18 \
    --epochs "$EPOCHS" --steps-per-epoch "$STEPS_PER_EPOCH" --batch-size "$BATCH" \
    --image-size "$CROP" --input-scale 0.5 --augment "$AUGMENT" --lr "$LR" --warmup-steps 8 \
    --workers "$WORKERS" --seed 0 --device "$DEVICE" --no-progress "${extra[@]}"

mkdir -p "$(dirname "$OUT")"
$CT export --checkpoint "$RUN/best.pt" --out "$OUT" --fp16 --name crystal-seg
for v in val_a val_b; do
    $CT evaluate --model "$OUT" --data "$DATA/$v" --json "$WORK/eval_$v.json" --update-meta
done
merge val 100000 val_a val_b
$CT evaluate --model "$OUT" --data "$DATA/val" --no-measure --json "$WORK/eval_val.json" \
    --update-meta
echo "model: $OUT (+ $(basename "${OUT%.onnx}").json); run: $RUN; evaluations: $WORK/eval_*.json"
