#!/usr/bin/env bash
# Check a CUDA machine end to end and measure it, in about ten minutes:
#
#   bash benchmarks/gpu_check.sh          # everything goes to $OUT (default /tmp/dhkd_gpu_check)
#
# 1. finds a python with a CUDA build of torch (installs torch 2.14.1 / torchvision 0.29.1 and
#    the kit only where there is none, and only the kit's light imports where dhkd is missing);
# 2. writes the toy category `nut` (60 training images at 256x256);
# 3. dhkd bench on synthetic data of bottle's shapes: --profile paper, then rd, then paper with
#    torch.compile, each a table plus $OUT/bench_*.json;
# 4. one full 200-epoch `paper` training with evaluation, on bottle when MVTec AD is at
#    $MVTEC_ROOT (default data/mvtec_ad, where `dhkd data mvtec` puts it), else on the toy nut,
#    printing images/s, seconds per epoch and the projected time for MVTec AD's 15 categories.
#
# Everything runs with model.teacher.weights=none, so that a machine without internet needs no
# download: speed does not depend on the weights, but the metrics of the training run then say
# only that the path works, nothing about DHKD's accuracy.
#
# Every phase has a time budget and the whole script a deadline (DEADLINE_S, default 540 s); a
# phase cut short still leaves its partial output (the training's history.csv is written every
# epoch and is summarised anyway). A CPU dry run of the same steps:
#   DEVICE=cpu EPOCHS=1 TOY_TRAIN=4 EXTRA_SET="model.decoder.blocks=[1,1,1]" bash benchmarks/gpu_check.sh

set -u -o pipefail
START=$(date +%s)
OUT=${OUT:-/tmp/dhkd_gpu_check}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-200}
DEADLINE_S=${DEADLINE_S:-540}
TOY_TRAIN=${TOY_TRAIN:-60}
# a paper checkpoint (student + Adam state) is about 1 GB: every 10 epochs, not every epoch, so that
# disk writes do not dominate a GPU epoch of a second or two (the per-epoch seconds exclude them)
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-10}
BENCH_PROFILES=${BENCH_PROFILES:-"paper rd paper+compile"}
# extra --set for every bench/training (a CPU dry run shrinks the model with these)
EXTRA_SET=${EXTRA_SET:-}
MVTEC_ROOT=${MVTEC_ROOT:-data/mvtec_ad}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
REPO=$(pwd)

stamp() { echo "[$(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s] $*"; }
left() { echo $(( DEADLINE_S - ($(date +%s) - START) )); }
# run_phase NAME BUDGET_S CMD...: run CMD under `timeout min(BUDGET, time left)`, logging to $OUT/NAME.log
run_phase() {
    local name=$1 budget=$2; shift 2
    local remaining; remaining=$(left)
    if (( remaining < 20 )); then stamp "SKIP $name: only ${remaining}s left before the deadline"; return 0; fi
    (( budget > remaining )) && budget=$remaining
    stamp "START $name (budget ${budget}s)"
    timeout --signal=TERM --kill-after=15 "$budget" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    if (( rc == 124 )); then stamp "TIMEOUT $name after ${budget}s"; else stamp "END $name (exit $rc)"; fi
    return 0
}
sets() { local s; for s in model.teacher.weights=none $EXTRA_SET "$@"; do printf -- '--set\n%s\n' "$s"; done; }

# ----------------------------------------------------------------------------- python and torch
stamp "machine: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PY=""
for candidate in ${PYTHON:-} "$REPO/.venv/bin/python" python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import torch' >/dev/null 2>&1; then PY=$candidate; break; fi
done
want_cuda() { [ "$DEVICE" = cpu ] || "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; }
if [ -z "$PY" ] || ! want_cuda "$PY"; then
    stamp "no python with a CUDA torch: installing torch==2.14.1 torchvision==0.29.1 and the kit into $REPO/.venv-gpu"
    python3 -m venv "$REPO/.venv-gpu" && PY="$REPO/.venv-gpu/bin/python"
    "$PY" -m pip install --quiet torch==2.14.1 torchvision==0.29.1 && "$PY" -m pip install --quiet -e "$REPO"
fi
if ! "$PY" -c 'import benchmarks.bench, dhkd.data.toy' >/dev/null 2>&1; then
    stamp "installing the kit (editable, no dependencies) and only the light imports it needs here"
    "$PY" -m pip install --quiet --no-deps -e "$REPO"
    for module_package in numpy:numpy scipy:scipy yaml:pyyaml tqdm:tqdm PIL:pillow skimage:scikit-image; do
        "$PY" -c "import ${module_package%%:*}" >/dev/null 2>&1 || "$PY" -m pip install --quiet "${module_package#*:}"
    done
fi
"$PY" - <<'PYEOF' | tee "$OUT/environment.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none", "threads", torch.get_num_threads())
PYEOF
want_cuda "$PY" || { stamp "torch sees no GPU: stopping (use DEVICE=cpu for a dry run)"; exit 1; }

# ----------------------------------------------------------------------------- data
stamp "toy category nut ($TOY_TRAIN training images, 256x256)"
"$PY" -c "from dhkd.data.toy import generate_toy; generate_toy('$OUT/toy', n_train=$TOY_TRAIN, categories=['nut'], progress=False)"
DATA_ROOT="$OUT/toy"; CATEGORY=nut
if [ -d "$MVTEC_ROOT/bottle/train/good" ]; then DATA_ROOT=$MVTEC_ROOT; CATEGORY=bottle; fi
stamp "training data: $DATA_ROOT/$CATEGORY"

# ----------------------------------------------------------------------------- benchmarks
for profile in $BENCH_PROFILES; do
    case $profile in
        *+compile) name=${profile%+compile}; mapfile -t extra < <(sets train.compile=true); budget=150 ;;
        *) name=$profile; mapfile -t extra < <(sets); budget=120 ;;
    esac
    run_phase "bench_${profile/+/_}" "$budget" "$PY" -m benchmarks.bench --profile "$name" --device "$DEVICE" \
        "${extra[@]}" --json "$OUT/bench_${profile/+/_}.json"
    # the full training comes right after the first (paper) benchmark, before the optional ones
    if [ "$profile" = paper ] && [ ! -e "$OUT/run/run.json" ]; then
        mapfile -t extra < <(sets "train.checkpoint_every=$CHECKPOINT_EVERY")
        train_started=$(date +%s)
        run_phase train 300 "$PY" -m dhkd.cli train --data-root "$DATA_ROOT" --category "$CATEGORY" --profile paper \
            --epochs "$EPOCHS" --device "$DEVICE" --out "$OUT/run" --quiet "${extra[@]}"
        stamp "training wall time $(( $(date +%s) - train_started )) s (setup, teacher cache and checkpoints included)"
        run_phase evaluate 60 "$PY" -m dhkd.cli evaluate --run "$OUT/run" --json "$OUT/metrics.json" \
            --device "$DEVICE" --quiet
        "$PY" - "$OUT/run" "$EPOCHS" <<'PYEOF' | tee "$OUT/training_summary.txt"
import csv, json, sys
from pathlib import Path

run, epochs = Path(sys.argv[1]), int(sys.argv[2])
if not (run / "history.csv").exists():
    sys.exit("no history.csv: the training did not finish an epoch")
rows = list(csv.DictReader((run / "history.csv").open()))
info = json.loads((run / "run.json").read_text())
n = info["train_images"]
by_stage = {s: [float(r["seconds"]) for r in rows if r["stage"] == s] for s in ("1", "2")}
mean = {s: sum(v) / len(v) for s, v in by_stage.items() if v}
done = sum(float(r["seconds"]) for r in rows)
stage2 = round(epochs * 0.25)  # the paper profile's masking share
per_epoch = ((epochs - stage2) * mean.get("1", 0) + stage2 * mean.get("2", mean.get("1", 0))) / epochs
per_image_epoch = per_epoch / n
MVTEC_TRAIN_IMAGES = 3629  # the 15 categories' training images together
print(f"{info['category']}: {len(rows)}/{epochs} epochs in {done:.1f} s, {n} training images, status {info['status']}")
print(f"  teacher features of the training images, once: {info.get('teacher_cache_seconds', '?')} s")
for s, m in mean.items():
    print(f"  stage {s}: {m:.3f} s/epoch, {n / m:.0f} images/s ({len(by_stage[s])} epochs)")
print(f"  projected {epochs} epochs of this category: {epochs * per_epoch / 60:.1f} min")
print(f"  projected 15 categories x this category: {15 * epochs * per_epoch / 60:.1f} min")
print(f"  projected MVTec AD (3629 training images, {epochs} epochs each): "
      f"{MVTEC_TRAIN_IMAGES * epochs * per_image_epoch / 60:.1f} min of training, one GPU")
metrics = run.parent / "metrics.json"
if metrics.exists():
    m = json.loads(metrics.read_text())
    print(f"  evaluation: {m['n_test']} test images in {m['seconds']} s; image AUROC {m['image_auroc']:.3f}, "
          f"pixel AUROC {m['pixel_auroc']:.3f}, AUPRO {m['aupro']:.3f} (teacher weights none: not accuracy figures)")
PYEOF
    fi
done

stamp "done; files in $OUT:"
ls -la "$OUT"
