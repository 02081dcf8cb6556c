#!/usr/bin/env bash
# The product on generated data: make a small LA-like dataset, train the LA bundle's V-Net with CrossMatch (4
# labeled + 12 unlabeled volumes) and, on the same cases, the supervised baseline (the 4 labeled volumes alone),
# evaluate both final weights on the validation volumes and print Dice and HD95 of both and CrossMatch's gain.
# 5 to 10 minutes on a 2-core CPU, whose speed varies (455-579 s measured on an idle one in float32, the CPU default).
#   CROSSMATCH_DEMO_DIR     where data, checkpoints and results go (default: <repo>/demo_output)
#   CROSSMATCH_DEMO_ITERS   training iterations of each run (default: 240)
#   CROSSMATCH_DEMO_SHAPE   size of the generated volumes, "X Y Z" (default: "56 56 40")
#   CROSSMATCH_DEMO_PATCH   training patch and sliding window, "X,Y,Z", multiples of 16 (default: 32,32,32)
# Extra arguments are passed to every bundle command as config overrides (e.g. --seed 1).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$repo_root/scripts/setup_env.sh"
cd "$repo_root"

out="${CROSSMATCH_DEMO_DIR:-$repo_root/demo_output}"
iterations="${CROSSMATCH_DEMO_ITERS:-240}"
read -r -a shape <<< "${CROSSMATCH_DEMO_SHAPE:-56 56 40}"
patch="${CROSSMATCH_DEMO_PATCH:-32,32,32}"
bundle=bundles/crossmatch_la/configs
start=$(date +%s)

# The runs' log lines (settings, per-interval loss terms, validations, checkpoints) go to a log file per command;
# the terminal shows one progress bar per training run. MONAI's notice about trusting config files is one line per
# command and is left out (the configs are this repository's).
export PYTHONWARNINGS="ignore:parsing config_file"
bundle_run() {  # bundle_run LOG ARGS...: one bundle command, its log lines in LOG; on failure the end of LOG
    local log=$1
    shift
    mkdir -p "$(dirname "$log")"
    if ! python -m monai.bundle run "$@" > "$log"; then
        echo "failed; the end of $log:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
}

echo "== 1/4 generating an LA-like dataset in $out/data (16 training volumes, 4 of them labeled; 4 validation)"
python -m crossmatch_ext.data.synthetic la --out "$out/data" --num-train 16 --num-val 4 --num-labeled 4 \
    --shape "${shape[@]}" --seed 0 --no-nifti > /dev/null

# A CPU-sized run: 4 labeled + 12 unlabeled volumes, small patches; the method, schedules and augmentations are
# the bundle's defaults, except that the learning rate's poly decay runs over the demo's iterations (the bundle's
# 17000-step horizon would leave it near its peak at the end of a short run). Both modes see the same labeled cases,
# iterations, schedule, seed and evaluation.
# (MONAI's "Loading dataset" bars of the cached volumes, a fraction of a second here, are left out of the terminal.)
common=(--dataset_dir "$out/data" --num_labeled 4 --patch_size "[$patch]" --eval_strides "[8,8,4]" --num_workers 2
        --train#dataset#progress False --train#unlabeled_dataset#progress False --validate#dataset#progress False)
train_mode() {  # train_mode MODE [OVERRIDES...]: train, then evaluate the final weights, in $out/MODE
    local mode=$1 dir="$out/$1"
    shift
    local overrides=("${common[@]}" --mode "$mode" --ckpt_dir "$dir/models" --output_dir "$dir/eval" "$@")
    rm -rf "$dir"
    bundle_run "$dir/train.log" training --config_file "$bundle/train.yaml" "${overrides[@]}" \
        --num_iterations "$iterations" --lr_decay_iterations "$iterations" --val_interval $(( iterations / 3 > 0 ? iterations / 3 : 1 )) \
        --log_interval $(( iterations / 24 > 0 ? iterations / 24 : 1 ))
    test -f "$dir/models/model.pt" || { echo "training did not produce $dir/models/model.pt" >&2; exit 1; }
    # an empty prediction (a run that missed the atrium) counts as the volume's diagonal in HD95, not as 0
    bundle_run "$dir/evaluate.log" --config_file "['$bundle/train.yaml','$bundle/evaluate.yaml']" "${overrides[@]}" \
        --empty_policy max
    test -f "$dir/eval/metrics_summary.csv" || { echo "evaluation did not write $dir/eval/metrics_summary.csv" >&2; exit 1; }
}

echo "== 2/4 CrossMatch: $iterations iterations on the 4 labeled and 12 unlabeled volumes (V-Net), then evaluation"
train_mode crossmatch "$@"
echo "== 3/4 supervised baseline: the same V-Net, $iterations iterations on the 4 labeled volumes, then evaluation"
train_mode supervised "$@"

echo "== 4/4 results: one seed, $iterations iterations each (an empty prediction counts as Dice 0, HD95 the volume's diagonal)"
python scripts/demo_summary.py "$out" --baseline supervised --method crossmatch
echo "Total wall time: $(( $(date +%s) - start )) s"
