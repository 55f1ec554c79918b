#!/usr/bin/env bash
# Fine-tune the whole network of a model that has the contact channel, class output and
# contact channel together, and blend the fine-tune with it: the last steps of the default
# model models/crystal-seg.onnx (models/README.md, "This model" and "Its base").
#   data:   ROUND=1 (default): 900 generated frames with the generator's exact contact
#           labels: the sets of scripts/contact_head.sh (400), 160 more single prisms,
#           isolated crystals, rhombs, plates and needles, 60 twins, and 280 frames of the
#           domains the model was weakest on (needles alone, crowded and dim, dim light,
#           field stop cuts, 40-63 um crystals) with 80 of the card's two sieve fractions;
#           ROUND=2: 774 new frames weighted towards needles, twins, agglomerate-rich and
#           40-63 um crystals with a replay of every other domain, and 54 frames of 0.5 and
#           5 um/px optics resampled to 1.45 um/px; ROUND=3: 760 new frames weighted
#           towards agglomerate-rich frames, twins and needles with a replay, and 84 of
#           0.5 and 5 um/px optics resampled; ROUND=4: 620 new frames drawn with a rim
#           along every edge of a transparent crystal, weighted towards needles (240, 80
#           of them cut by the field stop) and twins with a replay, and 100 of 0.5 and 5
#           um/px optics (the 0.5 um/px ones also unresampled); ROUND=5: ROUND=4's frames
#           and 150 more of dim light and twins (the two domains the card reads lowest);
#           36 for validation in all;
#   train:  crystal-train train --weights BASE --contact-weight 1 (the loss of both outputs),
#           lr 1e-4, cosine over STEPS steps (validated every EPOCH_STEPS), stopped after
#           MAX_MINUTES when set; TRAIN_ONLY=1 stops here (WORK/run/checkpoint.pt: a GPU
#           machine trains, and TRAINED=1 on another goes on from that checkpoint);
#   export: FP16, `crystal-train blend` with BASE at ALPHA (WiSE-FT), the four card sets
#           evaluated into OUT's metadata and the per-domain tables of the fine-tune and
#           the blend ($WORK/domain_card_{fine-tune,blend}.json; DOMAIN_FRAMES=0 skips them).
# The committed model: ROUND=1 with BASE = the model of scripts/contact_head.sh, STEPS=1200
# MAX_MINUTES=70 (982 steps on a 2-core CPU), ALPHA=0.75; then ROUND=2 with BASE = that
# blend, STEPS=800 MAX_MINUTES=58 (771 steps), ALPHA=0.75 (crystal-seg.json:
# training.fine_tune and .blend are the second round's, training.base the first's).
# Overrides: BIN, WORK, BASE, OUT, ROUND, STEPS, EPOCH_STEPS, MAX_MINUTES, ALPHA, DEVICE,
# TRAIN_ONLY, TRAINED, WORKERS, NICE,
# JOBS, DOMAIN_FRAMES; for a quick smoke run (tests): BACKBONE, SIZE (frame WxH), CROP,
# FRAMES_DIV.
set -euo pipefail

WORK=${WORK:-runs/contact-ft}
BASE=${BASE:-models/crystal-seg.onnx}
OUT=${OUT:-$WORK/crystal-seg.onnx}
STEPS=${STEPS:-1200}
MAX_MINUTES=${MAX_MINUTES:-}
ALPHA=${ALPHA:-0.75}
ROUND=${ROUND:-1}
EPOCH_STEPS=${EPOCH_STEPS:-80}
TRAIN_ONLY=${TRAIN_ONLY:-0}
TRAINED=${TRAINED:-0}
case $ROUND in 1|2|3|4|5) ;; *) echo "ROUND=$ROUND: the recipe has rounds 1 to 5" >&2; exit 2 ;; esac
if [ "$TRAINED" = 1 ] && [ ! -f "$WORK/run/checkpoint.pt" ]; then
    echo "TRAINED=1: no $WORK/run/checkpoint.pt" >&2
    exit 2
fi
source "$(dirname "$0")/datasets.sh"

# name:presets:frames:seed[:fraction]: scripts/contact_head.sh's sets, then the additions
SETS="$CONTACT_SETS
    prisms2:prisms:60:1330 isolated2:isolated:30:1331 rhombs2:rhombs:20:1332
    plates2:plates:20:1333 needles2:needles:30:1334 twins2:twins:60:1331
    n3:needles:60:1401 n_cr:needles,crowded:30:1402 n_dim:needles,dim:20:1403
    o_a:compact:40:1404:90-125 o_b:compact:40:1405:125-180 dim2:dim:30:1406
    fc2:field_cut:30:1407 small:compact:30:1408:40-63"
VAL="v_needles:needles:6:2501 v_twins:twins:6:2502 v_dim:dim:6:2503 v_fc:field_cut:6:2504
    v_aggl:agglomerates:8:2311 v_crowded:crowded:4:2312"
SEED=31
# ROUND=2: a second fine-tune from the first round's blend, on new frames weighted towards
# what the first left weakest (needles, twins, agglomerate-rich, 40-63 um crystals, 0.5
# and 5 um/px optics resampled to the sets' 1.45 um/px) with a replay of every other domain
if [ "$ROUND" = 2 ]; then
    SETS="n5:needles:90:1601 n5_cr:needles,crowded:30:1602 n5_dim:needles,dim:20:1603
        n5_un:needles,uneven:20:1604 tw3:twins:80:1605 tw3_cr:twins,crowded:20:1606
        ag3:agglomerates:80:1607 ag3_s:agglomerates:30:1608:90-125 sm2:compact:50:1609:40-63
        o_a3:compact:40:1610:90-125 o_b3:compact:40:1611:125-180 prisms3:prisms:30:1612
        plates3:plates:20:1613 rhombs3:rhombs:20:1614 rounded3:rounded:20:1615
        crowded3:crowded:30:1616 dim3:dim:30:1617 bright3:bright:15:1618
        uneven3:uneven:15:1619 fc3:field_cut:20:1620"
    SEED=37
    mkdir -p "$DATA"
    gen_other_optics 24 1621 30 1622
    gen_done
    resample_other_optics
    EXTRA_TRAIN="fine coarse"  # merged into DATA/train beside SETS
fi
# ROUND=3: from the second round's blend, on new frames weighted towards what it leaves
# outside the card's targets: agglomerate-rich frames (a small crystal over a larger one),
# twins (also at the field stop and in dim light) and 5 um/px optics, with a replay
if [ "$ROUND" = 3 ]; then
    SETS="ag4:agglomerates:120:1701 ag4_s:agglomerates:40:1702:90-125
        ag4_cr:agglomerates,crowded:30:1703 tw4:twins:100:1704 tw4_fc:twins,field_cut:20:1705
        tw4_dim:twins,dim:20:1706 n6:needles:60:1707 n6_br:needles,bright:15:1708
        n6_un:needles,uneven:15:1709 dim4:dim:40:1710 o_a4:compact:40:1711:90-125
        o_b4:compact:40:1712:125-180 prisms4:prisms:30:1713 plates4:plates:20:1714
        rhombs4:rhombs:20:1715 rounded4:rounded:20:1716 crowded4:crowded:30:1717
        bright4:bright:15:1718 uneven4:uneven:15:1719 fc4:field_cut:20:1720
        isolated4:isolated:20:1721 sm3:compact:30:1722:40-63"
    SEED=43
    mkdir -p "$DATA"
    gen_other_optics 24 1723 60 1724
    gen_done
    resample_other_optics
    EXTRA_TRAIN="fine coarse"
fi
# ROUND=4: from the model whose head learnt frames with a rim along every edge of a
# transparent crystal (BASE has the refinement head, which trains on with the network), on
# such frames, weighted towards what the head alone could not fix: needles, above all those
# cut by the field stop, twins and dim light, with a replay; 0.5 um/px frames also at their
# own scale (1.0 um per network pixel, where the edge runs them)
if [ "$ROUND" = 4 ] || [ "$ROUND" = 5 ]; then
    SETS="n7:needles:100:1901 n7_fc:needles,field_cut:80:1902 n7_cr:needles,crowded:20:1903
        n7_dim:needles,dim:20:1904 n7_un:needles,uneven:10:1905 n7_br:needles,bright:10:1906
        tw5:twins:50:1907 tw5_fc:twins,field_cut:20:1908 tw5_dim:twins,dim:15:1909
        ag5:agglomerates:50:1910 fc5:field_cut:30:1911 dim5:dim:25:1912
        o_a5:compact:25:1913:90-125 o_b5:compact:25:1914:125-180 prisms5:prisms:20:1915
        plates5:plates:15:1916 rhombs5:rhombs:15:1917 rounded5:rounded:15:1918
        crowded5:crowded:20:1919 isolated5:isolated:15:1920 bright5:bright:10:1921
        uneven5:uneven:10:1922 sm4:compact:20:1923:40-63"
    VAL="v_needles:needles:6:2501 v_nfc:needles,field_cut:6:2505 v_twins:twins:6:2502
        v_dim:dim:6:2503 v_fc:field_cut:6:2504 v_aggl:agglomerates:6:2311"
    SEED=53
    # ROUND=5: the same from the model these rounds left, with dim light and twins doubled
    if [ "$ROUND" = 5 ]; then
        SETS="$SETS dim6:dim:40:1931 dim6_cr:dim,crowded:15:1932 dim6_sm:dim:15:1933:40-63
            tw6:twins:50:1934 tw6_dim:twins,dim:15:1935 tw6_cr:twins,crowded:15:1936"
        SEED=59
    fi
    mkdir -p "$DATA"
    gen_other_optics 30 1924 40 1925
    gen_done
    resample_other_optics
    EXTRA_TRAIN="fine_raw fine coarse"  # the last part's classes.json (1.45 um/px) is kept
fi
train_val_sets  # DATA/train from SETS, DATA/val from VAL, the card sets

if [ "$TRAINED" != 1 ]; then
    train_run "$STEPS" "$EPOCH_STEPS" --lr 1e-4 --warmup-steps 10 \
        ${MAX_MINUTES:+--max-minutes "$MAX_MINUTES"} --contact-weight 1 --head-kernel 3 \
        --seed "$SEED" --no-progress
fi
if [ "$TRAIN_ONLY" = 1 ]; then
    echo "checkpoint: $WORK/run/checkpoint.pt (TRAIN_ONLY=1: not exported)"
    exit 0
fi
FT=$WORK/fine-tune.onnx
$CT export --checkpoint "$WORK/run/checkpoint.pt" --out "$FT" --fp16 \
    --name "$(basename "${OUT%.onnx}")" --parity-data "$DATA/val_a" > /dev/null
mkdir -p "$(dirname "$OUT")"
$CT blend --model "$BASE" --with "$FT" --alpha "$ALPHA" --out "$OUT" \
    --parity-data "$DATA/val_a" > /dev/null
evaluate_card_sets "$OUT" "$WORK"
if [ "$DOMAIN_FRAMES" -gt 0 ]; then
    for pair in "fine-tune:$FT" "blend:$OUT"; do
        nice -n "$NICE" "$BIN/python" scripts/domain_card.py --model "${pair#*:}" \
            --frames "$DOMAIN_FRAMES" --work "$WORK/domains" \
            --out "$WORK/domain_card_${pair%%:*}.json"
    done
fi
echo "model: $OUT (blend of $BASE and $FT at $ALPHA); evaluations: $WORK/eval_*.json"
