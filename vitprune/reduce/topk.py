"""Top-K: keep the patch tokens the class token attends to most (head-mean attention).

No fill token: `num_keep - num_prefix` patch tokens are kept, in their original order.
Ties: the lower token index wins.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax

from vitprune.reduce import common
from vitprune.reduce.base import AttentionStats


@dataclasses.dataclass(frozen=True)
class TopK:
  name = "topk"
  needs_attention = True
  tracks_size = False
  supports_embedding = False

  def max_remove(self, num_tokens: int, num_prefix: int) -> int:
    return max(0, num_tokens - num_prefix - 1)

  def select(self, stats: AttentionStats, *, num_keep: int, num_prefix: int) -> jax.Array:
    """[B, num_keep - num_prefix] kept patch indices (sorted)."""
    return common.top_k_sorted(common.cls_attention(stats.probs, num_prefix, "TopK"),
                               num_keep - num_prefix)

  def reduce(self, x: jax.Array, size: Optional[jax.Array], stats: Optional[AttentionStats],
             *, num_keep: int, num_prefix: int, layer: int
             ) -> Tuple[jax.Array, Optional[jax.Array]]:
    """x [B, N, C] -> ([B, num_keep, C]: prefix then the kept patches; None)."""
    common.check_reduce_args("TopK", x, num_keep=num_keep, num_prefix=num_prefix)
    stats = common.require_stats("TopK", stats, x.shape[1])
    scores = common.cls_attention(stats.probs, num_prefix, "TopK")
    out, _, _ = common.keep_patches(x, scores, num_keep - num_prefix, num_prefix)
    return out, None

  def reduce_embedding(self, x: jax.Array, *, num_keep: int, num_prefix: int) -> jax.Array:
    raise ValueError("TopK needs attention and cannot drop tokens right after the embedding; "
                     "use the 'random' method for that")
