"""Random token dropping: a fixed random subset of patch tokens, the same for every image.

The subset is drawn at trace time with NumPy, so it is a compile-time constant gather: no PRNG
in the graph, no dependence on the batch. Kept tokens stay in their original order; prefix
tokens stay first. Used for the reference accuracy of a token count (`reduce_embedding`), and
usable mid-block.

`nested=True` (default): one fixed random elimination order per seed
(`common.nested_random_subset`): whatever the layer, going from p patches to k keeps the same
subset, and reductions compose (p -> m -> k keeps what p -> k keeps). So the tokens a block
sees under a multi-layer schedule are exactly those a single reduction to its count leaves,
and single-layer sensitivities predict multi-layer schedules far better than with per-layer
draws (benchmarks.accuracy_combination; benchmarks/RESULTS.md). Over seeds each kept set is
still uniformly random. `nested=False`: each block draws its own subset of the tokens it gets
(`common.static_random_subset` from `(seed, stream)`, stream 0: right after the embedding,
l + 1: block l), what random drop did before `nested` existed (records of version 1 mean it).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vitprune.reduce import common
from vitprune.reduce.base import AttentionStats


@dataclasses.dataclass(frozen=True)
class RandomDrop:
  seed: int = 0
  nested: bool = True
  name = "random"
  needs_attention = False
  tracks_size = False
  supports_embedding = True

  def __post_init__(self):
    if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
        or self.seed < 0:
      raise ValueError(f"RandomDrop seed must be a non-negative int, got {self.seed!r}")
    if not isinstance(self.nested, (bool, np.bool_)):
      raise ValueError(f"RandomDrop nested must be a bool, got {self.nested!r}")
    # numpy scalars as Python's: seed=np.int64(3) made a reducer whose repr, recorded by
    # run_prune and in a manifest, read 'RandomDrop(seed=np.int64(3), ...)'
    object.__setattr__(self, "seed", int(self.seed))
    object.__setattr__(self, "nested", bool(self.nested))

  @property
  def layer_dependent(self) -> bool:
    """Whether the subset depends on the layer: only when each layer draws its own."""
    return not self.nested

  def max_remove(self, num_tokens: int, num_prefix: int) -> int:
    return common.leave_one_patch(num_tokens, num_prefix)

  def kept_indices(self, num_patches: int, num_keep_patches: int, stream: int) -> np.ndarray:
    """Sorted [num_keep_patches] patch indices kept out of `num_patches` (NumPy constant);
    `stream` (0: embedding, l + 1: block l) matters only when not nested."""
    if self.nested:
      return common.nested_random_subset(self.seed, num_patches, num_keep_patches)
    return common.static_random_subset(self.seed, stream, num_patches, num_keep_patches)

  def _drop(self, x: jax.Array, num_keep: int, num_prefix: int, stream: int) -> jax.Array:
    common.check_reduce_args("RandomDrop", x, num_keep=num_keep, num_prefix=num_prefix)
    idx = self.kept_indices(x.shape[1] - num_prefix, num_keep - num_prefix, stream)
    return jnp.concatenate([x[:, :num_prefix], x[:, num_prefix + idx]], axis=1)

  def reduce(self, x: jax.Array, size: Optional[jax.Array], stats: Optional[AttentionStats],
             *, num_keep: int, num_prefix: int, layer: int
             ) -> Tuple[jax.Array, Optional[jax.Array]]:
    """x [B, N, C] -> ([B, num_keep, C], None); the subset depends on (seed, N, num_keep) and,
    when not nested, the layer, never on the images."""
    return self._drop(x, num_keep, num_prefix, layer + 1), None

  def reduce_embedding(self, x: jax.Array, *, num_keep: int, num_prefix: int) -> jax.Array:
    """x [B, N, C] -> [B, num_keep, C] right after the embedding."""
    return self._drop(x, num_keep, num_prefix, 0)
