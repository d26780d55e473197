#!/usr/bin/env bash
# make distill-sim: distill the default VER-T library from efficientnet_lite0 + sim_depth +
# sim_segmentation on domain-randomized simulator images (see docs/DISTILL.md).
#   1. render N images with depth / segmentation maps (ver_core.sim.FrankaPickEnv)
#   2. run the teachers once -> feature shards        (ver-extract-teachers)
#   3. distill ver_tiny (real size) from the shards   (ver-distill, torchrun when NPROC > 1)
#   4. library checkpoint + log in $OUT
# Settings (environment): N (images, 2000), STEPS (3000), BATCH (64), LR (Theia's 2e-3*B/512 if
# empty), NPROC (1), WORK (runs/distill_sim), OUT (assets/ver_tiny_sim_library), SEED (0),
# RESUME (1: continue the last run), KEEP_WORK (1: keep rendered images and shards), OVERRIDES
# (space-separated VERConfig KEY=VALUE, e.g. "moe_blocks=0" for the dense Theia-style student of
# the ablation), SEG_WEIGHTS (segmentation class weights, e.g. "cube=4/distractor=4": those
# classes' z-normalized targets weigh 4x in the loss; empty = unweighted), MIN_DISTRACTORS
# (fewest distractors per rendered scene, 0-3, default 0; images already in $WORK are kept, so
# give other settings their own WORK). The trainer state (translators + optimizer, ~100 MB) is
# parked in STATE ($WORK/trainer_state) so $OUT stays small; give a second run on the same
# images its own STATE.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-2000}"
STEPS="${STEPS:-3000}"
BATCH="${BATCH:-64}"
LR="${LR:-}"
NPROC="${NPROC:-1}"
SEED="${SEED:-0}"
WORK="${WORK:-runs/distill_sim}"
OUT="${OUT:-assets/ver_tiny_sim_library}"
STATE="${STATE:-$WORK/trainer_state}"
PY="${PY:-.venv/bin/python}"
SEG_WEIGHTS="${SEG_WEIGHTS:-}"
MIN_DISTRACTORS="${MIN_DISTRACTORS:-0}"
TEACHERS="efficientnet_lite0,sim_depth,sim_segmentation${SEG_WEIGHTS:+:8:$SEG_WEIGHTS}"
export MUJOCO_GL="${MUJOCO_GL:-egl}" HF_HUB_OFFLINE=1

if ! "$PY" -c "from ver_core.sim import FrankaPickEnv" 2>/dev/null; then
  echo "distill-sim: ver_core.sim.FrankaPickEnv is not importable; the simulator is needed to render" >&2
  echo "distill-sim: the training images (TODO: finish ver_core/sim first)." >&2
  exit 1
fi

mkdir -p "$WORK" "$OUT"
LOG="$OUT/distill_sim.log"
echo "[distill-sim] $(date -u +%FT%TZ) N=$N STEPS=$STEPS BATCH=$BATCH NPROC=$NPROC SEED=$SEED OVERRIDES=${OVERRIDES:-} SEG_WEIGHTS=$SEG_WEIGHTS MIN_DISTRACTORS=$MIN_DISTRACTORS" | tee -a "$LOG"

if [[ ! -f "$WORK/images/sim_$(printf %05d $((N - 1))).seg.npy" ]]; then
  echo "[distill-sim] rendering $N images" | tee -a "$LOG"
  "$PY" -m ver_core.distill.sim_dataset --out "$WORK/images" --count "$N" --seed "$SEED" \
    --min-distractors "$MIN_DISTRACTORS" 2>&1 | tee -a "$LOG"
fi

# shards of other teachers (e.g. other class weights) are stale: extract them again
if [[ -f "$WORK/shards/manifest.json" ]] && ! "$PY" -c "import sys
from ver_core.distill.shards import shards_hold
sys.exit(not shards_hold(sys.argv[1], sys.argv[2].split(',')))" "$WORK/shards" "$TEACHERS"; then
  echo "[distill-sim] $WORK/shards hold other teachers than $TEACHERS: extracting again" | tee -a "$LOG"
  rm -rf "$WORK/shards"
fi
if [[ ! -f "$WORK/shards/manifest.json" ]]; then
  echo "[distill-sim] extracting teachers $TEACHERS" | tee -a "$LOG"
  "$PY" -m ver_core.cli.extract_teachers --images "$WORK/images" --out "$WORK/shards" \
    --teachers "$TEACHERS" --batch-size 32 2>&1 | tee -a "$LOG"
fi

args=(--shards "$WORK/shards" --model ver_tiny --out "$OUT" --steps "$STEPS" --batch-size "$BATCH"
      --seed "$SEED" --save-every 500)
[[ -n "$LR" ]] && args+=(--lr "$LR")
for kv in ${OVERRIDES:-}; do args+=(--model-override "$kv"); done
if [[ "${RESUME:-0}" == 1 ]]; then
  [[ -d "$STATE" && ! -d "$OUT/trainer_state" ]] && mv "$STATE" "$OUT/trainer_state"
  [[ -d "$OUT/trainer_state" ]] && args+=(--resume)
fi
[[ " ${args[*]} " == *" --resume "* ]] || args+=(--overwrite)
echo "[distill-sim] distilling: ${args[*]}" | tee -a "$LOG"
if [[ "$NPROC" -gt 1 ]]; then
  "$(dirname "$PY")/torchrun" --standalone --nproc_per_node="$NPROC" -m ver_core.cli.distill "${args[@]}" 2>&1 | tee -a "$LOG"
else
  "$PY" -m ver_core.cli.distill "${args[@]}" 2>&1 | tee -a "$LOG"
fi

cp "$WORK/shards/manifest.json" "$OUT/teacher_manifest.json"
rm -rf "$STATE" && mkdir -p "$(dirname "$STATE")" && mv "$OUT/trainer_state" "$STATE"
if [[ "${KEEP_WORK:-1}" != 1 ]]; then rm -rf "$WORK/images" "$WORK/shards"; fi
echo "[distill-sim] library in $OUT (config.json, model.safetensors, metrics.jsonl, expert_utilization.png)" | tee -a "$LOG"
