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

from vitprune.config import is_option_kind
from vitprune.reduce import common
from vitprune.reduce.base import AttentionStats


_scores = common.cls_scores("EViT")  # [B, P] attentiveness: head-mean class-token attention


@dataclasses.dataclass(frozen=True)
class EViT(common.AttentionReducer):
  normalize: bool = False
  name = "evit"
  needs_class_token = True

  def __post_init__(self):      # ("False" ran as True: a non-empty string)
    if not is_option_kind(self.normalize, "bool"):
      raise ValueError(f"EViT normalize must be True or False, got {self.normalize!r}")
    object.__setattr__(self, "normalize", bool(self.normalize))    # (np.True_ as True)

  def select(self, stats: AttentionStats, *, num_keep: int, num_prefix: int) -> jax.Array:
    """[B, num_keep - num_prefix - 1] kept patch indices (sorted)."""
    return common.top_k_sorted(_scores(stats, num_prefix), num_keep - num_prefix - 1)

  def _fuse(self, patches: jax.Array, dropped: jax.Array, attn: jax.Array) -> jax.Array:
    """The fused token [B, 1, C]: attention-weighted sum (or mean) of the inattentive patches."""
    return common.weighted_fill(patches, dropped * attn, normalize=self.normalize)

  def reduce(self, x: jax.Array, size: Optional[jax.Array], stats: Optional[AttentionStats],
             *, num_keep: int, num_prefix: int, layer: int
             ) -> Tuple[jax.Array, Optional[jax.Array]]:
    """x [B, N, C] -> ([B, num_keep, C]: prefix, kept patches, fused token; None)."""
    return common.prune_by_score("EViT", x, stats, _scores, num_keep=num_keep,
                                 num_prefix=num_prefix, fill=self._fuse), None
