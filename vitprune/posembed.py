"""Resampling of absolute position embeddings to a new patch grid, numerically like timm.

timm (`timm.layers.resample_abs_pos_embed`) keeps the prefix tokens' entries and resizes the patch
grid with `torch.nn.functional.interpolate(..., align_corners=False)`: bicubic with
`antialias=True` when loading timm/DINOv2 checkpoints at a new size, bilinear without antialias
when loading big_vision `.npz` files. Both are separable linear maps, so here each axis is one
explicit weight matrix `[out, in]` computed in float64 exactly as PyTorch computes its taps:

* antialias=True (PyTorch's `_upsample_*_aa`, the PIL algorithm): a filter of support
  `size/2 * max(in/out, 1)` centred at `(i + 0.5) * in/out`, evaluated at the input centres, and
  normalised over the taps inside the image. Bicubic uses Keys' kernel with a = -0.5.
* antialias=False: 2 (bilinear) or 4 (bicubic, a = -0.75) taps around
  `(i + 0.5) * in/out - 0.5`, with indices clamped to the border (bilinear also clamps the
  source coordinate at 0), as in `upsample_bilinear2d` / `upsample_bicubic2d`.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from vitprune.config import check_switch, is_float_dtype

INTERPOLATIONS = ("bicubic", "bilinear")


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
  """Keys' cubic convolution kernel."""
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = (((x - 5) * x + 8) * x - 4) * a
  return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
  return np.maximum(0.0, 1.0 - np.abs(x))


def _check(in_size: int, out_size: int, interpolation: str):
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
  if not all(_is_int(n) and n >= 1 for n in (in_size, out_size)):
    raise ValueError(f"sizes must be positive integers, got in_size={in_size!r}, "
                     f"out_size={out_size!r}")


def _is_int(n) -> bool:
  return isinstance(n, (int, np.integer)) and not isinstance(n, bool)


def _grid_size(name: str, size) -> Tuple[int, int]:
  """`size` as (height, width) of positive ints, else ValueError naming `name` ((3,) was an
  IndexError, (7.5, 7.5) a TypeError naming nothing, (3, 3, 3) read as (3, 3))."""
  size = tuple(size) if isinstance(size, (tuple, list)) else size
  if not (isinstance(size, tuple) and len(size) == 2 and all(_is_int(n) and n >= 1
                                                                  for n in size)):
    raise ValueError(f"{name} must be (height, width), two integers >= 1, got {size!r}")
  return int(size[0]), int(size[1])


def resize_matrix(in_size: int, out_size: int, interpolation: str = "bicubic",
                  antialias: bool = True) -> np.ndarray:
  """The `[out_size, in_size]` float64 matrix of 1-D `F.interpolate(align_corners=False)`."""
  _check(in_size, out_size, interpolation)
  scale = in_size / out_size
  w = np.zeros((out_size, in_size))
  if antialias:
    half = 2.0 if interpolation == "bicubic" else 1.0  # interp_size / 2
    support = half * scale if scale >= 1.0 else half
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    for i in range(out_size):
      center = scale * (i + 0.5)
      xmin = max(int(center - support + 0.5), 0)
      xmax = min(int(center + support + 0.5), in_size)
      taps = (np.arange(xmin, xmax) - center + 0.5) * invscale
      k = _cubic(taps, -0.5) if interpolation == "bicubic" else _triangle(taps)
      total = k.sum()
      w[i, xmin:xmax] = k / total if total != 0.0 else k
    return w
  for i in range(out_size):
    src = (i + 0.5) * scale - 0.5
    if interpolation == "bilinear":
      src = max(src, 0.0)
      x0 = int(math.floor(src))
      lam = src - x0
      w[i, min(x0, in_size - 1)] += 1.0 - lam
      w[i, min(x0 + 1, in_size - 1)] += lam
    else:
      x0 = int(math.floor(src))
      t = src - x0
      k = _cubic(np.array([t + 1.0, t, 1.0 - t, 2.0 - t]), -0.75)
      for j, kj in zip(range(x0 - 1, x0 + 3), k):
        w[i, min(max(j, 0), in_size - 1)] += kj
  return w


def resize_grid(grid: np.ndarray, new_size: Tuple[int, int], interpolation: str = "bicubic",
                antialias: bool = True) -> np.ndarray:
  """grid [H, W, C] -> [H', W', C] (separable; float64 accumulation, input dtype out)."""
  if grid.ndim != 3:
    raise ValueError(f"expected a grid [H, W, C], got shape {grid.shape}")
  wh = resize_matrix(grid.shape[0], new_size[0], interpolation, antialias)
  ww = resize_matrix(grid.shape[1], new_size[1], interpolation, antialias)
  # (one axis at a time: the three-operand loop took 2.5 s for a 14x14 grid to 128x128)
  out = np.einsum("ph,hwc,qw->pqc", wh, grid.astype(np.float64), ww, optimize=True)
  return out.astype(grid.dtype)


def resample_abs_pos_embed(posemb: np.ndarray, new_size: Tuple[int, int],
                           old_size: Optional[Tuple[int, int]] = None,
                           num_prefix_tokens: int = 1, interpolation: str = "bicubic",
                           antialias: bool = True) -> np.ndarray:
  """posemb [1, prefix + H*W, C] -> [1, prefix + H'*W', C], prefix entries kept unchanged.

  Like timm's function of the same name: `old_size` defaults to a square grid, and nothing is
  resampled when the grid already has `new_size`.
  """
  posemb = np.asarray(posemb)
  if posemb.ndim != 3 or posemb.shape[0] != 1:
    raise ValueError(f"pos_embed must be [1, L, C], got shape {posemb.shape}")
  if not is_float_dtype(posemb.dtype):     # (an int one came back truncated; bfloat16 is fine)
    raise ValueError(f"pos_embed must be floating point, got {posemb.dtype}")
  if not (_is_int(num_prefix_tokens) and 0 <= num_prefix_tokens <= posemb.shape[1]):
    raise ValueError(f"num_prefix_tokens must be an int in [0, {posemb.shape[1]}] (the "
                     f"pos_embed's entries), got {num_prefix_tokens!r}")
  n = posemb.shape[1] - num_prefix_tokens
  if old_size is None:
    side = math.isqrt(max(n, 0))
    if side * side != n or n == 0:
      raise ValueError(f"pos_embed has {posemb.shape[1]} entries; minus {num_prefix_tokens} "
                       f"prefix tokens that is {n}, not a square patch grid")
    old_size = (side, side)
  old_size, new_size = _grid_size("old_size", old_size), _grid_size("new_size", new_size)
  check_switch("antialias", antialias)     # ('no' is truthy: it antialiased)
  if old_size[0] * old_size[1] != n:
    raise ValueError(f"pos_embed has {n} patch entries, not old_size {old_size}")
  if old_size == new_size:
    return posemb
  prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
  grid = resize_grid(grid.reshape(old_size + (-1,)), new_size, interpolation, antialias)
  return np.concatenate([prefix, grid.reshape(1, -1, posemb.shape[-1])], axis=1)
