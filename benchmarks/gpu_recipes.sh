#!/usr/bin/env bash
# Banking77 recipes on one GPU, the training component alone (no bentoml needed there):
# the real training job on the whole train set (trigger to promotion), and recipe_probe
# runs at 10 and 20 corrections a label and on all data, MiniLM and MPNet, 12 at a time
# on the one GPU. Figures: docs/benchmarks.md#on-a-gpu.
#
#   bash benchmarks/gpu_recipes.sh DATA_ROOT MINILM_DIR MPNET_DIR OUT_FILE
#
# DATA_ROOT holds banking77/, clinc150/, sentiment/ (../shared/data); the model folders are
# LIVETUNE_BASE_MODEL values (`make mpnet` for MPNet). Each probe appends its JSON to OUT_FILE.
set -u
D=${1:?DATA_ROOT} N=${2:?MINILM_DIR} M=${3:?MPNET_DIR} OUT_FILE=${4:?OUT_FILE}
B=$D/banking77 R=$(mktemp -d) LIMIT=${LIMIT:-300}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
ST="--pseudo-threshold 0.95 --unlabeled 3000"

probe() {  # probe NAME ARGS...: one recipe_probe on the GPU
  local name=$1; shift
  timeout "$LIMIT" python3 -m benchmarks.recipe_probe --device cuda --validation-percent 5 \
    "$@" > "$R/$name.out" 2> "$R/$name.err"
  { echo "## $name rc=$? args: $*"; cat "$R/$name.out"; } >> "$OUT_FILE"
}

job() {  # job NAME MODEL: the training job on the whole train set, as the trainer runs it
  local name=$1
  (export LIVETUNE_DATA_DIR=$R/job-$name LIVETUNE_BASE_MODEL=$2 \
          LIVETUNE_LABELS_FILE=$B/categories.json LIVETUNE_TRAIN_DEVICE=cuda
   python3 -m training import "$B/train.csv" && timeout "$LIMIT" python3 -m training run --once \
     && python3 -m training runs --limit 1) > "$R/$name.out" 2> "$R/$name.err"
  { echo "## $name rc=$?"; tail -1 "$R/$name.out"; } >> "$OUT_FILE"
}

# The jobs first, two alone on the GPU, so their times are not shared with 12 probes.
job job_minilm_full "$N" & job job_mpnet_full "$M" & wait

for s in 0 1 2; do
  probe "minilm_770_s${s}" --data "$B" --stream 770 $ST --rounds 2 --seed $s --base-model "$N" &
  probe "mpnet_770_s${s}" --data "$B" --stream 770 $ST --rounds 2 --seed $s --base-model "$M" &
  probe "mpnet_770_s${s}_all" --data "$B" --stream 770 $ST --rounds 2 --seed $s \
    --base-model "$M" --set lora_layers=0 &
done
for s in 0 1; do
  probe "minilm_1540_s${s}" --data "$B" --stream 1540 $ST --rounds 2 --seed $s --base-model "$N" &
done
probe mpnet_1540_s0 --data "$B" --stream 1540 $ST --base-model "$M" &
wait
probe minilm_full --data "$B" --base-model "$N" &
probe minilm_full_all_e5 --data "$B" --base-model "$N" --set lora_layers=0 --set epochs=5 &
probe minilm_full_l6 --data "$B" --base-model "$N" --set lora_layers=6 &
probe minilm_full_r16 --data "$B" --base-model "$N" --set lora_r=16 --set lora_alpha=32 &
probe minilm_full_ls --data "$B" --base-model "$N" --set label_smoothing=0.1 &
probe mpnet_full --data "$B" --base-model "$M" &
probe mpnet_full_l6 --data "$B" --base-model "$M" --set lora_layers=6 &
probe mpnet_full_all --data "$B" --base-model "$M" --set lora_layers=0 &
probe mpnet_full_all_fp32 --data "$B" --base-model "$M" --set lora_layers=0 --set precision=fp32 &
probe mpnet_full_all_lr1 --data "$B" --base-model "$M" --set lora_layers=0 --set learning_rate=0.001 &
wait
rm -rf "$R"
