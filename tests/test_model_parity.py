"""Pure-model invariants of vitprune.model (numerical parity with timm is in test_convert.py)."""
import numpy as np
import pytest

from vitprune.model import forward, init_params, jitted_forward
from vitprune.registry import get_config


def _images(cfg, b, seed=0):
  return np.random.default_rng(seed).standard_normal(
      (b, cfg.img_size, cfg.img_size, cfg.in_chans)).astype(np.float32)


def test_jitted_forward_does_not_recompile():
  cfg = get_config("test_tiny_distilled").replace(num_classes=7)  # a config no other test uses
  params = init_params(cfg, 0)
  x = _images(cfg, 2)
  before = jitted_forward._cache_size()
  a = jitted_forward(params, x, cfg=cfg)
  after_first = jitted_forward._cache_size()
  b = jitted_forward(params, _images(cfg, 2, seed=1), cfg=cfg)
  assert after_first == before + 1
  assert jitted_forward._cache_size() == after_first
  assert a.shape == b.shape == (2, 7) and not np.allclose(a, b)


@pytest.mark.parametrize("name", ["test_tiny_vit", "test_tiny_dinov2_reg"])
def test_bfloat16_close_to_float32(name):
  cfg = get_config(name)
  params = init_params(cfg, 1)
  x = _images(cfg, 2)
  f32 = np.asarray(jitted_forward(params, x, cfg=cfg))
  bf16 = np.asarray(jitted_forward(params, x, cfg=cfg, dtype="bfloat16"))
  assert bf16.dtype == np.float32 and bf16.shape == f32.shape
  assert np.abs(bf16 - f32).max() <= 0.05 * np.abs(f32).max() + 1e-3
  assert not np.array_equal(bf16, f32)  # the bfloat16 path really ran in lower precision


@pytest.mark.parametrize("name", ["test_tiny_vit", "test_tiny_distilled", "test_tiny_dinov2_reg"])
def test_batch_independence(name):
  cfg = get_config(name)
  params = init_params(cfg, 2)
  x = _images(cfg, 3)
  batch = np.asarray(jitted_forward(params, x, cfg=cfg))
  alone = np.asarray(jitted_forward(params, x[1:2], cfg=cfg))
  np.testing.assert_allclose(alone[0], batch[1], atol=1e-5)
  feats = np.asarray(jitted_forward(params, x, cfg=cfg, features=True))
  assert feats.shape == (3, cfg.num_tokens, cfg.embed_dim)


def test_wrong_input_shape_and_options():
  cfg = get_config("test_tiny_vit")
  params = init_params(cfg, 0)
  with pytest.raises(ValueError, match=r"expects images \[B, 32, 32, 3\] \(NHWC\), got shape "
                     r"\(2, 3, 32, 32\)"):
    forward(params, np.zeros((2, 3, 32, 32), np.float32), cfg=cfg)
  with pytest.raises(ValueError, match=r"got shape \(32, 32, 3\)"):
    forward(params, np.zeros((32, 32, 3), np.float32), cfg=cfg)
  with pytest.raises(ValueError, match="dtype must be one of"):
    forward(params, _images(cfg, 1), cfg=cfg, dtype="float16")
  with pytest.raises(ValueError, match="precision must be one of"):
    forward(params, _images(cfg, 1), cfg=cfg, precision="max")
