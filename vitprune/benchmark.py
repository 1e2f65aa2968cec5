"""Method benchmark: unpruned vs POMT vs Top-K / ToMe / EViT (and the multi-layer solver).

    variants = build_variants(cfg, solution="outputs/solve/m_paper_b1_float32_cpu.json")
    rows = run_benchmark(BenchmarkSpec(cfg, batch_sizes=(1, 64), dtypes=("float32",)), params,
                         variants, data=estimate.load_eval_data("digits"))
    write_outputs(rows, "outputs/benchmark", stem="vit_digits_cpu")

Every variant is a (method, static `Schedule`) pair; each is

  * timed with the profiler's protocol (`vitprune.profile.timing`): the deployed forward graph
    (`vitprune.profile.runner.model_fn`, i.e. `model.forward` at float32 precision 'highest')
    AOT-compiled per (variant, batch size, dtype), device-resident random inputs, warm-up, then
    median / IQR of per-call times; all points of a run are visited in one seeded shuffled order
    (so drift spreads over every variant) and wide-IQR points are re-measured;
  * evaluated with `vitprune.estimate.evaluate` on the same data for each dtype: top-1 accuracy
    (labelled data) and its change against the unpruned model on the same images with the
    paired 95 % interval (`intervals.change_record`: images lost and gained), plus fidelity
    against the unpruned model in that dtype (top-1 agreement and KL(unpruned || pruned)).
    Accuracy does not depend on the batch size (the estimator works per example), so it is
    computed once per dtype and shared by every batch size.

Default variants (`default_variants`), derived from the model's depth and token count, with the
literature's DeiT-S settings (196 patches, 12 blocks) as reference:

  tome-r8, tome-r13  ToMe r = 8 and 13 per block, scaled so the fraction of patches merged over
                     the whole depth is the one of DeiT-S: r' = max(1, round(r * 12 * P / (196 *
                     depth))) for P patches (DeiT-S/B: r' = r), then ToMe's per-block cap (half of
                     the non-prefix tokens) as ToMe applies it;
  topk-r8            Top-K with the schedule of tome-r8 (same token counts, no merging);
  evit-0.7           EViT keep rate 0.7 at DeiT's blocks 3, 6, 9 (0-indexed; scaled to
                     `l * depth // 12`, duplicates dropped): ceil(0.7 * non-prefix tokens) kept
                     plus the fused token, as the official code counts;
  topk-0.7           Top-K at the same keep rate and blocks (no fused token);
  pomt               POMT at block min(3, depth - 1) with the token count that matches tome-r8's
                     token budget (sum over blocks of tokens in + tokens out), unless a solver
                     solution (`--solution`) or an explicit `--pomt_schedule` gives it.

User variants (`parse_variants`): `;`-separated `[NAME=]METHOD:SCHEDULE` items with the compact
schedule strings of `vitprune.schedule` (`tome:r8`, `evit:keep@3:140,6:100`,
`fast=topk:keep@2:40`), and the word `defaults` for the default set.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from vitprune import atomic
from vitprune import console
from vitprune import estimate
from vitprune import figure
from vitprune import intervals
from vitprune import jsonio
from vitprune import progress as progress_lib
from vitprune import schedule as S
from vitprune.config import (COMPUTE_DTYPES, ViTConfig, config_to_dict, configs_shown,
                             method_label)
from vitprune.profile import protocol, runner, timing
from vitprune.records.solution import read_solution
from vitprune.reduce.methods import list_methods, make_reducer, reducer_fields

UNPRUNED = "unpruned"
REF_PATCHES = 196   # DeiT-S/B at 224: the setting of the ToMe and EViT papers
REF_DEPTH = 12
EVIT_LAYERS = (3, 6, 9)
EVIT_KEEP_RATE = 0.7
TOME_RS = (8, 13)
DTYPES = COMPUTE_DTYPES

CSV_COLUMNS = (
    "model", "device_kind", "platform", "batch_size", "dtype", "variant", "method", "source",
    "schedule", "counts", "final_tokens", "token_budget_pct", "latency_median_ms",
    "latency_q25_ms", "latency_q75_ms", "latency_iqr_ms", "latency_rel_iqr", "num_samples",
    "retries", "compile_s", "change_pct", "num_examples", "accuracy", "agreement", "kl",
    "accuracy_change", "accuracy_change_low", "accuracy_change_high", "images_lost",
    "images_gained")
# Headers of tables written by earlier versions, still read and replaced as ours (their rows
# lack the later columns: empty cells). Before the accuracy change's columns:
OLDER_CSV_COLUMNS = (CSV_COLUMNS[:-5],)


# ----------------------------------------------------------------------------- variants


@dataclasses.dataclass(frozen=True)
class Variant:
  """One benchmarked configuration.

  name: unique label; method: reducer name (None: unpruned); schedule: static token schedule
  (`depth + 1` counts); source: where it came from ('baseline', 'default', 'user', 'pomt',
  'solution', 'multi_solution').
  """
  name: str
  method: Optional[str]
  schedule: S.Schedule
  source: str
  options: Tuple[Tuple[str, Any], ...] = ()      # the reducer's (a solution's random seed)

  def reducer_for(self, cfg: ViTConfig):
    """The reducer realising the schedule on `cfg` (None when nothing is reduced)."""
    full = self.schedule == S.full_schedule(cfg)
    return (None if self.method is None or full else
            make_reducer(self.method, **dict(self.options)))


def method_text(v: Variant) -> str:
  """The method cell of a row: 'none', 'tome', or with the reducer's options a solution chose
  that are not its defaults, 'random(seed=3)' (two rows of one method and schedule then say how
  they differ; a solution's every option, defaults too, made its row 'random(nested=true,
  seed=0)' beside a --variants row of the same reducer labelled 'random')."""
  if v.method is None:
    return "none"
  defaults = reducer_fields(make_reducer(v.method))
  return method_label(v.method, {k: x for k, x in v.options
                                 if k not in defaults or defaults[k] != x})


def _check_variant(cfg: ViTConfig, v: Variant) -> Variant:
  if not v.name or not re.fullmatch(r"[A-Za-z0-9_.+@:,-]+", v.name):
    raise ValueError(f"variant name {v.name!r} must be non-empty and use only letters, digits "
                     "and _ . + @ : , -")
  if v.method is not None:
    make_reducer(v.method)   # raises ValueError listing the valid names
  elif v.schedule != S.full_schedule(cfg):
    raise ValueError(f"variant {v.name!r} reduces tokens but names no method")
  try:
    S.check_schedule(cfg, v.schedule, v.reducer_for(cfg))
  except ValueError as e:
    raise ValueError(f"variant {v.name!r} ({v.method}): {e}") from None
  return v


def scale_r(cfg: ViTConfig, r: int) -> int:
  """ToMe's DeiT-S r scaled to `cfg`: the same fraction of the patches merged over the depth.

  r' = max(1, round(r * REF_DEPTH * num_patches / (REF_PATCHES * depth))); r' = r for 196-patch,
  12-block models.
  """
  return max(1, int(round(r * REF_DEPTH * cfg.num_patches / (REF_PATCHES * cfg.depth))))


def evit_layers(depth: int) -> Tuple[int, ...]:
  """EViT's reduction blocks (3, 6, 9 of 12, 0-indexed) scaled to `depth`: `l * depth // 12`."""
  return tuple(sorted({l * depth // REF_DEPTH for l in EVIT_LAYERS}))


def keep_rate_schedule(cfg: ViTConfig, rate: float, layers: Sequence[int], *,
                       fused_token: bool) -> S.Schedule:
  """At each of `layers`, keep ceil(rate * non-prefix tokens) patch tokens (+ 1 fused token for
  EViT); never below one patch token, never more than entering the block."""
  if not 0 < rate <= 1:
    raise ValueError(f"keep rate must be in (0, 1], got {rate}")
  p = cfg.num_prefix_tokens
  n = cfg.num_tokens
  keeps = {}
  for l in sorted(layers):
    kept = max(1, math.ceil(rate * (n - p)))
    n = min(n, p + kept + int(fused_token))
    keeps[l] = n
  return S.prune_layers(cfg, keeps)


def token_budget(schedule: S.Schedule) -> int:
  """Sum over blocks of tokens entering + tokens leaving (the attention and MLP widths)."""
  c = schedule.counts
  return sum(c[:-1]) + sum(c[1:])


def matched_pomt_schedule(cfg: ViTConfig, target: S.Schedule,
                          layer: Optional[int] = None) -> S.Schedule:
  """POMT at `layer` (default min(3, depth - 1)) keeping the fewest tokens whose token budget is
  at least `target`'s: n = ceil((T - (2 L + 1) N) / (2 D - 2 L - 1)), clamped to [p + 1, N]."""
  layer = min(S.DEFAULT_POMT_LAYER, cfg.depth - 1) if layer is None else layer
  d, big = cfg.depth, cfg.num_tokens
  n = math.ceil((token_budget(target) - (2 * layer + 1) * big) / (2 * d - 2 * layer - 1))
  n = min(big, max(cfg.num_prefix_tokens + 1, n))
  return S.layer_schedule(cfg, n, layer)


def default_method_variants(cfg: ViTConfig) -> List[Variant]:
  """tome-r8, tome-r13, topk-r8, evit-0.7, topk-0.7 (see the module docstring)."""
  out = []
  tome = {r: S.remove_per_layer(cfg, scale_r(cfg, r)) for r in TOME_RS}
  for r in TOME_RS:
    out.append(Variant(f"tome-r{r}", "tome", tome[r], "default"))
  out.append(Variant(f"topk-r{TOME_RS[0]}", "topk", tome[TOME_RS[0]], "default"))
  layers = evit_layers(cfg.depth)
  out.append(Variant(f"evit-{EVIT_KEEP_RATE}", "evit",
                     keep_rate_schedule(cfg, EVIT_KEEP_RATE, layers, fused_token=True),
                     "default"))
  out.append(Variant(f"topk-{EVIT_KEEP_RATE}", "topk",
                     keep_rate_schedule(cfg, EVIT_KEEP_RATE, layers, fused_token=False),
                     "default"))
  return [_check_variant(cfg, v) for v in out]


def default_pomt_variant(cfg: ViTConfig) -> Variant:
  target = S.remove_per_layer(cfg, scale_r(cfg, TOME_RS[0]))
  return _check_variant(cfg, Variant("pomt", "pomt", matched_pomt_schedule(cfg, target),
                                     "default"))


def parse_variants(cfg: ViTConfig, text: str) -> List[Variant]:
  """`;`-separated `[NAME=]METHOD:SCHEDULE` items, or `defaults` (the default method set).

  The name defaults to `METHOD:SCHEDULE` as the schedule parser reads it (lower case, no
  spaces). Raises ValueError naming the offending item.
  """
  if not isinstance(text, str) or not text.strip():
    raise ValueError("--variants is empty; expected ';'-separated [NAME=]METHOD:SCHEDULE items "
                     "(e.g. 'tome:r8;evit:keep@3:140') or 'defaults'")
  if [t.strip().lower() for t in text.split(";")].count("defaults") > 1:
    raise ValueError(f"--variants {text!r}: 'defaults' is given more than once")
  out = []
  for item in (t.strip() for t in text.split(";")):
    if not item:
      raise ValueError(f"--variants {text!r}: empty item (doubled or trailing ';')")
    if item.lower() == "defaults":
      out.extend(default_method_variants(cfg))
      continue
    name = None
    head = item.split(":", 1)[0]
    if "=" in head:
      name, item = (s.strip() for s in item.split("=", 1))
    if ":" not in item:
      raise ValueError(f"--variants item {item!r} is not METHOD:SCHEDULE (e.g. tome:r8, "
                       f"pomt:keep@3:120); methods: {', '.join(list_methods())}")
    method, sched_text = (s.strip() for s in item.split(":", 1))
    method = method.lower()
    if method not in list_methods():
      raise ValueError(f"--variants item {item!r}: unknown method {method!r}; valid: "
                       f"{', '.join(list_methods())}")
    try:
      sched = S.parse_schedule(cfg, sched_text)
    except (ValueError, TypeError) as e:
      raise ValueError(f"--variants item {item!r}: {e}") from None
    if sched == S.full_schedule(cfg):
      raise ValueError(f"--variants item {item!r} does not reduce any token (the unpruned "
                       "baseline is always included)")
    # (named by the text as given, 'tome:keep@3: 9' was refused as a bad name and 'tome:R1;tome:r1'
    # timed one graph twice)
    read_as = re.sub(r"\s+", "", sched_text).lower()
    out.append(_check_variant(cfg, Variant(f"{method}:{read_as}" if name is None else name,
                                           method, sched, "user")))   # ' =' is refused
  return out


def solution_variants(cfg: ViTConfig, path: str, *, multi: bool,
                      frontier: int = 0) -> List[Variant]:
  """Variants from a solver output (`vitprune.records.solution.read_solution`).

  The chosen schedule (the solution's method), named after the method (paper mode: 'pomt' by
  default) or 'multi' (a multi-layer solution, also when given as --solution); with
  `multi` (a multi-layer solution) also `frontier` further frontier schedules (not the chosen
  one, not a uniform one), evenly spaced along the frontier's order, named 'multi-f<i>' after
  their index in the solution's `frontier` (a probe: numbered among those left, every name past
  the chosen one was one off). Raises ValueError when the file is for another model, or `multi`
  does not match the file's mode.
  """
  flag = "--multi_solution" if multi else "--solution"
  with console.input_flag(flag, path):
    sol = read_solution(path)
  if sol.config != cfg:
    if sol.model != cfg.name:
      raise ValueError(f"{flag} {path} is a solution for model {sol.model!r}, not for "
                       f"{cfg.name!r}")
    theirs, ours = configs_shown(sol.model, config_to_dict(sol.config), cfg.name,
                                 config_to_dict(cfg))
    raise ValueError(f"{flag} {path} is a solution for {theirs}, not for {ours}")
  if multi and sol.mode != "multi":
    raise ValueError(f"{flag} {path} is a {sol.mode!r}-mode solution; pass it as --solution")
  chose_unpruned = not S.reduces_tokens(cfg, S.Schedule(sol.chosen.counts))
  if chose_unpruned and not (multi and frontier > 0):     # (it was timed twice)
    raise ValueError(f"{flag} {path} chose the unpruned schedule: it is the baseline row "
                     "already; nothing pruned to compare")
  base = "multi" if sol.mode == "multi" else sol.method
  source = "multi_solution" if multi else "solution"

  options = tuple(sorted(sol.reducer_options().items()))

  def variant(vname, cand):
    return _check_variant(cfg, Variant(vname, sol.method, S.Schedule(cand.counts), source,
                                       options))

  out = [] if chose_unpruned else [variant(base, sol.chosen)]   # (the baseline row already)
  if multi and frontier > 0:
    fr = [(i, p) for i, p in enumerate(sol.frontier)
          if p.counts != sol.chosen.counts and len(set(p.counts)) > 1]
    if fr:
      pick = sorted({int(round(j)) for j in np.linspace(0, len(fr) - 1, min(frontier, len(fr)))})
      out += [variant(f"multi-f{fr[j][0]}", fr[j][1]) for j in pick]
  if not out:
    raise ValueError(f"{flag} {path} chose the unpruned schedule and lists no other "
                     "multi-layer frontier schedule: nothing pruned to compare")
  if chose_unpruned:
    warnings.warn(f"{flag} {path} chose the unpruned schedule (the baseline row): only its "
                  f"frontier schedules are timed", UserWarning, stacklevel=2)
  return out


def build_variants(cfg: ViTConfig, *, variants: Optional[str] = None,
                   pomt_schedule: Optional[str] = None, solution: Optional[str] = None,
                   multi_solution: Optional[str] = None, multi_frontier: int = 0
                   ) -> List[Variant]:
  """unpruned, POMT (solution > pomt_schedule > matched default), the method variants
  (`variants` text or the defaults), then the multi-layer solver's schedules. Names are unique."""
  if solution and pomt_schedule:
    raise ValueError("pass either --solution or --pomt_schedule, not both")
  out = [Variant(UNPRUNED, None, S.full_schedule(cfg), "baseline")]
  if solution:
    out += solution_variants(cfg, solution, multi=False)
  elif pomt_schedule:
    try:
      sched = S.parse_schedule(cfg, pomt_schedule)
    except (ValueError, TypeError) as e:
      raise ValueError(f"--pomt_schedule: {e}") from None
    if sched == S.full_schedule(cfg):
      raise ValueError(f"--pomt_schedule {pomt_schedule!r} does not reduce any token")
    out.append(_check_variant(cfg, Variant("pomt", "pomt", sched, "pomt")))
  else:
    out.append(default_pomt_variant(cfg))
  out += default_method_variants(cfg) if variants is None else parse_variants(cfg, variants)
  if multi_solution:
    out += solution_variants(cfg, multi_solution, multi=True, frontier=multi_frontier)
  names = [v.name for v in out]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    sources = sorted({v.source for v in out if v.name in dup})
    if sources.count("user") == len(sources):
      raise ValueError(f"duplicate variant names {dup}; name them explicitly "
                       "(NAME=METHOD:SCHEDULE)")
    if solution and multi_solution and os.path.realpath(solution) == os.path.realpath(
        multi_solution):
      raise ValueError(f"--solution and --multi_solution are the same file {solution}: pass "
                       "a multi-layer solution once, as --multi_solution")
    raise ValueError(f"duplicate variant names {dup} (from {', '.join(sources)}): " + (
        "rename the --variants one (NAME=METHOD:SCHEDULE)" if "user" in sources else
        "both solutions are multi-layer ones, named 'multi': pass one of them"))
  return out


# ----------------------------------------------------------------------------- measuring


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
  """What to measure: model, batch sizes, dtypes, timing protocol, compile threads, seed."""
  cfg: ViTConfig
  batch_sizes: Tuple[int, ...] = (1,)
  dtypes: Tuple[str, ...] = ("float32",)
  timing: Any = None          # vitprune.profile.timing.TimingConfig (default: its defaults)
  threads: int = 1
  eval_batch_size: int = 64
  seed: int = 0

  def __post_init__(self):
    if not self.batch_sizes:
      raise ValueError("no batch sizes given")
    for b in self.batch_sizes:
      if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
        raise ValueError(f"batch sizes must be positive ints, got {b!r}")
    if len(set(self.batch_sizes)) != len(self.batch_sizes):
      raise ValueError(f"duplicate batch sizes {list(self.batch_sizes)}")
    if not self.dtypes:
      raise ValueError("no dtypes given")
    bad = [d for d in self.dtypes if d not in DTYPES]
    if bad or len(set(self.dtypes)) != len(self.dtypes):
      raise ValueError(f"dtypes must be distinct values of {DTYPES}, got {list(self.dtypes)}")
    if self.threads < 1:
      raise ValueError(f"threads must be >= 1, got {self.threads}")
    if self.eval_batch_size < 1:
      raise ValueError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")


def measure_latency(spec: BenchmarkSpec, params, variants: Sequence[Variant], *,
                    progress: bool = True) -> Dict[Tuple[str, int, str], Any]:
  """{(variant name, batch size, dtype): timing.Measurement} for every combination.

  Images [B, S, S, C] are seeded random normals (values do not change a graph's speed), device
  resident like `params`; every graph is AOT-compiled first, then all are timed together in one
  seeded shuffled order (`timing.measure_all`).
  """
  cfg = spec.cfg
  tcfg = spec.timing or timing.TimingConfig(seed=spec.seed)
  params = timing.device_put(params)
  rng = np.random.default_rng(spec.seed)
  images = {b: timing.device_put(jnp.asarray(
      rng.normal(0, 1, (b, cfg.img_size, cfg.img_size, cfg.in_chans)), jnp.float32))
      for b in spec.batch_sizes}
  jobs = {}
  for dt in spec.dtypes:
    for b in spec.batch_sizes:
      for v in variants:
        fn = runner.model_fn(cfg, v.schedule, v.reducer_for(cfg), dt)
        jobs[(v.name, int(b), dt)] = (fn, (params, images[b]))
  with progress_lib.bar(2 * len(jobs), f"benchmark {cfg.name}", enabled=progress) as bar:
    compiled = timing.compile_many(jobs, threads=spec.threads,
                                   on_done=lambda k, s: bar.update(1))
    points = {k: (compiled[k][0], jobs[k][1]) for k in jobs}
    return timing.measure_all(points, tcfg, compile_s={k: compiled[k][1] for k in jobs},
                              on_done=lambda k: bar.update(1))


@dataclasses.dataclass(frozen=True)
class Quality:
  """A variant's quality in one dtype: `result` (accuracy when labelled, agreement, KL) and,
  on labelled data, `change`: its accuracy minus the unpruned graph's on the same images with
  the paired 95 % interval (`intervals.change_record`; the unpruned variant: 0, no interval)."""
  result: estimate.PointResult
  change: Optional[Dict[str, Any]] = None


def measure_quality(spec: BenchmarkSpec, params, variants: Sequence[Variant], data
                    ) -> Dict[Tuple[str, str], Quality]:
  """{(variant name, dtype): `Quality`} on `data` (an `estimate.EvalData`).

  The unpruned variant gets the reference result (agreement 1, KL 0, change 0)."""
  cfg = spec.cfg
  pruned = [v for v in variants if v.schedule != S.full_schedule(cfg)]
  points = [estimate.EvalPoint(v.schedule, v.reducer_for(cfg), v.schedule.counts[-1],
                               (v.schedule.reduction_layers or (None,))[0]) for v in pruned]
  out = {}
  for dt in spec.dtypes:
    # Below float32 the pieces differ from the whole graph (rounding at the block boundaries):
    # each row's quality must be the graph it times (bfloat16 rows were another image's worth).
    res = estimate.evaluate(cfg, params, data.batches(cfg, spec.eval_batch_size), points,
                            labelled=data.labelled, dtype=dt, margins=data.labelled,
                            whole_graphs=dt != "float32")
    ref = res.reference
    for v in variants:
      if v.schedule == S.full_schedule(cfg):
        out[(v.name, dt)] = Quality(ref, intervals.change_record(
            (ref.correct, 0, 0, ref.num_examples - ref.correct), "accuracy", identical=True)
                                    if data.labelled else None)
    for i, (v, r) in enumerate(zip(pruned, res.points)):
      out[(v.name, dt)] = Quality(r, intervals.change_record(
          estimate.paired_counts(res.margins[0], res.margins[1 + i]), "accuracy")
                                  if data.labelled else None)
  return out


# ----------------------------------------------------------------------------- tabulating


def tabulate(spec: BenchmarkSpec, variants: Sequence[Variant], latency: Dict, quality: Optional[
    Dict], device: Dict[str, str]) -> List[Dict[str, Any]]:
  """One row per (batch size, dtype, variant), in that order; keys are `CSV_COLUMNS`.

  change_pct = 100 * (median / unpruned median - 1) at the same batch size and dtype.
  token_budget_pct = 100 * token_budget(schedule) / token_budget(unpruned).
  """
  cfg = spec.cfg
  full_budget = token_budget(S.full_schedule(cfg))
  rows = []
  for b in spec.batch_sizes:
    for dt in spec.dtypes:
      base = latency[(UNPRUNED, int(b), dt)].median
      for v in variants:
        m = latency[(v.name, int(b), dt)]
        q = None if quality is None else quality[(v.name, dt)].result
        change = None if quality is None else quality[(v.name, dt)].change
        rows.append({
            "model": cfg.name, "device_kind": device["device_kind"],
            "platform": device["platform"], "batch_size": int(b), "dtype": dt,
            "variant": v.name, "method": method_text(v), "source": v.source,
            "schedule": S.format_schedule(v.schedule, cfg),
            "counts": ",".join(map(str, v.schedule.counts)),
            "final_tokens": v.schedule.counts[-1],
            "token_budget_pct": 100.0 * token_budget(v.schedule) / full_budget,
            "latency_median_ms": 1e3 * m.median, "latency_q25_ms": 1e3 * m.q25,
            "latency_q75_ms": 1e3 * m.q75, "latency_iqr_ms": 1e3 * m.iqr,
            "latency_rel_iqr": m.rel_iqr, "num_samples": len(m.samples),
            "retries": m.retries, "compile_s": m.compile_s,
            "change_pct": 100.0 * (m.median / base - 1.0),
            "num_examples": None if q is None else q.num_examples,
            "accuracy": None if q is None else q.accuracy,
            "agreement": None if q is None else q.agreement,
            "kl": None if q is None else q.kl,
            "accuracy_change": None if change is None else change["value"],
            "accuracy_change_low": None if change is None else change["interval_95"][0],
            "accuracy_change_high": None if change is None else change["interval_95"][1],
            "images_lost": None if change is None else change["images_lost"],
            "images_gained": None if change is None else change["images_gained"],
        })
  return rows


def to_csv(rows: Sequence[Dict[str, Any]]) -> str:
  """CSV text with header `CSV_COLUMNS`; missing values are empty cells."""
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
  w.writeheader()
  for r in rows:
    w.writerow({k: "" if r[k] is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                for k in CSV_COLUMNS})
  return buf.getvalue()


def _fmt(x: Optional[float], spec: str) -> str:
  return "–" if x is None else format(x, spec)


MD_COLUMNS = ("batch", "dtype", "variant", "method", "schedule", "latency ms (median ± IQR)",
              "change vs unpruned", "accuracy", "accuracy change (paired 95 %)", "agreement",
              "KL", "tokens per layer")


def _accuracy_change_cell(r: Dict[str, Any]) -> str:
  """'-0.0084 (-0.0167..+0.0000; 3 lost, 0 gained)'; '+0.0000' for the unpruned graph itself;
  '–' where not measured (unlabelled data, a table of an earlier version)."""
  if r.get("accuracy_change") is None:
    return "–"
  if r["variant"] == UNPRUNED:
    return f"{r['accuracy_change']:+.4f}"
  return (f"{r['accuracy_change']:+.4f} ({r['accuracy_change_low']:+.4f}.."
          f"{r['accuracy_change_high']:+.4f}; {r['images_lost']} lost, "
          f"{r['images_gained']} gained)")


# Marks a latency change the measurement cannot tell from none (`protocol.within_spread`).
WITHIN_SPREAD = "within spread"
SPREAD_LEGEND = (f"({WITHIN_SPREAD}: the medians differ by less than the larger IQR of the "
                 "two, so the change says nothing)")


def change_cells(rows: Sequence[Dict[str, Any]]) -> List[str]:
  """Each row's latency change vs the unpruned row of its model, device, batch size and dtype,
  '-12.3%', with ' (within spread)' where the two medians differ by less than the larger IQR (a
  -2 % change of a ±5 % graph is no speed-up). A row without such an unpruned row: the change
  alone."""
  def key(r):
    return r.get("model"), r.get("device_kind"), r["batch_size"], r["dtype"]

  base = {key(r): r for r in rows if r["variant"] == UNPRUNED}
  out = []
  for r in rows:
    b = base.get(key(r))
    noise = (b is not None and r is not b and protocol.within_spread(
        r["latency_median_ms"], r["latency_iqr_ms"], b["latency_median_ms"], b["latency_iqr_ms"]))
    out.append(f"{r['change_pct']:+.1f}%" + (f" ({WITHIN_SPREAD})" if noise else ""))
  return out


def to_markdown(rows: Sequence[Dict[str, Any]], provenance: Sequence[str] = ()) -> str:
  """GitHub markdown table, one line per row (columns `MD_COLUMNS`); '–' where not measured.
  `provenance`: lines said first (which weights, data, device and command measured the table;
  `provenance_lines`), each a list item. A change within the timing spread is marked
  (`change_cells`) and the legend follows the table."""
  lines = [f"- {line}" for line in provenance] + ([""] if provenance else [])
  lines += ["| " + " | ".join(MD_COLUMNS) + " |",
           "|" + "|".join("---:" if c in ("batch", "change vs unpruned", "accuracy",
                                          "agreement", "KL") else "---" for c in MD_COLUMNS)
           + "|"]
  changes = change_cells(rows)
  for r, change in zip(rows, changes):
    cells = [str(r["batch_size"]), r["dtype"], r["variant"], r["method"], f"`{r['schedule']}`",
             f"{r['latency_median_ms']:.4g} ± {r['latency_iqr_ms']:.2g}",
             change, _fmt(r["accuracy"], ".4f"), _accuracy_change_cell(r),
             _fmt(r["agreement"], ".4f"), _fmt(r["kl"], ".4f"), r["counts"]]
    lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
  if any(c.endswith(f"({WITHIN_SPREAD})") for c in changes):
    lines += ["", SPREAD_LEGEND]
  return "\n".join(lines) + "\n"


def provenance_lines(*, weights_source: str, params_sha256: str,
                     data_info: Optional[Dict[str, Any]], device: Dict[str, str],
                     command: str) -> List[str]:
  """What measured a table, for `to_markdown`: the weights (source, sha256 of the parameters),
  the data (source, images, fingerprint; or none: latency only), device and jax, the command
  (a table alone named none of them: the same model with other weights or images gave another
  table under the same name). Names and the command are `console.printable` (a newline split
  the list; a name that is not UTF-8 failed the write after the whole run)."""
  shown = console.printable
  data = ("none (latency only)" if data_info is None else
          f"{shown(str(data_info['source']))} "
          f"({console.counted(data_info['num_examples'], 'image')}, "
          f"{'labelled' if data_info['labelled'] else 'unlabelled'}, fingerprint "
          f"{data_info['fingerprint'][:12]})")
  return [f"weights: {shown(weights_source)} (parameters sha256 {params_sha256[:12]})",
          f"data: {data}",
          f"device: {device['device_kind']} ({device['platform']}), jax {device['jax_version']}",
          f"command: `{shown(command)}`"]


def plot_png(rows: Sequence[Dict[str, Any]]) -> bytes:
  """PNG: latency (ms, IQR error bars) vs accuracy (labelled), agreement (unlabelled) or, with no
  data, the token budget (%), one panel per (batch size, dtype), one marker per variant."""
  if not rows:
    raise ValueError("no rows to plot")
  if rows[0]["accuracy"] is not None:
    key, label = "accuracy", "top-1 accuracy"
  elif rows[0]["agreement"] is not None:
    key, label = "agreement", "top-1 agreement with unpruned"
  else:
    key, label = "token_budget_pct", "token budget [% of unpruned] (no data)"
  panels = list(dict.fromkeys((r["batch_size"], r["dtype"]) for r in rows))
  cols = min(len(panels), 4)
  nrows = -(-len(panels) // cols)
  fig, axes = figure.subplots(nrows, cols, figsize=(4.5 * cols, 3.8 * nrows), squeeze=False)
  names = list(dict.fromkeys(r["variant"] for r in rows))
  markers = "so^vD<>ph*Xd"
  for ax, (b, dt) in zip(axes.flat, panels):
    for r in rows:
      if (r["batch_size"], r["dtype"]) != (b, dt):
        continue
      i = names.index(r["variant"])
      lo = r["latency_median_ms"] - r["latency_q25_ms"]
      hi = r["latency_q75_ms"] - r["latency_median_ms"]
      ax.errorbar([r["latency_median_ms"]], [r[key]], xerr=[[lo], [hi]],
                  fmt=markers[i % len(markers)], color=f"C{i % 10}", ms=6, capsize=2,
                  label=r["variant"])
    ax.set_title(f"batch {b}, {dt}", fontsize=9)
    ax.set_xlabel("latency [ms]")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=7)
  fig.suptitle(f"{rows[0]['model']} on {rows[0]['device_kind']}", fontsize=10)
  return figure.png_bytes(fig, dpi=110, bbox_inches="tight")


def output_stem(rows: Sequence[Dict[str, Any]]) -> str:
  """`<model>_<device kind>` with unsafe characters replaced by '-'."""
  r = rows[0]
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{r['model']}_{r['device_kind']}").strip("-")


def check_replaceable_outputs(paths: Dict[str, str]) -> None:
  """Refuses (`atomic.ForeignOutputError`) to replace outputs vitprune did not write: an existing
  CSV must be a regular file (never a link, FIFO or device) starting with our header, and the
  MD/PNG may exist only beside such a CSV, as regular files (`atomic.check_companions`)."""
  atomic.check_companions([paths["md"], paths["png"]])
  if not os.path.lexists(paths["csv"]):
    ours = None
  elif os.path.islink(paths["csv"]) or not os.path.isfile(paths["csv"]):
    ours = False                  # never open a FIFO or a device: it blocks or never ends
  else:
    try:
      with open(paths["csv"], newline="", encoding="utf-8-sig") as f:
        ours = _our_columns(f.readline(len(",".join(CSV_COLUMNS)) + 3)) is not None
    except (OSError, UnicodeDecodeError):
      ours = False
  if ours is False:
    what = ("not a vitprune benchmark table" if os.path.isfile(paths["csv"])
            and not os.path.islink(paths["csv"]) else
            f"{atomic.describe(paths['csv'])}, not a benchmark table vitprune wrote")
    raise atomic.ForeignOutputError(f"refusing to replace {paths['csv']}: it is {what}; move it "
                                    "away or choose another --out_dir")
  stray = [paths[k] for k in ("md", "png") if ours is None and os.path.lexists(paths[k])]
  if stray:
    raise atomic.ForeignOutputError(f"refusing to replace {', '.join(stray)}: no benchmark "
                                    f"table {os.path.basename(paths['csv'])} is beside it; move "
                                    "it away or choose another --out_dir")
  if os.path.lexists(paths["md"]) and not _our_markdown(paths["md"]):
    raise atomic.ForeignOutputError(f"refusing to replace {paths['md']}: it holds no benchmark "
                                    "table vitprune wrote (a file of yours?); move it away or "
                                    "choose another --out_dir")


def _our_markdown(md_path: str) -> bool:
  """Whether `md_path` (a regular file: `atomic.check_companions`) holds a table `to_markdown`
  wrote: its first line after the provenance list is the header row, `| batch | ...` (a
  byte-order mark, as a re-save by an editor adds, is read past). A note of the user's beside
  our CSV was replaced unsaid; one that cannot be read is not ours either (the publish, a
  rename, would replace it)."""
  try:
    with open(md_path, encoding="utf-8-sig") as f:
      head = f.read(1 << 20)            # (ours: a few kB; the provenance's command is one line)
  except (OSError, UnicodeDecodeError):
    return False
  first = next((line for line in head.split("\n") if line.strip() and not line.startswith("- ")),
               "")
  return first.startswith(f"| {MD_COLUMNS[0]} |")


def _table_settings(rows: Sequence[Dict[str, Any]]) -> Dict[str, str]:
  """The settings a table's rows (dicts, or CSV rows of strings) were measured with, as text: a
  variant by its name and the graph behind it (`x=tome:r4` then `x=topk:keep@3:20` replaced
  the table without a word)."""
  def values(k, text=lambda r, k: "" if r.get(k) is None else str(r[k])):
    got = {text(r, k) for r in rows}
    shown = sorted(got - {""}, key=lambda v: (len(v), v) if k == "batch_size" else v)
    return ", ".join(shown + (["none"] if "" in got else [])) or "none"
  return {"batch sizes": values("batch_size"), "dtypes": values("dtype"),
          "variants": values("variant", lambda r, k: f"{r[k]} ({r.get('method') or 'none'} "
                                                     f"{r.get('schedule')})"),
          "number of images evaluated": values("num_examples")}


def _our_columns(first_line: str) -> Optional[Tuple[str, ...]]:
  """The columns of the header line `first_line` when it is one we write (`CSV_COLUMNS`) or
  wrote (`OLDER_CSV_COLUMNS`), else None."""
  line = first_line.rstrip("\r\n")
  return next((c for c in (CSV_COLUMNS, *OLDER_CSV_COLUMNS) if line == ",".join(c)), None)


def read_table_rows(csv_path: str) -> Optional[List[Dict[str, str]]]:
  """The rows (cells as text; a column of `CSV_COLUMNS` the table's version lacks: empty) of a
  benchmark table we wrote, None when the file does not start with our header (`CSV_COLUMNS`,
  or an earlier version's: `OLDER_CSV_COLUMNS`). A row with fewer or more cells than the header
  (a file cut mid-write), bytes that are not UTF-8 or a malformed CSV are a ValueError naming
  the file and line, and so is a path that is no regular file (a FIFO hung the reader); OSError
  propagates."""
  why = jsonio.why_not_a_file(csv_path)
  if why:
    raise ValueError(f"{csv_path} {why}")
  try:
    # utf-8-sig: a byte-order mark (a table re-saved by a spreadsheet) is not part of the header,
    # as the profile table's reader takes it too.
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
      columns = _our_columns(f.readline())
      if columns is None:
        return None
      rows, reader = [], csv.DictReader(f, fieldnames=columns)
      for row in reader:
        if None in row or None in row.values():
          cells = len(columns) + len(row.get(None, ())) - list(row.values()).count(None)
          raise ValueError(f"{csv_path}, line {reader.line_num + 1}: {cells} cells, the header "
                           f"has {len(columns)} (a file cut mid-write?)")
        rows.append(dict.fromkeys(CSV_COLUMNS, "") | row)
      return rows
  except (UnicodeDecodeError, csv.Error) as e:
    raise ValueError(f"{csv_path}: not a readable CSV table ({e})") from None


def _provenance_of(md_path: Optional[str]) -> Dict[str, str]:
  """{'weights': ..., 'data': ...} from the provenance lines heading a markdown table we wrote
  (`to_markdown`), {} where there are none (a table written before them) or no file."""
  if not md_path or os.path.islink(md_path) or not os.path.isfile(md_path):
    return {}
  try:
    with open(md_path, encoding="utf-8") as f:
      head = [f.readline(4096) for _ in range(4)]
  except (OSError, UnicodeDecodeError):
    return {}
  return dict(line[2:].rstrip("\n").split(": ", 1) for line in head
              if line.startswith(("- weights: ", "- data: ")))


def _identity(key: str, line: str) -> str:
  """What a provenance value is compared by: the weights by their parameters' sha256 (the same
  weights from another checkout or a copied folder are the same), the data by its fingerprint
  (or the whole value: 'none (latency only)')."""
  found = re.search(r"parameters sha256 ([0-9a-f]+)" if key == "weights" else
                    r"fingerprint ([0-9a-f]+)", line)
  return found.group(1) if found else line


def replaced_table_note(csv_path: str, rows: Sequence[Dict[str, Any]],
                        md_path: Optional[str] = None, provenance: Sequence[str] = ()
                        ) -> Optional[str]:
  """'replacing <csv_path>, a table of ...' when our table there (a regular file starting with
  our header; anything else is `check_replaceable_outputs`' to refuse, never opened here) was
  measured with other batch sizes, dtypes, variants or number of images than `rows` or, where
  its markdown (`md_path`) and this run (`provenance`) both name them, other weights or data (a
  run with other settings replaced it without a word), else None."""
  if os.path.islink(csv_path) or not os.path.isfile(csv_path):
    return None
  try:
    old_rows = read_table_rows(csv_path)
  except (OSError, ValueError):
    return None
  if old_rows is None:
    return None
  old, new = _table_settings(old_rows), _table_settings(rows)
  had = _provenance_of(md_path)
  given = dict(line.split(": ", 1) for line in provenance
               if line.startswith(("weights: ", "data: ")))
  for k in sorted(set(had) & set(given)):
    if _identity(k, had[k]) != _identity(k, given[k]):
      old[k], new[k] = had[k], given[k]
  if old == new:
    return None
  what = ("an empty table" if not old_rows else "a table of " + "; ".join(
      f"{k} {old[k]}" for k in old if old[k] != new[k]))
  return (f"replacing {csv_path}, {what} (this run: "
          f"{'; '.join(f'{k} {new[k]}' for k in new if old[k] != new[k])}); choose another "
          "--out_dir to keep both")


def write_outputs(rows: Sequence[Dict[str, Any]], out_dir: str,
                  stem: Optional[str] = None,
                  note: Optional[Callable[[str], None]] = None,
                  provenance: Sequence[str] = (),
                  replaces: Any = atomic.ANY_OUTPUT) -> Dict[str, str]:
  """`<stem>.csv`, `<stem>.md` and `<stem>.png` in `out_dir`, published together (a kill leaves
  the old three or the new three); everything is rendered first -> {'csv', 'md', 'png': path}.
  `note` gets `replaced_table_note` when the table replaced was measured with other settings;
  `provenance` lines head the markdown (`provenance_lines`). `replaces`: the CSV's
  `atomic.file_stamp` when the run began: a table another run wrote since is not replaced
  (`atomic.ReplacedMeanwhileError`)."""
  stem = stem or output_stem(rows)
  data = {"png": plot_png(rows), "csv": to_csv(rows).encode(),
          "md": to_markdown(rows, provenance).encode()}
  paths = {k: os.path.join(out_dir, f"{stem}.{k}") for k in data}
  check_replaceable_outputs(paths)
  names = [os.path.basename(paths[k]) for k in ("png", "md", "csv")]   # the CSV (our header) last
  with atomic.locked(paths["csv"]):                                     # published together
    check_replaceable_outputs(paths)              # (again: the run may have taken minutes)
    atomic.check_unchanged(paths["csv"], replaces)   # (two runs at once: the later one's won)
    said = replaced_table_note(paths["csv"], rows, paths["md"], provenance)
    if said and note:
      note(said)
    with atomic.staged_files(os.path.dirname(os.path.abspath(paths["csv"])), names[-1],
                             names) as tmp:
      for k, blob in data.items():
        with open(os.path.join(tmp, os.path.basename(paths[k])), "wb") as f:
          f.write(blob)
  return paths


def run_benchmark(spec: BenchmarkSpec, params, variants: Sequence[Variant], *, data=None,
                  progress: bool = True, log: Callable[[str], None] = print
                  ) -> List[Dict[str, Any]]:
  """Latency of every (variant, batch, dtype) and, with `data` (`estimate.EvalData`), accuracy /
  fidelity per (variant, dtype) -> `tabulate` rows. `variants[0]` must be the unpruned one."""
  if not variants or variants[0].name != UNPRUNED:
    raise ValueError(f"the first variant must be {UNPRUNED!r} (the baseline of change_pct)")
  for v in variants:
    _check_variant(spec.cfg, v)
  quality = None
  if data is not None:
    log(f"evaluating {len(variants)} variants on {console.counted(len(data.indices), 'image')} "
        f"({'labelled' if data.labelled else 'unlabelled'})")
    quality = measure_quality(spec, params, variants, data)
  latency = measure_latency(spec, params, variants, progress=progress)
  return tabulate(spec, variants, latency, quality, runner.device_info())
