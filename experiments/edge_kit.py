r"""Build an on-device profile kit: one IREE module per token count (or schedule), compiled on the
host in parallel and cached, for `python -m vitprune.edge profile --kit=DIR --out=FILE` on a board.

  python -m experiments.edge_kit --tokens=65:5:-4 --target=iree:host --out=kits/digits
  python -m experiments.edge_kit --model=deit_small_patch16_224 --tokens=197:17:-20 \
      --target=iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae --batch_sizes=1,8 --out=kits/deit
  python -m experiments.edge_kit --mode=schedule --schedules="keep@3:35;full" --out=kits/s

--model/--weights follow experiments.common.load_model; --tokens follows
vitprune.schedule.parse_token_grid. Mode model drops tokens right after the embedding (the
profiler's 'model' mode, reducer --reducer, default 'random'); mode schedule compiles the given
schedules (';'-separated). Compiled modules are cached in --cache_dir by a hash of the MLIR and
the flags, so rebuilding a kit recompiles only what changed.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

from experiments import common

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Registered model name (default: the embedded vit_digits).")
flags.DEFINE_string("weights", None, "Weights directory.")
flags.DEFINE_string("target", "iree:host", "IREE target (see vitprune.edge.targets).")
flags.DEFINE_enum("mode", "model", ["model", "schedule"], "What the kit times.")
flags.DEFINE_string("tokens", "all", "Token grid for mode model ('all', 'a:b[:step]', list).")
flags.DEFINE_string("schedules", None, "';'-separated schedules for mode schedule.")
flags.DEFINE_list("batch_sizes", ["1"], "Batch sizes.")
flags.DEFINE_string("reducer", None, "Token-drop reducer (default 'random'; 'keep_first').")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_integer("jobs", max(1, os.cpu_count() or 1), "Parallel compiles.")
flags.DEFINE_string("cache_dir", "outputs/iree_cache", "Compiled-module cache ('' for none).")
flags.DEFINE_string("out", None, "Kit directory to write.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --out.")


def run(f=FLAGS) -> str:
  from vitprune import iree_build  # pylint: disable=g-import-not-at-top
  from vitprune.profile.runner import make_drop_reducer  # pylint: disable=g-import-not-at-top
  from vitprune.schedule import parse_schedule, parse_token_grid  # pylint: disable=g-import-not-at-top
  if not f.out:
    raise ValueError("--out is required")
  try:
    batches = [int(b) for b in f.batch_sizes]
  except ValueError:
    raise ValueError(f"--batch_sizes {f.batch_sizes} are not integers") from None
  if not batches or min(batches) < 1:
    raise ValueError(f"--batch_sizes must be positive integers, got {f.batch_sizes}")
  cfg, params, _ = common.load_model(f.model, f.weights)
  reducer, name = make_drop_reducer(f.reducer)
  grid = parse_token_grid(cfg, f.tokens) if f.mode == "model" else ()
  schedules = [parse_schedule(cfg, s.strip()) for s in (f.schedules or "").split(";")
               if s.strip()] if f.mode == "schedule" else ()
  total = len(batches) * (len(grid) or len(schedules))
  done = []

  def on_done(_, info):
    done.append(1)
    how = "cached" if info["cached"] else f"{info['compile_s']:.1f} s"
    print(f"[{len(done)}/{total}] compiled ({how})", file=sys.stderr)

  return iree_build.build_kit(f.out, cfg, params, target=f.target, mode=f.mode, grid=grid,
                              schedules=schedules, batch_sizes=batches, reducer=reducer,
                              reducer_name=name, dtype=f.dtype, threads=f.jobs,
                              cache_dir=f.cache_dir or None, overwrite=f.overwrite,
                              on_done=on_done)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  common.quiet_logging()
  try:
    path = run()
  except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
    sys.exit(f"error: {e}")
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
