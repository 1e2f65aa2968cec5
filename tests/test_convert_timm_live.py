"""Live parity against timm itself (only where torch + timm are importable, e.g. /work/timmenv):

  /work/timmenv/bin/python -m pytest tests/test_convert_timm_live.py
"""
import os

os.environ.setdefault("TIMM_FUSED_ATTN", "0")

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (live timm comparison "
                            "runs in /work/timmenv only)")
timm = pytest.importorskip("timm", reason="timm is not installed (live timm comparison runs in "
                           "/work/timmenv only)")
from timm.layers import resample_abs_pos_embed as timm_resample  # noqa: E402
from timm.models.vision_transformer import checkpoint_filter_fn  # noqa: E402

from vitprune.convert import convert_state_dict, load_checkpoint  # noqa: E402
from vitprune.model import jitted_forward, jitted_forward_features  # noqa: E402
from vitprune.posembed import resample_abs_pos_embed  # noqa: E402
from vitprune.registry import get_config  # noqa: E402

TOL = 1e-4
ARCHS = [  # (timm name, shrunken create_model kwargs)
    ("deit_small_patch16_224", dict(img_size=32, embed_dim=24, depth=2, num_heads=3,
                                    num_classes=5)),
    ("deit_base_distilled_patch16_224", dict(img_size=32, embed_dim=16, depth=1, num_heads=2,
                                             num_classes=4)),
    ("deit3_base_patch16_224", dict(img_size=48, embed_dim=16, depth=2, num_heads=2,
                                    num_classes=3)),
    ("vit_small_patch16_224", dict(img_size=32, embed_dim=16, depth=2, num_heads=2,
                                   num_classes=6, global_pool="avg")),
    ("vit_base_patch14_reg4_dinov2", dict(img_size=42, embed_dim=16, depth=2, num_heads=2)),
    ("vit_giant_patch14_reg4_dinov2", dict(img_size=28, embed_dim=12, depth=2, num_heads=2)),
]


def randomize(model, seed):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      mean = 1.0 if name.endswith("norm1.weight") or name.endswith("norm2.weight") or (
          "norm" in name and name.endswith("weight")) else 0.0
      p.copy_(torch.randn(p.shape, generator=g) * 0.2 + mean)


def our_config(name, model):
  blk = model.blocks[0]
  return get_config(name).replace(
      img_size=model.patch_embed.img_size[0], embed_dim=model.embed_dim,
      depth=len(model.blocks), num_heads=blk.attn.num_heads,
      mlp_hidden=blk.mlp.fc1.out_features, num_classes=model.num_classes,
      global_pool=model.global_pool)


@pytest.mark.parametrize("name,kwargs", ARCHS, ids=[a[0] for a in ARCHS])
def test_random_timm_model_matches(name, kwargs):
  timm.layers.set_fused_attn(False)
  model = timm.create_model(name, pretrained=False, **kwargs).float().eval()
  randomize(model, 0)
  cfg = our_config(name, model)
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  params = convert_state_dict(cfg, sd)
  x = torch.randn(2, 3, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    ref, ref_feats = model(x).numpy(), model.forward_features(x).numpy()
  xn = x.numpy().transpose(0, 2, 3, 1)
  out = np.asarray(jitted_forward(params, xn, cfg=cfg))
  feats = np.asarray(jitted_forward_features(params, xn, cfg=cfg))
  assert np.abs(out - ref).max() <= TOL
  assert np.abs(feats - ref_feats).max() <= TOL


@pytest.mark.parametrize("interp,aa", [("bicubic", True), ("bicubic", False),
                                       ("bilinear", True), ("bilinear", False)])
@pytest.mark.parametrize("old,new", [(37, 16), (5, 4), (4, 9), (7, 14)])
def test_resample_matches_timm(interp, aa, old, new):
  pe = torch.randn(1, 1 + old * old, 8, generator=torch.Generator().manual_seed(old * new))
  ref = timm_resample(pe, (new, new), num_prefix_tokens=1, interpolation=interp,
                      antialias=aa).numpy()
  ours = resample_abs_pos_embed(pe.numpy(), (new, new), num_prefix_tokens=1,
                                interpolation=interp, antialias=aa)
  assert np.abs(ours - ref).max() <= 2e-6


def test_resized_dinov2_matches_checkpoint_filter_fn():
  timm.layers.set_fused_attn(False)
  name, kw = "vit_small_patch14_dinov2", dict(embed_dim=16, depth=2, num_heads=2)
  src = timm.create_model(name, pretrained=False, img_size=70, **kw).float().eval()
  randomize(src, 3)
  dst = timm.create_model(name, pretrained=False, img_size=98, **kw).float().eval()
  dst.load_state_dict(checkpoint_filter_fn(dict(src.state_dict()), dst))
  cfg = our_config(name, dst)
  params = convert_state_dict(cfg, {k: v.numpy() for k, v in src.state_dict().items()})
  x = torch.randn(1, 3, 98, 98, generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    ref = dst(x).numpy()
  out = np.asarray(jitted_forward(params, x.numpy().transpose(0, 2, 3, 1), cfg=cfg))
  assert np.abs(out - ref).max() <= TOL


def test_pth_loader_with_wrappers(tmp_path):
  model = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32,
                            embed_dim=16, depth=1, num_heads=2, num_classes=3)
  sd = model.state_dict()
  torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1},
             tmp_path / "w.pth")
  got, fmt = load_checkpoint(str(tmp_path / "w.pth"))
  assert fmt == "torch" and sorted(got) == sorted(sd)
  for k in sd:
    np.testing.assert_array_equal(got[k], sd[k].numpy())
  (tmp_path / "bad.pth").write_bytes(b"not a zip")
  with pytest.raises(ValueError, match=r"bad\.pth: not a readable PyTorch checkpoint"):
    load_checkpoint(str(tmp_path / "bad.pth"))
