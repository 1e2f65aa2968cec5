"""Static token schedules: how many tokens each block of a ViT processes.

A `Schedule` is hashable, so it is a static argument of `jax.jit`: every schedule is its own
fixed-shape XLA graph.

`counts[0]` is the number of tokens entering block 0 (prefix tokens included); fewer than the
model's full token count means tokens are dropped right after the embedding. `counts[l + 1]` is the
number of tokens leaving block `l`: when it is smaller than `counts[l]`, block `l` reduces its tokens
between the attention residual and the MLP. So `len(counts) == depth + 1`.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from vitprune.config import ViTConfig


@dataclasses.dataclass(frozen=True)
class Schedule:
  counts: Tuple[int, ...]

  def __post_init__(self):
    object.__setattr__(self, "counts", tuple(int(c) for c in self.counts))

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

  @property
  def reduction_layers(self) -> Tuple[int, ...]:
    return tuple(l for l in range(self.depth) if self.reduces_at(l))


def full_schedule(cfg: ViTConfig) -> Schedule:
  """No reduction: every block sees all `cfg.num_tokens` tokens."""
  return Schedule((cfg.num_tokens,) * (cfg.depth + 1))


def check_schedule(cfg: ViTConfig, schedule: Optional[Schedule]) -> Schedule:
  """Validates `schedule` against `cfg` (None means no reduction); raises ValueError."""
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
  floor = cfg.num_prefix_tokens + 1
  for l, n in enumerate(c):
    if n < floor:
      raise ValueError(f"schedule count {n} at position {l} is below prefix tokens + 1 = "
                       f"{floor}: at least one patch token must remain")
  for l in range(len(c) - 1):
    if c[l + 1] > c[l]:
      raise ValueError(f"schedule counts must never increase: block {l} receives {c[l]} "
                       f"tokens and would emit {c[l + 1]}")
  return schedule
