"""Estimated work of one forward, unpruned or with a schedule's token counts (a multiply-add
counts 2 FLOP); needs no jax.

Counts the patch embedding, the attention and MLP matmuls of every block and the head(s); norms,
softmax and activations are left out (a few percent). `vitprune.iree_build` uses it to choose a
CPU profile and driver (`vitprune.edge.targets.cpu_profile`).
"""
from __future__ import annotations

from typing import Optional, Sequence

from vitprune.config import ViTConfig, check_config_type
from vitprune.schedule import Schedule, as_positive_int, check_schedule


def _tokens(cfg: ViTConfig, tokens: int) -> int:
  """`tokens` when a block of `cfg` can hold that many (1 .. num_tokens), else ValueError (ten
  times the model's tokens got a figure)."""
  check_config_type(cfg)
  n = as_positive_int(tokens, "tokens")
  if n > cfg.num_tokens:
    raise ValueError(f"tokens {n} is above the {cfg.num_tokens} tokens of {cfg.name}")
  return n


def attention_flop(cfg: ViTConfig, tokens: int) -> int:
  """The attention half of a block on `tokens` tokens: qkv, q.k, attn.v, proj."""
  n = _tokens(cfg, tokens)
  c = cfg.embed_dim
  return 8 * n * c * c + 4 * n * n * c


def mlp_flop(cfg: ViTConfig, tokens: int) -> int:
  """The MLP half of a block on `tokens` tokens: fc1, fc2."""
  n = _tokens(cfg, tokens)
  c = cfg.embed_dim
  fc2_in = cfg.mlp_hidden // 2 if cfg.mlp_type == "swiglu" else cfg.mlp_hidden
  return 2 * n * (c * cfg.mlp_hidden + fc2_in * c)


def block_flop(cfg: ViTConfig, tokens: int) -> int:
  """One block on `tokens` tokens: qkv, q.k, attn.v, proj, fc1, fc2."""
  return attention_flop(cfg, tokens) + mlp_flop(cfg, tokens)


def forward_gflop(cfg: ViTConfig, batch_size: int = 1,
                  counts: Optional[Sequence[int]] = None) -> float:
  """GFLOP of `forward` on `batch_size` images: with every token kept, or with a schedule's
  `counts` (tokens entering block 0, then leaving each block: `Schedule.counts`, or the
  `Schedule` itself), where a reducing block attends over the tokens entering it and runs its
  MLP on those leaving it (every method here reduces between attention and MLP). Counts no
  graph can run (increasing, above the model's tokens, below prefix + 1) are refused as
  `check_schedule` refuses them."""
  check_config_type(cfg)
  batch_size = as_positive_int(batch_size, "batch_size")
  if counts is None:
    counts = (cfg.num_tokens,) * (cfg.depth + 1)
  counts = tuple(counts.counts if isinstance(counts, Schedule) else counts)
  if len(counts) != cfg.depth + 1:
    raise ValueError(f"counts {list(counts)} must give {cfg.depth + 1} token counts (entering "
                     f"block 0, then leaving each of the {cfg.depth} blocks)")
  counts = check_schedule(cfg, Schedule(counts)).counts
  patches = cfg.grid_size ** 2
  embed = 2 * patches * cfg.patch_size ** 2 * cfg.in_chans * cfg.embed_dim
  head = 2 * cfg.embed_dim * cfg.num_classes * (2 if cfg.dist_token else 1)   # (+ head_dist)
  blocks = sum(attention_flop(cfg, counts[l]) + mlp_flop(cfg, counts[l + 1])
               for l in range(cfg.depth))
  return batch_size * (embed + blocks + head) / 1e9
