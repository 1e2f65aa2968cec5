"""Per-block additive latency predictor.

Every block of a ViT has the same shapes at a given token count, so one table of single-block
latencies B(n) serves all layers. The latency of any static schedule is predicted as

  pred(schedule) = embed + sum_l B(counts[l]) + sum_{l reduces} R(counts[l]) + head(counts[-1])
                   - (depth + 1) * overhead

where `counts[l]` are the tokens entering block l, R is the (optional) extra cost of a reducing
block over a plain one at the same input count, and head covers the final norm, pooling and
classifier at the final count (a float when it was measured at one count only). Tokens dropped
right after the embedding are part of `counts[0]` and cost (next to) nothing.

`overhead` is the fixed cost of one call of a compiled executable (dispatch + synchronisation),
measured on a trivial graph. Each of the depth + 2 separately timed parts (embed, blocks, head)
contains it once, while the whole forward is one call and pays it once: without the correction
the sum over-predicts by (depth + 1) * overhead, which dominates for small models at batch 1.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np

from vitprune.schedule import Schedule, embed_counts

Table = Mapping[int, float]


@dataclasses.dataclass(frozen=True)
class BlockTable:
  """Seconds: embed, block[n], head[n] (or one float), reduce[n] (extra cost when reducing), and
  the per-call overhead contained in each separately timed part."""
  embed_s: float
  block_s: Table
  head_s: Union[float, Table] = 0.0
  reduce_s: Optional[Table] = None
  overhead_s: float = 0.0

  def __post_init__(self):
    if not self.block_s:
      raise ValueError("BlockTable needs at least one block latency")
    for name, t in (("block_s", self.block_s), ("head_s", self.head_s),
                    ("reduce_s", self.reduce_s)):
      values = t.values() if isinstance(t, Mapping) else ([] if t is None else [t])
      if any(not np.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"{name} latencies must be finite and >= 0")
    if not (np.isfinite(self.overhead_s) and self.overhead_s >= 0):
      raise ValueError(f"overhead_s must be finite and >= 0, got {self.overhead_s}")


def _lookup(table: Table, n: int, what: str, interpolate: bool) -> float:
  if n in table:
    return float(table[n])
  keys = sorted(table)
  if interpolate and keys[0] <= n <= keys[-1]:
    return float(np.interp(n, keys, [table[k] for k in keys]))
  raise KeyError(f"no {what} latency measured at {n} tokens (measured: {keys[0]}..{keys[-1]}, "
                 f"{len(keys)} counts); measure it or pass interpolate=True for counts inside "
                 f"the measured range")


def predict(table: BlockTable, schedule: Schedule, *, interpolate: bool = False) -> float:
  """Predicted seconds of the whole forward under `schedule` (see the module docstring)."""
  c = schedule.counts
  total = float(table.embed_s)
  for layer in range(schedule.depth):
    total += _lookup(table.block_s, c[layer], "block", interpolate)
    if schedule.reduces_at(layer) and table.reduce_s is not None:
      total += _lookup(table.reduce_s, c[layer], "reduction", interpolate)
  if isinstance(table.head_s, Mapping):
    total += _lookup(table.head_s, c[-1], "head", interpolate)
  else:
    total += float(table.head_s)
  return total - (schedule.depth + 1) * float(table.overhead_s)


def predict_curve(table: BlockTable, depth: int, tokens: Sequence[int], *,
                  interpolate: bool = False) -> Dict[int, float]:
  """Predicted whole-model L(n) for constant schedules (n tokens from the embedding on)."""
  return {int(n): predict(table, Schedule(embed_counts(n, depth)), interpolate=interpolate)
          for n in tokens}


def relative_error(predicted: float, measured: float) -> float:
  """(predicted - measured) / measured."""
  if not measured > 0:
    raise ValueError(f"measured latency must be > 0, got {measured}")
  return (predicted - measured) / measured
