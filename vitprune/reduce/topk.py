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


_scores = common.cls_scores("TopK")  # [B, P] head-mean class-token attention


@dataclasses.dataclass(frozen=True)
class TopK(common.AttentionReducer):
  name = "topk"
  needs_class_token = True

  def select(self, stats: AttentionStats, *, num_keep: int, num_prefix: int) -> jax.Array:
    """[B, num_keep - num_prefix] kept patch indices (sorted)."""
    return common.top_k_sorted(_scores(stats, num_prefix), num_keep - num_prefix)

  def reduce(self, x: jax.Array, size: Optional[jax.Array], stats: Optional[AttentionStats],
             *, num_keep: int, num_prefix: int, layer: int
             ) -> Tuple[jax.Array, Optional[jax.Array]]:
    """x [B, N, C] -> ([B, num_keep, C]: prefix then the kept patches; None)."""
    return common.prune_by_score("TopK", x, stats, _scores, num_keep=num_keep,
                                 num_prefix=num_prefix), None
