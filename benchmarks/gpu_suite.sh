#!/usr/bin/env bash
# The GPU measurements the README asks for.
#   bash benchmarks/gpu_suite.sh all|speed|profile|bench-small|bench-base [OUT_DIR] [SECONDS]
# Every stage runs under `timeout` against one deadline (SECONDS, default 540, read in base 10):
# a lease is 15 minutes and one command at most 10. 'all' fits a 15-minute lease into one call,
# in this order (most wanted first): DeiT-S float32 profile at batch 1 (36 counts), unpruned vs
# POMT vs ToMe at batch 1, 8, 64 (a table each, 55 s each), the float32 profile at batch 64 and
# the bfloat16 one at batch 1 (24 counts each), then the latency-model check
# (predictor_accuracy, POMT, batch 8): a stage that runs long costs the later ones only their
# time. A second call into the same OUT_DIR goes on where the first stopped: the profiles are
# written every 8 counts (--chunk_points) and continued (--resume); a method table or a
# finished predictor result already there is kept and its stage skipped (delete it to measure
# again), and a cut predictor result is replaced only by a finished one.
# The other stages are for longer leases (sized by the first: a DeiT-S graph compiles in ~6 s
# on an H200, autotuning included): 'speed' (profile_speed, every configuration; its table is
# written only when it finishes, profile_speed.txt and .json, over GPU_SUITE_SPEED_TOKENS,
# default every 12th count),
# 'profile' (adaptive curves at batch 1, 4, 16, 64 in both dtypes, continued by the next call),
# 'bench-small'/'bench-base' (DeiT-S/B methods at every batch size and dtype, one table at the
# end). Before measuring, every stage checks that OUT_DIR can be written and that the Python
# packages the stages import load (a missing one failed after minutes of measuring); either
# failing stops it. Logs go to OUT_DIR/log-<stage>.txt, each call's output appended under a
# line naming the call's time (a second call kept only its own); `python -m benchmarks.gpu_report
# --dir=OUT_DIR` prints the README's tables from whatever it wrote. It exits 1 when a stage
# failed other than by its timeout (124), 2 on bad arguments. A dry run on a CPU:
# GPU_SUITE_MODEL=vit_digits (GPU_SUITE_VARIANTS overrides the method list, e.g.
# 'tome-r2=tome:r2'). Writes under OUT_DIR (default outputs/gpu); paste the printed tables into
# README.md with the device name the tables print. Random weights: latency only (values do not
# change the graphs).
set -euo pipefail
usage="usage: gpu_suite.sh all|speed|profile|bench-small|bench-base [OUT_DIR] [SECONDS]"
if [ $# -lt 1 ]; then echo "error: no stage given; $usage" >&2; exit 2; fi
stage=$1
case "$stage" in   # before anything is created
  speed|profile|bench-small|bench-base|all) ;;
  *) echo "error: unknown stage '$stage' (one of speed, profile, bench-small, bench-base, all)" >&2
     exit 2 ;;
esac
if [ $# -gt 3 ]; then echo "error: unexpected argument '$4'; $usage" >&2; exit 2; fi
if [ $# -ge 2 ] && [ -z "$2" ]; then      # (the default was taken, unsaid)
  echo "error: OUT_DIR is empty (leave it out for outputs/gpu)" >&2; exit 2
fi
if [ $# -ge 3 ] && [ -z "$3" ]; then
  echo "error: SECONDS is empty (leave it out for 540)" >&2; exit 2
fi
out=${2:-outputs/gpu}
budget=${3:-540}
case "$budget" in *[!0-9]*) echo "error: SECONDS '$budget' is not a whole number" >&2; exit 2;;
esac
if [ ${#budget} -gt 6 ] || (( 10#$budget > 86400 )); then     # (20 digits: bash overflowed)
  echo "error: SECONDS $budget is more than a day (at most 86400)" >&2; exit 2
fi
budget=$(( 10#$budget ))      # ('0540' was octal: 352 s; '090' an error after mkdir)
if (( budget < 30 )); then      # (0 skipped every stage and exited 0)
  echo "error: SECONDS $budget leaves no stage its 20 s (at least 30: 10 are kept for packing" \
       "up)" >&2; exit 2
fi
probe="$out/.gpu_suite-write-test-$$"   # (/proc: every stage started, each failed to write)
if ! mkdir -p "$out" 2>/dev/null || ! : 2>/dev/null > "$probe"; then
  echo "error: cannot write in OUT_DIR '$out'" >&2; exit 2
fi
rm -f "$probe"
export PYTHONUNBUFFERED=1
cache=${JAX_CACHE_DIR:-/tmp/vitprune_jax_cache}
model_small=${GPU_SUITE_MODEL:-deit_small_patch16_224}   # a smaller model for a dry run on CPU
deadline=$(( $(date +%s) + budget ))
# What the stages import (requirements.txt), checked before any measurement.
imports="import jax, flax, optax, orbax.checkpoint, numpy, absl, safetensors, PIL, matplotlib
import tqdm, sklearn, scipy.optimize, flatbuffers
print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
if [ -z "${GPU_SUITE_MODEL:-}" ]; then    # (CUDA failing to start: 540 s of DeiT-S on the CPU)
  imports+="
assert jax.default_backend() == 'gpu', 'jax runs on ' + jax.default_backend() + ', not a GPU'"
fi

# timed NAME CAP CMD...: runs CMD under timeout, at most CAP seconds and never past the deadline
# (minus 10 s for packing up); its output to the terminal and OUT_DIR/log-NAME.txt; its exit
# status in `rc` (0 when skipped: `ran` says whether it ran; 124, or 137 when killed after the
# grace, is its timeout).
timed() {
  local name=$1 cap=$2; shift 2
  local left=$(( deadline - $(date +%s) - 10 ))
  (( left < cap )) && cap=$left
  rc=0 ran=0
  if (( cap < 20 )); then echo "== $name: skipped (${left}s left)"; return 0; fi
  echo "== $name: up to ${cap}s"
  local t0=$(date +%s)
  ran=1
  echo "== $name: call at $(date -u +%Y-%m-%dT%H:%M:%SZ), up to ${cap}s" >> "$out/log-$name.txt"
  timeout --signal=INT --kill-after=10 "$cap" "$@" > >(tee -a "$out/log-$name.txt") 2>&1 || rc=$?
  echo "== $name: rc=$rc after $(( $(date +%s) - t0 ))s"
  if (( rc != 0 && rc != 124 && rc != 137 )); then failed+=("$name"); fi
}
failed=()
timed versions 60 python -c "$imports"
if (( ran && rc != 0 )); then
  echo "error: the packages the stages import did not all load, or jax found no GPU (see" \
       "$out/log-versions.txt): nothing measured" >&2
  exit 1
fi
profile() {  # profile NAME CAP BATCH MAX_POINTS DTYPE: written chunk by chunk, resumed
  local points=()
  [ "$4" != all ] && points=(--max_points="$4")
  timed "$1" "$2" python -m experiments.profile --mode=model --model="$model_small" \
      --batch_size="$3" --dtype="$5" --adaptive "${points[@]}" --chunk_points=8 --resume \
      --threads=8 --compile_cache_dir="$cache" --min_run_time=0.2 \
      --out_dir="$out/profile"
}
case "$stage" in
  speed)  # deit_small whole-model profile at batch 1: how long each configuration takes
    # Its own fresh cache (its 'cache (cold)' row refuses a used one, and the profile stage
    # fills the shared one); the table replaces an earlier one only when the run succeeds.
    speed_cache=$(mktemp -d /tmp/vitprune_speed_cache.XXXXXX)
    trap 'rm -rf "$speed_cache" "$out/profile_speed.txt.tmp"' EXIT
    tokens=${GPU_SUITE_SPEED_TOKENS:-$([ -n "${GPU_SUITE_MODEL:-}" ] && echo all || echo 197:5:-12)}
    table='set -o pipefail; python -m benchmarks.profile_speed "${@:2}" | tee "$1"'
    timed speed "$budget" bash -c "$table" speed "$out/profile_speed.txt.tmp" \
        --model="$model_small" --batch_size=1 --tokens="$tokens" --threads=8 \
        --min_run_time=0.2 --compile_cache_dir="$speed_cache" --out="$out/profile_speed.json"
    if (( ran && rc == 0 )); then mv "$out/profile_speed.txt.tmp" "$out/profile_speed.txt"; fi ;;
  profile)
    for dtype in float32 bfloat16; do
      profile "profile-$dtype" "$budget" 1,4,16,64 all "$dtype"
    done ;;
  bench-small|bench-base)
    model=deit_small_patch16_224; [ "$stage" = bench-base ] && model=deit_base_patch16_224
    timed "$stage" "$budget" python -m experiments.benchmark --model="$model" --data=none \
        --batch_size=1,4,16,64 --dtype=float32,bfloat16 --compile_threads=8 --min_run_time=0.3 \
        --out_dir="$out/benchmark" ;;
  all)
    profile profile-b1 230 1 36 float32
    for batch in 1 8 64; do   # one table per batch size: a cut stage keeps the earlier ones
      if compgen -G "$out/benchmark/b$batch/${model_small}_*.csv" > /dev/null; then
        echo "== bench-b$batch: done before ($out/benchmark/b$batch), skipped"; continue
      fi
      timed "bench-b$batch" 55 python -m experiments.benchmark --model="$model_small" \
          --data=none --batch_size="$batch" --dtype=float32 --compile_threads=8 \
          --min_run_time=0.3 --out_dir="$out/benchmark/b$batch" \
          --variants="${GPU_SUITE_VARIANTS:-tome-r8=tome:r8;tome-r13=tome:r13}"
    done
    profile profile-b64 150 64 24 float32
    profile profile-b1-bf16 150 1 24 bfloat16
    # A finished result is kept; a cut one is replaced only by a finished run (a second call
    # replaced it phase by phase, a shorter cut losing what the first had measured).
    predictor="$out/predictor_accuracy_${model_small}_pomt.json"
    next="$out/next-predictor_accuracy_${model_small}_pomt.json"     # (not a file gpu_report reads)
    complete='import json, sys; sys.exit(json.load(open(sys.argv[1])).get("complete") is not True)'
    if [ -e "$predictor" ] && python -c "$complete" "$predictor" 2>/dev/null; then
      echo "== predictor-pomt: finished before ($predictor), skipped"
    else
      rm -f "$next"
      timed predictor-pomt 200 python -m benchmarks.predictor_accuracy --models="$model_small" \
          --batch_sizes=8 --methods=pomt --threads=8 --compile_cache_dir="$cache" --out="$next"
      if [ -e "$next" ] && { [ ! -e "$predictor" ] || python -c "$complete" "$next"; }; then
        mv "$next" "$predictor"
      else
        rm -f "$next"
        if [ -e "$predictor" ]; then
          (( ran )) && echo "== predictor-pomt: kept the earlier cut result"
        else
          (( ran )) && echo "== predictor-pomt: wrote no result"
        fi
      fi
    fi ;;
esac
if (( ${#failed[@]} )); then
  echo "error: stage(s) failed other than by their timeout: ${failed[*]} (see" \
       "$out/log-<stage>.txt)" >&2
  exit 1
fi
