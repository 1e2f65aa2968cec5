#!/usr/bin/env bash
# The GPU measurements the README asks for.
#   bash benchmarks/gpu_suite.sh speed|profile|bench-small|bench-base [OUT_DIR]
#   bash benchmarks/gpu_suite.sh all [OUT_DIR] [SECONDS]
# One stage per call is for long leases: on an H200 a DeiT-S graph compiles in ~6 s, and the
# 'profile' stage's adaptive curves (4 batch sizes x 2 dtypes) can ask for hundreds of graphs.
# 'all' fits a 15-minute lease into one call, in this order (most wanted first): DeiT-S float32
# profile at batch 1 (36 counts), unpruned vs POMT vs ToMe at batch 1, 8, 64 (a table each,
# 55 s each), the float32 profile
# at batch 64 and the bfloat16 one at batch 1 (24 counts each), then the latency-model check
# (predictor_accuracy, POMT, batch 8), each
# under `timeout` against one deadline (SECONDS, default 540): a stage that runs long costs the
# later ones only their time, the profiles are written every 8 counts (--chunk_points; a second
# run into the same OUT_DIR continues them, --resume) and no output is ever half-written. Logs
# go to OUT_DIR/log-<stage>.txt; `python -m benchmarks.gpu_report --dir=OUT_DIR` prints the
# README's tables from whatever it wrote. It exits 1 when a stage failed other than by its
# timeout (124). A dry run on a CPU: GPU_SUITE_MODEL=vit_digits (GPU_SUITE_VARIANTS overrides
# the method list, e.g. 'tome-r2=tome:r2').
# Writes under OUT_DIR (default outputs/gpu); paste the printed tables into README.md with the
# device name the tables print. Random weights: latency only (values do not change the graphs).
set -euo pipefail
usage="usage: gpu_suite.sh speed|profile|bench-small|bench-base [OUT_DIR] | all [OUT_DIR] [SECONDS]"
if [ $# -lt 1 ]; then echo "error: no stage given; $usage" >&2; exit 2; fi
stage=$1
out=${2:-outputs/gpu}
cache=${JAX_CACHE_DIR:-/tmp/vitprune_jax_cache}
case "$stage" in   # before anything is created
  speed|profile|bench-small|bench-base|all) ;;
  *) echo "error: unknown stage '$stage' (one of speed, profile, bench-small, bench-base, all)" >&2
     exit 2 ;;
esac
if [ "$stage" != all ] && [ -n "${3+x}" ]; then
  echo "error: SECONDS is read by the 'all' stage only, not '$stage'" >&2; exit 2
fi
if [ $# -gt 3 ]; then echo "error: unexpected argument '$4'; $usage" >&2; exit 2; fi
budget=${3:-540}
case "$budget" in ''|*[!0-9]*) echo "error: SECONDS '$budget' is not a whole number" >&2; exit 2;;
esac
if [ "$budget" -lt 30 ]; then      # (0 skipped every stage and exited 0)
  echo "error: SECONDS $budget leaves no stage its 20 s (at least 30: 10 are kept for packing" \
       "up)" >&2; exit 2
fi
mkdir -p "$out"
export PYTHONUNBUFFERED=1
model_small=${GPU_SUITE_MODEL:-deit_small_patch16_224}   # a smaller model for a dry run on CPU
deadline=$(( $(date +%s) + budget ))

# timed NAME CAP CMD...: runs CMD under timeout, at most CAP seconds and never past the deadline
# (minus 10 s for packing up); its output to the terminal and OUT_DIR/log-NAME.txt.
timed() {
  local name=$1 cap=$2; shift 2
  local left=$(( deadline - $(date +%s) - 10 ))
  (( left < cap )) && cap=$left
  if (( cap < 20 )); then echo "== $name: skipped (${left}s left)"; return 0; fi
  echo "== $name: up to ${cap}s"
  local t0=$(date +%s) rc=0
  timeout --signal=INT --kill-after=10 "$cap" "$@" > >(tee "$out/log-$name.txt") 2>&1 || rc=$?
  echo "== $name: rc=$rc after $(( $(date +%s) - t0 ))s"
  if (( rc != 0 && rc != 124 )); then failed+=("$name"); fi
}
failed=()
case "$stage" in
  speed)  # issue target: deit_small whole-model profile at batch 1 in < 2 min, steps reproducible
    # Its own fresh cache (its 'cache (cold)' row refuses a used one, and the profile stage
    # fills the shared one); the table replaces an earlier one only when the run succeeds.
    speed_cache=$(mktemp -d /tmp/vitprune_speed_cache.XXXXXX)
    trap 'rm -rf "$speed_cache" "$out/profile_speed.txt.tmp"' EXIT
    python -m benchmarks.profile_speed --model=deit_small_patch16_224 --batch_size=1 \
        --threads=8 --min_run_time=0.2 --compile_cache_dir="$speed_cache" \
        | tee "$out/profile_speed.txt.tmp"
    mv "$out/profile_speed.txt.tmp" "$out/profile_speed.txt" ;;
  profile)
    for dtype in float32 bfloat16; do
      python -m experiments.profile --mode=model --model=deit_small_patch16_224 \
          --batch_size=1,4,16,64 --dtype="$dtype" --adaptive --chunk_points=8 --threads=8 \
          --compile_cache_dir="$cache" --min_run_time=0.2 --noprogress --out_dir="$out/profile"
    done ;;
  bench-small|bench-base)
    model=deit_small_patch16_224; [ "$stage" = bench-base ] && model=deit_base_patch16_224
    python -m experiments.benchmark --model="$model" --data=none --batch_size=1,4,16,64 \
        --dtype=float32,bfloat16 --compile_threads=8 --min_run_time=0.3 --noprogress \
        --out_dir="$out/benchmark" ;;
  all)   # sized by the first lease: a DeiT-S graph compiles in ~6 s on an H200 (autotuning)
    timed versions 60 python -c "import jax, flax; print('jax', jax.__version__, 'flax',
flax.__version__, jax.devices())"
    profile() {  # profile NAME CAP BATCH MAX_POINTS DTYPE: written chunk by chunk, resumed
      timed "$1" "$2" python -m experiments.profile --mode=model --model="$model_small" \
          --batch_size="$3" --dtype="$5" --adaptive --max_points="$4" --chunk_points=8 --resume \
          --threads=8 --compile_cache_dir="$cache" --min_run_time=0.2 --noprogress \
          --out_dir="$out/profile"
    }
    profile profile-b1 230 1 36 float32
    for batch in 1 8 64; do   # one table per batch size: a cut stage keeps the earlier ones
      timed "bench-b$batch" 55 python -m experiments.benchmark --model="$model_small" \
          --data=none --batch_size="$batch" --dtype=float32 --compile_threads=8 \
          --min_run_time=0.3 --noprogress --out_dir="$out/benchmark/b$batch" \
          --variants="${GPU_SUITE_VARIANTS:-tome-r8=tome:r8;tome-r13=tome:r13}"
    done
    profile profile-b64 150 64 24 float32
    profile profile-b1-bf16 150 1 24 bfloat16
    timed predictor-pomt 200 python -m benchmarks.predictor_accuracy --models="$model_small" \
        --batch_sizes=8 --methods=pomt --threads=8 --compile_cache_dir="$cache" \
        --out="$out/predictor_accuracy_pomt.json"
    if (( ${#failed[@]} )); then
      echo "error: stage(s) failed other than by their timeout: ${failed[*]} (see" \
           "$out/log-<stage>.txt)" >&2
      exit 1
    fi ;;
esac
