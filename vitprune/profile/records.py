"""Latency profile records: JSON schema, CSV twin, load and merge.

One JSON file per (model, mode, batch size, dtype, device) run, named
`<model>_<mode>_b<batch>_<dtype>_<device>.json`, next to a CSV twin (one row per point) and a PNG
plot. `save` merges into an existing profile of the same name point by point (new measurements
replace points of the same key, the others are kept; a different model config, dtype, device
kind or platform is refused), under a lock (`atomic.locked`) so concurrent runs lose nothing, and
publishes JSON, CSV and PNG as one transaction (`atomic.staged_files`, the JSON last): a run
killed part-way leaves the previous set, or a committed set that the next write completes.
A file that is not a latency profile is never replaced.

JSON schema (version 1), all latencies in seconds:

  {
    "format": "vitprune-latency-profile",
    "schema_version": 1,
    "created": "2025-01-01T12:00:00+00:00",        # UTC, ISO 8601
    "model": "deit_small_patch16_224",
    "config": {...},                              # dataclasses.asdict(ViTConfig)
    "device_kind": "NVIDIA H100 80GB HBM3",       # jax.devices()[0].device_kind
    "platform": "gpu",                            # jax.default_backend()
    "jax_version": "0.10.2", "jaxlib_version": "0.10.2",
    "dtype": "float32" | "bfloat16",
    "batch_sizes": [1],                           # every batch size in "points"
    "modes": ["model"],                           # subset of model | block | schedule
    "reducer": "keep_first",                      # how tokens were dropped in model/schedule graphs
    "timing": {...},                              # dataclasses.asdict(TimingConfig)
    "points": [{
        "component": "model" | "schedule" | "embed" | "block" | "head" | "dispatch",
                                                  # dispatch: a trivial graph, the per-call
                                                  # overhead (tokens 1)
        "batch_size": 1,
        "tokens": 197,                            # tokens entering (block: its input;
                                                  # model: block 0)
        "schedule": [197, ..., 98] | null,        # depth + 1 counts, component "schedule" only
        "median_s": ..., "q25_s": ..., "q75_s": ..., "iqr_s": ..., "rel_iqr": ...,
        "num_samples": 250, "samples_s": [...],   # every timed call
        "compile_s": 8.1,                         # lower + compile wall time, excluded from runs
        "retries": 0,                             # re-measurement rounds (wide IQR)
        "retimed": {"samples": 9, "scale": 0.97},   # only on a point timed again and pooled
                                                  # (the main job's re-timing): its last
                                                  # `samples` samples_s are that timing's, times
                                                  # `scale` (the unpruned graph's profiled /
                                                  # re-timed median: the drift in between)
        "measured_at": "2025-01-01T12:00:03.250+00:00"},   # when its shuffled measurement
                                                  # began (UTC): points of one measurement
                                                  # compare without drift (absent: a point
                                                  # written before vitprune recorded it)
        ...],
    "steps": [{"component", "batch_size", "n_from", "n_to", "latency_from_s", "latency_to_s",
               "saving_s", "saving_frac", "noise_s", "level_from", "level_to",
               "measured_apart"}, ...],
                                                  # latency_from_s: L(level_from), n_from or
                                                  # the count above when n_from ran out of line
                                                  # (steps.Step); latency_to_s likewise;
                                                  # measured_apart: [] or the measured_at of
                                                  # level_from and level_to, timed apart
    "flats": [{"component", "batch_size", "n_hi", "n_lo", "latency_hi_s", "latency_lo_s",
               "measured_apart"}, ...],           # measured_apart: [] or the measured_at of
                                                  # the stretch's counts, where several
    "lone_counts": [{"component", "batch_size", "n", "n_above", "n_below", "latency_s",
                     "latency_above_s", "latency_below_s", "slow", "measured_apart"}, ...],
                                                  # out of line with both neighbours (slower
                                                  # if slow, else faster); measured_apart: []
                                                  # or n's measured_at, then theirs
    "predictions": [{"batch_size", "component", "schedule", "predicted_s", "measured_s",
                     "rel_error"}, ...]           # per-block sum vs measured graphs
  }

`steps`, `flats`, `lone_counts` and `predictions` are derived from `points` by `analyze`
(steps.py, predict.py); `merge` recomputes them. Profiles merge when model config, dtype,
device kind and platform agree; a point measured again (same component, batch size, tokens,
schedule) is taken from the profile given last (`save`: the new measurement; never by
"created", which another clock may have set).
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import math
import os
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from vitprune.profile import predict as predict_lib
from vitprune.profile import protocol
from vitprune import atomic
from vitprune import console
from vitprune import jsonio
from vitprune.config import (COMPUTE_DTYPES, METHOD_NAMES, ViTConfig, check_config,
                             config_from_dict, configs_shown, is_method_name)
from vitprune.profile import steps as steps_lib
from vitprune.schedule import Schedule

FORMAT = "vitprune-latency-profile"
SCHEMA_VERSION = 1
COMPONENTS = ("model", "schedule", "embed", "block", "head", "dispatch")
MODES = ("model", "block", "schedule")
DTYPES = COMPUTE_DTYPES
CURVE_COMPONENTS = ("model", "block")   # components whose L(n) curves get step detection


@dataclasses.dataclass(frozen=True)
class Point:
  component: str
  batch_size: int
  tokens: int
  median_s: float
  q25_s: float
  q75_s: float
  num_samples: int
  samples_s: Tuple[float, ...]
  compile_s: float = 0.0
  retries: int = 0
  schedule: Optional[Tuple[int, ...]] = None
  retimed_samples: int = 0               # the last k samples_s: a later timing, pooled in
  retimed_scale: Optional[float] = None  # ... times this (the drift between the two timings)
  measured_at: str = ""                  # its measurement's start (`protocol.measure_all`): one
                                         # per shuffled measurement (re-timed and pooled: the
                                         # re-timing's); "" where not recorded

  def __post_init__(self):
    if self.component not in COMPONENTS:
      raise ValueError(f"unknown component {self.component!r}; expected one of {COMPONENTS}")
    if (self.component == "schedule") != (self.schedule is not None):
      raise ValueError("a point has a schedule exactly when its component is 'schedule'")
    if self.num_samples != len(self.samples_s):
      raise ValueError(f"num_samples {self.num_samples} != {len(self.samples_s)} samples")
    object.__setattr__(self, "samples_s", tuple(float(s) for s in self.samples_s))
    if self.schedule is not None:
      object.__setattr__(self, "schedule", tuple(int(c) for c in self.schedule))
    if not 0 <= self.retimed_samples < max(self.num_samples, 1):   # (its first timing's too)
      raise ValueError(f"retimed_samples {self.retimed_samples} is not within the point's "
                       f"{self.num_samples} samples, its first timing's left")
    if (self.retimed_scale is None) != (self.retimed_samples == 0) or not (
        self.retimed_scale is None or (math.isfinite(self.retimed_scale)
                                       and self.retimed_scale > 0)):
      raise ValueError(f"a point timed again has a positive scale and samples (got scale "
                       f"{self.retimed_scale!r}, {self.retimed_samples} samples)")
    if self.measured_at != "":          # (one spelling per instant: compared as text)
      mark = protocol.measurement_mark(self.measured_at)
      if mark is None:
        raise ValueError(f"measured_at must be an ISO 8601 date and time with its UTC offset "
                         f"(or ''), got {self.measured_at!r}")
      object.__setattr__(self, "measured_at", mark)

  @property
  def key(self) -> Tuple:
    return (self.component, self.batch_size, self.tokens, self.schedule)

  @property
  def iqr_s(self) -> float:
    return self.q75_s - self.q25_s

  @property
  def rel_iqr(self) -> float:
    return protocol.relative_iqr(self.iqr_s, self.median_s)

  @classmethod
  def from_measurement(cls, m, *, component: str, batch_size: int, tokens: int,
                       schedule: Optional[Sequence[int]] = None) -> "Point":
    """From a `timing.Measurement`."""
    return cls(component=component, batch_size=int(batch_size), tokens=int(tokens),
               median_s=m.median, q25_s=m.q25, q75_s=m.q75, num_samples=len(m.samples),
               samples_s=m.samples, compile_s=m.compile_s, retries=m.retries,
               schedule=None if schedule is None else tuple(schedule),
               measured_at=m.measured_at)


@dataclasses.dataclass(frozen=True)
class Profile:
  model: str
  config: Dict[str, Any]
  device_kind: str
  platform: str
  jax_version: str
  jaxlib_version: str
  dtype: str
  modes: Tuple[str, ...]
  reducer: str
  timing: Dict[str, Any]
  points: Tuple[Point, ...]
  created: str = ""
  steps: Tuple[Dict[str, Any], ...] = ()
  flats: Tuple[Dict[str, Any], ...] = ()
  predictions: Tuple[Dict[str, Any], ...] = ()
  lone_counts: Tuple[Dict[str, Any], ...] = ()
  source: str = dataclasses.field(default="profile", compare=False)  # file it was read from

  def __post_init__(self):
    # The JSON form of the config (tuples -> lists), so fresh and loaded profiles compare equal.
    object.__setattr__(self, "config", jsonio.json_form(self.config))
    object.__setattr__(self, "modes", tuple(self.modes))

  @property
  def batch_sizes(self) -> Tuple[int, ...]:
    return tuple(sorted({p.batch_size for p in self.points}))

  def curve(self, component: str, batch_size: int) -> List[Point]:
    """Points of `component` at `batch_size`, sorted by tokens descending."""
    return sorted((p for p in self.points
                   if p.component == component and p.batch_size == batch_size),
                  key=lambda p: -p.tokens)


def now_iso() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- analysis


def step_report(points: Sequence[Point], **kw) -> Optional[steps_lib.StepReport]:
  """Step report of one curve (>= 2 points of one component and batch size), else None."""
  if len(points) < 2:
    return None
  return steps_lib.detect_steps([p.tokens for p in points], [p.median_s for p in points],
                                [p.iqr_s for p in points], [p.num_samples for p in points],
                                measured_at=[p.measured_at for p in points], **kw)


def merged_line(path: str, held: Profile, timed: Profile) -> Optional[str]:
  """What the profile file at `path` holds besides this run's points (`timed`, merged into it:
  `held`), the line the profilers print before a summary of them all; None when it holds only
  these. It says the others are an earlier run's: a board profile merged from two sessions,
  one of them on a busy board, zig-zagged x3 between its counts and read as noise."""
  others = len(held.points) - len(timed.points)
  if not others:
    return None
  return (f"{console.printable(path)} holds {len(held.points)} points: this run's "
          f"{len(timed.points)} merged into the {others} other{'s' * (others != 1)} it held "
          f"(the summary is of them all; {'they are' if others != 1 else 'it is'} an earlier "
          "run's: a step between its counts and this run's may be the machine's drift between "
          "the runs)")


def step_lines(profile: Profile) -> List[str]:
  """Each curve's steps, lone counts and flat stretches in words, under a heading line per
  curve (the profilers' summaries: `experiments.profile`, and a board's `vitprune.edge
  profile`)."""
  lines = []
  for b in profile.batch_sizes:
    for comp in curve_components(profile):
      rep = step_report(profile.curve(comp, b))
      if rep is None:
        continue
      lines.append(f"-- steps of {comp} curve, batch {b} (curve noise "
                   f"{1e3 * rep.curve_noise_s:.3g} ms, trend {1e3 * rep.trend_s:.3g} ms/token)")
      lines += ["  " + s for s in rep.describe()]
  return lines


TABLE_PARTS = ("embed", "block", "head")     # the components a per-block table is made of


def missing_table_parts(profile: Profile, batch_size: int) -> str:
  """What keeps `block_table(profile, batch_size)` from being whole, for a message: 'no embed
  and head points', 'no embed, block or head points' ('' when it is whole)."""
  missing = [c for c in TABLE_PARTS if not profile.curve(c, batch_size)]
  if len(missing) == len(TABLE_PARTS):
    return "no embed, block or head points"
  return f"no {' and '.join(missing)} points" if missing else ""


def block_table(profile: Profile, batch_size: int) -> Optional[predict_lib.BlockTable]:
  """The per-block table of `batch_size` from embed/block/head points, or None if incomplete."""
  parts = {c: profile.curve(c, batch_size) for c in TABLE_PARTS}
  if not all(parts.values()):             # (`missing_table_parts` says which)
    return None
  dispatch = profile.curve("dispatch", batch_size)
  return predict_lib.BlockTable(embed_s=parts["embed"][0].median_s,
                                block_s={p.tokens: p.median_s for p in parts["block"]},
                                head_s={p.tokens: p.median_s for p in parts["head"]},
                                overhead_s=dispatch[0].median_s if dispatch else 0.0)


def curve_components(profile: Profile) -> Tuple[str, ...]:
  """The components of `profile` that are latency curves L(n): 'block', and 'model' where a
  'model' mode measured it (a --mode=block profile's few whole-graph points are predictor
  checks: a 'step' between 3 of them was reported as one)."""
  return tuple(c for c in CURVE_COMPONENTS if c != "model" or "model" in profile.modes)


def analyze(profile: Profile, **step_kw) -> Profile:
  """Recomputes `steps`, `flats`, `lone_counts` and `predictions` from `points`."""
  depth = int(profile.config["depth"])
  steps, flats, preds, lone = [], [], [], []
  for b in profile.batch_sizes:
    for comp in curve_components(profile):
      rep = step_report(profile.curve(comp, b), **step_kw)
      if rep is None:
        continue
      steps += [dict(component=comp, batch_size=b, n_from=s.n_from, n_to=s.n_to,
                     latency_from_s=s.latency_from, latency_to_s=s.latency_to,
                     saving_s=s.saving_s, saving_frac=s.saving_frac, noise_s=s.noise_s,
                     level_from=s.level_from, level_to=s.level_to,
                     measured_apart=list(s.measured_apart))
                for s in rep.steps]
      flats += [dict(component=comp, batch_size=b, n_hi=f.n_hi, n_lo=f.n_lo,
                     latency_hi_s=f.latency_hi, latency_lo_s=f.latency_lo,
                     measured_apart=list(f.measured_apart)) for f in rep.flats]
      for c in rep.lone:
        lone.append(dict(component=comp, batch_size=b, **dataclasses.asdict(c)))
        lone[-1]["measured_apart"] = list(c.measured_apart)    # (a list, as the steps' is)
    table = block_table(profile, b)
    if table is None:
      continue
    measured = [(p, (p.tokens,) * (depth + 1)) for p in profile.curve("model", b)]
    measured += [(p, p.schedule) for p in profile.curve("schedule", b)]
    for p, counts in measured:
      try:
        pred = predict_lib.predict(table, Schedule(counts))
      except KeyError:
        continue   # a count the block table does not cover
      preds.append(dict(batch_size=b, component=p.component, schedule=list(counts),
                        predicted_s=pred, measured_s=p.median_s,
                        rel_error=predict_lib.relative_error(pred, p.median_s)))
  return dataclasses.replace(profile, steps=tuple(steps), flats=tuple(flats),
                             predictions=tuple(preds), lone_counts=tuple(lone))


# ----------------------------------------------------------------------------- JSON


def to_json(profile: Profile) -> Dict[str, Any]:
  points = []
  for p in profile.points:
    points.append(dict(component=p.component, batch_size=p.batch_size, tokens=p.tokens,
                       schedule=None if p.schedule is None else list(p.schedule),
                       median_s=p.median_s, q25_s=p.q25_s, q75_s=p.q75_s, iqr_s=p.iqr_s,
                       rel_iqr=p.rel_iqr, num_samples=p.num_samples,
                       samples_s=list(p.samples_s), compile_s=p.compile_s, retries=p.retries))
    if p.retimed_samples:        # (only then: a profile not re-timed is written as before)
      points[-1]["retimed"] = {"samples": p.retimed_samples, "scale": p.retimed_scale}
    if p.measured_at:            # (a point of a file from before the mark has none)
      points[-1]["measured_at"] = p.measured_at
  return dict(format=FORMAT, schema_version=SCHEMA_VERSION, created=profile.created,
              model=profile.model, config=profile.config, device_kind=profile.device_kind,
              platform=profile.platform, jax_version=profile.jax_version,
              jaxlib_version=profile.jaxlib_version, dtype=profile.dtype,
              batch_sizes=list(profile.batch_sizes), modes=list(profile.modes),
              reducer=profile.reducer, timing=profile.timing, points=points,
              steps=[dict(s) for s in profile.steps], flats=[dict(f) for f in profile.flats],
              predictions=[dict(p) for p in profile.predictions],
              lone_counts=[dict(c) for c in profile.lone_counts])


# Recomputed from the points on load (a file without `lone_counts` predates it).
ANALYSIS_KEYS = ("steps", "flats", "predictions", "lone_counts")


def measurement_sha256(profile: Profile) -> str:
  """The canonical sha256 of what `profile` measured (its JSON without `ANALYSIS_KEYS`): the
  identity a solution and a deployment record of the profile they used. Its analysis is left
  out: it is recomputed on load, and a better step detector would change a digest of it; so are
  a point's `retimed` and `measured_at` marks, which say where and when samples the digest
  covers were timed (a vitprune from before a mark reads the file without it, and must find
  the same digest)."""
  doc = to_json(profile)
  for key in ANALYSIS_KEYS:
    del doc[key]
  for point in doc["points"]:
    point.pop("retimed", None)
    point.pop("measured_at", None)
  return jsonio.canonical_sha256(doc)


_POINT_KEYS = ("component", "batch_size", "tokens", "schedule", "median_s", "q25_s", "q75_s",
               "num_samples", "samples_s", "compile_s", "retries")
_TOP_KEYS = ("created", "model", "config", "device_kind", "platform", "jax_version",
             "jaxlib_version", "dtype", "modes", "reducer", "timing", "points")


def from_json(d: Dict[str, Any], source: str = "<dict>") -> Profile:
  """Parses and validates a schema-1 dict; raises ValueError naming the problem and `source`."""
  if not isinstance(d, dict) or d.get("format") != FORMAT:
    raise ValueError(f"{source}: not a latency profile (format != {FORMAT!r})")
  if not jsonio.is_int(d.get("schema_version")) or d["schema_version"] != SCHEMA_VERSION:
    raise ValueError(f"{source}: schema_version {d.get('schema_version')!r} is not supported "
                     f"(this vitprune reads version {SCHEMA_VERSION})")
  missing = [k for k in _TOP_KEYS if k not in d]
  if missing:
    raise ValueError(f"{source}: missing keys {missing}")
  for k in ("created", "model", "device_kind", "platform", "jax_version", "jaxlib_version",
            "dtype", "reducer"):
    if not isinstance(d[k], str) or (k != "created" and not d[k].strip()):
      raise ValueError(f"{source}: {k} must be a non-empty string, got {d[k]!r}")
  for k in ("config", "timing"):
    if not isinstance(d[k], dict):
      raise ValueError(f"{source}: {k} must be an object, got {type(d[k]).__name__}")
  if d["dtype"] not in DTYPES:
    raise ValueError(f"{source}: dtype must be one of {DTYPES}, got {d['dtype']!r}")
  if not all(is_method_name(n) or n.strip().lower() == "keep_first"
             for n in d["reducer"].split("+")):
    raise ValueError(f"{source}: reducer {d['reducer']!r} names no token-reduction method "
                     f"({', '.join(METHOD_NAMES)}, keep_first, or two joined by '+')")
  known = {f.name for f in dataclasses.fields(protocol.TimingConfig)}
  try:                 # the protocol's own checks (min_run_time -1 was read as given)
    protocol.TimingConfig(**protocol.within_run_limits(
        {k: v for k, v in d["timing"].items() if k in known}))
  except (ValueError, TypeError) as e:
    raise ValueError(f"{source}: timing: {e}") from None
  try:
    cfg = check_config(config_from_dict(d["config"]))
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from None
  if d["model"] != cfg.name:
    raise ValueError(f"{source}: model {d['model']!r} is not its config's name {cfg.name!r}")
  if not (isinstance(d["modes"], list) and all(isinstance(m, str) for m in d["modes"])
          and set(d["modes"]) <= set(MODES) and len(set(d["modes"])) == len(d["modes"])):
    raise ValueError(f"{source}: modes must be a list of distinct modes of {MODES}, got "
                     f"{d['modes']!r}")
  if not isinstance(d["points"], list):
    raise ValueError(f"{source}: points must be a list")
  points = []
  for i, p in enumerate(d["points"]):
    if not isinstance(p, dict):
      raise ValueError(f"{source}: point {i} is not an object")
    miss = [k for k in _POINT_KEYS if k not in p]
    if miss:
      raise ValueError(f"{source}: point {i} is missing keys {miss}")
    bad = _bad_point_field(p) or _bad_point_value(p, cfg)
    if bad:
      raise ValueError(f"{source}: point {i}: {bad}")
    retimed = p.get("retimed")
    if retimed is not None and (
        not isinstance(retimed, dict) or set(retimed) != {"samples", "scale"}
        or not jsonio.is_int(retimed["samples"]) or not 1 <= retimed["samples"] < len(
            p["samples_s"]) or not _is_num(retimed["scale"])
        or not (math.isfinite(retimed["scale"]) and retimed["scale"] > 0)):
      raise ValueError(f"{source}: point {i}: retimed must be {{\"samples\": 1.."
                       f"{len(p['samples_s']) - 1}, \"scale\": a positive number}}, got "
                       f"{retimed!r}")
    measured_at = "" if p.get("measured_at") is None else p["measured_at"]   # (null: absent;
                                                                  # Point checks the rest)
    try:
      points.append(Point(**{k: p[k] for k in _POINT_KEYS if k != "schedule"},
                          schedule=None if p["schedule"] is None else tuple(p["schedule"]),
                          retimed_samples=0 if retimed is None else retimed["samples"],
                          retimed_scale=None if retimed is None else float(retimed["scale"]),
                          measured_at=measured_at))
    except (TypeError, ValueError) as e:
      raise ValueError(f"{source}: point {i}: {e}") from e
  first: Dict[Tuple, int] = {}
  for i, pt in enumerate(points):       # two timings of one graph: which one is the profile?
    j = first.setdefault(pt.key, i)
    if j != i:
      graph = f"{pt.tokens} tokens" + ("" if pt.schedule is None else f" {list(pt.schedule)}")
      raise ValueError(f"{source}: point {i} ({pt.component}, batch {pt.batch_size}, {graph}) "
                       f"repeats point {j}: a profile holds one timing per graph (edited?)")
  _check_modes(d["modes"], points, source)
  have = sorted({p.batch_size for p in points})
  if "batch_sizes" in d and (d["batch_sizes"] != have or not all(   # (derived from the points
      jsonio.is_int(b) for b in d["batch_sizes"])):                     # on reading; [true] == [1])
    raise ValueError(f"{source}: batch_sizes {d['batch_sizes']!r} but its points are at batch "
                     f"{have} (edited?)")
  for k in ANALYSIS_KEYS:
    if not isinstance(d.get(k, []), list) or not all(isinstance(x, dict) for x in d.get(k, [])):
      raise ValueError(f"{source}: {k} must be a list of objects")
  return Profile(model=d["model"], config=d["config"], device_kind=d["device_kind"],
                 platform=d["platform"], jax_version=d["jax_version"],
                 jaxlib_version=d["jaxlib_version"], dtype=d["dtype"],
                 modes=tuple(d["modes"]), reducer=d["reducer"], timing=d["timing"],
                 points=tuple(points), created=d["created"],
                 steps=tuple(d.get("steps", ())), flats=tuple(d.get("flats", ())),
                 predictions=tuple(d.get("predictions", ())),
                 lone_counts=tuple(d.get("lone_counts", ())), source=source)


def _is_num(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _bad_point_field(p: Dict[str, Any]) -> Optional[str]:
  """What is wrong with the field types/ranges of a point read from a file, or None.

  Latencies must be numbers (their values: `_bad_point_value`); sizes and counts must be
  positive integers."""
  if not isinstance(p["component"], str):
    return f"component must be a string, got {p['component']!r}"
  for k in ("batch_size", "tokens"):
    if not jsonio.is_int(p[k]) or p[k] < 1:
      return f"{k} must be a positive integer, got {p[k]!r}"
  for k in ("num_samples", "retries"):
    if not jsonio.is_int(p[k]) or p[k] < 0:
      return f"{k} must be a non-negative integer, got {p[k]!r}"
  for k in ("median_s", "q25_s", "q75_s", "compile_s"):
    if not _is_num(p[k]):
      return f"{k} must be a number, got {p[k]!r}"
  if not isinstance(p["samples_s"], list) or not all(_is_num(x) for x in p["samples_s"]):
    return "samples_s must be a list of numbers"
  sched = p["schedule"]
  if sched is not None and (not isinstance(sched, list) or not all(
      jsonio.is_int(c) and c >= 1 for c in sched)):
    return f"schedule must be null or a list of positive integers, got {sched!r}"
  return None


MIN_CALL_S, MAX_CALL_S = 1e-9, 86400.0     # a point's median: a nanosecond .. a day


def _bad_point_value(p: Dict[str, Any], cfg: ViTConfig) -> Optional[str]:
  """What a point's values say that its model or its own samples contradict, or None: token
  counts the model cannot have, a schedule of another depth, no samples or a negative one,
  quartiles that are not the samples' (`protocol.summarize` made them; a different one was
  edited)."""
  lo, hi = cfg.num_prefix_tokens + 1, cfg.num_tokens
  if p["component"] != "dispatch" and not lo <= p["tokens"] <= hi:   # dispatch: no tokens (1)
    return f"tokens {p['tokens']} is outside [{lo}, {hi}] for {cfg.name}"
  sched = p["schedule"]
  if sched is not None and (len(sched) != cfg.depth + 1 or not all(lo <= c <= hi
                                                                    for c in sched)):
    return (f"schedule {sched} is not {cfg.depth + 1} counts within [{lo}, {hi}] "
            f"for {cfg.name}")
  if sched is not None and any(b > a for a, b in zip(sched, sched[1:])):
    return f"schedule {sched} increases: token counts never grow between blocks"
  if sched is not None and sched[0] != p["tokens"]:
    return f"tokens {p['tokens']} is not its schedule's first count {sched[0]}: edited?"
  for k in ("median_s", "q25_s", "q75_s", "compile_s"):
    if not (math.isfinite(p[k]) and p[k] >= 0):
      return f"{k} must be a finite number >= 0 seconds, got {p[k]!r}"
  if p["median_s"] == 0:
    return "median_s is 0 seconds: a timed call takes time (a broken timer?)"
  samples = p["samples_s"]
  if not samples:
    return "samples_s is empty: a point holds the durations of its timed calls"
  bad = [x for x in samples if not (math.isfinite(x) and x >= 0)]
  if bad:
    return f"samples_s holds {bad[0]!r}: every sample is a duration >= 0 seconds"
  want = protocol.summarize(samples)
  for k, v in (("q25_s", want.q25), ("median_s", want.median), ("q75_s", want.q75)):
    if not math.isclose(p[k], v, rel_tol=1e-9, abs_tol=1e-15):
      return f"{k} {p[k]!r} is not its {len(samples)} samples' ({v!r}): edited?"
  # Samples scaled by 1e300 or 1e-300 together stay consistent: paper mode chose on them in
  # silence, multi mode overflowed (a probe). No call of a compiled graph takes either.
  if not MIN_CALL_S <= p["median_s"] <= MAX_CALL_S:
    return (f"median_s {p['median_s']!r} seconds is outside [{MIN_CALL_S:g}, {MAX_CALL_S:g}]: "
            "no timing of one call takes that (edited?)")
  return None


# ----------------------------------------------------------------------------- CSV

CSV_COLUMNS = ("model", "device_kind", "platform", "dtype", "component", "batch_size", "tokens",
               "schedule", "median_ms", "q25_ms", "q75_ms", "iqr_ms", "rel_iqr", "num_samples",
               "compile_s", "retries", "step_to", "retimed_samples", "retimed_scale",
               "measured_at")
# Headers an earlier vitprune wrote (before the measured_at column; before the retimed ones): a
# profile folder of theirs still merges (its CSV was refused as "not written by vitprune").
OLDER_CSV_COLUMNS = (CSV_COLUMNS[:-1], CSV_COLUMNS[:-3])


def to_csv(profile: Profile) -> str:
  """One row per point (milliseconds); `step_to` is the next count if n -> step_to is a step;
  `retimed_samples` / `retimed_scale` are blank unless the point was timed again and pooled;
  `measured_at` is blank for a point of a profile written before vitprune recorded it."""
  steps = {(s["component"], s["batch_size"], s["n_from"]): s["n_to"] for s in profile.steps}
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(CSV_COLUMNS)
  for p in sorted(profile.points, key=lambda p: (p.component, p.batch_size, -p.tokens,
                                                  p.schedule or ())):
    w.writerow([profile.model, profile.device_kind, profile.platform, profile.dtype,
                p.component, p.batch_size, p.tokens,
                "" if p.schedule is None else ",".join(map(str, p.schedule)),
                f"{1e3 * p.median_s:.6g}", f"{1e3 * p.q25_s:.6g}", f"{1e3 * p.q75_s:.6g}",
                f"{1e3 * p.iqr_s:.6g}", f"{p.rel_iqr:.4g}", p.num_samples,
                f"{p.compile_s:.4g}", p.retries,
                steps.get((p.component, p.batch_size, p.tokens), ""),
                p.retimed_samples or "",
                "" if p.retimed_scale is None else f"{p.retimed_scale:.6g}", p.measured_at])
  return buf.getvalue()


# ----------------------------------------------------------------------------- files


def slug(text: str) -> str:
  """`text` as a lower-case file-name part ('NVIDIA H200' -> 'nvidia-h200')."""
  return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


def file_stem(profile: Profile, batch_sizes: Optional[Sequence[int]] = None) -> str:
  """`<model>_<modes>_b<batches>_<dtype>_<device>` (`batch_sizes`: the profile's by default)."""
  batches = "-".join(str(b) for b in (profile.batch_sizes if batch_sizes is None
                                      else batch_sizes))
  head, tail = _stem_ends(profile)
  return f"{head}_b{batches}_{tail}"


def _stem_ends(profile: Profile) -> Tuple[str, str]:
  """What a `file_stem` holds before and after its batch sizes."""
  return (f"{slug(profile.model)}_{'-'.join(profile.modes)}",
          f"{profile.dtype}_{slug(profile.device_kind)}")


def named_batch_sizes(setup: Profile, stem: str) -> Optional[Tuple[int, ...]]:
  """The batch sizes `stem` names when it is a `file_stem` of `setup`'s model, modes, dtype and
  device (`..._b1-8_...`), else None (a name of the user's, e.g. a board's profile)."""
  head, tail = _stem_ends(setup)
  m = re.fullmatch(re.escape(head) + r"_b(\d+(?:-\d+)*)_" + re.escape(tail), stem)
  return None if m is None else tuple(int(x) for x in m.group(1).split("-"))


def check_save(setup: Profile, out_dir: str, stem: str, extra: Sequence[str] = (),
               flag: str = "out_dir", fields: Optional[Dict[str, Any]] = None,
               merge_fields: Optional[MergeFields] = None) -> None:
  """Raises, before anything is measured, what `save` of a profile of `setup` (its model,
  config, dtype, device, platform and reducer; its points are not looked at) with `fields` as
  `stem` would raise about the files in `out_dir` (a killed run's write is finished first, as
  `save` does)."""
  out_dir = os.path.abspath(out_dir)
  atomic.check_outside_published(out_dir, flag, itself=True)
  atomic.check_name_fits(os.path.join(out_dir, f"{stem}.json"), flag,
                         "made of the model, modes, batch sizes, dtype and device kind")
  if not os.path.isdir(out_dir):   # no profile there; the lock would create the folder, left
    if os.path.lexists(out_dir):   # behind empty by a run killed before its `save`
      raise NotADirectoryError(f"{out_dir} is {atomic.describe(out_dir)}, not a directory")
    atomic.check_creatable(out_dir, flag)      # (`flag` names the folder in its message)
    return
  paths = {k: os.path.join(out_dir, f"{stem}.{k}") for k in ["csv", *extra, "json"]}
  with atomic.locked(paths["json"]):
    _merged_with_existing(setup, paths, fields, merge_fields)


# How a save's extra top-level entries combine with those of the profile file it merges into:
# (the file's JSON document, the new entries) -> the entries to write; ValueError when they
# cannot (the board's 'edge' entry: `vitprune.edge.kit.merge_edge_fields`).
MergeFields = Callable[[Dict[str, Any], Dict[str, Any]], Dict[str, Any]]


def _starts_with_our_header(csv_path: str) -> bool:
  """Whether the file `csv_path` starts with the line `to_csv` writes first (`CSV_COLUMNS`, or
  an earlier version's: `OLDER_CSV_COLUMNS`; after a byte-order mark too)."""
  wants = {",".join(c) for c in (CSV_COLUMNS, *OLDER_CSV_COLUMNS)}
  try:
    with open(csv_path, "rb") as f:
      line = f.readline(max(map(len, wants)) + 6).decode("utf-8", "replace")
    return line.lstrip("\ufeff").rstrip("\r\n") in wants     # (a BOM: re-saved by a sheet)
  except OSError:
    return False


def _left_by_a_profile(path: str, paths: Dict[str, str]) -> bool:
  """Whether `path`, one of a profile's files (`paths`) whose JSON is gone, is what vitprune
  wrote beside it: its table (our header), or a PNG image beside that table (a user who removed
  a corrupt profile to measure again was refused for the CSV and plot left behind)."""
  csv_path = paths.get("csv")
  if not csv_path or not os.path.isfile(csv_path) or not _starts_with_our_header(csv_path):
    return False
  return path == csv_path or (path.lower().endswith(".png") and os.path.isfile(path)
                              and not atomic.foreign_plot(path))


def _merged_with_existing(profile: Profile, paths: Dict[str, str],
                          fields: Optional[Dict[str, Any]] = None,
                          merge_fields: Optional[MergeFields] = None
                          ) -> Tuple[Profile, Optional[Dict[str, Any]]]:
  """(`profile` merged into the profile at `paths['json']`, the `fields` to write: combined with
  the file's by `merge_fields`, and the file's entries that vitprune does not write kept) after
  finishing a killed run's commit (call under its lock), or (`profile`, `fields`) when there is
  none; ValueError for an unreadable or incompatible profile
  there, or for files of its names (`paths`) without their profile."""
  atomic.cleanup_stale(paths["json"])                         # finish a killed run's commit
  odd = [p for p in paths.values() if os.path.lexists(p) and
         (os.path.islink(p) or not os.path.isfile(p))]
  if odd:           # (a linked profile was read through, merged, and the link replaced)
    raise ValueError(f"refusing to replace {odd[0]}: it is {atomic.describe(odd[0])}, not a "
                     "file vitprune wrote; move it away or choose another output folder")
  if not os.path.lexists(paths["json"]):
    foreign = [p for p in paths.values() if os.path.lexists(p) and not _left_by_a_profile(p, paths)]
    if foreign:
      raise ValueError(f"refusing to replace {foreign}: no profile {paths['json']} beside "
                       "them, so they were not written by vitprune")
    return profile, fields
  try:
    doc = jsonio.read_json(paths["json"], "profile")     # read once: its extra entries too
    existing = _profile_of(doc, paths["json"])
  except (OSError, ValueError) as e:
    raise ValueError(f"refusing to replace {paths['json']}: it is not a readable latency "
                     f"profile ({e})") from None
  plots = [p for p in paths.values() if atomic.foreign_plot(p)]
  if plots:
    raise ValueError(f"refusing to replace {plots[0]}: it is not a PNG image, so vitprune did "
                     "not write it (a file of yours beside the profile?); move it away or "
                     "choose another output folder")
  csv_path = paths.get("csv")
  if csv_path and os.path.lexists(csv_path) and not _starts_with_our_header(csv_path):
    raise ValueError(f"refusing to replace {csv_path}: it does not start with a profile "
                     "table's header, so vitprune did not write it (a file of yours beside "
                     "the profile?); move it away or choose another output folder")
  named = named_batch_sizes(profile, os.path.basename(paths["json"])[:-len(".json")])
  if named is not None and not set(existing.batch_sizes) <= set(named):
    raise ValueError(f"refusing to merge into {paths['json']}: it holds batch "
                     f"{list(existing.batch_sizes)} points, but its name says batch "
                     f"{list(named)} (edited or renamed?)")
  try:
    merged = merge([existing, profile])
  except ValueError as e:        # (a probe: which of 0.3 vs 0.25 was the file's?)
    raise ValueError(f"cannot merge into {paths['json']} (its value first, this run's "
                     f"second): {e}") from None
  try:
    if fields and merge_fields:
      fields = merge_fields(doc, jsonio.json_form(fields))
  except ValueError as e:
    raise ValueError(f"cannot merge into {paths['json']}: {e}") from None
  ours = set(to_json(merged)) | set(fields or {})
  theirs = {k: v for k, v in doc.items() if k not in ours}     # (a note of the user's)
  return merged, (dict(fields or {}, **theirs) if theirs else fields)


def save(profile: Profile, out_dir: str, stem: Optional[str] = None, *,
         extra: Optional[Dict[str, Callable[[Profile, str], Any]]] = None,
         fields: Optional[Dict[str, Any]] = None,
         merge_fields: Optional[MergeFields] = None) -> Dict[str, str]:
  """Merges `profile` into `<stem>.json` / `<stem>.csv` (and `extra` files) -> {kind: path}.
  `fields`: more top-level JSON entries (e.g. the board's 'edge' entry; readers ignore them),
  combined with an existing file's by `merge_fields` (default: replaced).

  An existing `<stem>.json` must be a latency profile of the same model config, dtype, device
  kind and platform (else ValueError, nothing written); its points are kept unless measured
  again (see `merge`). `extra` maps a file kind (its extension, e.g. 'png') to `fn(profile,
  path)` writing that file for the merged profile; all files are published together.
  """
  # What `load` would refuse is never published (it would also block the name for good
  # profiles, which cannot merge into an unreadable one).
  from_json(jsonio.json_form(to_json(profile)), source="the profile to save")
  stem = stem or file_stem(profile)
  out_dir = os.path.abspath(out_dir)
  kinds = ["csv"] + sorted(extra or {}) + ["json"]          # the JSON is published last
  paths = {k: os.path.join(out_dir, f"{stem}.{k}") for k in kinds}
  with atomic.locked(paths["json"]):
    profile, fields = _merged_with_existing(profile, paths, fields, merge_fields)
    text = json.dumps(dict(to_json(profile), **(fields or {})), indent=1, allow_nan=False,
                      default=jsonio.plain)      # (np.int64 counts were a raw TypeError)
    csv_text = to_csv(profile)
    names = [os.path.basename(paths[k]) for k in kinds]
    with atomic.staged_files(out_dir, os.path.basename(paths["json"]), names) as tmp:
      with open(os.path.join(tmp, names[0]), "w") as f:
        f.write(csv_text)
      for k in sorted(extra or {}):
        extra[k](profile, os.path.join(tmp, os.path.basename(paths[k])))
      with open(os.path.join(tmp, names[-1]), "w") as f:
        f.write(text)
  return paths


# The modes that measure each component: any mode may time "model" graphs (--mode=block's
# predictor checks), and --mode=schedule times the per-block table too.
_MODES_OF = {"embed": ("block", "schedule"), "block": ("block", "schedule"),
             "head": ("block", "schedule"), "dispatch": ("block", "schedule"),
             "schedule": ("schedule",)}
_OWN_COMPONENT = {"model": "model", "block": "block", "schedule": "schedule"}


def _check_modes(modes: Sequence[str], points: Sequence[Point], source: str) -> None:
  """ValueError when `modes` and the points' components disagree: a block profile relabelled
  'model' had its 3 predictor checks read as the whole-model curve L(n)."""
  have = {p.component for p in points}
  problems = [f"{c} points but no mode of {list(_MODES_OF[c])}" for c in sorted(have)
              if c in _MODES_OF and not set(_MODES_OF[c]) & set(modes)]
  problems += [f"mode {m!r} but no {_OWN_COMPONENT[m]} points" for m in modes
               if _OWN_COMPONENT[m] not in have]
  if points and problems:
    raise ValueError(f"{source}: modes {list(modes)} do not match its points: "
                     f"{'; '.join(problems)} (edited?)")


def load(path: str) -> Profile:
  """The profile in `path`; FileNotFoundError / ValueError naming the file and the problem.
  Steps, flats and predictions are recomputed from the points (`analyze`): what the file says
  of them is derived data, never trusted."""
  return _profile_of(jsonio.read_json(path, "profile"), path)


def _profile_of(doc: Dict[str, Any], path: str) -> Profile:
  """`load` of the document `doc` read from `path`."""
  profile = from_json(doc, source=path)
  try:
    return analyze(profile)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None


# The fields that make two measurements comparable, with the words a message uses for each.
SETUP_FIELDS = (("model", "model"), ("config", "model config"), ("device_kind", "device"),
                ("platform", "platform"), ("dtype", "dtype"))


def setup_mismatch(a: Any, b: Any) -> Optional[Tuple[str, Any, Any]]:
  """The first of model, model config, device, platform and dtype in which two measurement
  setups differ (anything with those attributes: `Profile`, `LatencyModel`), as (what, a's
  value, b's value), a config shown by its model name and the fields that differ ('vit_digits
  (depth 7)': the name alone read 'vit_digits' vs 'vit_digits'); None when they agree."""
  for field, what in SETUP_FIELDS:
    va, vb = getattr(a, field), getattr(b, field)
    if va != vb:
      if field != "config":
        return what, va, vb
      if not (isinstance(va, dict) and isinstance(vb, dict)):
        return what, a.model, b.model
      return (what, *configs_shown(a.model, va, b.model, vb))
  return None


def _timing_difference(a: Dict[str, Any], b: Dict[str, Any]) -> Optional[str]:
  """The timing settings in which two profiles differ, as text (None: the same protocol; the
  seed, which only orders the measurements, is not compared)."""
  keys = sorted((set(a) | set(b)) - {"seed"})
  diff = [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
  return ", ".join(diff) or None


# Where a measurement that cannot join a profile file goes instead (the experiments CLI has
# --out_dir; the board's `profile` an --out file).
_ELSEWHERE = ("write them to another output: another --out_dir (experiments.profile) or --out "
              "file (vitprune.edge profile)")


def merge(profiles: Sequence[Profile]) -> Profile:
  """One profile with every point of `profiles` (same model config, dtype, device kind,
  platform and reducer, else ValueError); a later profile in `profiles` wins on duplicate
  points (pass the new measurement last: ordering by `created` let a file from a clock that
  ran ahead, or an edited one, override points measured now)."""
  if not profiles:
    raise ValueError("merge needs at least one profile")
  for p in profiles[1:]:
    diff = setup_mismatch(profiles[0], p)
    if diff:
      raise ValueError(f"cannot merge profiles with different {diff[0]}: {diff[1]!r} vs "
                       f"{diff[2]!r}")
    if p.reducer != profiles[0].reducer:       # a pruned graph is the reducer's own graph
      raise ValueError(f"cannot merge profiles timed with different reducers: "
                       f"{profiles[0].reducer!r} vs {p.reducer!r} (their pruned graphs differ; "
                       f"{_ELSEWHERE})")
    for field in ("jax_version", "jaxlib_version"):   # (the file records one of each)
      if getattr(p, field) != getattr(profiles[0], field):
        raise ValueError(f"cannot merge profiles measured with different {field.split('_')[0]} "
                         f"versions: {getattr(profiles[0], field)!r} vs {getattr(p, field)!r} "
                         f"(another compiler builds other graphs; {_ELSEWHERE})")
    diff = _timing_difference(profiles[0].timing, p.timing)
    if diff:   # the file records one protocol: it would describe points it did not time
      raise ValueError(f"cannot merge profiles timed with different settings ({diff}; "
                       f"{_ELSEWHERE})")
  points: Dict[Tuple, Point] = {}
  for p in profiles:
    for pt in p.points:
      points[pt.key] = pt
  modes = tuple(m for m in MODES if any(m in p.modes for p in profiles))
  merged = dataclasses.replace(profiles[-1], points=tuple(points.values()), modes=modes,
                               created=now_iso())
  return analyze(merged)
