r"""Latency-workload profiler CLI: latency vs tokens kept, steps, per-block tables, schedules.

  python -m experiments.profile          # the embedded default: profile -> estimate -> solve ->
                                         # verify on weights/vit_digits (vitprune/pipeline.py)
  python -m experiments.profile --model=deit_small_patch16_224 --batch_size=1,8 \
      --dtype=bfloat16 --mode=model --adaptive --threads=8 \
      --compile_cache_dir=/tmp/jax_cache --min_run_time=0.5
  python -m experiments.profile --model=deit_small_patch16_224 --mode=block --tokens=197:50
  python -m experiments.profile --model=deit_small_patch16_224 --mode=schedule \
      --schedule=197,197,197,180,180,180,160,160,160,140,140,140,120

Writes `<out_dir>/<model>_<mode>_b<batch>_<dtype>_<device>.{json,csv,png}` (schema in
`vitprune/profile/records.py`) and prints a summary table with steps ("n -> n-1 saves x% (y ms)"),
flat stretches and the per-block predictor's errors.
"""
from __future__ import annotations

from typing import List

from absl import app
from absl import flags

from experiments import common

from vitprune import pipeline
from vitprune.profile import records
from vitprune.profile import runner
from vitprune.profile import timing
from vitprune.schedule import parse_schedule, parse_token_grid

_MODEL = flags.DEFINE_string("model", "vit_digits", "Registered model name (timm name). "
                             "vit_digits without --weights uses the embedded weights/vit_digits.")
_BATCH = flags.DEFINE_list("batch_size", ["1"], "Batch sizes, comma-separated.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_TOKENS = flags.DEFINE_string(
    "tokens", "all", "Token counts entering block 0: 'all', 'a:b', 'a:b:step' (inclusive) or "
    "'n1,n2,...'; each within [prefix + 1, num_tokens].")
_MODE = flags.DEFINE_enum("mode", "pipeline", ["pipeline"] + list(runner.MODES),
                          "pipeline: profile -> estimate -> solve -> verify (needs trained "
                          "weights and data); model: whole-forward curve; block: per-block "
                          "table; schedule: the graphs of --schedule.")
_SCHEDULE = flags.DEFINE_multi_string(
    "schedule", [], "Schedule(s) for --mode=schedule (repeat the flag): depth + 1 comma-separated "
    "counts, or any syntax vitprune.schedule.parse_schedule accepts.")
_REDUCER = flags.DEFINE_string(
    "reducer", None, "Token-drop method for model/schedule graphs (default: the library's "
    "'random' by default; keep_first: a static slice).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory (default outputs/profile/; "
                               "the pipeline: outputs/pipeline/ with profile/, estimate/, solve/ "
                               "and summary.json).")
_MIN_RUN = flags.DEFINE_float("min_run_time", 0.25, "Seconds of timed calls per point.")
_MAX_REL_IQR = flags.DEFINE_float("max_rel_iqr", 0.1,
                                  "Re-measure points whose IQR / median exceeds this.")
_RETRIES = flags.DEFINE_integer("max_retries", 2, "Re-measurement rounds for wide points.")
_CACHE = flags.DEFINE_string("compile_cache_dir", None,
                             "Persistent JAX compilation cache directory (reuse across runs).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed: random weights, inputs, measurement order.")
_WEIGHTS = flags.DEFINE_string("weights", None,
                               "Weights directory (vitprune.checkpoint.load_weights); its config replaces --model.")
_THREADS = flags.DEFINE_integer("threads", 2, "Parallel compile threads.")
_ADAPTIVE = flags.DEFINE_bool("adaptive", False,
                              "Coarse pass, then every count in non-flat intervals.")
_STRIDE = flags.DEFINE_integer("coarse_stride", 0, "Adaptive coarse stride (0: ~16 points).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar (stderr).")
# --mode=pipeline only:
_DATA = flags.DEFINE_string("data", "digits", "Pipeline data: 'digits' (bundled) or an image "
                            "folder (labelled: accuracy; flat: agreement with the unpruned model).")
_NUM_IMAGES = flags.DEFINE_integer("num_images", None, "Pipeline: seeded class-balanced subset "
                                   "size (default: all).")
_EVAL_BATCH = flags.DEFINE_integer("eval_batch_size", 64, "Pipeline: accuracy batch size.")
_ALPHA = flags.DEFINE_float("alpha", 0.5, "Pipeline: latency weight of the paper's utility.")
_LAYER = flags.DEFINE_integer("layer", 3, "Pipeline: block where the chosen schedule prunes.")
_METHOD = flags.DEFINE_string("method", "pomt", "Pipeline: method of the chosen schedule.")
_SOLVER = flags.DEFINE_enum("solver", "paper", ["paper", "multi"],
                            "Pipeline: paper (one reduction at --layer, utility argmax) or multi "
                            "(per-layer schedule from the exact Pareto frontier).")
_FLOOR = flags.DEFINE_float("accuracy_floor", None, "Pipeline, --solver=multi: fastest schedule "
                            "whose predicted accuracy (agreement when unlabelled) is >= this.")
_BUDGET = flags.DEFINE_float("latency_budget", None, "Pipeline, --solver=multi: most accurate "
                             "schedule whose predicted latency (seconds) is <= this.")


def _batch_sizes(values: List[str]):
  try:
    sizes = tuple(int(v) for v in values)
  except ValueError:
    raise ValueError(f"--batch_size must be comma-separated integers, got {values}") from None
  if not sizes or min(sizes) < 1:
    raise ValueError(f"--batch_size values must be >= 1, got {list(sizes)}")
  return sizes


def _timing_from_flags() -> timing.TimingConfig:
  return timing.TimingConfig(min_run_time=_MIN_RUN.value, max_rel_iqr=_MAX_REL_IQR.value,
                             max_retries=_RETRIES.value, seed=_SEED.value)


def pipeline_from_flags():
  """-> (cfg, params, weights source, PipelineSpec, EvalData); raises ValueError / KeyError /
  FileNotFoundError on bad flags."""
  if not _WEIGHTS.value and _MODEL.value != common.EMBEDDED_MODEL:
    raise ValueError(f"--mode=pipeline estimates accuracy, so it needs trained --weights for "
                     f"{_MODEL.value} (use --mode=model for latency alone)")
  cfg, params, source = common.load_model(_MODEL.value, _WEIGHTS.value, _SEED.value)
  sizes = _batch_sizes(_BATCH.value)
  if len(sizes) != 1:
    raise ValueError(f"--mode=pipeline takes one --batch_size, got {list(sizes)}")
  tokens = parse_token_grid(cfg, _TOKENS.value) if _TOKENS.present else None
  tcfg = _timing_from_flags()
  spec = pipeline.PipelineSpec(
      batch_size=sizes[0], dtype=_DTYPE.value, tokens=tokens, data=_DATA.value,
      num_images=_NUM_IMAGES.value, eval_batch_size=_EVAL_BATCH.value, alpha=_ALPHA.value,
      layer=_LAYER.value, method=_METHOD.value, timing=tcfg, threads=_THREADS.value,
      seed=_SEED.value, solver=_SOLVER.value, accuracy_floor=_FLOOR.value,
      latency_budget=_BUDGET.value)
  return cfg, params, source, spec, pipeline.load_data(spec, common.class_names(source),
                                                       cfg.num_classes)


def spec_from_flags():
  """-> (ProfileSpec, params or None); raises ValueError/KeyError on bad flags."""
  cfg, params, _ = common.load_model(_MODEL.value, _WEIGHTS.value, _SEED.value)
  tokens = parse_token_grid(cfg, _TOKENS.value)
  schedules = tuple(parse_schedule(cfg, s) for s in _SCHEDULE.value)
  tcfg = _timing_from_flags()
  spec = runner.ProfileSpec(cfg=cfg, batch_sizes=_batch_sizes(_BATCH.value), dtype=_DTYPE.value,
                            mode=_MODE.value, tokens=tokens, schedules=schedules, timing=tcfg,
                            threads=_THREADS.value, adaptive=_ADAPTIVE.value,
                            coarse_stride=_STRIDE.value, reducer=_REDUCER.value,
                            seed=_SEED.value)
  return spec, params


def run(argv) -> List[records.Profile]:
  """Runs the profile the parsed flags describe -> one Profile per batch size (and prints the
  summary). Bad flags raise `app.UsageError` with the problem."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _MODE.value == "pipeline":
    try:
      cfg, params, source, spec, data = pipeline_from_flags()
    except (ValueError, KeyError, FileNotFoundError) as e:
      raise app.UsageError(str(e)) from None
    summary = pipeline.run_pipeline(cfg, params, spec, _OUT_DIR.value or "outputs/pipeline",
                                    weights_source=source, data=data,
                                    progress=_PROGRESS.value)
    print(pipeline.format_summary(summary))
    return summary
  try:
    spec, params = spec_from_flags()
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  profiles = runner.run_profile(spec, params=params, out_dir=_OUT_DIR.value or "outputs/profile",
                                compile_cache_dir=_CACHE.value, progress=_PROGRESS.value)
  for prof in profiles:
    print(runner.summary_table(prof))
  return profiles


def main(argv):
  common.quiet_logging()
  run(argv)


if __name__ == "__main__":
  app.run(main)
