#!/usr/bin/env bash
# Fine-tune a model on the generator's broad domain and blend it with itself: the recipe of
# the default model's class output (models/README.md, "The class output").
#   stage 1: STEPS1 steps from BASE (read back from its ONNX) on 17 preset sets, 620 frames
#            (every habit, crowding level, light and field stop cuts; trainer.synth presets);
#   stage 2: STEPS2 more steps on those + 160 frames of the two card fractions, 40 of
#            40-63 um crystals, 60 needles, 30 dim, 20 dim needles, and 24 frames of
#            0.5 um/px and 40 of 5 um/px optics resampled to 1.45 um/px (crystal-train
#            resample): 994 frames;
#   export FP16, `crystal-train blend` with BASE at ALPHA (WiSE-FT), the four card sets
#   evaluated (recorded in OUT's metadata) and the per-domain tables of BASE, the
#   fine-tune and the blend ($WORK/domain_card_{base,fine-tune,blend}.json).
# The committed model: BASE = the stage-8 model (train_default.sh), STEPS1=480,
# STEPS2 as in crystal-seg.json (training.blend.fine_tune), ALPHA=0.5, on a 2-core CPU.
# Overrides: BIN, WORK, BASE, OUT, STEPS1, STEPS2, ALPHA, DEVICE, WORKERS, NICE, JOBS (data
# sets rendered at once), DOMAIN_FRAMES; for a quick smoke run (tests): BACKBONE, SIZE (frame
# WxH), CROP, FRAMES_DIV (divide every set's frame count).
set -euo pipefail

WORK=${WORK:-runs/broad}
BASE=${BASE:-models/crystal-seg.onnx}
OUT=${OUT:-$WORK/crystal-seg.onnx}
STEPS1=${STEPS1:-480}
STEPS2=${STEPS2:-720}
ALPHA=${ALPHA:-0.5}
source "$(dirname "$0")/datasets.sh"

# name:presets:frames:seed[:fraction]   (stage 1's sets, then stage 2's additions)
SETS1="c_small:compact:70:1101:90-125 c_large:compact:50:1102:125-180 needles:needles:60:1103
    needles_cr:needles,crowded:30:1104 prisms:prisms:40:1105 plates:plates:40:1106
    rhombs:rhombs:30:1107 twins:twins:30:1108 rounded:rounded:30:1109 crowded:crowded:40:1110
    aggl:agglomerates:40:1111 dim:dim:30:1112 bright:bright:30:1113 uneven:uneven:30:1114
    fieldcut:field_cut:30:1115 needles_dim:needles,uneven:20:1116 plates_cr:plates,crowded:20:1117"
SETS2="o_a:compact:80:101:90-125 o_b:compact:80:102:125-180 small:compact:40:1203:40-63
    needles2:needles:60:1204 dim2:dim:30:1205 needles_dim2:needles,dim:20:1206"
VAL="compact needles prisms plates rhombs twins rounded crowded agglomerates dim bright uneven
    field_cut"

mkdir -p "$DATA"
gen_sets $SETS1 $SETS2
gen_other_optics 24 1207 40 1208
for p in $VAL; do gen "val_$p" 3 2200 --preset "$p" --size "$SIZE"; done
gen_card_sets "$SIZE"
gen_done
resample_other_optics
merge train1 100000 $(names $SETS1)
merge train2 100000 $(names $SETS1) $(names $SETS2) fine coarse
merge val 100000 $(for p in $VAL; do echo "val_$p"; done)

train() {  # run data weights steps lr seed
    $CT train --data "$DATA/$2" --val "$DATA/val" --out "$1" --weights "$3" \
        --backbone "$BACKBONE" --aspp-rates 6,12,18 --image-size "$CROP" --input-scale 0.5 \
        --augment light --workers "$WORKERS" --device "$DEVICE" --batch-size 8 \
        --epochs $(( ($4 + 39) / 40 )) --steps-per-epoch 40 --max-steps "$4" --lr "$5" \
        --warmup-steps 10 --seed "$6" --no-progress
}
train "$WORK/stage1" train1 "$BASE" "$STEPS1" 1.5e-4 11
train "$WORK/stage2" train2 "$WORK/stage1/checkpoint.pt" "$STEPS2" 1e-4 13
FT=$WORK/fine-tune.onnx
$CT export --checkpoint "$WORK/stage2/checkpoint.pt" --out "$FT" --fp16 \
    --name "$(basename "${OUT%.onnx}")" --parity-data "$DATA/val_a"
mkdir -p "$(dirname "$OUT")"
$CT blend --model "$BASE" --with "$FT" --alpha "$ALPHA" --out "$OUT" \
    --parity-data "$DATA/val_a" > /dev/null
evaluate_card_sets "$OUT" "$WORK"
for pair in "base:$BASE" "fine-tune:$FT" "blend:$OUT"; do
    nice -n "$NICE" "$BIN/python" scripts/domain_card.py --model "${pair#*:}" \
        --frames "$DOMAIN_FRAMES" --work "$WORK/domains" \
        --out "$WORK/domain_card_${pair%%:*}.json"
done
echo "model: $OUT (blend of $BASE and $FT at $ALPHA); evaluations: $WORK/eval_*.json"
