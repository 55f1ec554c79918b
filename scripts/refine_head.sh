#!/usr/bin/env bash
# Add the outline refinement head (trainer/refine.py) to a finished model without touching
# anything else in it: the refine step of the default model models/crystal-seg.onnx
# (models/README.md).
#   data:   450 generated frames of every habit, crowding level and light, weighted towards
#           needles and twins (thin outlines), plus 0.5 and 5 um/px optics resampled to the
#           sets' 1.45 um/px; 24 for validation; ROUND=2: the same with 160 more frames of
#           dim light and twins (the two domains the card reads lowest) and 6 more of dim
#           light for validation;
#   train:  crystal-train train --refine-only from BASE: only the head learns (its last
#           layer starts at zero, so training starts from BASE's output exactly);
#   export: FP16 (parity checked on val_a), the four card sets evaluated into its metadata
#           and the per-domain table ($WORK/domain_card.json; DOMAIN_FRAMES=0 skips it).
# The committed model: BASE = the model of scripts/finetune_contact.sh, STEPS=400, on a
# 2-core CPU; then once more with BASE = that result (a file with a head keeps it, so the
# head trains on, here on labels resized by majority share), STEPS=400; then twice more
# on frames whose transparent crystals have a rim along every edge, STEPS=200 (frames of
# an earlier form of that drawing, which left some twins almost no rim) and STEPS=240.
# Overrides: BIN, WORK, BASE, OUT, ROUND, STEPS, MAX_MINUTES, LR, SEED, DEVICE, WORKERS, NICE, JOBS,
# DOMAIN_FRAMES; for a quick smoke run (tests): BACKBONE, SIZE (frame WxH), CROP,
# FRAMES_DIV (divide every set's frame count).
set -euo pipefail

WORK=${WORK:-runs/refine}
BASE=${BASE:-models/crystal-seg.onnx}
OUT=${OUT:-$WORK/crystal-seg.onnx}
STEPS=${STEPS:-400}
MAX_MINUTES=${MAX_MINUTES:-}
LR=${LR:-3e-3}
SEED=${SEED:-51}
ROUND=${ROUND:-1}
case $ROUND in 1|2) ;; *) echo "ROUND=$ROUND: the recipe has rounds 1 and 2" >&2; exit 2 ;; esac
source "$(dirname "$0")/datasets.sh"

SETS="c_a:compact:30:1801:90-125 c_b:compact:30:1802:125-180 prisms:prisms:25:1803
    needles:needles:50:1804 n_cr:needles,crowded:20:1805 n_dim:needles,dim:15:1806
    n_un:needles,uneven:10:1807 plates:plates:20:1808 rhombs:rhombs:20:1809
    twins:twins:40:1810 tw_dim:twins,dim:10:1811 rounded:rounded:15:1812
    isolated:isolated:15:1813 crowded:crowded:25:1814 aggl:agglomerates:30:1815
    dim:dim:20:1816 bright:bright:15:1817 uneven:uneven:15:1818 fc:field_cut:15:1819
    small:compact:20:1820:40-63"
VAL="v_needles:needles:6:2501 v_twins:twins:6:2502 v_aggl:agglomerates:8:2311
    v_dim:dim:4:2503"
if [ "$ROUND" = 2 ]; then
    SETS="$SETS dim2:dim:50:1831 dim2_cr:dim,crowded:15:1832 dim2_sm:dim:15:1833:40-63
        dim2_b:dim:15:1834:125-180 tw2:twins:40:1835 tw2_dim:twins,dim:15:1836
        tw2_cr:twins,crowded:10:1837"
    VAL="$VAL v_dim2:dim:6:2506"
fi
mkdir -p "$DATA"
gen_other_optics 24 1821 40 1822
gen_done
resample_other_optics
EXTRA_TRAIN="fine coarse"
train_val_sets  # DATA/train from SETS and EXTRA_TRAIN, DATA/val from VAL, the card sets

train_run "$STEPS" 80 --lr "$LR" --warmup-steps 20 ${MAX_MINUTES:+--max-minutes "$MAX_MINUTES"} \
    --refine-only --seed "$SEED" --no-progress
export_and_card "$WORK/run/checkpoint.pt" "$OUT"
echo "model: $OUT ($BASE with an outline refinement head); evaluations: $WORK/eval_*.json"
