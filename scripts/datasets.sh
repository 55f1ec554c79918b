# Settings and data-set helpers of the training recipes, sourced by train_default.sh,
# finetune_broad.sh, contact_head.sh and finetune_contact.sh once they have set WORK.
# Every setting below can be overridden from the environment.

BIN=${BIN:-.venv/bin}
BACKBONE=${BACKBONE:-resnet50}
SIZE=${SIZE:-1024x768}
CROP=${CROP:-320}
FRAMES_DIV=${FRAMES_DIV:-1}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-1}
NICE=${NICE:-5}
JOBS=${JOBS:-1}
DOMAIN_FRAMES=${DOMAIN_FRAMES:-36}  # frames per domain of the per-domain table (model card)
CT="nice -n $NICE $BIN/crystal-train"
DATA=$WORK/data

# name:presets:frames:seed[:fraction]: the 400 frames that taught the contact channel
# (contact_head.sh) and the first of finetune_contact.sh
CONTACT_SETS="aggl:agglomerates:90:1311 aggl_s:agglomerates:30:1312:90-125 crowded:crowded:40:1313
    c_small:compact:30:1314:90-125 c_large:compact:30:1315:125-180 needles:needles:30:1316
    needles_cr:needles,crowded:15:1317 twins:twins:20:1318 prisms:prisms:20:1319
    plates:plates:20:1320 plates_cr:plates,crowded:15:1321 rhombs:rhombs:15:1322
    rounded:rounded:15:1323 fieldcut:field_cut:15:1324 dim:dim:15:1325"

GENERATED=()
gen() {  # name frames seed [synth options...]: DATA/name, frames / FRAMES_DIV (at least 1)
    local name=$1 n=$(( $2 / FRAMES_DIV )) seed=$3; shift 3
    GENERATED+=("$name")
    [ -f "$DATA/$name/truth.json" ] && return 0  # rendered by an earlier run
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    $CT synth --out "$DATA/$name" --n $(( n > 0 ? n : 1 )) --seed "$seed" "$@" \
        > "$DATA/$name.log" 2>&1 &
}

gen_sets() {  # name:presets:frames:seed[:fraction]...: one generated set each, at SIZE
    local spec name preset n seed frac
    for spec in "$@"; do
        IFS=: read -r name preset n seed frac <<<"$spec"
        gen "$name" "$n" "$seed" --preset "$preset" --size "$SIZE" ${frac:+--fraction "$frac"}
    done
}

names() { for spec in "$@"; do echo "${spec%%:*}"; done; }  # the sets' names

gen_done() {  # wait for every set; one that did not finish stops the run, naming it
    wait
    for name in "${GENERATED[@]}"; do
        if [ ! -f "$DATA/$name/truth.json" ]; then
            echo "generating $DATA/$name failed: $(tail -n 1 "$DATA/$name.log")" >&2
            exit 1
        fi
    done
}

merge() {  # dst limit part...   (hard links, stems prefixed by the part's name)
    local dst=$DATA/$1 limit=$2; shift 2
    rm -rf "$dst"; mkdir -p "$dst/images" "$dst/labels"
    for part in "$@"; do
        for f in $(ls "$DATA/$part/images" | sort | head -n "$limit"); do
            ln "$DATA/$part/images/$f" "$dst/images/${part}_$f"
            ln "$DATA/$part/labels/$f" "$dst/labels/${part}_$f"
            if [ -f "$DATA/$part/contacts/$f" ]; then  # the contact channel's labels
                mkdir -p "$dst/contacts"
                ln "$DATA/$part/contacts/$f" "$dst/contacts/${part}_$f"
            fi
        done
    done
    cp "$DATA/$part/classes.json" "$dst/classes.json"
}

gen_other_optics() {  # fine_n fine_seed coarse_n coarse_seed: 0.5 and 5 um/px frames of
    # SIZE's field of view (DATA/fine_raw, DATA/coarse_raw; resample_other_optics after gen_done)
    local w=${SIZE%x*} h=${SIZE#*x}
    gen fine_raw "$1" "$2" --preset fine_pixels --size "$((2 * w))x$((2 * h))"
    gen coarse_raw "$3" "$4" --preset coarse_pixels --size "$((w * 5 / 16))x$((h * 5 / 16))"
}

resample_other_optics() {  # DATA/fine and DATA/coarse: the frames of gen_other_optics at
    local s                # the sets' 1.45 um/px (crystal-train resample)
    for s in fine coarse; do
        [ -f "$DATA/$s/classes.json" ] || $CT resample --data "$DATA/${s}_raw" \
            --out "$DATA/$s" --px-size-um 1.45 > /dev/null
    done
}

gen_card_sets() {  # SIZE: the model card's four sets (val_a, val_b, test_a, test_b)
    for s in 201:val_a:90-125 202:val_b:125-180 401:test_a:90-125 402:test_b:125-180; do
        IFS=: read -r seed name frac <<<"$s"
        gen "$name" 12 "$seed" --fraction "$frac" --size "$1"
    done
}

evaluate_card_sets() {  # MODEL WORK: evaluate the card sets into MODEL's metadata
    for v in val_a val_b test_a test_b; do
        $CT evaluate --model "$1" --data "$DATA/$v" --json "$2/eval_$v.json" --update-meta
    done
}

export_and_card() {  # CHECKPOINT OUT: FP16 export (parity on val_a), the card sets into its
    mkdir -p "$(dirname "$2")"  # metadata, the per-domain table (DOMAIN_FRAMES=0: none)
    $CT export --checkpoint "$1" --out "$2" --fp16 --name "$(basename "${2%.onnx}")" \
        --parity-data "$DATA/val_a" > /dev/null
    evaluate_card_sets "$2" "$WORK"
    if [ "$DOMAIN_FRAMES" -gt 0 ]; then
        nice -n "$NICE" "$BIN/python" scripts/domain_card.py --model "$2" \
            --frames "$DOMAIN_FRAMES" --work "$WORK/domains" --out "$WORK/domain_card.json"
    fi
}

train_val_sets() {  # SETS (and the rendered sets EXTRA_TRAIN) merged into DATA/train
    mkdir -p "$DATA"  # and VAL into DATA/val, the card sets rendered beside them
    gen_sets $SETS $VAL
    gen_card_sets "$SIZE"
    gen_done
    merge train 100000 $(names $SETS) ${EXTRA_TRAIN:-}
    merge val 100000 $(names $VAL)
}

train_run() {  # steps epoch_steps [train options...]: WORK/run from BASE on DATA/train, DATA/val
    local steps=$1 per=$(( $1 < $2 ? $1 : $2 )); shift 2
    $CT train --data "$DATA/train" --val "$DATA/val" --out "$WORK/run" --weights "$BASE" \
        --backbone "$BACKBONE" --aspp-rates 6,12,18 --image-size "$CROP" --input-scale 0.5 \
        --augment light --workers "$WORKERS" --device "$DEVICE" --batch-size 8 \
        --epochs $(( (steps + per - 1) / per )) --steps-per-epoch "$per" --max-steps "$steps" "$@"
}
