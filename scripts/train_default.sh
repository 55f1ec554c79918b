#!/usr/bin/env bash
# Reproduce the bundled default model models/crystal-seg.onnx (see models/README.md):
#   synthetic training and validation frames (both sieve fractions, separately seeded),
#   DeepLabV3+/ResNet-50 from random init at half resolution (0.5 -> 2.9 um/px),
#   FP16 ONNX export with metadata, evaluation (pixel accuracy, IoU, x50,3 vs truth).
#
# The committed model was trained in eight stages on a shared 2-core CPU (random init: no
# ImageNet weights offline), each continuing from the previous stage, with 320 px crops at
# half scale: STAGES="epochs:steps_per_epoch:batch:lr:warmup[:max_steps[:data[:take[:lovasz]]]]"
# (a stage the committed run stopped by its time box carries max_steps = the steps it did;
# data = train (160 frames, the default), train2 (train + 120 more frames, 80 of them of
# the small fraction, made with the generator's later version), train3 (train2 + 80 more
# small-fraction frames), train6 (train3 + 80 more) or train8 (train6 + 80 more); take = which checkpoint the next
# stage and the export continue from: best (best.pt, the default) or last (checkpoint.pt);
# lovasz = --lovasz-weight). Stage 6 of the committed model continued from stage 5's
# export (--weights models/crystal-seg.onnx), here from its best.pt; stages 6-8 had seeds
# 6, 8, 9 (here 5, 6, 7).
# data = broad: train8 plus 500 frames of every habit, crowding level and light
# (trainer.synth presets: needles, prisms, plates, rhombs, twins, rounded, crowded,
# agglomerates, dim, bright, uneven, field_cut); a schedule with it also writes the
# per-domain table (scripts/domain_card.py, DOMAIN_FRAMES frames each) to
# $WORK/domain_card.json. The broader default model, e.g. on a GPU:
#   make train-default STAGES="40:100:16:3e-4:200::broad:last" CONTACT_WEIGHT=1 DEVICE=cuda
# JOBS renders that many data sets at once (e.g. 12 on a 16-core GPU machine).
# Other overrides: CONTACT_WEIGHT (trains the learned contact channel, docs/measurement.md),
# CROP, AUGMENT, WEIGHTS (imagenet where reachable), DEVICE (auto|cpu|cuda),
# WORKERS, NICE, WORK (scratch dir), OUT (target .onnx); for a quick smoke run (tests):
# BACKBONE, SIZE (frame WxH), FRAMES_DIV (divide every set's frame count). A longer schedule, e.g. on a GPU:
#   make train-default WEIGHTS=imagenet STAGES="60:100:8:5e-4:100::train8"
set -euo pipefail

WORK=${WORK:-runs/default}
OUT=${OUT:-models/crystal-seg.onnx}
STAGES=${STAGES:-"4:18:2:5e-4:8 9:25:4:3e-4:5 6:25:8:2e-4:5:121 12:40:8:1.5e-4:10::train2 5:40:8:1e-4:5::train3 4:40:8:1e-4:5::train6:last 6:40:8:1e-4:5::train6:last 6:40:8:1e-4:5::train8:last"}
AUGMENT=${AUGMENT:-light}
WEIGHTS=${WEIGHTS:-none}
source "$(dirname "$0")/datasets.sh"

# the broad data set's preset sets: name:presets:frames:seed (500 frames)
BROAD_SETS="needles:needles:60:1103 needles_cr:needles,crowded:30:1104 prisms:prisms:40:1105
    plates:plates:40:1106 rhombs:rhombs:30:1107 twins:twins:30:1108 rounded:rounded:30:1109
    crowded:crowded:40:1110 aggl:agglomerates:40:1111 dim:dim:30:1112 bright:bright:30:1113
    uneven:uneven:30:1114 fieldcut:field_cut:30:1115 needles_dim:needles,uneven:20:1116
    plates_cr:plates,crowded:20:1117"

for stage in $STAGES; do  # check the whole schedule before hours of work
    IFS=: read -r e st b lr wu ms data take lovasz <<<"$stage"
    case "${take:-best}" in best|last) ;; *)
        echo "STAGES: '$take' in '$stage': expected best or last" >&2; exit 2 ;; esac
    case "${data:-train}" in train|train2|train3|train6|train8|broad) ;; *)
        echo "STAGES: '$data' in '$stage': expected train, train2, train3, train6, train8" \
            "or broad" >&2
        exit 2 ;; esac
    [ "${data:-train}" = broad ] && BROAD=1
done

mkdir -p "$DATA"
gen train_a 80 101 --fraction 90-125 --size "$SIZE"
gen train_b 80 102 --fraction 125-180 --size "$SIZE"
gen train_c 80 103 --fraction 90-125 --size "$SIZE"
gen train_d 40 104 --fraction 125-180 --size "$SIZE"
gen train_e 80 105 --fraction 90-125 --size "$SIZE"
gen train_f 80 106 --fraction 90-125 --size "$SIZE"
gen train_g 80 107 --fraction 90-125 --size "$SIZE"
gen_card_sets "$SIZE"
if [ -n "${BROAD:-}" ]; then  # broad = train8 + every habit, crowding level and light
    for spec in $BROAD_SETS; do
        IFS=: read -r name preset n seed <<<"$spec"
        gen "p_$name" "$n" "$seed" --preset "$preset" --size "$SIZE"
    done
fi
gen_done
merge train 100000 train_a train_b
merge train2 100000 train_a train_b train_c train_d
merge train3 100000 train_a train_b train_c train_d train_e
merge train6 100000 train_a train_b train_c train_d train_e train_f
merge train8 100000 train_a train_b train_c train_d train_e train_f train_g
merge val_small 4 val_a val_b
if [ -n "${BROAD:-}" ]; then  # broad: train8 and the preset sets
    merge broad 100000 train_a train_b train_c train_d train_e train_f train_g \
        $(for spec in $BROAD_SETS; do echo "p_${spec%%:*}"; done)
fi

train() {  # run data weights epochs steps batch lr warmup seed [extra...]
    local run=$1 data=$2 w=$3 e=$4 st=$5 b=$6 lr=$7 wu=$8 seed=$9; shift 9
    $CT train --data "$DATA/$data" --val "$DATA/val_small" --out "$run" \
        --backbone "$BACKBONE" --weights "$w" --aspp-rates 6,12,18 \
        --epochs "$e" --steps-per-epoch "$st" --batch-size "$b" --image-size "$CROP" \
        --input-scale 0.5 --augment "$AUGMENT" --lr "$lr" --warmup-steps "$wu" \
        --workers "$WORKERS" --seed "$seed" --device "$DEVICE" --no-progress \
        ${CONTACT_WEIGHT:+--contact-weight "$CONTACT_WEIGHT"} "$@"
}
init=$WEIGHTS
i=0
for stage in $STAGES; do
    IFS=: read -r e st b lr wu ms data take lovasz <<<"$stage"
    i=$((i + 1))
    RUN=$WORK/stage$i
    extra=()
    [ -n "${ms:-}" ] && extra+=(--max-steps "$ms")
    [ -n "${lovasz:-}" ] && extra+=(--lovasz-weight "$lovasz")
    train "$RUN" "${data:-train}" "$init" "$e" "$st" "$b" "$lr" "$wu" $((i - 1)) "${extra[@]}"
    if [ "${take:-best}" = last ]; then init=$RUN/checkpoint.pt; else init=$RUN/best.pt; fi
done

mkdir -p "$(dirname "$OUT")"
$CT export --checkpoint "$init" --out "$OUT" --fp16 --name crystal-seg \
    --parity-data "$DATA/val_a"
evaluate_card_sets "$OUT" "$WORK"
merge val 100000 val_a val_b
$CT evaluate --model "$OUT" --data "$DATA/val" --no-measure --json "$WORK/eval_val.json" \
    --update-meta
if [ -n "${BROAD:-}" ]; then  # the model card's per-domain table
    nice -n "$NICE" "$BIN/python" scripts/domain_card.py --model "$OUT" \
        --frames "$DOMAIN_FRAMES" --work "$WORK/domains" --out "$WORK/domain_card.json" \
        --markdown
fi
echo "model: $OUT (+ $(basename "${OUT%.onnx}").json); run: $RUN; evaluations: $WORK/eval_*.json"
