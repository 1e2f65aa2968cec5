"""Profiling sweeps: whole-model curves, per-block tables and chosen schedules.

    spec = ProfileSpec(cfg=get_config("deit_small_patch16_224"), batch_sizes=(1,), mode="model")
    profiles = run_profile(spec, out_dir="outputs/profile")   # one Profile per batch size

Modes (every graph AOT-compiled per shape, then timed by `timing.measure_all`):
  model:    L(n): the full forward with n tokens entering block 0, i.e. schedule (n,) * (depth + 1)
            with the tokens dropped right after the embedding by the reducer's `reduce_embedding`.
  block:    B(n): one transformer block at n tokens (blocks share shapes, so one table serves
            every layer), the embedding (all tokens) and the head (final norm + pooling +
            classifier) at n tokens; plus whole-model graphs at the largest, middle and smallest
            count to report how well embed + depth * B(n) + head predicts them.
  schedule: the real compiled graphs of the given schedules, plus the block table at the counts
            they use, so the per-block sum's relative error is reported for each schedule.
Modes block and schedule also time a trivial graph ('dispatch'): the per-call overhead that each
separately timed part contains and the whole forward pays once (see `predict.py`).

Token dropping: `vitprune.reduce.methods.make_reducer('random')` by default, or
`vitprune.reduce.KeepFirst` (a static slice keeping the first tokens). Which tokens are kept
does not change the graph's shapes or cost: a drop is a gather/slice of [B, n, C] rows either
way.

Parameters are random (`init_params`) unless given: values do not change a compiled graph's speed.
They stay float32 as stored, exactly as `model.jitted_forward` is deployed (bfloat16 graphs cast
them inside the graph).

Adaptive grid (`adaptive=True`, modes model/block): a coarse pass every `coarse_stride` counts
(0: about 16 points), step detection, then every count inside coarse intervals that are not flat
within noise. Flat intervals are the only ones skipped, so steps are still located exactly.
`max_points` bounds the counts per batch size: the refinement is then cut in
`steps.refine_order` (intervals holding a step first, in bisection order), so a step is
located to within a few counts by the first of its points.

Confirmation (`confirm_steps`, on by default): a step or lone count whose two sides were timed
in separate measurements is timed again, its counts together (`profile_batch`).

Chunks (`chunk_points`): on a GPU a DeiT-S graph compiles in seconds (autotuning) and times in
milliseconds, so a profile is compile-bound; chunks are compiled and timed one after another
and `run_profile` writes the points after each, so a run killed at its deadline keeps every
chunk it finished (each chunk is its own shuffled measurement; without chunks a phase is one).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import platform
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from vitprune import atomic
from vitprune import console
from vitprune import data as data_lib
from vitprune import memory
from vitprune import model as model_lib
from vitprune import piecewise
from vitprune import progress as progress_lib
from vitprune.config import ViTConfig, check_config_type, check_switch
from vitprune.profile import plot as plot_lib
from vitprune.profile import records
from vitprune.profile import steps as steps_lib
from vitprune.profile import timing
from vitprune.reduce.keep_first import KeepFirst
from vitprune.reduce.methods import list_methods, make_reducer
from vitprune.schedule import (Schedule, as_int, check_schedule, check_token_grid,
                               embed_schedule, format_schedule, reduces_tokens, token_bounds)

MODES = records.MODES


# ----------------------------------------------------------------------------- reducer


def make_drop_reducer(name: Optional[str] = None) -> Tuple[Any, str]:
  """-> (reducer, its name). None: the library's 'random' drop; 'keep_first': `KeepFirst`;
  any other name goes through `vitprune.reduce.methods.make_reducer`."""
  name = (name or "random").strip().lower()      # ('RANDOM' was recorded as such: no merge)
  if name == "keep_first":
    return KeepFirst(), "keep_first"
  if name not in list_methods():
    raise ValueError(f"unknown token-reduction method {name!r}; valid: "
                     f"{', '.join(list_methods())}, keep_first (the profiler's own)")
  return make_reducer(name), name


# ----------------------------------------------------------------------------- graphs


def removes_tokens(cfg: ViTConfig, grid: Sequence[int], schedules: Sequence[Schedule]) -> bool:
  """Whether a graph of a profile or kit removes tokens, so that its reducer runs: a uniform
  count of `grid` below all tokens (dropped after the embedding) or a reducing schedule."""
  return (any(n < cfg.num_tokens for n in grid) or
          any(reduces_tokens(cfg, s) for s in schedules))


def model_fn(cfg: ViTConfig, schedule: Schedule, reducer, dtype: str) -> Callable:
  """(params, images [B, H, W, C]) -> logits: the deployed forward under `schedule`."""
  return functools.partial(model_lib.forward, cfg=cfg, schedule=schedule,
                           reducer=reducer if reduces_tokens(cfg, schedule) else None,
                           dtype=dtype)


def dispatch_fn(x):
  """[B, 1, 1] -> x + 1: next to no work, so its latency is the cost of calling an executable."""
  return x + 1


# ----------------------------------------------------------------------------- spec


@dataclasses.dataclass(frozen=True)
class ProfileSpec:
  """What to profile. `tokens=None`: every count from num_tokens down to prefix + 1."""
  cfg: ViTConfig
  batch_sizes: Tuple[int, ...] = (1,)
  dtype: str = "float32"
  mode: str = "model"
  tokens: Optional[Tuple[int, ...]] = None
  schedules: Tuple[Schedule, ...] = ()
  timing: timing.TimingConfig = timing.TimingConfig()
  threads: int = 1
  adaptive: bool = False
  coarse_stride: int = 0
  max_points: int = 0     # adaptive: at most this many counts per batch size (0: no limit)
  chunk_points: int = 0   # compile and time this many counts at a time, each chunk handed on
  reducer: Optional[str] = None
  seed: int = 0
  confirm_steps: bool = True  # model/block: time a step or lone count timed apart again
  confirm_held: bool = False  # ... even where this run measured nothing (a finished resume)

  def __post_init__(self):
    self._check_types()
    if self.mode not in MODES:
      raise ValueError(f"unknown mode {self.mode!r}; expected one of {MODES}")
    if self.dtype not in model_lib.DTYPES:
      raise ValueError(f"dtype must be one of {sorted(model_lib.DTYPES)}, got {self.dtype!r}")
    if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
      raise ValueError(f"batch sizes must be >= 1, got {list(self.batch_sizes)}")
    if self.threads < 1:
      raise ValueError(f"threads must be >= 1, got {self.threads}")
    if self.coarse_stride < 0:
      raise ValueError(f"coarse_stride must be >= 0, got {self.coarse_stride}")
    if self.max_points < 0 or self.chunk_points < 0:
      raise ValueError(f"max_points and chunk_points must be >= 0, got {self.max_points} and "
                       f"{self.chunk_points}")
    if self.max_points and not self.adaptive:
      raise ValueError("max_points needs adaptive (it bounds the refinement)")
    if self.chunk_points and self.mode == "schedule":
      raise ValueError("chunk_points applies to mode 'model' or 'block' (a grid of counts)")
    if self.mode == "schedule" and not self.schedules:
      raise ValueError("mode 'schedule' needs at least one --schedule")
    if self.mode != "schedule" and self.schedules:
      raise ValueError(f"--schedule is only used with --mode=schedule, not {self.mode!r}")
    reducer, name = make_drop_reducer(self.reducer)   # unknown names fail here, before any
    for s in self.schedules:                          # compile, and the reducer's limits too
      check_schedule(self.cfg, s, reducer if reduces_tokens(self.cfg, s) else None)
    twice = [s for i, s in enumerate(self.schedules) if s in self.schedules[:i]]
    if twice:                                  # (measured once, unsaid; two spellings too)
      raise ValueError(f"--schedule gives {format_schedule(twice[0], self.cfg)} (counts "
                       f"{','.join(map(str, twice[0].counts))}) twice: give each schedule once")
    grid = self.grid if self.mode != "schedule" else ()
    if name != make_drop_reducer(None)[1] and not removes_tokens(   # (the default is recorded
        self.cfg, grid, self.schedules):                            # anyway)
      raise ValueError(f"--reducer={name} given, but no graph of this profile removes a token: "
                       "nothing would use it (the profile recorded it, and refused to merge "
                       "with the same graphs profiled without it)")
    if self.mode in ("model", "block") and not reducer.supports_embedding:
      raise ValueError(f"--reducer={name} cannot drop tokens after the embedding, which every "
                       f"graph of --mode={self.mode} does (n tokens from the embedding on; "
                       "attention-based reducers need a block before them); use --reducer="
                       "random or keep_first, or time its schedules with --mode=schedule")
    if self.tokens is not None:
      check_token_grid(self.cfg, set(self.tokens))   # repeats are measured once (`grid`)
    # (a probe: --coarse_stride=1000 timed the two ends alone, then refined count by count)
    if (self.adaptive and self.mode != "schedule" and len(self.grid) > 2 and
        self.coarse_stride >= len(self.grid) - 1):
      raise ValueError(f"--coarse_stride={self.coarse_stride} is not below the {len(self.grid)}"
                       f"-count grid's {len(self.grid) - 1} steps: the coarse pass would time "
                       f"its two ends alone; give at most {len(self.grid) - 2} (0: the "
                       f"automatic stride, {_every(len(self.grid))})")
    if self.max_points:
      coarse = coarse_grid(self.grid, self.coarse_stride)
      if self.max_points < len(coarse):
        # (--coarse_stride=0 said 'about 16 counts' of a coarse grid of 4)
        raise ValueError(f"--max_points={self.max_points} is below the {len(coarse)} counts "
                         f"of the coarse grid (--coarse_stride={self.coarse_stride}"
                         + (f": the automatic stride, {_every(len(self.grid))}"
                            if not self.coarse_stride else "")
                         + "); raise it or --coarse_stride")

  def _check_types(self) -> None:
    """TypeError naming the field whose value is not of its type (the seed: ValueError unless an int
    >= 0); batch sizes and tokens become tuples of ints, schedules a tuple. (batch_sizes=4 and
    tokens=9 were "'int' object is not iterable", a lone Schedule "not iterable", a schedule text
    "no attribute 'counts'", threads='2' "'<' not supported", a reducer object "no attribute
    'strip'"; batch_sizes=(1.5,), threads=1.5, seed=1.5 and a dict as timing were accepted, and
    adaptive='no' is truthy: an adaptive run.)"""
    check_config_type(self.cfg)
    check_switch("adaptive", self.adaptive)
    check_switch("confirm_steps", self.confirm_steps)
    check_switch("confirm_held", self.confirm_held)
    fix = functools.partial(object.__setattr__, self)
    for name in ("batch_sizes", "tokens", "schedules"):
      v = getattr(self, name)
      if v is None and name == "tokens":
        continue
      if (isinstance(v, (str, bytes, Schedule, dict)) or not hasattr(v, "__iter__")
          or getattr(v, "ndim", None) == 0):         # (np.array(9): "iteration over a 0-d")
        raise TypeError(f"{name} must be a sequence, got {type(v).__name__} {v!r}"
                        + (f" (write ({v!r},))" if not isinstance(v, (str, dict)) else ""))
      fix(name, tuple(v))
    fix("batch_sizes", tuple(as_int(b, "a batch size") for b in self.batch_sizes))
    if self.tokens is not None:
      fix("tokens", tuple(as_int(n, "a token count") for n in self.tokens))
    for s in self.schedules:
      if not isinstance(s, Schedule):
        raise TypeError(f"schedules must be vitprune Schedules (parse_schedule(cfg, text)), "
                        f"got {type(s).__name__} {s!r}")
    for name in ("threads", "coarse_stride", "max_points", "chunk_points"):
      fix(name, as_int(getattr(self, name), name))
    fix("seed", data_lib.check_seed(self.seed))     # (-1 failed later, in init_params)
    if self.reducer is not None and not isinstance(self.reducer, str):
      raise TypeError(f"reducer must be a method name (e.g. 'random', 'keep_first') or None, "
                      f"got {type(self.reducer).__name__} {self.reducer!r}")
    if not isinstance(self.timing, timing.TimingConfig):
      raise TypeError(f"timing must be a vitprune.profile.timing.TimingConfig, got "
                      f"{type(self.timing).__name__} {self.timing!r}")

  @property
  def grid(self) -> Tuple[int, ...]:
    """The token counts to profile, descending (repeats in `tokens` are measured once)."""
    if self.tokens is not None:
      return tuple(reversed(check_token_grid(self.cfg, set(self.tokens))))
    lo, hi = token_bounds(self.cfg)
    return tuple(range(hi, lo - 1, -1))

  def held_input_bytes(self) -> int:
    """Bytes per image of the block and head inputs one measurement holds at once: [n, C] per
    distinct count of a chunk (the largest ones; the block and head keys of a count share it;
    an adaptive run with `max_points` holds at most that many), plus the float64 draw of the
    largest; 0 in mode 'model' (its graphs read the images).
    `memory.check_batch_fits(held_per_example=...)`: without it a --mode=block batch the check
    accepted needed ~3.5x its estimate (vit_digits, every count) and was killed."""
    if self.mode == "model":
      return 0
    if self.mode == "block":
      held = [k for k in (self.chunk_points, self.max_points if self.adaptive else 0) if k]
      counts = list(self.grid)[:min(held) if held else None]
    else:
      counts = sorted({c for s in self.schedules for c in s.counts}, reverse=True)
    if not counts:
      return 0
    item = memory.DTYPE_BYTES[self.dtype]
    return self.cfg.embed_dim * (item * sum(counts) + 8 * max(counts))


def auto_stride(num_counts: int) -> int:
  """The coarse grid's stride for `--coarse_stride=0`: about 16 counts of a larger grid."""
  return max(1, round(num_counts / 16))


def _every(num_counts: int) -> str:
  """'every 4th of the 61 counts and both ends' (`auto_stride`), 'each of the 4 counts'."""
  k = auto_stride(num_counts)
  if k == 1:
    return f"each of the {num_counts} counts"
  nth = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
  return f"every {k}{nth} of the {num_counts} counts and both ends"


def coarse_grid(grid: Sequence[int], stride: int) -> Tuple[int, ...]:
  """Every `stride`-th count of a descending grid, both ends included (0: `auto_stride`)."""
  grid = sorted(set(grid), reverse=True)
  stride = stride or auto_stride(len(grid))
  picked = set(grid[::stride]) | {grid[0], grid[-1]}
  return tuple(sorted(picked, reverse=True))


# ----------------------------------------------------------------------------- running


Key = Tuple  # (component, tokens, schedule-counts or None)


def _jobs(keys: Sequence[Key], *, spec: ProfileSpec, params, images, reducer
          ) -> Dict[Key, Tuple[Callable, Tuple]]:
  """key -> (fn, device-resident args)."""
  cfg, dt = spec.cfg, model_lib.DTYPES[spec.dtype]
  b = images.shape[0]
  jobs, inputs = {}, {}
  for key in keys:
    comp, n, counts = key
    if comp == "model":
      jobs[key] = (model_fn(cfg, embed_schedule(cfg, n), reducer, spec.dtype), (params, images))
    elif comp == "schedule":
      jobs[key] = (model_fn(cfg, Schedule(counts), reducer, spec.dtype), (params, images))
    elif comp == "embed":
      jobs[key] = (piecewise.embed_fn(cfg, dtype=spec.dtype), (params, images))
    elif comp == "dispatch":  # per-call overhead: a trivial graph on a [B, 1, 1] input
      jobs[key] = (dispatch_fn, (timing.device_put(jnp.zeros((b, 1, 1), dt)),))
    else:       # (one input per count, shared by its block and head keys)
      if n not in inputs:
        inputs[n] = timing.device_put(jnp.asarray(
            np.random.default_rng(spec.seed).normal(0, 1, (b, n, cfg.embed_dim)), dt))
      x = inputs[n]
      if comp == "block":
        jobs[key] = (piecewise.block_fn(cfg, dtype=spec.dtype), (params["blocks"][0], x))
      else:
        jobs[key] = (piecewise.head_fn(cfg, dtype=spec.dtype),
                     (piecewise.head_params(params), x))
  return jobs


def _keys_for(spec: ProfileSpec, grid: Sequence[int], first: bool) -> List[Key]:
  cfg = spec.cfg
  if spec.mode == "model":
    return [("model", n, None) for n in grid]
  if spec.mode == "block":
    keys = [("block", n, None) for n in grid] + [("head", n, None) for n in grid]
    return keys + (_block_checks(spec, grid) if first else [])
  keys = [("schedule", s.counts[0], s.counts) for s in spec.schedules]
  block_counts = sorted({c for s in spec.schedules for c in s.counts[:-1]}, reverse=True)
  head_counts = sorted({s.counts[-1] for s in spec.schedules}, reverse=True)
  keys += [("embed", cfg.num_tokens, None), ("dispatch", 1, None)]
  keys += [("block", n, None) for n in block_counts] + [("head", n, None) for n in head_counts]
  return keys


def _block_checks(spec: ProfileSpec, grid: Sequence[int]) -> List[Key]:
  """Mode block's once-per-batch points: the embedding, the dispatch overhead and whole-model
  graphs at the largest, middle and smallest count of `grid` (the additive predictor's check);
  none for an empty grid (a resumed run whose held points fill --max_points)."""
  if not grid:
    return []
  mid = sorted(grid)[len(grid) // 2]
  return ([("embed", spec.cfg.num_tokens, None), ("dispatch", 1, None)] +
          [("model", n, None) for n in sorted({max(grid), mid, min(grid)}, reverse=True)])


def _measure(keys, *, spec, params, images, reducer, bar) -> Dict[Key, timing.Measurement]:
  jobs = _jobs(keys, spec=spec, params=params, images=images, reducer=reducer)
  compiled = timing.compile_many(jobs, threads=spec.threads,
                                 on_done=lambda k, s: bar.update(1))
  points = {k: (compiled[k][0], jobs[k][1]) for k in keys}
  return timing.measure_all(points, spec.timing,
                            compile_s={k: compiled[k][1] for k in keys},
                            on_done=lambda k: bar.update(1))


def device_info() -> Dict[str, str]:
  dev = jax.devices()[0]
  return dict(device_kind=str(dev.device_kind), platform=jax.default_backend(),
              jax_version=jax.__version__, jaxlib_version=jaxlib.__version__)


def machine_info() -> Dict[str, Any]:
  """`device_info` and the host: CPU model, the cores this process may use, the OS (a
  benchmark's latencies name what measured them: device kind 'cpu' alone does not)."""
  from vitprune.edge.targets import host_cpu, usable_cores  # pylint: disable=g-import-not-at-top
  return dict(device_info(), cpu=host_cpu()["model"], cores=usable_cores(),
              os=platform.platform())


def machine_line(machine: Dict[str, Any]) -> str:
  """'measured on cpu (Intel(R) Xeon(R) ..., 2 cores), jax 0.10.2' from `machine_info`."""
  return (f"measured on {machine['device_kind']} ({machine['cpu']}, {machine['cores']} cores), "
          f"jax {machine['jax_version']}")


def profile_batch(spec: ProfileSpec, batch_size: int, params, *, progress: bool = True,
                  log: Callable[[str], None] = print,
                  on_measured: Optional[Callable[[records.Profile, bool], None]] = None,
                  held: Sequence[records.Point] = ()) -> records.Profile:
  """Measures one batch size -> an analysed `records.Profile` (nothing written).

  The grid is measured in phases: the whole grid (adaptive: the coarse grid, then the
  refinement in `steps.refine_order`, cut at `max_points`), each phase in chunks of
  `chunk_points` counts (0: one chunk), each chunk compiled, then timed in one shuffled
  measurement. `on_measured(profile, last)` gets the analysed profile of every point measured
  so far after each chunk (`last` on the final one; before a confirmation the same profile once
  more, not `last`, then the confirmed one, `last`): a caller that writes it keeps what was
  measured when a later chunk is interrupted. `held`: points measured before (a resumed run):
  their keys are not measured again (but by a confirmation), they count for the refinement and
  are in the profile returned (and handed on).

  Confirmation (`spec.confirm_steps`, modes model/block, where this run measured anything):
  the counts of each step and lone count whose sides were timed apart (`steps.confirm_counts`:
  chunks, the refinement, re-measured wide points, held points) are timed again in one
  shuffled measurement without re-measurement, whose samples replace theirs (held ones of the
  grid too); a line says what held (`steps.confirmation_line`); in block mode no more counts
  than a chunk (or `max_points`) holds, which the memory check allowed for. The protocol is
  the profile's own: 5 interleaved rounds of short bursts timed a CPU's counts 20-28 % slower
  than the rest of the curve, which made new steps at the window's edges. One confirmation per
  batch size: a shift of the machine's speed between two measurements then lies between the
  counts confirmed and the others, and is said timed apart."""
  cfg = spec.cfg
  reducer, reducer_name = make_drop_reducer(spec.reducer)
  rng = np.random.default_rng(spec.seed)
  images = timing.device_put(jnp.asarray(
      rng.normal(0, 1, (batch_size, cfg.img_size, cfg.img_size, cfg.in_chans)), jnp.float32))
  grid = spec.grid
  adaptive = spec.adaptive and spec.mode in ("model", "block") and len(grid) > 2
  first = (coarse_grid(grid, spec.coarse_stride) if adaptive else grid)
  first = spread_order(first) if spec.chunk_points else list(first)   # any prefix spans it
  meas: Dict[Key, timing.Measurement] = {}
  before = {(p.component, p.tokens, p.schedule): p for p in held if p.batch_size == batch_size}
  if spec.max_points and before:   # held counts count (a resume with another coarse stride
    have = {k[1] for k in before if k[0] == spec.mode} & set(grid)  # measured past the bound)
    new = [n for n in first if n not in have]
    room = set(spread_order(new)[:max(spec.max_points - len(have), 0)]) if new else set()
    first = [n for n in first if n in have or n in room]
  refines = adaptive and not 0 < spec.max_points <= len(first)
  confirms = spec.confirm_steps and spec.mode != "schedule"
  handed_last = False            # the final profile was handed to `on_measured`

  def points() -> List[records.Point]:
    new = [records.Point.from_measurement(
        m, component=k[0], batch_size=batch_size, tokens=k[1], schedule=k[2])
        for k, m in meas.items()]
    return [p for k, p in before.items() if k not in meas] + new

  def profile() -> records.Profile:
    return records.analyze(_profile_of(spec, reducer_name, tuple(points())))

  def measure(counts, *, first_chunk: bool, last: bool):
    nonlocal handed_last
    keys = _keys_for(spec, counts, first=False)
    if first_chunk and spec.mode == "block":      # (of the whole phase, not of this chunk)
      checks = _block_checks(spec, first)
      if any(k[0] == "model" for k in before):   # a resume: its middle check was measured at
        ends = (max(first), min(first)) if first else ()     # the first run's middle count
        checks = [k for k in checks if k[0] != "model" or k[1] in ends]
      keys += checks
    keys = [k for k in keys if k not in before]
    if keys:
      bar.total = max(bar.total, bar.n + 2 * len(keys))
      bar.refresh()
      meas.update(_measure(keys, spec=spec, params=params, images=images, reducer=reducer,
                           bar=bar))
    if on_measured and (keys or last):
      on_measured(profile(), last)
      handed_last = last

  desc = f"{cfg.name} b{batch_size} {spec.mode}"
  total = [k for k in _keys_for(spec, first, first=True) if k not in before]
  with progress_lib.bar(2 * len(total), desc, enabled=progress) as bar:
    chunks = _chunks(first, spec.chunk_points)
    for i, chunk in enumerate(chunks):
      measure(chunk, first_chunk=i == 0, last=not refines and i == len(chunks) - 1)
    if refines:
      lo, hi, inside = min(grid), max(grid), set(grid)
      pts = sorted((p for p in points() if p.component == spec.mode and p.tokens in inside),
                   key=lambda p: -p.tokens)
      rep = steps_lib.detect_steps([p.tokens for p in pts], [p.median_s for p in pts],
                                   [p.iqr_s for p in pts], [p.num_samples for p in pts])
      extra = [n for n in steps_lib.refine_order([p.tokens for p in pts], rep, lo=lo, hi=hi)
               if n in inside]
      if spec.max_points:
        extra = extra[:max(spec.max_points - len(pts), 0)]    # (held ones count: a resume)
      chunks = _chunks(extra, spec.chunk_points)
      bar.total += 2 * len([k for k in _keys_for(spec, extra, first=False) if k not in before])
      for i, chunk in enumerate(chunks):
        measure(chunk, first_chunk=False, last=i == len(chunks) - 1)
    # (a run that measured nothing confirms nothing, unless asked: a finished profile resumed
    # stays as it is, and one whose confirmation was interrupted says so)
    curve = profile().curve(spec.mode, batch_size) if confirms else []
    report = records.step_report(curve) if curve else None
    apart = [x for x in report.steps + report.lone if x.measured_apart] if report else []
    # (block: no more counts at once than the memory check allowed for, `held_input_bytes`)
    bound = [k for k in (spec.chunk_points, spec.max_points if spec.adaptive else 0) if k]
    limit = min([steps_lib.CONFIRM_MAX_COUNTS] + (bound if spec.mode == "block" else []))
    tokens = [p.tokens for p in curve]     # (a window reaching held counts of a wider grid is
    again = steps_lib.confirm_counts(tokens, report, limit, allowed=set(grid)) if apart else []
    if apart and not meas and not spec.confirm_held and again:               # not timed)
      log(f"{console.counted(len(apart), 'step or lone count', 'steps or lone counts')} timed "
          "apart, not timed again: this run measured nothing (a resumed profile whose points "
          "were all there); --confirm_steps given with --resume times them again together")
    if apart and (meas or spec.confirm_held or not again):
      if not again:                        # (none fitted: said, not silent)
        log(steps_lib.confirmation_line([], report, report, limit, tokens=tokens,
                                        allowed=set(grid)))
      if again:       # one measurement (one mark): its samples replace those timed apart
        if on_measured:       # (the several-batch files in step first: a run killed while
          on_measured(profile(), False)          # confirming left them a chunk behind)
        keys = _keys_for(spec, again, first=False)
        bar.total += 2 * len(keys)
        bar.refresh()
        together = dataclasses.replace(spec, timing=dataclasses.replace(
            spec.timing, max_retries=0))
        meas.update(_measure(keys, spec=together, params=params, images=images,
                             reducer=reducer, bar=bar))
        log(steps_lib.confirmation_line(again, report, records.step_report(
            profile().curve(spec.mode, batch_size)), limit, tokens=tokens, allowed=set(grid)))
        handed_last = False
    final = profile()            # (analysed once: handed on and returned)
    if on_measured and not handed_last:
      on_measured(final, True)
  return final


def spread_order(grid: Sequence[int]) -> List[int]:
  """The counts of `grid` coarse to fine (both ends, then bisection order between them), so
  that every prefix covers the whole range."""
  hi, lo, inside = max(grid), min(grid), set(grid)
  ends = [hi] + ([lo] if lo != hi else [])
  return ends + [n for n, _ in steps_lib.bisection_levels(lo, hi) if n in inside]


def _chunks(counts: Sequence[int], size: int) -> List[List[int]]:
  counts = list(counts)
  if not counts:
    return []
  size = size or len(counts)
  return [counts[i:i + size] for i in range(0, len(counts), size)]


def _profile_of(spec: ProfileSpec, reducer_name: str,
                points: Sequence[records.Point] = ()) -> records.Profile:
  """A Profile of `spec`'s setup on this device holding `points`."""
  return records.Profile(model=spec.cfg.name, config=dataclasses.asdict(spec.cfg),
                         dtype=spec.dtype, modes=(spec.mode,), reducer=reducer_name,
                         timing=dataclasses.asdict(spec.timing), points=tuple(points),
                         created=records.now_iso(), **device_info())


def _setup(spec: ProfileSpec) -> records.Profile:
  """A Profile of `spec`'s setup on this device with no points: what the file names and the
  files in an output folder are checked against."""
  return _profile_of(spec, make_drop_reducer(spec.reducer)[1])


def write_outputs(profile: records.Profile, out_dir: str, stem: Optional[str] = None
                  ) -> Dict[str, str]:
  """JSON + CSV + PNG of `profile` in `out_dir` -> {'json', 'csv', 'png': path}.

  Merged point by point into an existing profile of the same name, under a lock, and published
  together (`records.save`): the PNG plots the merged profile."""
  return records.save(profile, out_dir, stem, extra={"png": plot_lib.plot_profile})


def _write_or_keep(profile: records.Profile, out_dir: str) -> Dict[str, str]:
  """`write_outputs`, or, when the file there refuses this run's points (a concurrent run
  wrote a profile of other timing settings or another reducer there meanwhile; found only
  after measuring), the points written beside it under a new name, said in the ValueError:
  every point measured was discarded."""
  # (a run killed while keeping its points left temporaries no later keep, of a fresh name
  # each, would find)
  stem_path = os.path.join(out_dir, records.file_stem(profile))
  atomic.cleanup_killed_keeps(stem_path, ".json")
  try:
    return write_outputs(profile, out_dir)
  except ValueError as e:
    stem = os.path.basename(atomic.kept_name(stem_path, ".json"))
    try:
      kept = write_outputs(profile, out_dir, stem)["json"]
    except (OSError, ValueError) as keep_error:
      raise ValueError(f"{e}; this run's {len(profile.points)} points could not be kept "
                       f"either: {keep_error}") from None
    raise ValueError(f"{e}; this run's {len(profile.points)} points are kept in "
                     f"{console.printable(kept)}") from None


def run_profile(spec: ProfileSpec, *, params=None, out_dir: Optional[str] = None,
                compile_cache_dir: Optional[str] = None, progress: bool = True,
                log: Callable[[str], None] = print, resume: bool = False
                ) -> List[records.Profile]:
  """Profiles every batch size of `spec` -> one analysed Profile per batch size.

  params: the model's parameter tree (default: `init_params(cfg, spec.seed)`). With `out_dir`,
  checks every output first (`check_outputs`), then writes each profile's JSON/CSV/PNG there,
  merges it into every profile of several batch sizes there that holds its batch size
  (`combined_stems`: kept in step, even when the run is killed before the next batch), and
  writes one profile of all batch sizes when there are several; each profile returned is then
  what its file holds, this run's points merged into those it held (a summary of this run's
  points alone missed the steps the file records). `compile_cache_dir` enables
  JAX's persistent compilation cache (process-wide setting). `resume` (needs `out_dir`): the
  points a batch size's profile there already holds (a killed run's chunks) are not measured
  again, and the adaptive refinement starts from them.
  """
  if resume and not out_dir:
    raise ValueError("resume continues the profiles in out_dir: give out_dir")
  if out_dir:
    check_outputs(spec, out_dir)
    bring_in_step(spec, out_dir, log)
  if compile_cache_dir:
    timing.enable_compilation_cache(compile_cache_dir)
  if params is None:
    params = model_lib.init_params(spec.cfg, spec.seed)
  params = timing.device_put(params)
  profiles, merged_into = [], []
  for b in spec.batch_sizes:
    written: Dict[str, Any] = {}

    def save(prof: records.Profile, last: bool):
      """Writes every chunk's points as they come (an interrupted run keeps them), into the
      profiles of several batch sizes holding this one too (kept in step when killed)."""
      # (else: written already; not by their number: a confirmation changes points, not it)
      if prof.points != written.get("points"):
        written.update(paths=_write_or_keep(prof, out_dir), points=prof.points)
      if not last and prof.points != written.get("in_step"):  # (the final chunk's, handed
        for stem in combined_stems(prof, out_dir, int(b)):     # again before a confirmation)
          write_outputs(prof, out_dir, stem)
        written["in_step"] = prof.points
        log(f"saved {len(prof.points)} points of batch {b} so far to "
            f"{console.printable(written['paths']['json'])}")

    held = _held_points(spec, out_dir, int(b), log) if resume else ()
    prof = profile_batch(spec, int(b), params, progress=progress, log=log,
                         on_measured=save if out_dir else None, held=held)
    if out_dir:
      paths = written["paths"]
      log(_wrote(paths))
      held = records.load(paths["json"])
      merged = records.merged_line(paths["json"], held, prof)
      if merged:
        log(merged)
      prof = held
      # A profile of several batch sizes beside it holds this batch too: kept in step (it
      # went on reporting the old latencies and steps of this batch size).
      merged_into = combined_stems(prof, out_dir, int(b))
      for stem in merged_into:
        paths = write_outputs(prof, out_dir, stem)
        log(f"merged batch {b} into {console.printable(paths['json'])} too")
    profiles.append(prof)
  if out_dir and len(profiles) > 1:   # every batch size in one profile too (one plot of all)
    everything = records.merge([     # as the files hold them now (a run beside this one may
        records.load(os.path.join(out_dir, records.file_stem(p) + ".json"))   # have written)
        for p in profiles])
    if records.file_stem(everything) not in merged_into:   # (else: it holds them all already)
      paths = write_outputs(everything, out_dir)
      log(_wrote(paths))
  return profiles


def bring_in_step(spec: ProfileSpec, out_dir: str, log: Callable[[str], None] = print) -> None:
  """Merges each batch size's own profile in `out_dir` (file names of `spec`'s model, modes,
  dtype and device) into the profiles of several batch sizes there that hold it, where they
  differ: a run killed between the two writes (or interrupted while the second was rendered)
  left them out of step, and only a later run of that batch size would have repaired it. The
  batch's own file is written first, so it is the newer. A pair that cannot be read or merged
  is named and left as it is. Each file is read once."""
  if not os.path.isdir(out_dir):
    return
  setup = _setup(spec)
  named = {name[:-len(".json")]: records.named_batch_sizes(setup, name[:-len(".json")])
           for name in sorted(os.listdir(out_dir)) if name.endswith(".json")}
  combined = {st: bs for st, bs in named.items() if bs is not None and len(bs) > 1}
  loaded: Dict[str, records.Profile] = {}

  def load(stem: str) -> records.Profile:
    if stem not in loaded:
      loaded[stem] = records.load(os.path.join(out_dir, stem + ".json"))
    return loaded[stem]

  for b in sorted({b for bs in combined.values() for b in bs}):
    own_stem = records.file_stem(setup, [b])
    if own_stem not in named:
      continue
    for stem in (st for st, bs in combined.items() if b in bs):
      try:
        points = {p.key: p for p in load(own_stem).points}
        held = {p.key: p for p in load(stem).points if p.batch_size == b}
        if all(held.get(k) == p for k, p in points.items()):
          continue
        paths = write_outputs(load(own_stem), out_dir, stem)
        loaded.pop(stem)
      except (OSError, ValueError) as e:
        log(f"note: could not bring {stem}.json in step with {own_stem}.json: "
            f"{console.printable(str(e))}")
        continue
      log(f"brought {console.printable(paths['json'])} in step with "
          f"{console.printable(os.path.join(out_dir, own_stem + '.json'))}, which is newer")


def _held_points(spec: ProfileSpec, out_dir: str, batch: int, log: Callable[[str], None]
                 ) -> Tuple[records.Point, ...]:
  """The points of batch `batch` in its profile in `out_dir` (checked to be of this setup by
  `check_outputs`), for a resumed run; () when there is none yet, said (a probe: a typo in
  --out_dir or --batch_size measured everything again without a word, a lease's deadline)."""
  setup = _setup(spec)
  if not os.path.isdir(out_dir):
    log(f"note: --resume: {console.printable(out_dir)} does not exist yet: nothing to continue, "
        f"every count of batch {batch} is measured")
    return ()
  path = os.path.join(out_dir, records.file_stem(setup, [batch]) + ".json")
  held: Dict[Tuple, records.Point] = {}
  sources = [os.path.join(out_dir, st + ".json") for st in combined_stems(setup, out_dir, batch)]
  for source in sources + [path]:                  # (its own file last: it is the newest)
    if os.path.exists(source):
      held.update((p.key, p) for p in records.load(source).points if p.batch_size == batch)
  if held:
    log(f"resuming batch {batch}: the {len(held)} points it has in {console.printable(out_dir)} "
        "are not measured again")
  else:
    there = sorted(n for n in os.listdir(out_dir) if n.endswith(".json"))
    log(f"note: --resume: {console.printable(out_dir)} holds no {os.path.basename(path)} (nor a "
        f"profile of several batch sizes with batch {batch}) to continue"
        + (f"; it holds {', '.join(map(console.printable, there[:4]))}"
           + (f" and {len(there) - 4} more" if len(there) > 4 else "") if there else "")
        + f": every count of batch {batch} is measured")
  return tuple(held.values())


def _wrote(paths: Dict[str, str]) -> str:
  return "wrote " + ", ".join(console.printable(paths[k]) for k in ("json", "csv", "png"))


def check_outputs(spec: ProfileSpec, out_dir: str) -> None:
  """Refuses, before anything is measured, an output `run_profile` could not write into
  `out_dir`: for every batch size (and all of them together, and every profile of several batch
  sizes there holding one of them), a profile there that is not readable or not of this setup
  (model, dtype, device, reducer), or files of its names without their profile."""
  setup = _setup(spec)
  batches = [[int(b)] for b in spec.batch_sizes]
  if len(batches) > 1:
    batches.append(sorted(int(b) for b in spec.batch_sizes))
  stems = {records.file_stem(setup, b) for b in batches}
  if os.path.isdir(out_dir):
    stems |= {st for b in spec.batch_sizes for st in combined_stems(setup, out_dir, int(b))}
  for stem in sorted(stems):
    records.check_save(setup, out_dir, stem, extra=("png",))


def combined_stems(setup: records.Profile, out_dir: str, batch: int) -> List[str]:
  """Stems of the profiles in `out_dir` of `setup`'s model, modes, dtype and device kind over
  several batch sizes, `batch` among them (`<model>_<modes>_b1-8_<dtype>_<device>.json`)."""
  stems = []
  for name in sorted(os.listdir(out_dir)):
    named = (records.named_batch_sizes(setup, name[:-len(".json")])
             if name.endswith(".json") else None)
    if named is not None and len(named) > 1 and batch in named:
      stems.append(name[:-len(".json")])
  return stems


# ----------------------------------------------------------------------------- summary


def summary_table(profile: records.Profile) -> str:
  """Human-readable per-point table, steps, flat stretches and predictor errors."""
  lines = [f"== {profile.model} | {profile.dtype} | {profile.device_kind} ({profile.platform}) "
           f"| modes {','.join(profile.modes)} | reducer {profile.reducer}",
           f"{'component':<9} {'batch':>5} {'tokens':>6} {'median ms':>10} {'IQR %':>6} "
           f"{'samples':>7} {'compile s':>9} {'retry':>5}"]
  order = {c: i for i, c in enumerate(records.COMPONENTS)}
  for p in sorted(profile.points, key=lambda p: (order[p.component], p.batch_size, -p.tokens,
                                                  p.schedule or ())):
    lines.append(f"{p.component:<9} {p.batch_size:>5} {p.tokens:>6} {1e3 * p.median_s:>10.4f} "
                 f"{100 * p.rel_iqr:>6.1f} {p.num_samples:>7} {p.compile_s:>9.3f} "
                 f"{p.retries:>5}" + (f"  {list(p.schedule)}" if p.schedule else "")
                 + (f"  (the last {p.retimed_samples} samples timed again, x"
                    f"{p.retimed_scale:.4g} for the drift)" if p.retimed_samples else ""))
  lines += records.step_lines(profile)
  if profile.predictions:
    lines.append("-- per-block sum (embed + sum blocks + head) vs measured graph")
    for p in profile.predictions:
      lines.append(f"  batch {p['batch_size']} {p['component']} {p['schedule']}: predicted "
                   f"{1e3 * p['predicted_s']:.4f} ms, measured {1e3 * p['measured_s']:.4f} ms, "
                   f"error {100 * p['rel_error']:+.1f}%")
  return "\n".join(lines)
