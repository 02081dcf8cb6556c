#!/usr/bin/env bash
# Full-size GPU step benchmarks in one go, each command bounded by a timeout, every result kept.
#
# Usage: bash benchmarks/gpu_suite.sh OUT_DIR [LA_DATA_DIR] [ACDC_DATA_DIR] [steps|data|all]
#
# "steps" (default without data folders): random-tensor step benchmarks, about 5 minutes on an H100;
# "data": the real-data runs only (bundle iterations, inference), about 4 minutes; "all": both.
# Writes OUT_DIR/<name>.json (the script's JSON) and OUT_DIR/<name>.err (its log) for each benchmark; a failed or
# timed-out command leaves its .err and the suite goes on. Without data folders the real-data runs are skipped.
set -u
out=${1:?usage: gpu_suite.sh OUT_DIR [LA_DATA_DIR] [ACDC_DATA_DIR]}
la_data=${2:-}
acdc_data=${3:-}
part=${4:-all}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"

run() {  # run NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    local start=$(date +%s)
    timeout "$limit" "$@" >"$out/$name.json" 2>"$out/$name.err"
    local rc=$?
    echo "$name rc=$rc $(( $(date +%s) - start ))s" | tee -a "$out/summary.txt"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1
python -c "import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.backends.cudnn.version())" >>"$out/gpu.txt" 2>&1

if [ "$part" != data ]; then
S="python $here/step_time.py --device cuda --steps 10 --warmup 3"
run la_b2_bf16        90 $S --task la --patch 112 112 80 --batch 2 --mode both --amp bfloat16
run la_b2_fp32        90 $S --task la --patch 112 112 80 --batch 2 --mode both
run la_b4_bf16        90 $S --task la --patch 112 112 80 --batch 4 --mode both --amp bfloat16
run acdc_b12_bf16     90 $S --task acdc --patch 256 256 --batch 12 --mode both --amp bfloat16
run la_b2_bf16_cl     60 $S --task la --patch 112 112 80 --batch 2 --mode crossmatch --amp bfloat16 --channels-last
run la_b2_bf16_single 60 $S --task la --patch 112 112 80 --batch 2 --mode crossmatch --amp bfloat16 --single-backward
run la_b2_bf16_optin  60 $S --task la --patch 112 112 80 --batch 2 --mode crossmatch --amp bfloat16 --teacher-batch mix --merge-teacher-passes
run la_profile_bf16   90 python "$here/profile_step.py" --task la --patch 112 112 80 --batch 2 --device cuda --amp bfloat16 --steps 10 --handler-steps 10
fi
[ "$part" = steps ] && { cat "$out/summary.txt"; exit 0; }
if [ -n "$la_data" ]; then
    B="python $here/bundle_iteration.py --device cuda --amp bfloat16 --iterations 20 --warmup 3"
    run la_bundle_iteration          120 $B --bundle la --data "$la_data" --num-workers 4
    run la_bundle_iteration_cudnn    120 $B --bundle la --data "$la_data" --num-workers 4 --cudnn-benchmark
    run la_inference                 120 python "$here/inference_time.py" --data "$la_data" --device cuda --amp bfloat16 --sw-batch-sizes 1 4 8
fi
if [ -n "$acdc_data" ]; then
    run acdc_bundle_iteration 120 python "$here/bundle_iteration.py" --device cuda --amp bfloat16 --iterations 20 \
        --warmup 3 --bundle acdc --data "$acdc_data" --num-workers 4 --cudnn-benchmark
fi
cat "$out/summary.txt"
