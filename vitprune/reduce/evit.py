"""EViT (Liang et al., ICLR 2022): keep attentive tokens, fuse the inattentive ones.

Attentiveness is the class token's head-mean attention. The top `num_keep - num_prefix - 1` patch
tokens are kept in their original order and the others are fused into one token appended last:
by default `sum_j a_j x_j` over the inattentive tokens j as in the paper's Eq. 3 and the official
code (the weights are not renormalised); `normalize=True` divides by `sum_j a_j` instead.
Ties: the lower token index wins.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from vitprune.reduce import common
from vitprune.reduce.base import AttentionStats


@dataclasses.dataclass(frozen=True)
class EViT:
  normalize: bool = False
  name = "evit"
  needs_attention = True
  tracks_size = False
  supports_embedding = False

  def max_remove(self, num_tokens: int, num_prefix: int) -> int:
    return max(0, num_tokens - num_prefix - 1)

  def select(self, stats: AttentionStats, *, num_keep: int, num_prefix: int) -> jax.Array:
    """[B, num_keep - num_prefix - 1] kept patch indices (sorted)."""
    return common.top_k_sorted(common.cls_attention(stats.probs, num_prefix, "EViT"),
                               num_keep - num_prefix - 1)

  def reduce(self, x: jax.Array, size: Optional[jax.Array], stats: Optional[AttentionStats],
             *, num_keep: int, num_prefix: int, layer: int
             ) -> Tuple[jax.Array, Optional[jax.Array]]:
    """x [B, N, C] -> ([B, num_keep, C]: prefix, kept patches, fused token; None)."""
    common.check_reduce_args("EViT", x, num_keep=num_keep, num_prefix=num_prefix, fill=1)
    stats = common.require_stats("EViT", stats, x.shape[1])
    attn = common.cls_attention(stats.probs, num_prefix, "EViT")
    kept_x, _, dropped = common.keep_patches(x, attn, num_keep - num_prefix - 1, num_prefix)
    fused = common.weighted_fill(x[:, num_prefix:], dropped * attn, normalize=self.normalize)
    return jnp.concatenate([kept_x, fused], axis=1), None

  def reduce_embedding(self, x: jax.Array, *, num_keep: int, num_prefix: int) -> jax.Array:
    raise ValueError("EViT needs attention and cannot drop tokens right after the embedding; "
                     "use the 'random' method for that")
