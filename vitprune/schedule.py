"""Static token schedules: how many tokens each block of a ViT processes.

A `Schedule` is hashable, so it is a static argument of `jax.jit`: every schedule is its own
fixed-shape XLA graph.

`counts[0]` is the number of tokens entering block 0 (prefix tokens included); fewer than the
model's full token count means tokens are dropped right after the embedding. `counts[l + 1]` is
the number of tokens leaving block `l`: when it is smaller than `counts[l]`, block `l` reduces its
tokens between the attention residual and the MLP. So `len(counts) == depth + 1`. The counts are
exactly what runs: a fill token (POMT), a fused token (EViT) or a merged token (ToMe) is one token.

Constructors (all validated against the config):

  prune_at(cfg, keep=120, layer=3)          POMT: 120 tokens leave block 3 (and later blocks)
  prune_at(cfg, remove=77, layer=3)         the same, stated as tokens removed at block 3
  prune_layers(cfg, {3: 120, 6: 80})        several reduction layers
  remove_per_layer(cfg, 8)                  ToMe / Top-K: r = 8 per layer (ToMe's 50% cap)
  remove_per_layer(cfg, 8, inflection=-0.5) ToMe's (r, inflection) form (`parse_r`)
  remove_per_layer(cfg, [8, 8, 4])          ToMe's explicit per-layer r list (zero-padded)
  embed_schedule(cfg, 150)                  150 tokens from the embedding on (random drop);
                                            also `drop_after_embedding`
  layer_schedule(cfg, 120, 3)               = prune_at(cfg, keep=120, layer=3), the estimator's
                                            and solver's single-reduction points
  from_counts(cfg, [197, 197, 120, ...])    explicit depth + 1 counts

The compact text form (`parse_schedule(cfg, text)` / `format_schedule(schedule, cfg)`):

  full | none                    no reduction
  keep@3:120                     120 tokens leave block 3 (prefix tokens included)
  keep@3:120,6:80                several layers
  remove@3:77                    block 3 removes 77 tokens (several: remove@3:10,6:5, in
                                any order; each block's removal is kept)
  r8 | r8,-0.5                   ToMe r per layer, optionally with an inflection in [-1, 1]
                                (capped at half the non-prefix tokens entering a block, as
                                ToMe caps it; a `ToMeCapWarning` names the blocks it lowers)
  rlist:8,8,4                    ToMe per-layer r list, zero-padded to the depth
  embed:150                      150 tokens enter block 0 (dropped after the embedding)
  list:197,197,120,...           explicit depth + 1 counts (a bare `197,197,120,...` also works)

Terms combine with `+`, applied left to right from the full schedule, e.g.
`embed:150+keep@3:120` or `embed:150+r8`. `keep@` sets counts (later blocks keep at most that
many); `remove@` is relative: the block and every later one lose R more tokens, so
`r8+remove@3:10` is ToMe's r8 with 10 more tokens removed at block 3, and
`keep@6:80+remove@3:10` leaves 70 after block 6. `embed` must come first; `r`/`rlist` need no
earlier reduction layer; `list` and `full` stand alone. A term the schedule is the same without
(`remove@4:5+keep@3:40`: the `keep@` sets what the `remove@` lowered) is refused, naming it.
`format_schedule` picks the shorter of the `keep@` and `list:` forms, so `parse_schedule(cfg,
format_schedule(s, cfg)) == s` for every valid schedule `s`; `str(s)` is `format_schedule(s)`
(which always states `embed:` because it does not know the model).
"""
from __future__ import annotations

import collections
import dataclasses
import math
import operator
import re
import reprlib
import warnings
from typing import (TYPE_CHECKING, AbstractSet, Any, List, Mapping, Optional, Sequence, Tuple,
                    Union)

import numpy as np

from vitprune.config import ViTConfig, check_config_type, real_number
from vitprune.console import counted

if TYPE_CHECKING:  # deployed models load schedules without importing vitprune.reduce
  from vitprune.reduce.base import TokenReducer

DEFAULT_POMT_LAYER = 3  # the paper's default reduction block


def _count(c: Any, i: int) -> int:
  """Schedule count `c` at position `i` as an int: Python, numpy or JAX integers, or an integral
  finite float (ValueError otherwise; bools are not counts)."""
  if not isinstance(c, (bool, np.bool_)):
    try:
      return operator.index(c)
    except TypeError:
      f = real_number(c)    # (a JAX float scalar, jnp.array([65., 35.])'s items, is no Real)
      if f is not None and math.isfinite(f) and int(f) == f:
        return int(f)
  raise ValueError(f"schedule count {c!r} at position {i} is not an integer")


@dataclasses.dataclass(frozen=True)
class Schedule:
  counts: Tuple[int, ...]

  def __post_init__(self):
    if (isinstance(self.counts, (str, bytes, Mapping, AbstractSet))
        or not hasattr(self.counts, "__iter__")):     # (a dict's keys were taken as counts)
      raise TypeError(f"a schedule's counts must be a sequence of token counts (entering block "
                      f"0, then leaving each block), got {reprlib.repr(self.counts)}")
    counts = tuple(self.counts)
    if not counts:
      raise ValueError("a schedule needs at least one count (tokens entering block 0)")
    object.__setattr__(self, "counts", tuple(_count(c, i) for i, c in enumerate(counts)))

  def __str__(self) -> str:
    return format_schedule(self)

  @property
  def depth(self) -> int:
    return len(self.counts) - 1

  def tokens_in(self, layer: int) -> int:
    """Tokens entering block `layer`."""
    return self.counts[layer]

  def tokens_out(self, layer: int) -> int:
    """Tokens leaving block `layer` (after its reduction, if any)."""
    return self.counts[layer + 1]

  def reduces_at(self, layer: int) -> bool:
    return self.counts[layer + 1] < self.counts[layer]

  def removed_at(self, layer: int) -> int:
    """Tokens block `layer` removes (0 if it does not reduce)."""
    return self.counts[layer] - self.counts[layer + 1]

  @property
  def reduction_layers(self) -> Tuple[int, ...]:
    return tuple(l for l in range(self.depth) if self.reduces_at(l))


def full_schedule(cfg: ViTConfig) -> Schedule:
  """No reduction: every block sees all `cfg.num_tokens` tokens."""
  check_config_type(cfg)
  return Schedule((cfg.num_tokens,) * (cfg.depth + 1))


def reduces_tokens(cfg: ViTConfig, schedule: Schedule) -> bool:
  """Whether `schedule` removes tokens (right after the embedding or in a block)."""
  return schedule.counts[0] < cfg.num_tokens or bool(schedule.reduction_layers)


def check_reducer_given(cfg: ViTConfig, schedule: Schedule,
                        reducer: Optional["TokenReducer"]) -> None:
  """ValueError when `schedule` reduces tokens and `reducer` is None."""
  if reducer is None and reduces_tokens(cfg, schedule):
    raise ValueError(f"schedule {schedule.counts} reduces tokens but no reducer was given")


def check_static_types(schedule: Any, reducer: Any) -> None:
  """TypeError (one line) unless `schedule` is a Schedule or None and `reducer` a token reducer
  or None: what a compiled graph is keyed on (a list of counts or a method name would fail
  inside jax with a message that names neither)."""
  if schedule is not None and not isinstance(schedule, Schedule):
    raise TypeError(f"schedule must be a vitprune Schedule (parse_schedule(cfg, text) or "
                    f"Schedule(counts)) or None, got {type(schedule).__name__} "
                    f"{reprlib.repr(schedule)}")
  if isinstance(reducer, type):
    raise TypeError(f"reducer must be a token reducer instance (make_reducer(name) or "
                    f"{reducer.__name__}(...)), got the class {reducer.__name__} itself")
  missing = [a for a in _REDUCER_ATTRIBUTES if not hasattr(reducer, a)]
  if reducer is not None and missing:
    if isinstance(reducer, str):
      hint = f" (make_reducer({reducer!r}))"
    elif len(missing) < len(_REDUCER_ATTRIBUTES):      # a reducer of its own, incomplete
      hint = f" (it lacks {', '.join(missing)}: see vitprune.reduce.base.TokenReducer)"
    else:
      hint = ""
    raise TypeError(f"reducer must be a token reducer{hint} or None, got "
                    f"{type(reducer).__name__} {reprlib.repr(reducer)}")


# What every reducer has (`TokenReducer`; `layer_dependent` and `needs_class_token` are optional,
# and `reduce_embedding` is called only where `supports_embedding` is true).
_REDUCER_ATTRIBUTES = ("name", "needs_attention", "tracks_size", "supports_embedding",
                       "max_remove", "reduce")


def check_schedule(cfg: ViTConfig, schedule: Optional[Schedule],
                   reducer: Optional[TokenReducer] = None) -> Schedule:
  """Validates `schedule` against `cfg` (None means no reduction); raises ValueError.

  With a `reducer`, also checks the limits it declares (`TokenReducer`): reducing right after
  the embedding needs `reducer.supports_embedding`, and a block may remove at most
  `reducer.max_remove(tokens_in, num_prefix)` tokens (ToMe: half the non-prefix tokens).
  """
  check_config_type(cfg)
  check_static_types(schedule, reducer)
  if schedule is None:
    return full_schedule(cfg)
  c = schedule.counts
  if len(c) != cfg.depth + 1:
    raise ValueError(f"schedule has {len(c)} counts, {cfg.name} needs depth + 1 = "
                     f"{cfg.depth + 1} (tokens entering block 0, then leaving each block)")
  if c[0] > cfg.num_tokens:
    raise ValueError(f"schedule starts with {c[0]} tokens but {cfg.name} has only "
                     f"{cfg.num_tokens} (prefix {cfg.num_prefix_tokens} + "
                     f"{cfg.num_patches} patches)")
  floor = token_bounds(cfg)[0]
  for l, n in enumerate(c):
    if n < floor:
      raise ValueError(f"schedule count {n} at position {l} is below prefix tokens + 1 = "
                       f"{floor}: at least one patch token must remain")
  for l in range(len(c) - 1):
    if c[l + 1] > c[l]:
      raise ValueError(f"schedule counts must never increase: block {l} receives {c[l]} "
                       f"tokens and would emit {c[l + 1]}")
  if reducer is not None:
    _check_method_limits(cfg, schedule, reducer)
  return schedule


def _check_method_limits(cfg: ViTConfig, schedule: Schedule, reducer: TokenReducer) -> None:
  """The limits the reducer declares (`TokenReducer.supports_embedding`, `.max_remove`, and the
  optional `needs_class_token`)."""
  if schedule.reduction_layers and getattr(reducer, "needs_class_token", False) and \
      not cfg.class_token:       # (token 0 is then a register or a patch: ranked by it silently)
    raise ValueError(f"{reducer.name} scores tokens by class-token attention, but {cfg.name} "
                     "has no class token")
  if schedule.counts[0] < cfg.num_tokens and not reducer.supports_embedding:
    raise ValueError(f"schedule {format_schedule(schedule, cfg)} drops tokens after the "
                     f"embedding, which {reducer.name} cannot do (it needs attention); use the "
                     f"'random' method or start the schedule at {cfg.num_tokens} tokens")
  for l in schedule.reduction_layers:
    n, removed = schedule.tokens_in(l), schedule.removed_at(l)
    limit = reducer.max_remove(n, cfg.num_prefix_tokens)
    if removed > limit:
      raise ValueError(f"{reducer.name} can remove at most {limit} of the {n} tokens entering "
                       f"block {l} ({counted(cfg.num_prefix_tokens, 'prefix token')} "
                       f"protected), the schedule removes {removed}")


def token_bounds(cfg: ViTConfig) -> Tuple[int, int]:
  """Valid token counts anywhere in a schedule: [prefix + 1, num_tokens], both inclusive."""
  check_config_type(cfg)
  return cfg.num_prefix_tokens + 1, cfg.num_tokens


def _bounds_reason(cfg: ViTConfig) -> str:
  """'for vit_digits (its 1 prefix token and at least 1 patch token, at most all 65)': why
  `token_bounds` are what they are, for an error."""
  return (f"for {cfg.name} (its {counted(cfg.num_prefix_tokens, 'prefix token')} and at least "
          f"1 patch token, at most all {cfg.num_tokens})")


def check_token_grid(cfg: ViTConfig, tokens: Sequence[int]) -> Tuple[int, ...]:
  """Validates a token grid: unique ints in `token_bounds(cfg)`; returns it sorted ascending.

  Raises ValueError naming the problem (empty, non-int, out of range, duplicates).
  """
  if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__iter__"):
    raise TypeError(f"a token grid must be a sequence of token counts, got "
                    f"{reprlib.repr(tokens)} (parse_token_grid reads the text forms)")
  ns = list(tokens)
  if not ns:
    raise ValueError("token grid is empty")
  bad = [n for n in ns if not _is_index(n)]
  if bad:
    raise ValueError(f"token counts must be ints, got {bad}")
  ns = [operator.index(n) for n in ns]
  lo, hi = token_bounds(cfg)
  out = [n for n in ns if not lo <= n <= hi]
  if out:
    raise ValueError(f"token counts {sorted(out)} outside [{lo}, {hi}] for {cfg.name} "
                     f"(prefix {cfg.num_prefix_tokens} + at least one patch, at most all "
                     f"{hi} tokens)")
  if len(set(ns)) != len(ns):
    raise ValueError(f"token grid has duplicates: {ns}")
  return tuple(sorted(int(n) for n in ns))


def parse_token_grid(cfg: ViTConfig, spec: str) -> Tuple[int, ...]:
  """A grid of token counts (the CLIs' `--tokens`), descending; a count listed twice is refused
  (a typo for another count was merged unsaid).

  'all' | 'a:b' | 'a:b:step' (both ends inclusive, either direction) | 'n1,n2,...'. Every count
  must lie in [prefix + 1, num_tokens]; raises ValueError naming the problem.
  """
  lo, hi = token_bounds(cfg)
  if not isinstance(spec, str):
    raise TypeError(f"a token grid text must be a string ('all', 'a:b', 'a:b:step' or "
                    f"'n1,n2,...'), got {reprlib.repr(spec)} (check_token_grid takes counts)")
  shown = reprlib.repr(spec)     # (a megabyte of --tokens is not echoed whole)
  text = spec.strip().lower()
  if not text:
    raise ValueError("--tokens is empty; use 'all', 'a:b', 'a:b:step' or 'n1,n2,...'")
  if not text.isascii():       # int() reads other scripts' digits too
    raise ValueError(f"--tokens {shown}: write the counts with the ASCII digits 0-9")
  try:
    if text == "all":
      counts = list(range(hi, lo - 1, -1))
    elif ":" in text:
      parts = [_grid_int(p) for p in text.split(":")]
      if len(parts) not in (2, 3):
        raise ValueError
      a, b = parts[:2]
      step = parts[2] if len(parts) == 3 else (1 if b >= a else -1)
      if step == 0:
        raise ValueError(f"--tokens {shown}: step must not be 0")
      if (b - a) * step < 0:
        raise ValueError(f"--tokens {shown}: step {step} never goes from {a} to {b}")
      last = a + (b - a) // step * step       # the last count listed ('65:1:-7' ends at 2)
      ends = sorted({c for c in (a, last) if not lo <= c <= hi})   # (before listing 1e15)
      if ends:
        reach = f" (the last count step {step} reaches)" if last != b else ""
        raise ValueError(f"--tokens {shown}: the range lists {a} .. {last}{reach}; "
                         f"{' and '.join(map(str, ends))} {'is' if len(ends) == 1 else 'are'} "
                         f"outside [{lo}, {hi}] {_bounds_reason(cfg)}")
      if a != b and abs(step) > abs(b - a):     # (a probe: '65:5:-1e20' timed 65 alone, unsaid)
        raise ValueError(f"--tokens {shown}: step {step} is larger than the range {a} .. {b}, so "
                         f"it lists {a} alone: give '{a}' for that count, or a step of at most "
                         f"{abs(b - a)}")
      counts = list(range(a, b + (1 if step > 0 else -1), step))
    else:
      counts = [_grid_int(p) for p in text.split(",")]
      twice = sorted(c for c, k in collections.Counter(counts).items() if k > 1)
      if twice:
        raise ValueError(f"--tokens {shown} lists {reprlib.repr(twice)} more than once: give "
                         "each count once")
  except ValueError as e:
    if str(e).startswith("--tokens"):
      raise
    raise ValueError(f"--tokens {shown} is not 'all', 'a:b', 'a:b:step' or a comma list of "
                     f"integers") from None
  bad = sorted({c for c in counts if not lo <= c <= hi})
  if bad:
    raise ValueError(f"--tokens {shown}: counts {reprlib.repr(bad)} are outside "
                     f"[{lo}, {hi}] {_bounds_reason(cfg)}")
  return tuple(sorted(set(counts), reverse=True))


def _grid_int(text: str) -> int:
  """One integer of `--tokens`: optional '-' and the digits 0-9 (int() also took '6_5' and
  '+65'), else ValueError."""
  text = text.strip()
  if not re.fullmatch(r"-?[0-9]+", text):
    raise ValueError
  return int(text)


# ----------------------------------------------------------------------------- constructors


def from_counts(cfg: ViTConfig, counts: Sequence[int]) -> Schedule:
  """An explicit schedule of `depth + 1` counts, validated (`Schedule` refuses a string, a
  mapping or a set: `tuple()` of them read characters or keys as counts)."""
  return check_schedule(cfg, Schedule(counts))


def embed_counts(n: int, depth: int) -> Tuple[int, ...]:
  """`n` tokens from the embedding on: `[n] * (depth + 1)` (plain numbers, not validated)."""
  return (int(n),) * (int(depth) + 1)


def layer_counts(num_tokens: int, n: int, depth: int, layer: int) -> Tuple[int, ...]:
  """All `num_tokens` tokens until block `layer` reduces to `n`:
  `[num_tokens] * (layer + 1) + [n] * (depth - layer)` (plain numbers, not validated)."""
  return (int(num_tokens),) * (int(layer) + 1) + (int(n),) * (int(depth) - int(layer))


def embed_schedule(cfg: ViTConfig, n: int) -> Schedule:
  """`n` tokens (prefix included) kept right after the embedding; no block reduces."""
  check_config_type(cfg)
  return check_schedule(cfg, Schedule(embed_counts(as_int(n, "n"), cfg.depth)))


drop_after_embedding = embed_schedule


def layer_schedule(cfg: ViTConfig, n: int, layer: int) -> Schedule:
  """All tokens up to block `layer`, which reduces to `n` (prefix included), validated.

  Raises ValueError when `layer` is not an int in [0, depth - 1].
  """
  check_config_type(cfg)
  if not _is_index(layer) or not 0 <= operator.index(layer) < cfg.depth:
    raise ValueError(f"reduction layer must be an int in [0, {cfg.depth - 1}] for {cfg.name} "
                     f"(depth {cfg.depth}), got {layer!r}")
  return check_schedule(cfg, Schedule(layer_counts(cfg.num_tokens, as_int(n, "n"), cfg.depth,
                                                   operator.index(layer))))


def _check_layer(cfg: ViTConfig, layer) -> int:
  check_config_type(cfg)          # (a model name: "'str' object has no attribute 'depth'")
  layer = as_int(layer, "layer")
  if not 0 <= layer < cfg.depth:
    raise ValueError(f"layer {layer} is out of range: {cfg.name} has blocks 0..{cfg.depth - 1}")
  return layer


def _is_index(v: Any) -> bool:
  """Whether `as_int` takes `v`: an integer (Python, numpy or JAX; not a bool)."""
  try:
    as_int(v, "")
  except TypeError:
    return False
  return True


def as_int(v, what: str) -> int:
  """`v` as an int; bools, floats and strings are refused (no silent truncation)."""
  if isinstance(v, bool):
    raise TypeError(f"{what} must be an int, got {v!r}")
  try:
    return operator.index(v)
  except TypeError:
    raise TypeError(f"{what} must be an int, got {v!r}") from None


def as_positive_int(v, what: str) -> int:
  """`v` as an int >= 1 (`as_int`, then ValueError naming `what` below 1)."""
  v = as_int(v, what)
  if v < 1:
    raise ValueError(f"{what} must be >= 1, got {v}")
  return v


def _start(cfg: ViTConfig, base: Optional[Schedule]) -> List[int]:
  return list(check_schedule(cfg, base).counts)


def _keep_from(counts: List[int], layer: int, keep: int) -> List[int]:
  """Counts with `keep` tokens leaving block `layer` and every later block (never raising)."""
  if keep > counts[layer + 1]:
    raise ValueError(f"cannot keep {keep} tokens after block {layer}: only "
                     f"{counts[layer + 1]} are scheduled to leave it already")
  return counts[:layer + 1] + [min(c, keep) for c in counts[layer + 1:]]


def prune_at(cfg: ViTConfig, *, keep: Optional[int] = None, remove: Optional[int] = None,
             layer: int = DEFAULT_POMT_LAYER, base: Optional[Schedule] = None) -> Schedule:
  """POMT-style: block `layer` reduces to `keep` tokens (prefix included), later blocks keeping
  at most that count; or block `layer` removes `remove` more tokens, every later count lowered
  by as many (the later blocks' own reductions are kept, so the order in which several
  removals are applied does not matter). `base` (default: no reduction) is the schedule to
  modify."""
  if (keep is None) == (remove is None):
    raise ValueError("prune_at needs exactly one of keep= (tokens left, prefix included) or "
                     "remove= (tokens removed at that layer)")
  layer = _check_layer(cfg, layer)
  counts = _start(cfg, base)
  if remove is not None:
    remove = as_int(remove, "remove")
    if remove < 0:
      raise ValueError(f"remove must be >= 0, got {remove}")
    lowered = counts[:layer + 1] + [c - remove for c in counts[layer + 1:]]
    if lowered[-1] < cfg.num_prefix_tokens + 1:
      raise ValueError(f"block {layer} cannot remove {remove} tokens: the {counts[-1]} leaving "
                       f"the last block would fall to {lowered[-1]}, below prefix tokens + 1 = "
                       f"{cfg.num_prefix_tokens + 1}")
    return check_schedule(cfg, Schedule(lowered))
  keep = as_int(keep, "keep")
  return check_schedule(cfg, Schedule(_keep_from(counts, layer, keep)))


def prune_layers(cfg: ViTConfig, keeps: Mapping[int, int],
                 base: Optional[Schedule] = None) -> Schedule:
  """Several POMT-style reductions: `{layer: tokens leaving that block}`."""
  if not isinstance(keeps, Mapping):
    raise TypeError(f"keeps must be a mapping {{layer: tokens leaving that block}}, got "
                    f"{reprlib.repr(keeps)}")
  layers = {_check_layer(cfg, layer): keep for layer, keep in keeps.items()}   # (before sorting)
  counts = _start(cfg, base)
  for layer in sorted(layers):
    counts = _keep_from(counts, layer, as_int(layers[layer], "keep"))
  return check_schedule(cfg, Schedule(counts))


RSpec = Union[int, Tuple[int, float], Sequence[int]]


MAX_R = 2 ** 31 - 1      # far above any model's token count; a float holds it exactly


def tome_r_list(num_layers: int, r: RSpec) -> List[int]:
  """ToMe's `parse_r`: a constant r, an (r, inflection) pair or an explicit list -> per-layer r.

  Inflection in [-1, 1]: r per layer decreases (< 0), stays constant (0) or increases (> 0)
  linearly from `int(r * (1 - inflection))` to `2 r - that`, so the total stays about
  `num_layers * r`. A list shorter than `num_layers` is padded with zeros.
  """
  num_layers = as_int(num_layers, "num_layers")
  if num_layers < 1:
    raise ValueError(f"num_layers must be >= 1, got {num_layers}")
  inflect = 0.0
  if isinstance(r, tuple):
    if len(r) != 2:
      raise ValueError(f"a tuple r must be (r, inflection) as in ToMe, got {r!r}; pass a list "
                       "for per-layer values")
    r, inflect = r
    value = real_number(inflect)
    if value is None:
      raise TypeError(f"inflection must be a number, got {inflect!r}")
    inflect = value
    if not -1.0 <= inflect <= 1.0:
      raise ValueError(f"inflection must be in [-1, 1] (ToMe: -1 decreasing, 0 constant, "
                       f"+1 increasing), got {inflect}")
  elif not isinstance(r, (int, str)) and not _is_index(r) and hasattr(r, "__iter__"):
    if isinstance(r, (bytes, Mapping, AbstractSet)):   # ({3: 8} was r=3 at block 0: its keys)
      raise TypeError(f"r must be an int, an (r, inflection) tuple or a per-layer list, got "
                      f"{type(r).__name__} {reprlib.repr(r)}")
    rs = [as_int(v, "r") for v in r]
    if len(rs) > num_layers:
      raise ValueError(f"r list has {len(rs)} entries for {num_layers} layers")
    if any(v < 0 for v in rs):
      raise ValueError(f"r values must be >= 0, got {rs}")
    return rs + [0] * (num_layers - len(rs))
  r = as_int(r, "r")
  if r < 0:
    raise ValueError(f"r must be >= 0, got {r}")
  if r > MAX_R:        # (a float of it overflowed: a traceback)
    raise ValueError(f"r must be at most {MAX_R} tokens per layer, got {reprlib.repr(r)}")
  min_val = int(r * (1.0 - inflect))
  max_val = 2 * r - min_val
  if num_layers == 1:
    return [min_val]
  step = (max_val - min_val) / (num_layers - 1)
  return [int(min_val + step * i) for i in range(num_layers)]


def tome_max_remove(num_tokens: int, num_prefix: int) -> int:
  """ToMe's cap: at most half of the non-prefix (unprotected) tokens merge in one block (here,
  jax-free, so that a board reading an artifact's `rN` schedule imports no reducer)."""
  return max(0, (num_tokens - num_prefix) // 2)


def remove_per_layer(cfg: ViTConfig, r: RSpec, inflection: Optional[float] = None, *,
                     base: Optional[Schedule] = None) -> Schedule:
  """ToMe / Top-K: block l removes r_l tokens (`tome_r_list` semantics), each capped at half the
  non-prefix tokens entering it (as ToMe does at run time), so at least one patch token remains.

  `base` may only drop tokens after the embedding (no reduction layer yet).
  """
  counts = _start(cfg, base)
  if len(set(counts)) != 1:
    raise ValueError("remove_per_layer needs a base schedule without reduction layers "
                     f"(got {counts}); use an explicit list instead")
  if inflection is not None:
    r = (as_int(r, "with inflection=, r"), inflection)
  rs = tome_r_list(cfg.depth, r)
  n = counts[0]
  out = [n]
  for r_l in rs:
    n -= min(r_l, tome_max_remove(n, cfg.num_prefix_tokens))
    out.append(n)
  return check_schedule(cfg, Schedule(out))


# ----------------------------------------------------------------------------- text form

_INT = r"-?[0-9]+"        # ASCII digits; '+' joins terms, so it is never a sign


def _parse_int(s: str, what: str, text: str) -> int:
  s = s.strip()
  if not re.fullmatch(_INT, s):
    raise ValueError(f"schedule {reprlib.repr(text)}: {what} {reprlib.repr(s)} is not an "
                     "integer")
  if len(s.lstrip("-").lstrip("0")) > 18:     # (int() refused 4300 digits naming no schedule)
    raise ValueError(f"schedule {reprlib.repr(text)}: {what} {reprlib.repr(s)} is far beyond "
                     "any token count")
  return int(s)


def _parse_pairs(body: str, what: str, text: str) -> List[Tuple[int, int]]:
  pairs = []
  for item in body.split(","):
    if item.count(":") != 1:
      raise ValueError(f"schedule {text!r}: expected LAYER:{what} pairs separated by commas, "
                       f"got {item!r}")
    l, v = item.split(":")
    pairs.append((_parse_int(l, "layer", text), _parse_int(v, what.lower(), text)))
  layers = [l for l, _ in pairs]
  if len(set(layers)) != len(layers):
    raise ValueError(f"schedule {text!r}: layer repeated in {body!r}")
  return pairs


def _parse_list(body: str, text: str) -> List[int]:
  if not body.strip():
    raise ValueError(f"schedule {text!r}: empty list")
  return [_parse_int(v, "count", text) for v in body.split(",")]


_FORMS = ("full", "none", "keep@L:K[,L:K]", "remove@L:R[,L:R]", "rR[,INFLECTION]",
          "rlist:R,R,...", "embed:N", "list:N0,N1,...", "N0,N1,... (depth + 1 counts)")


def _with_layer_errors(fn, text):
  try:
    return fn()
  except (ValueError, TypeError) as e:
    raise ValueError(f"schedule {text!r}: {e}") from e


def parse_schedule(cfg: ViTConfig, text: str) -> Schedule:
  """Parses the compact text form (see the module docstring) into a validated `Schedule`.

  Raises ValueError naming the offending part and listing the accepted forms.
  """
  if not isinstance(text, str):
    raise TypeError(f"schedule text must be a str, got {type(text).__name__}")
  if not text.isascii():
    raise ValueError(f"schedule {text!r}: only ASCII letters, digits and punctuation are read "
                     "(write the digits 0-9)")
  if re.search(r"[0-9.]\s+[0-9.]", text):
    raise ValueError(f"schedule {text!r}: a space inside a number (spaces are ignored elsewhere, "
                     "so '3 5' would read as 35)")
  t = re.sub(r"\s+", "", text).lower()
  if re.search(r"(^|[:,@])\+", t):
    raise ValueError(f"schedule {text!r}: '+' joins terms (embed:50+keep@3:35); numbers take "
                     "no '+' sign")
  if not t:
    raise ValueError(f"empty schedule; accepted forms: {', '.join(_FORMS)}")
  if t in ("full", "none"):
    return full_schedule(cfg)
  # (a list: joined to other terms goes to the terms, which refuse it: read as one list, its
  # last count was "35+keep@4:20")
  if t.startswith("list:") and "+" not in t or re.fullmatch(rf"{_INT}(,{_INT})+", t):
    counts = _parse_list(t[5:] if t.startswith("list:") else t, text)
    return _with_layer_errors(lambda: from_counts(cfg, counts), text)
  terms = t.split("+")
  capped = []
  counts = _apply_terms(cfg, terms, text, capped)
  for i, term in enumerate(terms if len(terms) > 1 else ()):
    if term.startswith("embed:"):   # (str(Schedule) states embed:N, all tokens too: as written)
      continue
    try:
      without = _apply_terms(cfg, terms[:i] + terms[i + 1:], text)
    except ValueError:          # (the others alone are no schedule: the term does something)
      continue
    if without == counts:       # (remove@4:5+keep@3:40: the keep@ sets what remove@ lowered)
      raise ValueError(f"schedule {text!r}: the term {term!r} changes nothing (the schedule "
                       "is the same without it: another term sets those counts); drop it")
  schedule = _with_layer_errors(lambda: check_schedule(cfg, Schedule(counts)), text)
  if capped:            # (r100 ran as r32, r16, ... under its own name, unsaid: a probe)
    warnings.warn(f"schedule {text!r} removes fewer tokens than its r asks at {len(capped)} "
                  "block(s) (ToMe's cap: a block removes at most half of the non-prefix tokens "
                  "entering it): " + ", ".join(f"{removed} of {asked} at block {layer}"
                                               for layer, asked, removed in capped),
                  ToMeCapWarning, stacklevel=2)
  return schedule


class ToMeCapWarning(UserWarning):
  """A schedule text's `r` / `rlist` asks more of a block than ToMe's cap lets it remove."""


def _apply_terms(cfg: ViTConfig, terms: Sequence[str], text: str,
                 capped: Optional[List[Tuple[int, int, int]]] = None) -> List[int]:
  """The counts of the `+`-joined `terms`, applied left to right to the full schedule; `capped`
  gets (block, r asked, tokens removed) wherever ToMe's cap lowered an `r`/`rlist` term's r."""
  counts = list(full_schedule(cfg).counts)
  for i, term in enumerate(terms):
    new = _apply_term(cfg, counts, term, i, text)
    if capped is not None and (r := _r_term(term, text)) is not None:
      removed = [a - b for a, b in zip(new, new[1:])]
      capped.extend((layer, asked, gone) for layer, (asked, gone)
                    in enumerate(zip(tome_r_list(cfg.depth, r), removed)) if gone < asked)
    counts = new
  return counts


def _r_term(term: str, text: str) -> Optional[RSpec]:
  """The r of an `rlist:` (its list) or `rR[,INFLECTION]` term (R, or (R, inflection)); None
  for a term of another form."""
  if term.startswith("rlist:"):
    return _parse_list(term[6:], text)
  m = re.fullmatch(rf"r({_INT})(?:,([^,]+))?", term)
  if not m:
    return None
  r = _parse_int(m.group(1), "r", text)
  if m.group(2) is None:
    return r
  if not re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", m.group(2)):
    # (float() also took '0_5' as 5.0 and '0.2_5' as 0.25, 'nan' and 'inf')
    raise ValueError(f"schedule {text!r}: inflection {m.group(2)!r} is not a number")
  return r, float(m.group(2))


def _apply_term(cfg: ViTConfig, counts: List[int], term: str, i: int, text: str) -> List[int]:
  base = Schedule(counts)
  if term.startswith("embed:"):
    if i:
      raise ValueError(f"schedule {text!r}: embed: must be the first term")
    n = _parse_int(term[6:], "token count", text)
    return list(_with_layer_errors(lambda: drop_after_embedding(cfg, n), text).counts)
  if term.startswith("keep@"):
    keeps = dict(_parse_pairs(term[5:], "KEEP", text))
    return list(_with_layer_errors(lambda: prune_layers(cfg, keeps, base), text).counts)
  if term.startswith("remove@"):
    s = base
    for layer, r in _parse_pairs(term[7:], "REMOVE", text):
      s = _with_layer_errors(lambda: prune_at(cfg, remove=r, layer=layer, base=s), text)
    return list(s.counts)
  r = _r_term(term, text)
  if r is not None:
    return list(_with_layer_errors(lambda: remove_per_layer(cfg, r, base=base), text).counts)
  if term in ("full", "none") or term.startswith("list:"):
    raise ValueError(f"schedule {text!r}: {term.split(':')[0]!r} cannot be combined with "
                     "other terms")
  raise ValueError(f"schedule {text!r}: cannot parse {term!r}; accepted forms: "
                   f"{', '.join(_FORMS)} (terms combine with '+')")


def format_schedule(schedule: Schedule, cfg: Optional[ViTConfig] = None) -> str:
  """The compact text form of `schedule`; `parse_schedule(cfg, ...)` gives it back.

  With `cfg`, a schedule that does not reduce is `full` and `embed:` is stated only when tokens
  are dropped after the embedding; without `cfg`, `embed:` is always stated.
  """
  if not isinstance(schedule, Schedule):  # (a list: "'list' object has no attribute 'counts'")
    raise TypeError(f"schedule must be a vitprune Schedule, got {type(schedule).__name__} "
                    f"{reprlib.repr(schedule)}")
  c = schedule.counts
  if cfg is not None:
    check_schedule(cfg, schedule)
    if all(n == cfg.num_tokens for n in c):
      return "full"
  terms = []
  if cfg is None or c[0] != cfg.num_tokens:
    terms.append(f"embed:{c[0]}")
  if schedule.reduction_layers:
    terms.append("keep@" + ",".join(f"{l}:{c[l + 1]}" for l in schedule.reduction_layers))
  step_form = "+".join(terms)
  list_form = "list:" + ",".join(str(n) for n in c)
  shortest = step_form if len(step_form) <= len(list_form) else list_form
  removed = {a - b for a, b in zip(c, c[1:])}
  if cfg is not None and c[0] == cfg.num_tokens and len(removed) == 1 and min(removed) > 0:
    r = removed.pop()                          # ToMe's form: the same r removed in every block
    per_block = f"r{r}"                        # (built: parsing it warned of a ToMe cap)
    if remove_per_layer(cfg, r).counts == c and len(per_block) <= len(shortest):
      return per_block
  return shortest
