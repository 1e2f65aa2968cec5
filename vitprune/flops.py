"""Estimated work of one unpruned forward (a multiply-add counts 2 FLOP); needs no jax.

Counts the patch embedding, the attention and MLP matmuls of every block and the head(s); norms,
softmax and activations are left out (a few percent). `vitprune.iree_build` uses it to choose a
CPU profile and driver (`vitprune.edge.targets.cpu_profile`).
"""
from __future__ import annotations

from vitprune.config import ViTConfig, check_config_type
from vitprune.schedule import as_positive_int


def block_flop(cfg: ViTConfig, tokens: int) -> int:
  """One block on `tokens` tokens: qkv, q.k, attn.v, proj, fc1, fc2."""
  c, n = check_config_type(cfg).embed_dim, as_positive_int(tokens, "tokens")
  fc2_in = cfg.mlp_hidden // 2 if cfg.mlp_type == "swiglu" else cfg.mlp_hidden
  return 2 * n * (4 * c * c + c * cfg.mlp_hidden + fc2_in * c) + 4 * n * n * c


def forward_gflop(cfg: ViTConfig, batch_size: int = 1) -> float:
  """GFLOP of `forward` on `batch_size` images with every token kept."""
  check_config_type(cfg)
  batch_size = as_positive_int(batch_size, "batch_size")
  patches = cfg.grid_size ** 2
  embed = 2 * patches * cfg.patch_size ** 2 * cfg.in_chans * cfg.embed_dim
  head = 2 * cfg.embed_dim * cfg.num_classes * (2 if cfg.dist_token else 1)   # (+ head_dist)
  total = embed + cfg.depth * block_flop(cfg, cfg.num_tokens) + head
  return batch_size * total / 1e9
