r"""How long profiling takes: default sweep vs parallel / adaptive / per-block / cached.

  python -m benchmarks.profile_speed                       # tiny model on the local CPU
  python -m benchmarks.profile_speed --model=deit_small_patch16_224 --batch_size=1 \
      --threads=8 --min_run_time=0.2                       # on a GPU

Prints one row per configuration: wall seconds, summed per-graph compile seconds (overlapping
when threads > 1), summed timed-run seconds, graphs compiled, and the steps found; then step
reproducibility: the steps of each model-mode run compared with the first (default) run and the
two cached runs compared with each other. Autotuning is left as JAX configures it: every
configuration compiles the same kernels deployment would use.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time

from absl import app
from absl import flags

from vitprune.profile import runner
from vitprune.profile import timing
from vitprune.registry import get_config
from vitprune.schedule import parse_token_grid

_MODEL = flags.DEFINE_string("model", "test_tiny_vit", "Registered model name.")
_BATCH = flags.DEFINE_integer("batch_size", 1, "Batch size.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_TOKENS = flags.DEFINE_string("tokens", "all", "Token grid (see experiments.profile).")
_MIN_RUN = flags.DEFINE_float("min_run_time", 0.05, "Seconds of timed calls per point.")
_THREADS = flags.DEFINE_integer("threads", 4, "Compile threads of the parallel configurations.")
_STRIDE = flags.DEFINE_integer("coarse_stride", 0, "Adaptive coarse stride (0: ~16 points).")
_CACHE = flags.DEFINE_string("compile_cache_dir", None,
                             "Compilation cache for the cached runs (default: a fresh temp dir).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")


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


def main(argv):
  del argv
  cfg = get_config(_MODEL.value)
  base = runner.ProfileSpec(
      cfg=cfg, batch_sizes=(_BATCH.value,), dtype=_DTYPE.value, mode="model",
      tokens=parse_token_grid(cfg, _TOKENS.value), threads=1,
      timing=timing.TimingConfig(min_run_time=_MIN_RUN.value, seed=_SEED.value),
      coarse_stride=_STRIDE.value, seed=_SEED.value)
  par = dataclasses.replace(base, threads=_THREADS.value)
  ada = dataclasses.replace(par, adaptive=True)
  rows = [_run("default (model, 1 thread)", base),
          _run(f"parallel ({_THREADS.value} threads)", par),
          _run("adaptive + parallel", ada),
          _run("per-block + parallel", dataclasses.replace(par, mode="block")),
          _run("adaptive + parallel (repeat)", ada)]
  cache = _CACHE.value or tempfile.mkdtemp(prefix="vitprune_jax_cache_")
  rows.append(_run("adaptive + parallel + cache (cold)", ada, cache))
  rows.append(_run("adaptive + parallel + cache (warm)", ada, cache))
  dev = runner.device_info()
  print(f"{cfg.name} | batch {_BATCH.value} | {_DTYPE.value} | {dev['device_kind']} "
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
    print(f"  {r['name']:<36} same {len(ref & got)}, only default {len(ref - got)}, "
          f"only this run {len(got - ref)}")
  a, b = set(rows[2]["steps"]), set(rows[4]["steps"])
  print(f"  adaptive run 1 vs run 2: {'identical' if a == b else 'differ'} "
        f"({len(a & b)} shared of {len(a | b)})")


if __name__ == "__main__":
  app.run(main)
