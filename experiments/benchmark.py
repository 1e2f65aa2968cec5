r"""Method benchmark: latency (profiler protocol) and accuracy / fidelity of token-reduction methods.

  # Default: the embedded trained vit_digits (weights/vit_digits) on the digits test split, CPU.
  python -m experiments.benchmark

  # The solver's POMT schedule and multi-layer schedules against the default method set:
  python -m experiments.benchmark --weights=weights/vit_digits \
      --solution=outputs/solve/vit_digits_paper_b1.json \
      --multi_solution=outputs/solve/vit_digits_multi_b1.json --multi_frontier=3

  # Latency only, random weights, GPU:
  python -m experiments.benchmark --model=deit_small_patch16_224 --data=none \
      --batch_size=1,4,16,64 --dtype=float32,bfloat16

Variants: unpruned; POMT from --solution (a solver output), else --pomt_schedule, else POMT at
block 3 matched to ToMe r8's token budget; the method variants of --variants (';'-separated
`[NAME=]METHOD:SCHEDULE` items, `defaults` = tome-r8, tome-r13, topk-r8, evit-0.7, topk-0.7 as
documented in vitprune/benchmark.py); the multi-layer solver's chosen schedule (+ --multi_frontier
frontier schedules) from --multi_solution.

Writes `<out_dir>/<model>_<device>.{csv,md,png}` atomically and prints the markdown table.
"""
from __future__ import annotations

from typing import List, Sequence

from absl import app
from absl import flags

from experiments import common

flags.DEFINE_string("model", None, "Registered model name: random init unless --weights; "
                    "default vit_digits with its embedded trained weights.")
flags.DEFINE_string("weights", None, "Weights directory (vitprune.checkpoint.save_weights); "
                    "default with neither flag: weights/vit_digits if present, else "
                    "test_tiny_vit with random weights.")
flags.DEFINE_list("batch_size", ["1", "32"], "Batch sizes to time (comma list).")
flags.DEFINE_list("dtype", ["float32"], "Compute dtypes (comma list of float32, bfloat16).")
flags.DEFINE_string("data", "digits", "'digits' (test split), an image folder (labelled or flat: "
                    "fidelity only), or 'none' (latency only).")
flags.DEFINE_integer("num_images", None, "Seeded class-balanced subset of the data (default all).")
flags.DEFINE_string("variants", None, "';'-separated [NAME=]METHOD:SCHEDULE items or 'defaults' "
                    "(default: the default method set).")
flags.DEFINE_string("pomt_schedule", None, "POMT schedule text, e.g. keep@3:120 (instead of "
                    "--solution).")
flags.DEFINE_string("solution", None, "Solver output JSON (experiments.solve) for POMT.")
flags.DEFINE_string("multi_solution", None, "Multi-layer solver output JSON (--mode=multi).")
flags.DEFINE_integer("multi_frontier", 0, "Extra frontier schedules from --multi_solution.")
flags.DEFINE_float("min_run_time", 0.3, "Seconds of timed calls per point.")
flags.DEFINE_integer("compile_threads", 2, "Graphs compiled in parallel.")
flags.DEFINE_integer("eval_batch_size", 64, "Batch size of the accuracy evaluation.")
flags.DEFINE_string("out_dir", "outputs/benchmark", "Output directory.")
flags.DEFINE_integer("seed", 0, "Seed of random weights, inputs, data subset, timing order.")
flags.DEFINE_bool("progress", True, "tqdm progress bar on stderr.")

FLAGS = flags.FLAGS



def parse_ints(values: Sequence[str], flag: str) -> List[int]:
  """Positive distinct ints from a flag list; ValueError naming the flag."""
  if not values:
    raise ValueError(f"--{flag} is empty")
  out = []
  for v in values:
    try:
      n = int(str(v).strip())
    except ValueError:
      raise ValueError(f"--{flag}: {v!r} is not an integer") from None
    if n < 1:
      raise ValueError(f"--{flag}: {n} must be >= 1")
    out.append(n)
  if len(set(out)) != len(out):
    raise ValueError(f"--{flag}: duplicate values in {out}")
  return out


def parse_dtypes(values: Sequence[str]) -> List[str]:
  from vitprune.benchmark import DTYPES  # pylint: disable=g-import-not-at-top
  out = [str(v).strip().lower() for v in values]
  bad = [v for v in out if v not in DTYPES]
  if not out or bad:
    raise ValueError(f"--dtype: {bad or 'empty'}; valid: {', '.join(DTYPES)}")
  if len(set(out)) != len(out):
    raise ValueError(f"--dtype: duplicate values in {out}")
  return out


def main(argv):
  common.quiet_logging()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from vitprune import benchmark as bench  # pylint: disable=g-import-not-at-top
  from vitprune import estimate  # pylint: disable=g-import-not-at-top
  from vitprune.profile import timing  # pylint: disable=g-import-not-at-top
  try:
    batch_sizes = parse_ints(FLAGS.batch_size, "batch_size")
    dtypes = parse_dtypes(FLAGS.dtype)
    if FLAGS.multi_frontier < 0:
      raise ValueError(f"--multi_frontier must be >= 0, got {FLAGS.multi_frontier}")
    if FLAGS.multi_frontier and not FLAGS.multi_solution:
      raise ValueError("--multi_frontier needs --multi_solution")
    tcfg = timing.TimingConfig(min_run_time=FLAGS.min_run_time, seed=FLAGS.seed)
    cfg, params, source = common.load_model(FLAGS.model, FLAGS.weights, FLAGS.seed)
    spec = bench.BenchmarkSpec(cfg, batch_sizes=tuple(batch_sizes), dtypes=tuple(dtypes),
                               timing=tcfg, threads=FLAGS.compile_threads,
                               eval_batch_size=FLAGS.eval_batch_size, seed=FLAGS.seed)
    variants = bench.build_variants(
        cfg, variants=FLAGS.variants, pomt_schedule=FLAGS.pomt_schedule,
        solution=FLAGS.solution, multi_solution=FLAGS.multi_solution,
        multi_frontier=FLAGS.multi_frontier)
    data = None
    if FLAGS.data.strip().lower() != "none":
      if FLAGS.num_images is not None and FLAGS.num_images < 1:
        raise ValueError(f"--num_images must be >= 1, got {FLAGS.num_images}")
      data = estimate.load_eval_data(FLAGS.data, num_images=FLAGS.num_images, seed=FLAGS.seed,
                                     class_names=common.class_names(source),
                                     num_classes=cfg.num_classes)
    elif FLAGS.num_images is not None:
      raise ValueError("--num_images needs data (--data is 'none')")
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  print(f"{cfg.name} ({source}): {len(variants)} variants x batch {batch_sizes} x {dtypes}")
  try:
    rows = bench.run_benchmark(spec, params, variants, data=data, progress=FLAGS.progress)
  except ValueError as e:   # e.g. labels beyond the model's classes
    raise app.UsageError(str(e)) from None
  paths = bench.write_outputs(rows, FLAGS.out_dir)
  print(bench.to_markdown(rows))
  print(f"wrote {paths['csv']}, {paths['md']}, {paths['png']}")


if __name__ == "__main__":
  app.run(main)
