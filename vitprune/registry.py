"""Registry of supported architectures, keyed by timm model name.

Each entry reproduces timm's architecture arguments and its default `pretrained_cfg`
preprocessing. `tests/fixtures/timm_registry.json` (written by timm itself) checks them.
"""
from __future__ import annotations

import difflib
import reprlib
from typing import Dict

from vitprune.config import Preprocessing, ViTConfig

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
INCEPTION = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

_WIDTHS = {  # name -> (embed_dim, depth, num_heads)
    "tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12),
    "large": (1024, 24, 16), "giant": (1536, 40, 24),
}


def _vit(name, size, patch=16, img=224, norm=IMAGENET, crop_pct=0.9, **kw) -> ViTConfig:
  dim, depth, heads = _WIDTHS[size]
  kw.setdefault("mlp_hidden", 4 * dim)
  prep = Preprocessing(input_size=img, crop_pct=crop_pct, interpolation="bicubic", **norm)
  return ViTConfig(name=name, img_size=img, patch_size=patch, embed_dim=dim, depth=depth,
                   num_heads=heads, preprocessing=prep, **kw)


def _dinov2(name, size, reg):
  extra = dict(num_reg_tokens=4, no_embed_class=True) if reg else {}
  if size == "giant":  # timm: mlp_ratio 2.66667 * 2 with SwiGLUPacked -> int(1536 * 5.33334)
    extra.update(mlp_type="swiglu", mlp_hidden=8192)
  return _vit(name, size, patch=14, img=518, crop_pct=1.0, num_classes=0, layerscale=True,
              **extra)


def _build() -> Dict[str, ViTConfig]:
  entries = []
  for size in ("tiny", "small", "base"):
    entries.append(_vit(f"deit_{size}_patch16_224", size))
    entries.append(_vit(f"deit_{size}_distilled_patch16_224", size, dist_token=True))
  for size in ("small", "base"):
    entries.append(_vit(f"deit3_{size}_patch16_224", size, no_embed_class=True,
                        layerscale=True))
  for size in ("tiny", "small", "base", "large"):
    entries.append(_vit(f"vit_{size}_patch16_224", size, norm=INCEPTION))
  entries.append(_vit("vit_base_patch32_224", "base", patch=32, norm=INCEPTION))
  for size in ("small", "base", "large", "giant"):
    entries.append(_dinov2(f"vit_{size}_patch14_dinov2", size, reg=False))
    entries.append(_dinov2(f"vit_{size}_patch14_reg4_dinov2", size, reg=True))
  # Tiny configs for tests and the embedded default: real structure, toy sizes.
  tiny = dict(embed_dim=32, depth=2, num_heads=2, mlp_hidden=64, num_classes=10,
              preprocessing=Preprocessing(input_size=32, crop_pct=1.0, **INCEPTION))
  entries.append(ViTConfig(name="test_tiny_vit", img_size=32, patch_size=8, **tiny))
  entries.append(ViTConfig(name="test_tiny_distilled", img_size=32, patch_size=8,
                           dist_token=True, **tiny))
  entries.append(ViTConfig(name="test_tiny_dinov2_reg", img_size=32, patch_size=8,
                           num_reg_tokens=2, no_embed_class=True, layerscale=True, **tiny))
  # The embedded default: sklearn's 8x8 digits upscaled to 32x32 (vitprune.digits), 4x4
  # patches -> 64 patches + cls = 65 tokens; six blocks, so the paper's default reduction at block
  # index 3 leaves two blocks after it. Trained weights: weights/vit_digits/
  # (experiments/train_digits.py).
  entries.append(ViTConfig(
      name="vit_digits", img_size=32, patch_size=4, embed_dim=64, depth=6, num_heads=4,
      mlp_hidden=128, num_classes=10,
      preprocessing=Preprocessing(input_size=32, crop_pct=1.0, interpolation="bicubic",
                                  **INCEPTION)))
  return {c.name: c for c in entries}


REGISTRY: Dict[str, ViTConfig] = _build()


class UnknownModelError(KeyError):
  """An unregistered model name; prints its message plainly (KeyError would quote it)."""

  def __str__(self) -> str:
    return str(self.args[0])


def get_config(name: str, **overrides) -> ViTConfig:
  """The config registered under `name` (a timm model name), with optional field overrides.

  Raises `UnknownModelError` (a KeyError) naming the closest registered names when `name` is
  unknown.
  """
  if not isinstance(name, str):     # (None: a TypeError from difflib; a list: unhashable)
    raise TypeError(f"model name must be a str, e.g. 'deit_small_patch16_224', got "
                    f"{type(name).__name__} {reprlib.repr(name)}")
  if name not in REGISTRY:
    close = difflib.get_close_matches(name, REGISTRY.keys(), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}.{hint} Known models: "
                            f"{', '.join(sorted(REGISTRY))}")
  cfg = REGISTRY[name]
  return cfg.replace(**overrides) if overrides else cfg


def list_models() -> list:
  return sorted(REGISTRY)
