#!/usr/bin/env bash
# Full-size GPU step benchmarks in one go, each command bounded by a timeout, every result kept.
#
# Usage: bash benchmarks/gpu_suite.sh OUT_DIR [LA_DATA_DIR] [ACDC_DATA_DIR] [steps|data|all]
#
# "steps": random-tensor step benchmarks (each optimisation on and off), about 6 minutes on an H100 / H200;
# "data": whole bundle iterations (before / after / CUDA graphs) on the data folders, about 4 minutes; "all": both
# (the longest commands are bounded: about 9 minutes in all, inside one 10-minute call).
# Writes OUT_DIR/<name>.json (the script's JSON) and OUT_DIR/<name>.err (its log) for each benchmark; a failed or
# timed-out command leaves its .err and the suite goes on. Without data folders the real-data runs are skipped.
set -u
out=${1:?usage: gpu_suite.sh OUT_DIR [LA_DATA_DIR] [ACDC_DATA_DIR]}
la_data=${2:-}
acdc_data=${3:-}
part=${4:-all}
mkdir -p "$out"
# CROSSMATCH_SUITE_CHECK=1 checks the script on a CPU: the same commands at tiny sizes, 2 workers
if [ "${CROSSMATCH_SUITE_CHECK:-0}" = 1 ]; then
    device=cpu steps=1 la_patch="32 32 16" acdc_patch="32 32" acdc_batch=2 iterations=2 workers=1
    la_bundle="--patch 32 32 16" acdc_bundle="--patch 32 32 --batch 2"
else
    device=cuda steps=10 la_patch="112 112 80" acdc_patch="256 256" acdc_batch=12 iterations=30 workers=7
    la_bundle="" acdc_bundle=""   # the bundles' own sizes: LA 112x112x80 batch 2, ACDC 256x256 batch 12
fi
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

[ "$device" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1
python -c "import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.backends.cudnn.version())" >>"$out/gpu.txt" 2>&1

if [ "$part" != data ]; then
S="python $here/step_time.py --device $device --steps $steps --warmup 3"
LA="--task la --patch $la_patch --batch 2"
AC="--task acdc --patch $acdc_patch --batch $acdc_batch"
# before: the step as it was (bf16, channels-first, eager); then each optimisation on its own, then all together
run la_b2_bf16            90 $S $LA --mode both --amp bfloat16
run la_b2_fp32            90 $S $LA --mode both
run la_b2_bf16_cl         60 $S $LA --mode crossmatch --amp bfloat16 --channels-last
run la_b2_bf16_compile   150 $S $LA --mode crossmatch --amp bfloat16 --compile default --warmup 4
run la_b2_bf16_graphs    150 $S $LA --mode crossmatch --amp bfloat16 --compile reduce-overhead --warmup 4
run la_b2_bf16_cl_graphs 150 $S $LA --mode both --amp bfloat16 --channels-last --compile reduce-overhead --warmup 4
run acdc_b12_bf16         90 $S $AC --mode both --amp bfloat16
run acdc_b12_bf16_cl      60 $S $AC --mode crossmatch --amp bfloat16 --channels-last
run acdc_b12_bf16_graphs 150 $S $AC --mode crossmatch --amp bfloat16 --compile reduce-overhead --warmup 4
run acdc_b12_bf16_cl_graphs 150 $S $AC --mode both --amp bfloat16 --channels-last --compile reduce-overhead --warmup 4
[ "$part" = all ] || run la_b2_bf16_optin 60 $S $LA --mode crossmatch --amp bfloat16 --teacher-batch mix --merge-teacher-passes
fi
[ "$part" = steps ] && { cat "$out/summary.txt"; exit 0; }
# whole `run training` iterations of each bundle: the loaders, the handlers and the step together. "before": the
# previous defaults (workers make the strong views, deterministic cuDNN, eager); "after": the bundles' defaults
B="python $here/bundle_iteration.py --device $device --amp bfloat16 --iterations $iterations --warmup 5 --num-workers $workers"
BEFORE="--set channels_last=False --set deterministic=True --set device_views=False"
if [ -n "$la_data" ]; then
    run la_iteration_before      150 $B --bundle la --data "$la_data" $la_bundle $BEFORE
    run la_iteration_after       150 $B --bundle la --data "$la_data" $la_bundle
    run la_iteration_graphs      200 $B --bundle la --data "$la_data" $la_bundle --set compile=reduce-overhead --warmup 8
    run la_stub_after            100 $B --bundle la --data "$la_data" $la_bundle --stub-step-ms 50
fi
if [ -n "$acdc_data" ]; then
    run acdc_iteration_before    150 $B --bundle acdc --data "$acdc_data" $acdc_bundle $BEFORE
    run acdc_iteration_after     150 $B --bundle acdc --data "$acdc_data" $acdc_bundle
    run acdc_iteration_graphs    200 $B --bundle acdc --data "$acdc_data" $acdc_bundle --set compile=reduce-overhead --warmup 8
fi
cat "$out/summary.txt"
