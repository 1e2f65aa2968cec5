r"""How long profiling takes: default sweep vs parallel / adaptive / per-block / cached.

  python -m benchmarks.profile_speed                       # tiny model on the local CPU
  python -m benchmarks.profile_speed --model=deit_small_patch16_224 --batch_size=1 \
      --threads=8 --min_run_time=0.2                       # on a GPU

Prints one row per configuration: wall seconds, summed per-graph compile seconds (overlapping
when threads > 1), summed timed-run seconds, graphs compiled, and the steps found; then step
reproducibility: the steps of each model-mode run compared with the first (default) run and the
two uncached adaptive runs (its first run and its repeat) compared with each other. Writes the
same as JSON (--out). Autotuning is left as JAX configures it: every configuration compiles the
same kernels deployment would use.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Dict

from absl import flags

from experiments import common
from vitprune import atomic
from vitprune import memory
from vitprune.config import COMPUTE_DTYPES
from vitprune.profile import protocol
from vitprune.profile import runner
from vitprune.profile import timing
from vitprune.registry import get_config
from vitprune.schedule import parse_token_grid

RESULT_FORMAT = "vitprune-profile-speed"


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this benchmark's flags."""
  flags.DEFINE_string("model", "test_tiny_vit", "Registered model name.", flag_values=fv)
  flags.DEFINE_integer("batch_size", 1, "Batch size.", lower_bound=1, flag_values=fv)
  flags.DEFINE_enum("dtype", "float32", list(COMPUTE_DTYPES), "Compute dtype.",
                    flag_values=fv)
  flags.DEFINE_string("tokens", "all", "Token grid (see experiments.profile).", flag_values=fv)
  flags.DEFINE_float("min_run_time", 0.05, "Seconds of timed calls per point.", flag_values=fv)
  flags.DEFINE_integer("threads", 4, "Compile threads of the parallel configurations.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("coarse_stride", 0, "Adaptive coarse stride (0: ~16 points).",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_string("compile_cache_dir", None, "Compilation cache for the cached runs "
                      "(default: a fresh temp dir, removed at exit). Sets JAX's cache for the "
                      "whole process, so run this benchmark in its own process.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed.", lower_bound=0, upper_bound=common.MAX_SEED,
                       flag_values=fv)
  flags.DEFINE_string("out", "outputs/benchmark/profile_speed.json", "JSON output.",
                      flag_values=fv)


def _steps(prof, component):
  return tuple((s["n_from"], s["n_to"]) for s in prof.steps if s["component"] == component)


def _run(name, spec, cache_dir=None):
  t0 = time.perf_counter()
  (prof,) = runner.run_profile(spec, compile_cache_dir=cache_dir, progress=False,
                               log=lambda _: None)
  wall = time.perf_counter() - t0
  comp = "block" if spec.mode == "block" else "model"
  return dict(name=name, wall=wall, compile=sum(p.compile_s for p in prof.points),
              run=sum(sum(p.samples_s) for p in prof.points), graphs=len(prof.points),
              steps=_steps(prof, comp), component=comp)


def main(f: flags.FlagValues) -> Dict[str, Any]:
  """Profiles the model in every configuration, prints the table, writes --out -> the JSON
  document."""
  atomic.check_output_json(f.out, RESULT_FORMAT, "out")
  if f.compile_cache_dir:      # JAX would only warn and run the "cache" rows without one
    common.check_output_dir(f.compile_cache_dir, "compile_cache_dir")
    if os.path.isdir(f.compile_cache_dir) and os.listdir(f.compile_cache_dir):
      raise ValueError(f"--compile_cache_dir={f.compile_cache_dir} is not empty: the 'cache "
                       "(cold)' row starts from an empty cache (a reused one timed it warm); "
                       "pass an empty or new folder")
  cfg = get_config(f.model)
  memory.check_batch_fits(cfg, [f.batch_size], f.dtype)   # else numpy's "Unable to allocate"
  tokens = parse_token_grid(cfg, f.tokens)
  if len(tokens) < 2:       # (one count: seven configurations of one graph, "0 shared of 0")
    raise ValueError(f"--tokens={f.tokens} gives one token count: the table compares curves "
                     "(and the steps found on them), which needs at least 2")
  base = runner.ProfileSpec(
      cfg=cfg, batch_sizes=(f.batch_size,), dtype=f.dtype, mode="model",
      tokens=tokens, threads=1,
      timing=protocol.flag_timing(min_run_time=f.min_run_time, seed=f.seed),
      coarse_stride=f.coarse_stride, seed=f.seed,
      confirm_steps=False)   # (the rows compare configurations' passes; a confirmation is not one)
  # (the per-block row holds an input per count: a batch the model rows fit could not)
  memory.check_batch_fits(cfg, [f.batch_size], f.dtype, held_per_example=dataclasses.replace(
      base, mode="block").held_input_bytes())
  par = dataclasses.replace(base, threads=f.threads)
  ada = dataclasses.replace(par, adaptive=True)
  rows = [_run("default (model, 1 thread)", base),
          _run(f"parallel ({f.threads} threads)", par),
          _run("adaptive + parallel", ada),
          _run("per-block + parallel", dataclasses.replace(par, mode="block")),
          _run("adaptive + parallel (repeat)", ada)]
  cache = f.compile_cache_dir or timing.temporary_cache_dir()
  rows.append(_run("adaptive + parallel + cache (cold)", ada, cache))
  rows.append(_run("adaptive + parallel + cache (warm)", ada, cache))
  dev = runner.device_info()
  print(f"{cfg.name} | batch {f.batch_size} | {f.dtype} | {dev['device_kind']} "
        f"({dev['platform']}) | {len(base.grid)} token counts | cache {cache}")
  print(f"{'configuration':<36} {'wall s':>8} {'compile s':>10} {'run s':>8} {'graphs':>6}  steps")
  for r in rows:
    steps = ", ".join(f"{a}->{b}" for a, b in r["steps"]) or "-"
    print(f"{r['name']:<36} {r['wall']:>8.2f} {r['compile']:>10.2f} {r['run']:>8.2f} "
          f"{r['graphs']:>6}  [{r['component']}] {steps}")
  ref = set(rows[0]["steps"])
  print("step reproducibility (model-mode runs vs the default run):")
  for r in rows[1:]:
    if r["component"] != "model":
      continue
    got = set(r["steps"])
    r["vs_default"] = {"same": len(ref & got), "only_default": len(ref - got),
                       "only_this_run": len(got - ref)}
    print(f"  {r['name']:<36} same {len(ref & got)}, only default {len(ref - got)}, "
          f"only this run {len(got - ref)}")
  a, b = set(rows[2]["steps"]), set(rows[4]["steps"])
  print(f"  adaptive run 1 vs run 2: {'identical' if a == b else 'differ'} "
        f"({len(a & b)} shared of {len(a | b)})")
  doc = {"format": RESULT_FORMAT, "command": common.command_line("benchmarks.profile_speed", f),
         "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": cfg.name,
         "batch_size": f.batch_size, "dtype": f.dtype, "device": dev,
         "token_counts": list(base.grid), "threads": f.threads, "compile_cache_dir": cache,
         "rows": [dict(r, steps=[list(s) for s in r["steps"]]) for r in rows],
         "adaptive_repeat": {"identical": a == b, "shared": len(a & b), "of": len(a | b)}}
  common.write_result(f.out, doc, RESULT_FORMAT, indent=1)
  print(f"wrote {f.out}")
  return doc


if __name__ == "__main__":
  common.run(main, define_flags)
