#!/usr/bin/env bash
# TensorRT throughput of the segmentation network on a Jetson, bare (trtexec) and through
# the appliance's own code (bench/bench_backend.py with backend "tensorrt"); the same
# JSON as `make bench` plus a "trtexec" section.
#
#   scripts/jetson_bench.sh [--model models/crystal-seg.onnx]
#       [--int8 models/crystal-seg.int8.onnx] [--out bench-out/jetson] [--batch 4]
#       [--frame-size 1024x768] [--duration 10] [--frames N]
#
# On the Jetson (JetPack 6: TensorRT 10, trtexec in /usr/src/tensorrt/bin), from the
# checkout with the appliance installed in .venv (or PY=python3):
#
#   1. trtexec on the float model with --fp16 and on the INT8 (QDQ) model with
#      --int8 --fp16 (explicit quantization: the Q/DQ scales decide INT8, --fp16 lets
#      the layers outside Q/DQ pairs run in FP16), batch 1 and --batch, at the network
#      input of --frame-size frames at the default inference scale (the model metadata:
#      frame pixel size / model pixel size, padded to its size multiple); engines go to a
#      temporary folder; throughput (qps x batch = frames/s), latency and GPU compute
#      time are parsed from trtexec's summary;
#   2. bench/bench_backend.py --backend tensorrt on each model file (bare Backend.infer
#      at batch 1 and --batch, pre- and post-processing per frame, analyze_many end to
#      end), the appliance's engine build included.
#
# Output in --out: trtexec.json, backend.json, backend_int8.json (each
# benchmark's own JSON, as `make bench` writes them) and all.json
# ({"started", "host", "benchmarks": {...}, "failed": {...}, "seconds": {...},
# "trtexec": {...}}, as bench/run_all.py). A step that fails is reported on stderr and
# under "failed", the other steps still run, and the exit status is 1.
#
# Off a Jetson it stops at once (exit 2, one line) unless JETSON_BENCH_STANDIN names a
# folder with stand-ins (tests/bench/test_jetson_bench.py: a fake trtexec and a
# sitecustomize.py installing the test suite's stand-in TensorRT); that folder goes first
# on PATH and PYTHONPATH. Engines build for minutes on an Orin: set
# CRYSTAL_EDGE_STATE_DIR to keep the appliance's engine cache between runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="$ROOT/models/crystal-seg.onnx"
INT8=""
OUT="$ROOT/bench-out/jetson"
BATCH=4
FRAME=1024x768
DURATION=10
FRAMES=()

die() { echo "jetson_bench: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --model) MODEL="${2:?--model needs a file}"; shift 2 ;;
        --int8) INT8="${2:?--int8 needs a file}"; shift 2 ;;
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        --batch) BATCH="${2:?--batch needs a number}"; shift 2 ;;
        --frame-size) FRAME="${2:?--frame-size needs WxH}"; shift 2 ;;
        --duration) DURATION="${2:?--duration needs seconds}"; shift 2 ;;
        --frames) FRAMES=(--frames "${2:?--frames needs a number}"); shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ -z "$INT8" ]] && INT8="${MODEL%.onnx}.int8.onnx"
[[ "$BATCH" =~ ^[1-9][0-9]*$ ]] || die "--batch: expected a positive number, got $BATCH"
[[ "$FRAME" =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || die "--frame-size: expected WIDTHxHEIGHT, got $FRAME"
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "--duration: expected whole seconds, got $DURATION"
[[ -f "$MODEL" ]] || die "--model $MODEL: no such file"

if [[ -n "${JETSON_BENCH_STANDIN:-}" ]]; then
    [[ -d "$JETSON_BENCH_STANDIN" ]] || die "JETSON_BENCH_STANDIN=$JETSON_BENCH_STANDIN: not a folder"
    export PATH="$JETSON_BENCH_STANDIN:$PATH"
    export PYTHONPATH="$JETSON_BENCH_STANDIN:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    echo "jetson_bench: stand-ins from $JETSON_BENCH_STANDIN (not a measurement)" >&2
elif [[ ! -e /etc/nv_tegra_release ]] && ! grep -qi -e jetson -e orin /proc/device-tree/model 2>/dev/null; then
    die "not a Jetson (no /etc/nv_tegra_release, /proc/device-tree/model names no Jetson) and no JETSON_BENCH_STANDIN given"
else
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi

TRTEXEC="$(command -v trtexec || true)"
[[ -z "$TRTEXEC" && -x /usr/src/tensorrt/bin/trtexec ]] && TRTEXEC=/usr/src/tensorrt/bin/trtexec
[[ -n "$TRTEXEC" ]] || die "trtexec not found on PATH or in /usr/src/tensorrt/bin (JetPack: nvidia-tensorrt)"
PY="${PY:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)" || die "no python: set PY"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/jetson_bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export CRYSTAL_EDGE_STATE_DIR="${CRYSTAL_EDGE_STATE_DIR:-$WORK/state}"
mkdir -p "$OUT" "$WORK/steps"
STARTED="$(date -u +%Y-%m-%dT%H:%M:%S+00:00)"
FAILED=0

# network input name and size: the metadata's frames at the default inference scale
read -r INPUT_NAME IN_H IN_W < <("$PY" - "$MODEL" "$FRAME" <<'EOF'
import sys
import onnxruntime as ort
from edge.modelmeta import load_meta
from edge.vision.preprocess import auto_inference_scale, padded_hw, scaled_hw
model, frame = sys.argv[1], sys.argv[2]
meta = load_meta(model)
w, h = (int(v) for v in frame.split("x"))
scale = auto_inference_scale(meta.training_frame_px_size_um, meta.px_size_um)
ih, iw = padded_hw(scaled_hw((h, w), scale), meta.input.size_multiple)
name = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()[0].name
print(name, ih, iw)
EOF
) || die "$MODEL: cannot read the input name and size (metadata JSON beside it?)"
echo "jetson_bench: network input ${INPUT_NAME} ${IN_W}x${IN_H} for ${FRAME} frames" >&2

# step NAME COMMAND...: run it, stdout to $WORK/steps/NAME.out, record the time and failure
step() {
    local name="$1"; shift
    local t0 rc=0
    t0=$(date +%s%N)
    echo "jetson_bench: $name ..." >&2
    "$@" >"$WORK/steps/$name.out" 2>"$WORK/steps/$name.err" || rc=$?
    echo "$name $(( $(date +%s%N) - t0 ))" >>"$WORK/seconds"
    if [[ $rc -ne 0 ]]; then
        FAILED=1
        echo "$name exit status $rc: $(tail -n 3 "$WORK/steps/$name.err" | tr '\n' ' ')" >>"$WORK/failed"
        echo "jetson_bench: $name FAILED (exit status $rc); last lines of its output:" >&2
        tail -n 15 "$WORK/steps/$name.err" "$WORK/steps/$name.out" >&2 || true
    fi
    return 0
}

trt() {  # trt NAME ONNX BATCH FLAGS...
    local name="$1" onnx="$2" b="$3"; shift 3
    step "trtexec_$name" "$TRTEXEC" --onnx="$onnx" \
        --shapes="${INPUT_NAME}:${b}x3x${IN_H}x${IN_W}" "$@" \
        --saveEngine="$WORK/$name.engine" --warmUp=1000 --duration="$DURATION" --useSpinWait
}

HAVE_INT8=0
[[ -f "$INT8" ]] && HAVE_INT8=1
for b in 1 "$BATCH"; do
    trt "fp16_b$b" "$MODEL" "$b" --fp16
    if [[ $HAVE_INT8 -eq 1 ]]; then
        trt "int8_b$b" "$INT8" "$b" --int8 --fp16
    fi
    [[ "$BATCH" -eq 1 ]] && break
done
[[ $HAVE_INT8 -eq 1 ]] || echo "jetson_bench: no INT8 model at $INT8 (crystal-train export --int8); FP16 only" >&2

step backend "$PY" "$ROOT/bench/bench_backend.py" --backend tensorrt --model "$MODEL" \
    --batch "$BATCH" --width "${FRAME%x*}" --height "${FRAME#*x}" ${FRAMES[@]+"${FRAMES[@]}"}
if [[ $HAVE_INT8 -eq 1 ]]; then
    step backend_int8 "$PY" "$ROOT/bench/bench_backend.py" --backend tensorrt --model "$INT8" \
        --batch "$BATCH" --width "${FRAME%x*}" --height "${FRAME#*x}" ${FRAMES[@]+"${FRAMES[@]}"}
fi

"$PY" - "$WORK" "$OUT" "$STARTED" "$INPUT_NAME" "$IN_H" "$IN_W" "$MODEL" "$INT8" <<'EOF'
import json, os, platform, re, sys
from pathlib import Path

work, out, started, name, ih, iw, model, int8 = sys.argv[1:]
steps = Path(work) / "steps"
failed = {}
if (Path(work) / "failed").exists():
    for line in (Path(work) / "failed").read_text().splitlines():
        k, _, why = line.partition(" ")
        failed[k] = why.strip()
seconds = {}
for line in (Path(work) / "seconds").read_text().splitlines():
    k, _, v = line.partition(" ")
    seconds[k] = round(int(v) / 1e9, 1)

NUM = r"([0-9.]+(?:e[-+]?[0-9]+)?)"


def stats(text, label):
    """min/mean/median/p99 (ms) of trtexec's summary line ``label: min = .. ms, ...``."""
    # "[I] Latency: ..." of the performance summary, not "End-to-End Host Latency" or
    # "Total GPU Compute Time"
    m = re.search(rf"\] {label}: (min = .*)", text)
    if not m:
        return None
    out = {}
    for key, val in re.findall(rf"(min|max|mean|median|percentile\(99%\)) = {NUM}", m.group(1)):
        out["p99" if key.startswith("percentile") else key] = float(val)
    return {f"{k}_ms": v for k, v in out.items()} or None


def parse_trtexec(text, batch):
    m = re.search(rf"Throughput: {NUM} qps", text)
    if not m:
        raise ValueError("no 'Throughput: ... qps' line in trtexec's output")
    qps = float(m.group(1))
    return {"batch": batch, "throughput_qps": qps, "frames_per_s": round(qps * batch, 2),
            "latency": stats(text, "Latency"),
            "gpu_compute": stats(text, "GPU Compute Time"),
            "passed": "&&&& PASSED" in text}


trtexec = {"input": {"name": name, "shape_hw": [int(ih), int(iw)]},
           "fp16_model": model, "int8_model": int8 if Path(int8).is_file() else None,
           "runs": {}}
benchmarks = {}
for f in sorted(steps.glob("*.out")):
    key = f.stem
    if key in failed:
        continue
    text = f.read_text()
    if key.startswith("trtexec_"):
        run = key[len("trtexec_"):]
        try:
            trtexec["runs"][run] = parse_trtexec(text + (steps / f"{key}.err").read_text(),
                                                 int(run.rsplit("_b", 1)[1]))
        except ValueError as exc:
            failed[key] = str(exc)
        continue
    try:
        benchmarks[key] = json.loads(text)
    except ValueError:
        failed[key] = "did not print one JSON object on stdout"
        continue
    (Path(out) / f"{key}.json").write_text(json.dumps(benchmarks[key], indent=2) + "\n")
for prec in ("fp16", "int8"):
    runs = {k: v for k, v in trtexec["runs"].items() if k.startswith(prec)}
    if runs:
        best = max(runs.values(), key=lambda r: r["frames_per_s"])
        trtexec[f"{prec}_best_frames_per_s"] = best["frames_per_s"]
f16, i8 = trtexec.get("fp16_best_frames_per_s"), trtexec.get("int8_best_frames_per_s")
if f16 and i8:
    trtexec["int8_speedup_vs_fp16"] = round(i8 / f16, 3)
(Path(out) / "trtexec.json").write_text(json.dumps(trtexec, indent=2) + "\n")
doc = {"started": started,
       "host": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                "python": platform.python_version(), "node": platform.node(),
                "jetson_model": Path("/proc/device-tree/model").read_text(errors="replace")
                .strip("\x00\n") if Path("/proc/device-tree/model").is_file() else None,
                "standin": bool(os.environ.get("JETSON_BENCH_STANDIN"))},
       "benchmarks": benchmarks, "failed": failed, "seconds": seconds, "trtexec": trtexec}
(Path(out) / "all.json").write_text(json.dumps(doc, indent=2) + "\n")
print(json.dumps(doc, indent=2))
for k, why in failed.items():
    print(f"jetson_bench: {k} failed: {why}", file=sys.stderr)
sys.exit(1 if failed else 0)
EOF
