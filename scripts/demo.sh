#!/usr/bin/env bash
# The main job on generated data: make a small LA-like dataset, train the LA bundle with CrossMatch for a few
# minutes on the CPU, then evaluate the final weights and print Dice / Jaccard / HD95 / ASD.
#   CROSSMATCH_DEMO_DIR     where data, checkpoints and results go (default: <repo>/demo_output)
#   CROSSMATCH_DEMO_ITERS   training iterations (default: 240)
# Extra arguments are passed to both bundle commands as config overrides (e.g. --mode supervised).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$repo_root/scripts/setup_env.sh"
cd "$repo_root"

out="${CROSSMATCH_DEMO_DIR:-$repo_root/demo_output}"
iterations="${CROSSMATCH_DEMO_ITERS:-240}"
bundle=bundles/crossmatch_la/configs
start=$(date +%s)

echo "== 1/3 generating an LA-like dataset in $out/data"
python -m crossmatch_ext.data.synthetic la --out "$out/data" --num-train 16 --num-val 4 --num-labeled 4 \
    --shape 56 56 40 --seed 0 --no-nifti

# A CPU-sized run: 4 labeled + 12 unlabeled volumes, 32^3 patches; the method and schedules are the bundle's.
overrides=(--dataset_dir "$out/data" --ckpt_dir "$out/models" --output_dir "$out/eval" --num_labeled 4
           --patch_size "[32,32,32]" --eval_strides "[8,8,4]" --num_workers 2 "$@")

echo "== 2/3 training CrossMatch for $iterations iterations (LA bundle, V-Net)"
python -m monai.bundle run training --config_file "$bundle/train.yaml" "${overrides[@]}" \
    --num_iterations "$iterations" --val_interval $((iterations / 3)) --log_interval $((iterations / 6)) 2>&1 \
    | grep -v -e "any \`\"_target_\"\` value" -e " > " -e "^---" || true
test -f "$out/models/model.pt" || { echo "training did not produce $out/models/model.pt" >&2; exit 1; }

echo "== 3/3 evaluating the final weights on the validation cases"
python -m monai.bundle run --config_file "['$bundle/train.yaml','$bundle/evaluate.yaml']" "${overrides[@]}" 2>&1 \
    | grep -v -e "any \`\"_target_\"\` value" -e " > " -e "^---" -e "INFO - Epoch\[" || true
test -f "$out/eval/metrics_summary.csv" || { echo "evaluation did not write $out/eval/metrics_summary.csv" >&2; exit 1; }

echo
echo "Per-case metrics: $out/eval/metrics.csv (voxels), $out/eval/metrics_mm.csv (mm); protocol in metrics_protocol.json"
echo "TensorBoard logs: $out/eval/tensorboard; final weights: $out/models/model.pt"
echo "Total wall time: $(( $(date +%s) - start )) s"
