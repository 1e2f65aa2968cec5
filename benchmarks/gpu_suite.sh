#!/usr/bin/env bash
# The GPU measurements the README asks for, one stage per call (each fits a 10-minute device call).
#   bash benchmarks/gpu_suite.sh speed|profile|bench-small|bench-base [OUT_DIR]
# Writes under OUT_DIR (default outputs/gpu); paste the printed tables into README.md with the
# device name the tables print. Random weights: latency only (values do not change the graphs).
set -euo pipefail
stage=${1:?usage: gpu_suite.sh speed|profile|bench-small|bench-base [OUT_DIR]}
out=${2:-outputs/gpu}
cache=${JAX_CACHE_DIR:-/tmp/vitprune_jax_cache}
case "$stage" in   # before anything is created
  speed|profile|bench-small|bench-base) ;;
  *) echo "error: unknown stage '$stage' (one of speed, profile, bench-small, bench-base)" >&2
     exit 2 ;;
esac
mkdir -p "$out"
export PYTHONUNBUFFERED=1
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
          --batch_size=1,4,16,64 --dtype="$dtype" --adaptive --threads=8 \
          --compile_cache_dir="$cache" --min_run_time=0.2 --noprogress --out_dir="$out/profile"
    done ;;
  bench-small|bench-base)
    model=deit_small_patch16_224; [ "$stage" = bench-base ] && model=deit_base_patch16_224
    python -m experiments.benchmark --model="$model" --data=none --batch_size=1,4,16,64 \
        --dtype=float32,bfloat16 --compile_threads=8 --min_run_time=0.3 --noprogress \
        --out_dir="$out/benchmark" ;;
esac
