"""Keep-first: the first `num_keep` tokens (prefix first) via a static slice.

Only for latency measurement (the profiler's `--reducer=keep_first`): which tokens are kept does
not change a graph's shapes or cost, and a slice is the cheapest drop there is. Not registered in
`make_reducer` (it is no pruning method).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax

from vitprune.reduce import common
from vitprune.reduce.base import AttentionStats


@dataclasses.dataclass(frozen=True)
class KeepFirst:
  """[B, N, C] -> [B, num_keep, C]: the first tokens, after the embedding or in any block."""
  name = "keep_first"
  needs_attention = False
  tracks_size = False
  supports_embedding = True
  layer_dependent = False

  def max_remove(self, num_tokens: int, num_prefix: int) -> int:
    return common.leave_one_patch(num_tokens, num_prefix)

  def reduce(self, x: jax.Array, size: Optional[jax.Array], stats: Optional[AttentionStats],
             *, num_keep: int, num_prefix: int, layer: int
             ) -> Tuple[jax.Array, Optional[jax.Array]]:
    """x [B, N, C], size [B, N] or None -> ([B, num_keep, C], [B, num_keep] or None)."""
    # (unchecked, a slice kept 1 of 2 prefix tokens, or 5 tokens when 9 were asked)
    common.check_reduce_args("KeepFirst", x, num_keep=num_keep, num_prefix=num_prefix)
    return x[:, :num_keep], None if size is None else size[:, :num_keep]

  def reduce_embedding(self, x: jax.Array, *, num_keep: int, num_prefix: int) -> jax.Array:
    """x [B, N, C] -> [B, num_keep, C]."""
    common.check_reduce_args("KeepFirst", x, num_keep=num_keep, num_prefix=num_prefix)
    return x[:, :num_keep]
