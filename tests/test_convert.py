"""timm checkpoint conversion: golden parity with timm, formats, resampling and every error path."""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
import zipfile

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from vitprune import checkpoint, convert, orbax_io
from vitprune.convert import (ConversionError, convert_file, convert_state_dict,
                              to_timm_state_dict)
from vitprune.digest import file_sha256
from vitprune.model import init_params, jitted_forward as forward
from vitprune.model import jitted_forward_features as forward_features
from vitprune.posembed import resample_abs_pos_embed, resize_grid, resize_matrix
from vitprune.registry import get_config

from tests.conftest import run_cli_in_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "fixtures", "golden")
MANIFEST = json.load(open(os.path.join(GOLDEN, "manifest.json")))
CASES = {c["case"]: c for c in MANIFEST["cases"]}
TOL = 1e-4               # output / features vs timm, float32 at 'highest' precision
POS_EMBED_TOL = 1e-6     # resampled pos_embed vs timm's F.interpolate(bicubic, antialias=True)


def case_config(case, img_size=None):
  """Registry config of the case's timm name with the fixture's shrunken architecture."""
  a = case["arch_fields"]
  cfg = get_config(case["timm_arch"]).replace(
      img_size=img_size or a["img_size"], embed_dim=a["embed_dim"], depth=a["depth"],
      num_heads=a["num_heads"], mlp_hidden=a["mlp_hidden"], num_classes=a["num_classes"],
      global_pool=a["global_pool"])
  # Structure the registry must already get right (only sizes were overridden above).
  assert cfg.patch_size == a["patch_size"]
  assert cfg.dist_token == a["has_dist_token"]
  assert cfg.num_reg_tokens == a["num_reg_tokens"]
  assert cfg.no_embed_class == a["no_embed_class"]
  assert cfg.layerscale == a["layerscale"]
  assert cfg.mlp_type == {"gelu": "gelu", "swiglu_packed": "swiglu"}[a["mlp_type"]]
  assert cfg.norm_eps == a["ln_eps"]
  return cfg


def golden(name):
  return os.path.join(GOLDEN, name)


def check_io(cfg, params, io_file):
  io = np.load(golden(io_file))
  x = io["input_nchw"].transpose(0, 2, 3, 1)
  out = np.asarray(forward(params, x, cfg=cfg))
  feats = np.asarray(forward_features(params, x, cfg=cfg))
  assert out.shape == io["output"].shape and feats.shape == io["features"].shape
  d_out, d_feat = np.abs(out - io["output"]).max(), np.abs(feats - io["features"]).max()
  assert d_out <= TOL, f"{io_file}: max |output - timm| = {d_out}"
  assert d_feat <= TOL, f"{io_file}: max |features - timm| = {d_feat}"
  return d_out, d_feat


STATE_DICT_CASES = [c for c in CASES if "state_dict" in CASES[c]["files"]]


@pytest.mark.parametrize("name", STATE_DICT_CASES)
def test_golden_safetensors_matches_timm(name):
  case = CASES[name]
  cfg = case_config(case)
  params, meta = convert_file(cfg, golden(case["files"]["state_dict"]))
  assert meta["source_format"] == "safetensors" and "pos_embed_resampled" not in meta
  check_io(cfg, params, case["files"]["io"])


def test_golden_cases_cover_every_family():
  want = {"deit_tiny", "deit_tiny_distilled", "deit3_small", "vit_tiny_augreg",
          "vit_base_patch32", "vit_small_avgpool", "dinov2_small", "dinov2_small_reg4",
          "dinov2_giant_swiglu", "vit_tiny_bigvision"}
  assert want <= set(CASES)


def test_a_checkpoint_of_another_size_names_both_sizes_and_lists_few_keys():
  """The golden deit_tiny (reduced depth and width) converted for the registry's full-size
  deit_tiny_patch16_224 listed 120 missing keys and 32 shape mismatches (5 KB) and never said
  why: the two sizes are named, and each list shows its first 8 (all stay on the error)."""
  case = CASES["deit_tiny"]
  small = case_config(case)
  full = get_config("deit_tiny_patch16_224")
  assert (small.depth, small.embed_dim) != (full.depth, full.embed_dim)
  with pytest.raises(ConversionError) as e:
    convert_file(full, golden(case["files"]["state_dict"]))
  text = str(e.value)
  assert text.splitlines()[0] == (f"{golden(case['files']['state_dict'])}: checkpoint does "
                                  "not match deit_tiny_patch16_224:")       # (the file named)
  assert text.splitlines()[1] == (            # the cause first: a CLI shows one line
      f"  (the checkpoint holds a ViT of depth {small.depth}, width {small.embed_dim}; "
      f"deit_tiny_patch16_224 has depth {full.depth}, width {full.embed_dim}: convert it for a "
      "model of its size, unless the file is cut short)")
  missing = e.value.missing
  assert len(missing) > 8 and len(text) < 2500
  assert f"  missing keys ({len(missing)}): {missing[:8]} and {len(missing) - 8} more" in text
  sd, _ = convert.load_checkpoint(golden(case["files"]["state_dict"]))
  del sd["norm.bias"]
  with pytest.raises(ConversionError) as e:        # the right size, a key missing: no size line
    convert_state_dict(small, sd)
  assert str(e.value).splitlines()[1:] == ["  missing keys (1): ['norm.bias']"]
  sd["extra"] = sd["norm.weight"]
  with pytest.raises(ConversionError) as e:        # the kinds that occur, ';' between them
    convert_state_dict(small, sd)
  assert str(e.value).splitlines()[1:] == ["  missing keys (1): ['norm.bias'];",
                                           "  unexpected keys (1): ['extra']"]


def test_golden_pth_matches_timm():
  pytest.importorskip("torch", reason="torch is not installed: the .pth loader (which needs "
                      "torch) is exercised only where torch exists, e.g. /work/timmenv")
  case = CASES["deit_tiny"]
  cfg = case_config(case)
  params, meta = convert_file(cfg, golden(case["files"]["state_dict_pth"]))
  assert meta["source_format"] == "torch"
  check_io(cfg, params, case["files"]["io"])


def test_the_pth_path_with_a_stand_in_for_torch(tmp_path, monkeypatch):
  """CI has no torch, so the .pth loader's own code ran nowhere (a mutation audit turned its
  refusal of a non-tensor entry into a silent drop unnoticed): a stand-in torch module serves
  torch.load. Floating tensors become float32, others keep their dtype, wrappers and prefixes
  go, a corrupt file and a non-tensor entry are one error naming the file."""
  import types  # pylint: disable=g-import-not-at-top

  class Tensor:
    def __init__(self, a):
      self.a = np.asarray(a)

    def is_floating_point(self):
      return self.a.dtype.kind == "f"

    def detach(self):
      return self

    def to(self, dtype):
      return Tensor(self.a.astype(dtype))

    def cpu(self):
      return self

    def numpy(self):
      return self.a

  held = {}

  def load(path, map_location, weights_only):
    assert (map_location, weights_only) == ("cpu", True)
    if path not in held:
      raise RuntimeError("PytorchStreamReader failed reading zip archive")
    return held[path]
  monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(
      load=load, Tensor=Tensor, float32=np.float32))
  path, bad = str(tmp_path / "m.pth"), tmp_path / "bad.pth"
  for f in (path, bad):                   # (the loader checks the files exist first)
    open(f, "wb").close()
  held[path] = {"model": {"module.w": Tensor(np.ones(2, np.float16)),
                          "module.n": Tensor(np.arange(3))}, "epoch": 3}
  sd, fmt = convert.load_checkpoint(path)
  assert fmt == "torch" and sorted(sd) == ["n", "w"]
  assert sd["w"].dtype == np.float32 and sd["n"].dtype == np.arange(3).dtype
  held[path] = {"w": Tensor(np.ones(2)), "step": 7}
  with pytest.raises(ValueError, match=rf"^{re.escape(path)}: entry 'step' is a int, not a "
                                       r"tensor$"):
    convert.load_checkpoint(path)
  with pytest.raises(ValueError, match=r"bad\.pth: not a readable PyTorch checkpoint "
                                       r"\(RuntimeError: PytorchStreamReader failed"):
    convert.load_checkpoint(str(bad))


def test_pth_without_torch_names_the_dependency():
  try:
    import torch  # noqa: F401
    pytest.skip("torch is installed here; the missing-dependency error cannot occur")
  except ImportError:
    pass
  with pytest.raises(ImportError, match=r"deit_tiny\.pth needs PyTorch \(torch\)"):
    convert.load_checkpoint(golden("deit_tiny.pth"))


def test_golden_big_vision_npz_matches_timm():
  case = CASES["vit_tiny_bigvision"]
  cfg = case_config(case)
  params, meta = convert_file(cfg, golden(case["files"]["bigvision_npz"]))
  assert meta["source_format"] == "big_vision"
  check_io(cfg, params, case["files"]["io"])


def test_a_big_vision_npz_resized_down_resamples_as_timms_npz_loader():
  """timm's `_load_weights` resamples an .npz position embedding bilinearly without antialias
  (its .pth/.safetensors filter: bicubic, antialiased); the two differ when shrinking."""
  case = CASES["vit_tiny_bigvision"]
  full = case_config(case)
  cfg = case_config(case, img_size=full.img_size - 2 * full.patch_size)
  params, meta = convert_file(cfg, golden(case["files"]["bigvision_npz"]))
  assert (meta["pos_embed_resampled"]["interpolation"],
          meta["pos_embed_resampled"]["antialias"]) == ("bilinear", False)
  src = convert.big_vision_to_timm(dict(np.load(golden(case["files"]["bigvision_npz"]))))
  side = cfg.img_size // cfg.patch_size
  want = resample_abs_pos_embed(src["pos_embed"], (side, side), num_prefix_tokens=1,
                                interpolation="bilinear", antialias=False)
  np.testing.assert_allclose(params["pos_embed"], want, atol=1e-6)
  other = resample_abs_pos_embed(src["pos_embed"], (side, side), num_prefix_tokens=1,
                                 interpolation="bilinear", antialias=True)
  assert np.abs(np.asarray(params["pos_embed"]) - other).max() > 1e-3


@pytest.mark.parametrize("name", ["dinov2_small", "dinov2_small_reg4"])
def test_golden_dinov2_resized_matches_timm(name):
  case = CASES[name]
  cfg = case_config(case, img_size=case["resized_img_size"])
  params, meta = convert_file(cfg, golden(case["files"]["state_dict"]))
  ref = np.load(golden(case["files"]["resized_io"]))["pos_embed_resampled"]
  assert params["pos_embed"].shape == ref.shape == tuple(case["resized_pos_embed_shape"])
  assert np.abs(np.asarray(params["pos_embed"]) - ref).max() <= POS_EMBED_TOL
  assert meta["pos_embed_resampled"]["interpolation"] == "bicubic"
  assert meta["pos_embed_resampled"]["antialias"] is True
  check_io(cfg, params, case["files"]["resized_io"])


# ----------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("n_in,n_out", [(5, 4), (37, 16), (4, 9), (14, 14)])
def test_antialias_bicubic_matches_jax_image_resize(n_in, n_out):
  """An independent implementation (jax.image.scale_and_translate, Keys a=-0.5, antialiased)."""
  grid = np.random.default_rng(0).standard_normal((n_in, n_in, 3))
  ours = np.einsum("ph,hwc,qw->pqc", resize_matrix(n_in, n_out), grid, resize_matrix(n_in, n_out))
  ref = jax.image.resize(grid.astype(np.float32), (n_out, n_out, 3), "bicubic", antialias=True)
  np.testing.assert_allclose(ours, np.asarray(ref), atol=2e-5)


@pytest.mark.parametrize("interp", ["bicubic", "bilinear"])
@pytest.mark.parametrize("aa", [True, False])
def test_resize_matrix_invariants(interp, aa):
  for n_in, n_out in [(5, 4), (7, 11), (6, 6)]:
    w = resize_matrix(n_in, n_out, interp, aa)
    assert w.shape == (n_out, n_in)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)  # constants are preserved
  np.testing.assert_allclose(resize_matrix(6, 6, interp, aa), np.eye(6), atol=1e-12)


def test_non_antialias_bilinear_known_values():
  # 2 -> 4, align_corners=False: src = (i + .5) / 2 - .5 = -.25 (clamped to 0), .25, .75, 1.25
  np.testing.assert_allclose(resize_matrix(2, 4, "bilinear", False),
                             [[1, 0], [.75, .25], [.25, .75], [0, 1]])


def test_non_antialias_bicubic_known_values():
  # PyTorch's bicubic (no antialias) uses Keys' kernel with A = -0.75 and clamps taps at the
  # border. 4 -> 2: src = (i + .5) * 2 - .5 = .5, 2.5; taps at distances 1.5, .5, .5, 1.5:
  # W(.5) = 1.25 / 8 - 2.25 / 4 + 1 = .59375, W(1.5) = -.75 (3.375 - 5 * 2.25 + 8 * 1.5 - 4)
  # = -.09375; the tap before index 0 (after index 3) lands on it.
  w5, w15 = 0.59375, -0.09375
  np.testing.assert_allclose(resize_matrix(4, 2, "bicubic", False),
                             [[w15 + w5, w5, w15, 0], [0, w15, w5, w5 + w15]], atol=1e-12)


@pytest.mark.parametrize("interpolation, antialias", [("bicubic", True), ("bicubic", False),
                                                      ("bilinear", False)])
def test_a_non_square_resample_keeps_rows_as_rows(interpolation, antialias):
  """Separable: rows (H) are resampled to new_size[0], columns (W) to new_size[1]. A grid that
  varies only down its rows stays constant along each output row, and resampling the
  transposed grid to the transposed size gives the transposed result."""
  rng = np.random.default_rng(1)
  rows = np.broadcast_to(rng.standard_normal((4, 1, 3)), (4, 4, 3))
  pe = np.concatenate([np.zeros((1, 1, 3)), rows.reshape(1, 16, 3)], axis=1).astype(np.float32)
  out = resample_abs_pos_embed(pe, (2, 7), interpolation=interpolation, antialias=antialias)
  grid = out[0, 1:].reshape(2, 7, 3)
  np.testing.assert_allclose(grid, np.broadcast_to(grid[:, :1], grid.shape), atol=1e-6)
  g = rng.standard_normal((3, 5, 2))       # non-square in and out
  np.testing.assert_allclose(
      resize_grid(g, (6, 2), interpolation, antialias),
      resize_grid(g.transpose(1, 0, 2), (2, 6), interpolation, antialias).transpose(1, 0, 2),
      atol=1e-12)
  assert resize_grid(g, (6, 2), interpolation, antialias).shape == (6, 2, 2)


def test_resample_keeps_prefix_and_validates():
  pe = np.random.default_rng(0).standard_normal((1, 2 + 25, 4)).astype(np.float32)
  out = resample_abs_pos_embed(pe, (3, 3), num_prefix_tokens=2)
  assert out.shape == (1, 11, 4) and out.dtype == np.float32
  np.testing.assert_array_equal(out[:, :2], pe[:, :2])
  assert resample_abs_pos_embed(pe, (5, 5), num_prefix_tokens=2) is pe
  with pytest.raises(ValueError, match="not a square patch grid"):
    resample_abs_pos_embed(pe, (3, 3), num_prefix_tokens=1)
  # Prefix entries only: no grid (it was refused as "old_size ... got (0, 0)", never given).
  with pytest.raises(ValueError, match=r"^pos_embed has 2 entries; minus 2 prefix tokens that "
                                       r"is 0, not a square patch grid$"):
    resample_abs_pos_embed(pe[:, :2], (3, 3), num_prefix_tokens=2)
  with pytest.raises(ValueError, match=r"must be \[1, L, C\]"):
    resample_abs_pos_embed(pe[0], (3, 3))
  # An integer pos_embed came back truncated; a negative prefix count was a reshape error.
  with pytest.raises(ValueError, match="pos_embed must be floating point, got int32"):
    resample_abs_pos_embed(np.ones((1, 2 + 25, 4), np.int32), (3, 3), num_prefix_tokens=2)
  for bad in (-1, 28, 1.0, True):
    with pytest.raises(ValueError, match=r"num_prefix_tokens must be an int in \[0, 27\]"):
      resample_abs_pos_embed(pe, (3, 3), num_prefix_tokens=bad)
  assert resample_abs_pos_embed(pe, (3, 3), num_prefix_tokens=np.int64(2)).shape == (1, 11, 4)
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  bf16 = resample_abs_pos_embed(pe.astype(ml_dtypes.bfloat16), (3, 3), num_prefix_tokens=2)
  assert bf16.dtype == ml_dtypes.bfloat16 and bf16.shape == (1, 11, 4)
  with pytest.raises(ValueError, match="interpolation must be one of"):
    resize_matrix(4, 3, "lanczos")
  # Sizes that are no (height, width) of positive ints, and a switch that is no bool (a probe:
  # (3,) an IndexError, (7.5, 7.5) a TypeError naming nothing, (3, 3, 3) read as (3, 3),
  # antialias='no' antialiased).
  for name, kw in (("new_size", dict(new_size=(3,))), ("new_size", dict(new_size=(3, 3, 3))),
                   ("new_size", dict(new_size=(7.5, 7.5))), ("new_size", dict(new_size=(0, 3))),
                   ("new_size", dict(new_size=(True, 3))), ("old_size", dict(old_size=(25,)))):
    with pytest.raises(ValueError, match=rf"^{name} must be \(height, width\), two integers >= "
                                         r"1, got "):
      resample_abs_pos_embed(pe, **{"new_size": (3, 3), "num_prefix_tokens": 2, **kw})
  with pytest.raises(TypeError, match=r"^antialias must be True or False, got 'no'$"):
    resample_abs_pos_embed(pe, (3, 3), num_prefix_tokens=2, antialias="no")
  with pytest.raises(ValueError, match=r"sizes must be positive integers, got in_size=4, "
                                       r"out_size=2.5"):
    resize_matrix(4, 2.5)
  assert resample_abs_pos_embed(pe, [np.int64(3), 3], num_prefix_tokens=2).shape == (1, 11, 4)
  # An old_size that is not the entries' grid (25 here) is refused, not reshaped into another
  # grid of garbage (mutation audit: the check was untested).
  for old in ((4, 4), (2, 5)):
    with pytest.raises(ValueError, match=rf"^pos_embed has 25 patch entries, not old_size "
                                         rf"{re.escape(str(old))}$"):
      resample_abs_pos_embed(pe, (3, 3), old, num_prefix_tokens=2)
  assert resample_abs_pos_embed(pe, (3, 3), (5, 5), num_prefix_tokens=2).shape == (1, 11, 4)


# ----------------------------------------------------------------------------- mappings


def tiny_sd(name="test_tiny_vit", seed=0):
  cfg = get_config(name)
  params = init_params(cfg, seed)
  return cfg, params, convert.to_timm_state_dict(cfg, params)


def assert_trees_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", ["test_tiny_vit", "test_tiny_distilled", "test_tiny_dinov2_reg"])
def test_round_trip_through_timm_names(name):
  cfg, params, sd = tiny_sd(name, seed=3)
  assert sd["patch_embed.proj.weight"].shape == (32, 3, 8, 8)
  assert sd["blocks.0.mlp.fc1.weight"].shape == (64, 32)  # [out, in]
  assert_trees_equal(params, convert_state_dict(cfg, sd))


def test_patch_embed_is_hwio_and_linears_transposed():
  cfg, _, sd = tiny_sd()
  params = convert_state_dict(cfg, sd)
  np.testing.assert_array_equal(params["patch_embed"]["kernel"][1, 2, 0, 5],
                                sd["patch_embed.proj.weight"][5, 0, 1, 2])
  np.testing.assert_array_equal(params["blocks"][1]["attn"]["qkv"]["kernel"][3, 7],
                                sd["blocks.1.attn.qkv.weight"][7, 3])


def test_original_dinov2_layout_with_explicit_mask_token(tmp_path):
  """Meta's DINOv2 (registers) layout: register_tokens, pos_embed incl. cls, mask_token."""
  case = CASES["dinov2_small_reg4"]
  cfg = case_config(case)
  sd = load_file(golden(case["files"]["state_dict"]))
  orig = {k: v for k, v in sd.items() if k not in ("reg_token", "cls_token", "pos_embed")}
  # (varying by channel: a constant shift of a token is cancelled by every LayerNorm, so the
  # forward alone could not tell an unfolded cls position)
  cls_pos = np.linspace(-0.5, 0.75, sd["cls_token"].size, dtype=np.float32).reshape(
      sd["cls_token"].shape)
  orig["pos_embed"] = np.concatenate([cls_pos, sd["pos_embed"]], axis=1)
  orig["cls_token"] = sd["cls_token"] - cls_pos
  orig["register_tokens"] = sd["reg_token"]
  orig["mask_token"] = np.zeros((1, 32), np.float32)
  with pytest.raises(ConversionError, match="mask_token") as e:
    convert_state_dict(cfg, orig)
  assert str(e.value).splitlines()[-1] == (      # (the README said so; the error did not)
      "  (mask_token is DINOv2's masked-training token, unused by the forward: drop it with "
      "ignore_keys=('mask_token',) / --ignore_keys=mask_token)")
  params = convert_state_dict(cfg, orig, ignore_keys=("mask_token",))
  np.testing.assert_allclose(params["cls_token"], sd["cls_token"], atol=1e-6)
  np.testing.assert_array_equal(params["pos_embed"], sd["pos_embed"])
  check_io(cfg, params, case["files"]["io"])
  # From a file: no resampling is claimed for the cls position folded out of pos_embed.
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "orig.SAFETENSORS")          # (an upper-case extension is its kind)
  save_file(orig, path)
  params, meta = convert.convert_file(cfg, path, ignore_keys=("mask_token",))
  assert "pos_embed_resampled" not in meta and meta["ignore_keys"] == ["mask_token"]
  check_io(cfg, params, case["files"]["io"])
  # The registers named as the file holds them are the model's reg_token: dropped, they are
  # missing (refused as matching no key before, though the file holds them).
  with pytest.raises(ConversionError, match=r"missing keys \(1\): \['reg_token'\]"):
    convert_state_dict(cfg, orig, ignore_keys=("mask_token", "register_tokens"))


def test_original_dinov2_swiglu_names():
  case = CASES["dinov2_giant_swiglu"]
  cfg = case_config(case)
  sd = load_file(golden(case["files"]["state_dict"]))
  orig = {k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3"): v for k, v in sd.items()}
  assert "blocks.0.mlp.w12.weight" in orig
  check_io(cfg, convert_state_dict(cfg, orig), case["files"]["io"])


def test_original_deit3_gamma_names():
  case = CASES["deit3_small"]
  cfg = case_config(case)
  sd = load_file(golden(case["files"]["state_dict"]))
  orig = {k.replace(".ls1.gamma", ".gamma_1").replace(".ls2.gamma", ".gamma_2"): v
          for k, v in sd.items()}
  assert "blocks.1.gamma_2" in orig
  check_io(cfg, convert_state_dict(cfg, orig), case["files"]["io"])


@pytest.mark.parametrize("legacy, current", [("blocks.1.gamma_2", "blocks.1.ls2.gamma"),
                                               ("blocks.0.mlp.w12.weight",
                                                "blocks.0.mlp.fc1.weight")])
def test_legacy_and_timm_names_of_one_parameter_are_refused(legacy, current):
  """Both names present: one would silently overwrite the other after renaming."""
  case = CASES["deit3_small"]
  cfg = case_config(case)
  sd = dict(load_file(golden(case["files"]["state_dict"])))
  sd[legacy] = np.full_like(sd[current], 7.0) if current in sd else np.ones(3, np.float32)
  with pytest.raises(ValueError, match=f"checkpoint holds both '{re.escape(current)}' and "
                     f"'{re.escape(legacy)}', two names of timm's '{re.escape(current)}'"):
    convert_state_dict(cfg, sd)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.bool_, np.complex64])
def test_non_float_weights_are_refused(dtype):
  """An int8-quantised (or any non-float) checkpoint: refused, not cast as is."""
  cfg = get_config("test_tiny_vit")
  sd = to_timm_state_dict(cfg, init_params(cfg, 0))
  sd["norm.weight"] = np.asarray(sd["norm.weight"]).astype(dtype)
  with pytest.raises(ValueError, match=r"checkpoint has non-float values in \['norm.weight "
                     rf"\({np.dtype(dtype).name}\)'\]: vitprune converts floating-point "):
    convert_state_dict(cfg, sd)


@pytest.mark.parametrize("shape", [(1, 26, 32), (1, 17, 32)])
def test_an_integer_pos_embed_is_refused_also_when_it_would_be_resampled(shape):
  """Resampling computes in float32: an int8 pos_embed of another length was cast, resampled
  and converted without a word (the same tensor at the native length was refused)."""
  cfg = get_config("test_tiny_vit")
  sd = to_timm_state_dict(cfg, init_params(cfg, 0))
  sd["pos_embed"] = np.full(shape, 7, np.int8)
  with pytest.raises(ValueError, match=re.escape("non-float values in ['pos_embed (int8)']")):
    convert_state_dict(cfg, sd)


@pytest.mark.parametrize("field, value, shown", [
    ("pos_embed", np.zeros((26,), np.float32), "pos_embed (26,) must be [1, L, C]"),
    ("pos_embed", np.zeros((2, 18, 32), np.float32), "pos_embed (2, 18, 32) must be"),
    ("cls_token", np.zeros((5,), np.float32), "cls_token (5,) [1, 1, C]"),
    ("cls_token", np.zeros((1, 1, 8), np.float32), "cls_token (1, 1, 8) [1, 1, C]"),
])
def test_original_dinov2_layout_with_malformed_tokens_is_one_error(field, value, shown):
  """Folding the cls position into cls_token indexed pos_embed[:, :1] (IndexError traceback)
  or broadcast a wrong cls_token (a numpy message naming no key)."""
  cfg = get_config("test_tiny_vit")
  sd = to_timm_state_dict(cfg, init_params(cfg, 0))
  sd["register_tokens"] = np.zeros((1, 2, 32), np.float32)
  sd[field] = value
  with pytest.raises(ValueError, match=re.escape("original DINOv2 layout (register_tokens): ")
                     + ".*" + re.escape(shown)):
    convert_state_dict(cfg, sd)


def test_a_stray_register_tokens_names_the_pos_embed_shape_the_file_holds():
  """A timm checkpoint with one stray `register_tokens` is read as original DINOv2: the shape
  mismatch named pos_embed (1, 16, 32), a shape the file does not hold; it says both."""
  cfg = get_config("test_tiny_vit")
  sd = to_timm_state_dict(cfg, init_params(cfg, 0))
  sd["register_tokens"] = np.zeros((1, 4, 32), np.float32)
  with pytest.raises(ConversionError, match=re.escape(
      "pos_embed: expected (1, 17, 32), got (1, 16, 32): the file's (1, 17, 32) with the cls "
      "position folded out (original DINOv2 layout, assumed from its register_tokens)")):
    convert_state_dict(cfg, sd)


def test_register_tokens_beside_a_reg_token_is_an_unexpected_key_not_a_dinov2_fold():
  """A timm checkpoint (reg_token) with a stray `register_tokens` keeps its own tokens and
  position embedding: the stray key alone is reported (a mutation audit: read as original
  DINOv2 it replaced reg_token and cut a row off pos_embed, and no test saw it)."""
  cfg, _, sd = tiny_sd("test_tiny_dinov2_reg")
  with pytest.raises(ConversionError) as e:
    convert_state_dict(cfg, dict(sd, register_tokens=sd["reg_token"] + 1))
  assert (e.value.missing, e.value.unexpected, e.value.mismatched) == (
      [], ["register_tokens"], [])
  assert str(e.value) == ("checkpoint does not match test_tiny_dinov2_reg:\n"
                          "  unexpected keys (1): ['register_tokens']")
  params = convert_state_dict(cfg, dict(sd, register_tokens=sd["reg_token"] + 1),
                              ignore_keys=("register_tokens",))
  np.testing.assert_array_equal(params["reg_token"], sd["reg_token"])
  np.testing.assert_array_equal(params["pos_embed"], sd["pos_embed"])


def test_a_float8_safetensors_file_is_one_error(tmp_path):
  """safetensors' numpy and jax loaders both fail on float8 (AttributeError traceback)."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  import safetensors.flax  # pylint: disable=g-import-not-at-top
  cfg = get_config("test_tiny_vit")
  sd = to_timm_state_dict(cfg, init_params(cfg, 0))
  path = str(tmp_path / "f8.safetensors")
  safetensors.flax.save_file(
      {k: jax.numpy.asarray(np.asarray(v).astype(ml_dtypes.float8_e4m3fn)) for k, v in sd.items()},
      path)
  with pytest.raises(ValueError, match=re.escape(f"{path}: holds float8 tensors, which "
                                                 "safetensors cannot load")):
    convert_file(cfg, path)


def test_half_precision_weights_convert():
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  cfg = get_config("test_tiny_vit")
  sd = {k: np.asarray(v) for k, v in to_timm_state_dict(cfg, init_params(cfg, 0)).items()}
  for dtype in (np.float16, ml_dtypes.bfloat16, np.float64, ml_dtypes.float8_e4m3fn):
    half = {k: v.astype(dtype) for k, v in sd.items()}
    out = convert_state_dict(cfg, half)
    np.testing.assert_allclose(np.asarray(out["norm"]["scale"]),
                               sd["norm.weight"].astype(dtype).astype(np.float32))


def test_the_checkpoints_precision_is_recorded_and_said(tmp_path, capsys):
  """A float16 checkpoint converted to float32 weights whose provenance said nothing of it (a
  user comparing accuracy with a float32 run saw no reason for the difference)."""
  from experiments import convert as cli  # pylint: disable=g-import-not-at-top  (name clash)
  cfg = get_config("test_tiny_vit")
  sd = {k: np.asarray(v) for k, v in to_timm_state_dict(cfg, init_params(cfg, 0)).items()}
  save_file({k: v.astype(np.float16) for k, v in sd.items()}, str(tmp_path / "h.safetensors"))
  save_file(sd, str(tmp_path / "f.safetensors"))
  mixed = dict(sd, **{"norm.weight": sd["norm.weight"].astype(np.float16)})
  save_file(mixed, str(tmp_path / "m.safetensors"))
  got = {name: convert_file(cfg, str(tmp_path / name))[1]["source_dtypes"]
         for name in ("h.safetensors", "f.safetensors", "m.safetensors")}
  assert got == {"h.safetensors": ["float16"], "f.safetensors": ["float32"],
                 "m.safetensors": ["float16", "float32"]}
  out = cli.run("test_tiny_vit", str(tmp_path / "h.safetensors"), out=str(tmp_path / "w"))
  assert checkpoint.read_weights_config(out)[1]["source_dtypes"] == ["float16"]
  assert ("note: the checkpoint holds float16 tensors: converted to float32 (the values as the "
          "file held them, no precision gained)") in capsys.readouterr().out.splitlines()
  cli.run("test_tiny_vit", str(tmp_path / "f.safetensors"), out=str(tmp_path / "w32"))
  assert "note: the checkpoint holds" not in capsys.readouterr().out
  # A wider dtype is rounded, not held as it was; float32 of either byte order is float32
  # (a big-endian npz was said to be converted from '>f4').
  save_file({k: v.astype(np.float64) for k, v in sd.items()}, str(tmp_path / "d.safetensors"))
  cli.run("test_tiny_vit", str(tmp_path / "d.safetensors"), out=str(tmp_path / "w64"))
  assert ("note: the checkpoint holds float64 tensors: converted to float32 (its float64 values "
          "rounded to float32)") in capsys.readouterr().out.splitlines()
  np.savez(tmp_path / "be.npz", **{k: v.astype(">f4") for k, v in sd.items()})
  assert convert_file(cfg, str(tmp_path / "be.npz"))[1]["source_dtypes"] == ["float32"]


def test_features_only_needs_explicit_drop_head():
  case = CASES["deit_tiny"]
  cfg = case_config(case).replace(num_classes=0)
  sd = load_file(golden(case["files"]["state_dict"]))
  with pytest.raises(ConversionError, match="drop_head") as e:
    convert_state_dict(cfg, sd)
  assert e.value.unexpected == ["head.bias", "head.weight"] and not e.value.missing
  params = convert_state_dict(cfg, sd, drop_head=True)
  io = np.load(golden(case["files"]["io"]))
  pooled = np.asarray(forward(params, io["input_nchw"].transpose(0, 2, 3, 1), cfg=cfg))
  np.testing.assert_allclose(pooled, io["features"][:, 0], atol=TOL)


def test_mismatch_hints_name_what_would_help():
  """The head hint showed for any unexpected head key (a 10-class config cannot drop its head);
  --drop_head on a config with classes reported the head as missing; a distilled checkpoint for a
  plain model, or keys under a wrapper prefix, got no hint."""
  case = CASES["deit_tiny"]
  cfg = case_config(case)
  sd = load_file(golden(case["files"]["state_dict"]))
  with pytest.raises(ValueError, match=r"^drop_head \(--drop_head\) discards the checkpoint's "
                     r"head, so the config needs num_classes=0 \(--num_classes=0\); .* has a "
                     r"\d+-class head$"):
    convert_state_dict(cfg, sd, drop_head=True)
  dist = dict(sd, dist_token=np.zeros((1, 1, cfg.embed_dim), np.float32),
              **{"head_dist.weight": sd["head.weight"], "head_dist.bias": sd["head.bias"]})
  with pytest.raises(ConversionError) as e:
    convert_state_dict(cfg, dist)
  assert "a distilled checkpoint: convert it for the *_distilled_* model" in str(e.value)
  assert "drop_head" not in str(e.value)
  with pytest.raises(ConversionError) as e:
    convert_state_dict(cfg, {"module." + k: v for k, v in sd.items()})
  assert "every unexpected key starts with 'module.': a wrapped state dict?" in str(e.value)
  with pytest.raises(ConversionError) as e:    # a plain checkpoint for a headless distilled
    convert_state_dict(cfg.replace(num_classes=0, dist_token=True), sd)   # model: no 'head.'
  assert "the model is distilled, the checkpoint is not" in str(e.value)  # prefix to strip
  assert "wrapped state dict" not in str(e.value)
  # Keys the model does not have, nothing missing: no prefix to strip (a probe: a deeper
  # checkpoint's extra 'blocks.*', one 'extra.weight', a head kept for a headless model).
  for extra in ({"extra.weight": np.zeros(3, np.float32)},
                {"blocks.99.norm1.weight": np.zeros(cfg.embed_dim, np.float32)}):
    with pytest.raises(ConversionError) as e:
      convert_state_dict(cfg, dict(sd, **extra))
    assert "unexpected keys (1)" in str(e.value) and "wrapped state dict" not in str(e.value)


def test_headless_distilled_deit_averages_its_two_tokens_as_timm():
  """timm's VisionTransformerDistilled with num_classes=0 has Identity heads and returns the
  mean of the class and distillation tokens; vitprune returned the class token alone."""
  case = CASES["deit_tiny_distilled"]
  cfg = case_config(case).replace(num_classes=0)
  params = convert_state_dict(cfg, load_file(golden(case["files"]["state_dict"])),
                              drop_head=True)
  io = np.load(golden(case["files"]["io"]))
  pooled = np.asarray(forward(params, io["input_nchw"].transpose(0, 2, 3, 1), cfg=cfg))
  want = (io["features"][:, 0] + io["features"][:, 1]) / 2
  np.testing.assert_allclose(pooled, want, atol=TOL)


def test_torch_wrappers_and_module_prefix():
  sd = {"module.a": np.zeros(1), "module.b": np.ones(2)}
  assert set(convert.unwrap_torch_state_dict({"model": sd, "epoch": 3})) == {"a", "b"}
  assert set(convert.unwrap_torch_state_dict({"state_dict": sd})) == {"a", "b"}
  # per key, as timm's clean_state_dict (swa_utils.AveragedModel: n_averaged + module.*), and
  # torch.compile's _orig_mod. after it
  assert set(convert.unwrap_torch_state_dict({"n_averaged": 1, "module.b": 2})) == {
      "n_averaged", "b"}
  assert set(convert.unwrap_torch_state_dict({"module._orig_mod.a": 1, "_orig_mod.b": 2})) == {
      "a", "b"}
  with pytest.raises(ValueError, match="^f.pth: checkpoint keys collide once their wrapper "
                     "prefix is stripped: 'module.a' and another give 'a'$"):
    convert.unwrap_torch_state_dict({"a": 1, "module.a": 2}, "f.pth")
  # A training checkpoint with EMA weights: timm's load_checkpoint takes those (use_ema=True).
  ema = {"module.e": np.zeros(1)}
  for wrapped in ({"model": sd, "model_ema": ema, "optimizer": {}, "epoch": 3},
                  {"state_dict": sd, "state_dict_ema": ema}):
    assert set(convert.unwrap_torch_state_dict(wrapped)) == {"e"}
  with pytest.raises(ValueError, match="expected a dict"):
    convert.unwrap_torch_state_dict([1, 2], "f.pth")
  # Two wrappers deep, as the code says (mutation audit: one level passed)
  assert set(convert.unwrap_torch_state_dict({"model": {"state_dict": sd}, "epoch": 3})) == {
      "a", "b"}


def test_wrapper_prefixes_are_stripped_once_and_only_at_the_start():
  """timm's clean_state_dict strips one leading `module.` (then one `_orig_mod.`), never one
  inside a key (a mutation audit: a str.replace of 'module.' passed every test)."""
  sd = {"module.module.a": 1, "blocks.0.module.w": 2, "_orig_mod._orig_mod.b": 3,
        "x_module.c": 4}
  assert sorted(convert.unwrap_torch_state_dict(sd)) == [
      "_orig_mod.b", "blocks.0.module.w", "module.a", "x_module.c"]


def test_a_module_prefix_is_stripped_in_every_format(tmp_path):
  """timm's clean_state_dict strips `module.` whatever the file; vitprune did so for .pth only,
  so the same weights converted as .pth and failed as .safetensors / timm-named .npz."""
  case = CASES["deit_tiny"]
  cfg = case_config(case)
  sd = load_file(golden(case["files"]["state_dict"]))
  wrapped = {"module." + k: v for k, v in sd.items()}
  save_file(wrapped, str(tmp_path / "w.safetensors"))
  np.savez(tmp_path / "w.npz", **wrapped)
  want = convert_state_dict(cfg, sd)
  for name in ("w.safetensors", "w.npz"):
    got, _ = convert.load_checkpoint(str(tmp_path / name))
    assert sorted(got) == sorted(sd), name
    jax.tree.map(np.testing.assert_array_equal, convert_state_dict(cfg, got), want)


def test_big_vision_scanned_layout_equals_unscanned(tmp_path):
  """big_vision's scanned layout (`Transformer/encoderblock/...` with a leading depth axis,
  `params/` prefix, MHA_0 / LayerNorm_1 / MlpBlock_0 names) maps to the same state dict."""
  aug = dict(np.load(golden("vit_tiny_bigvision.weights.npz")))
  scanned = {}
  ren = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
         "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}
  for k, v in aug.items():
    if not k.startswith("Transformer/encoderblock_"):
      k = "pos_embedding" if k.endswith("posembed_input/pos_embedding") else k
      scanned["params/" + k] = v
  for k in aug:
    if k.startswith("Transformer/encoderblock_0/"):
      sub = k[len("Transformer/encoderblock_0/"):]
      stacked = np.stack([aug[f"Transformer/encoderblock_{i}/{sub}"] for i in range(2)])
      for a, b in ren.items():
        sub = sub.replace(a, b)
      scanned["params/Transformer/encoderblock/" + sub] = stacked
  scanned["opt/state/mu"] = np.zeros(3)  # not under the weight prefix: not weights
  ref = convert.big_vision_to_timm(aug)
  got = convert.big_vision_to_timm(scanned)
  assert sorted(got) == sorted(ref)
  for k in ref:
    np.testing.assert_array_equal(got[k], ref[k])
  # A two-tower file (the image tower under params/img/), its pos_embedding stored [L, C]
  # (mutation audit: neither was tried).
  tower = {"params/img/" + k[len("params/"):] if k.startswith("params/") else k: v
           for k, v in scanned.items()}
  tower["params/img/pos_embedding"] = tower["params/img/pos_embedding"][0]
  assert convert.big_vision_prefix(tower) == "params/img/"
  got = convert.big_vision_to_timm(tower)
  assert sorted(got) == sorted(ref)
  for k in ref:
    np.testing.assert_array_equal(got[k], ref[k])


S = "Transformer/encoderblock/"
Q = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/"


@pytest.mark.parametrize("extra, message", [
    ({S + "LayerNorm_0/scale": np.float32(1)},
     f"'{S}LayerNorm_0/scale' has shape (), not [depth, C] of a scanned encoder"),
    ({S + "LayerNorm_0/scale": np.ones((3, 32), np.float32),
      S + "LayerNorm_0/bias": np.ones((2, 32), np.float32)},
     f"'{S}LayerNorm_0/bias' has shape (2, 32), not one entry per block of the scanned depth 3"),
    ({"embedding/kernel": np.zeros((8, 8, 32), np.float32)},
     "'embedding/kernel' has shape (8, 8, 32), which cannot be 'patch_embed.proj.weight'"),
    ({Q + "query/kernel": np.zeros((32, 2, 16), np.float32),
      Q + "key/kernel": np.zeros((16, 2, 16), np.float32),
      Q + "value/kernel": np.zeros((32, 2, 16), np.float32)},
     f"'{Q}query/kernel' (32, 2, 16), '{Q}key/kernel' (16, 2, 16), '{Q}value/kernel' "
     "(32, 2, 16) cannot be concatenated into 'blocks.0.attn.qkv.weight'"),
])
def test_malformed_big_vision_npz_is_one_error_naming_file_and_key(tmp_path, extra, message):
  """Scalars, wrong ranks and short scanned axes were IndexError tracebacks or numpy messages
  naming neither the file nor the key."""
  w = dict({"embedding/kernel": np.zeros((8, 8, 3, 32), np.float32)}, **extra)
  path = str(tmp_path / "bv.npz")
  np.savez(path, **w)
  with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
    convert.load_checkpoint(path)


def test_big_vision_unknown_key_is_unexpected(tmp_path):
  w = dict(np.load(golden("vit_tiny_bigvision.weights.npz")))
  w["pre_logits/kernel"] = np.zeros((32, 32), np.float32)
  path = tmp_path / "bv.npz"
  np.savez(path, **w)
  with pytest.raises(ConversionError, match=r"unexpected keys \(1\): \['pre_logits/kernel'\]"):
    convert_file(case_config(CASES["vit_tiny_bigvision"]), str(path))


@pytest.mark.parametrize("heads", [1, 4])
def test_big_vision_npz_with_other_heads_is_refused(tmp_path, heads):
  """The npz keeps the heads apart ([C, H, D]); timm's layout flattens them, so a config with
  num_heads=4 loaded the 2-head golden npz and computed other outputs (max |diff| 1.5)."""
  case = CASES["vit_tiny_bigvision"]
  cfg = case_config(case)
  assert cfg.num_heads == 2
  path = golden(case["files"]["bigvision_npz"])
  with pytest.raises(ValueError, match=re.escape(
      f"{path}: 'Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel' has "
      f"shape (32, 2, 16): 2 attention heads, but the config has num_heads={heads}")):
    convert_file(cfg.replace(num_heads=heads), path)
  # The out kernel [H, D, C] too, where q/k/v agree with the config.
  w = dict(np.load(path))
  for n in ("query", "key", "value"):
    k = f"{Q}{n}/kernel"
    w[k] = w[k].reshape(32, 4, 8)
  bad = str(tmp_path / "bv.npz")
  np.savez(bad, **w)
  with pytest.raises(ValueError, match=re.escape(f"'{Q}out/kernel' has shape (2, 16, 32): 2 "
                                                 "attention heads, but the config has "
                                                 "num_heads=4")):
    convert_file(cfg.replace(num_heads=4), bad)
  # Without a config the npz still maps (the state dict alone cannot say).
  assert convert.load_checkpoint(path)[1] == "big_vision"
  # A scanned layout names the block along its depth axis (it showed one block's slice).
  scanned = {k: v for k, v in np.load(path).items() if not k.startswith("Transformer/enc")}
  for n in ("query", "key", "value"):
    scanned[f"{S}MultiHeadDotProductAttention_0/{n}/kernel"] = np.stack(
        [np.load(path)[f"Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/{n}/kernel"]
         for i in range(2)])
  scanned[f"{S}LayerNorm_0/scale"] = np.ones((2, 32), np.float32)
  with pytest.raises(ValueError, match=re.escape(
      f"'{S}MultiHeadDotProductAttention_0/query/kernel' (block 0 of its depth axis) has shape "
      "(32, 2, 16): 2 attention heads, but the config has num_heads=4")):
    convert.big_vision_to_timm(scanned, num_heads=4)


def test_pos_embed_of_another_width_reports_the_file_shape(tmp_path):
  """It was resampled to the config's grid first, and the mismatch named a shape the file did
  not hold: (1, 17, 32) in the file was reported as (1, 65, 32)."""
  cfg, params, sd = tiny_sd()
  n, c = cfg.pos_embed_len, cfg.embed_dim
  sd["pos_embed"] = np.zeros((1, 1 + 3 * 3, c // 2), np.float32)    # another grid and width
  assert n != 1 + 3 * 3
  with pytest.raises(ConversionError, match=re.escape(
      f"pos_embed: expected {(1, n, c)}, got {sd['pos_embed'].shape}")):
    convert_state_dict(cfg, sd)


def test_drops_that_match_nothing_are_refused():
  """Both converted and recorded drop_head / ignore_keys in the weights' provenance."""
  cfg, params, sd = tiny_sd()
  with pytest.raises(ValueError, match=r"^ignore_keys \(--ignore_keys\) \['mask_token'\] match no "
                     r"checkpoint key \(first keys: \['blocks\.0\.attn\.proj\.bias', .*\]; a "
                     r"file's lose the module\./_orig_mod\. prefixes of wrapped models when "
                     r"read\); drop only what the checkpoint holds$"):
    convert_state_dict(cfg, sd, ignore_keys=("mask_token",))
  # A pattern may name a key as the file holds it: with its wrapper prefix (stripped from the
  # keys on reading), or by a legacy name that is renamed to timm's (DeiT-3's gamma_1).
  extra = dict(sd, **{"blocks.0.gamma_1": np.ones(32, np.float32)})
  for pattern in ("blocks.0.gamma_1", "blocks.0.ls1.gamma", "module.blocks.0.gamma_*"):
    assert_trees_equal(params, convert_state_dict(cfg, extra, ignore_keys=(pattern,)))
  sd["extra.a"] = np.zeros(1)
  with pytest.raises(ValueError, match=r"ignore_keys \(--ignore_keys\) \['mask_token'\] "):
    convert_state_dict(cfg, sd, ignore_keys=("extra.*", "mask_token"))
  headless = {k: v for k, v in sd.items() if not k.startswith("head.")}
  with pytest.raises(ValueError, match=r"^drop_head \(--drop_head\): the checkpoint has no "
                     r"head\.\* / head_dist\.\* keys to drop"):
    convert_state_dict(cfg.replace(num_classes=0), headless, drop_head=True,
                       ignore_keys=("extra.*",))
  params0 = convert_state_dict(cfg.replace(num_classes=0), headless, ignore_keys=("extra.*",))
  assert "head" not in params0


def test_timm_named_npz(tmp_path):
  cfg, params, sd = tiny_sd()
  np.savez(tmp_path / "sd.npz", **sd)
  got, meta = convert_file(cfg, str(tmp_path / "sd.npz"))
  assert meta["source_format"] == "npz"
  assert_trees_equal(params, got)
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  np.savez(tmp_path / "bf16.npz", **{k: v.astype(ml_dtypes.bfloat16) for k, v in sd.items()})
  with pytest.raises(ValueError, match=r"\(\|V2\).*; \.npz files cannot keep bfloat16 "
                                       r"\(np\.savez stores it as 2 raw bytes"):
    convert_file(cfg, str(tmp_path / "bf16.npz"))      # (it listed bfloat16 as supported)



@pytest.mark.parametrize("second", ["head.weight.npy", "head.weight"])
def test_npz_with_two_arrays_of_one_name_is_refused(tmp_path, second):
  """A zip can hold two members of one name (or 'w' beside 'w.npy'); numpy read one of them and
  the other was dropped in silence: a negated head converted, exit 0."""
  cfg, _, sd = tiny_sd()
  path = tmp_path / "dup.npz"
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")              # (zipfile warns of the duplicate name)
    with zipfile.ZipFile(path, "w") as z:
      for k, v in sd.items():
        buf = io.BytesIO()
        np.save(buf, v)
        z.writestr(k + ".npy", buf.getvalue())
      buf = io.BytesIO()
      np.save(buf, -sd["head.weight"])
      z.writestr(second, buf.getvalue())
  with pytest.raises(ValueError, match=r"dup\.npz: not a valid \.npz file \(it holds more than "
                                       r"one array named \['head\.weight'\]"):
    convert_file(cfg, str(path))



def _damaged_npz(sd, kind):
  """The bytes of an .npz of `sd` damaged as flipped bits damaged them (each was a traceback)."""
  buf = io.BytesIO()
  if kind == "npy header":
    with zipfile.ZipFile(buf, "w") as z:
      header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, \n"
      z.writestr("cls_token.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                 + header + b"\0" * 12)
    return buf.getvalue()
  np.savez_compressed(buf, **sd)
  b = bytearray(buf.getvalue())
  central = b.index(b"PK\x01\x02")
  if kind == "deflate stream":      # block type 3 (reserved) where the first member's data starts
    start = 30 + int.from_bytes(b[26:28], "little") + int.from_bytes(b[28:30], "little")
    b[start] |= 0x06
  elif kind == "compression method":
    b[central + 10] = 99
  else:                             # the 'encrypted' flag
    b[central + 8] |= 1
  return bytes(b)


@pytest.mark.parametrize("kind", ["deflate stream", "compression method", "encrypted flag",
                                  "npy header"])
def test_damaged_npz_is_one_error_naming_the_file(tmp_path, kind):
  """zlib.error, NotImplementedError, RuntimeError and tokenize.TokenError escaped the reader."""
  cfg, _, sd = tiny_sd()
  path = tmp_path / "bad.npz"
  path.write_bytes(_damaged_npz(sd, kind))
  named = {"deflate stream": r"zlib\.error: ", "compression method": "NotImplementedError: ",
           "encrypted flag": "RuntimeError: "}.get(kind, "")
  with pytest.raises(ValueError, match=r"bad\.npz: not a valid \.npz file \(" + named):
    convert_file(cfg, str(path))


def test_safetensors_with_an_unknown_dtype_is_one_error(tmp_path):
  """safetensors' message for an unknown dtype lists BF16 among the known ones, so the reader
  retried it as a bfloat16 file and the jax loader's SafetensorError escaped (a traceback)."""
  cfg, _, sd = tiny_sd()
  path = tmp_path / "w.safetensors"
  save_file(sd, str(path))
  path.write_bytes(path.read_bytes().replace(b'"F32"', b'"F12"', 1))
  with pytest.raises(ValueError, match=r"w\.safetensors: not a valid \.safetensors file "
                                       r"\(SafetensorError: .*F12"):
    convert_file(cfg, str(path))


# ----------------------------------------------------------------------------- errors


def test_missing_unexpected_and_mismatch_reported_together():
  cfg, _, sd = tiny_sd()
  del sd["blocks.1.norm2.bias"]
  del sd["cls_token"]
  sd["blocks.0.attn.q_norm.weight"] = np.zeros(16, np.float32)
  sd["blocks.0.mlp.fc1.weight"] = np.zeros((65, 32), np.float32)
  sd["head.bias"] = np.zeros(11, np.float32)
  with pytest.raises(ConversionError) as e:
    convert_state_dict(cfg, sd)
  err = e.value
  assert err.missing == ["blocks.1.norm2.bias", "cls_token"]
  assert err.unexpected == ["blocks.0.attn.q_norm.weight"]
  assert err.mismatched == [("blocks.0.mlp.fc1.weight", (64, 32), (65, 32)),
                            ("head.bias", (10,), (11,))]
  msg = str(err)
  assert "blocks.0.mlp.fc1.weight: expected (64, 32), got (65, 32)" in msg
  assert "missing keys (2)" in msg and "unexpected keys (1)" in msg


def test_ignore_keys_only_drops_what_matches():
  cfg, params, sd = tiny_sd()
  sd["extra.a"], sd["extra.b"] = np.zeros(1), np.zeros(1)
  assert_trees_equal(params, convert_state_dict(cfg, sd, ignore_keys=("extra.*",)))
  with pytest.raises(ConversionError, match=r"unexpected keys \(1\): \['extra.b'\]"):
    convert_state_dict(cfg, sd, ignore_keys=("extra.a",))


def test_missing_file():
  with pytest.raises(FileNotFoundError, match="nope.safetensors"):
    convert.load_checkpoint("/nonexistent/nope.safetensors")


def test_a_special_file_is_not_reported_missing(tmp_path):
  """A FIFO named model.safetensors was 'checkpoint file not found'."""
  fifo = tmp_path / "model.safetensors"
  os.mkfifo(fifo)
  with pytest.raises(OSError, match=re.escape(f"checkpoint {fifo} is not a regular file (a "
                                              "device, FIFO or socket)")):
    convert.load_checkpoint(str(fifo))
  os.remove(fifo)
  os.symlink(tmp_path / "gone.safetensors", fifo)
  with pytest.raises(OSError, match=re.escape(f"checkpoint {fifo} is a dangling link")):
    convert.load_checkpoint(str(fifo))


def test_wrong_extension(tmp_path):
  p = tmp_path / "model.ckpt"
  p.write_bytes(b"x")
  with pytest.raises(ValueError, match=r"model\.ckpt: unsupported checkpoint extension '\.ckpt'"):
    convert.load_checkpoint(str(p))


def test_corrupted_safetensors(tmp_path):
  p = tmp_path / "bad.safetensors"
  p.write_bytes(open(golden("deit_tiny.safetensors"), "rb").read()[:1000])
  with pytest.raises(ValueError, match=r"bad\.safetensors: not a valid \.safetensors file"):
    convert.load_checkpoint(str(p))


def test_corrupted_npz(tmp_path):
  p = tmp_path / "bad.npz"
  p.write_bytes(open(golden("vit_tiny_bigvision.weights.npz"), "rb").read()[:5000])
  with pytest.raises(ValueError, match=r"bad\.npz: not a valid \.npz file"):
    convert.load_checkpoint(str(p))
  q = tmp_path / "other.npz"
  np.savez(q, foo=np.zeros(2))
  with pytest.raises(ValueError, match=r"other\.npz: \.npz has neither big_vision names"):
    convert.load_checkpoint(str(q))
  named = tmp_path / "st.npz"                 # a safetensors file under an .npz name: numpy
  save_file({"a": np.zeros(2, np.float32)}, str(named))     # advised allow_pickle
  with pytest.raises(ValueError, match=r"st\.npz: not a valid \.npz file \(no zip archive "
                     r"header\) \(it looks like a \.safetensors file: name it so\)$"):
    convert.load_checkpoint(str(named))
  one = tmp_path / "one.npz"                  # a single array (.npy) under an .npz name
  with open(one, "wb") as f:
    np.save(f, np.zeros(3))
  with pytest.raises(ValueError, match=r"one\.npz: not a valid \.npz file \(it holds one "
                     "ndarray"):
    convert.load_checkpoint(str(one))
  # An entry whose header declares 4 PB: numpy's "Unable to allocate" named neither the file nor
  # the entry.
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                "shape": (10**15,)})
  huge = tmp_path / "huge.npz"
  with zipfile.ZipFile(huge, "w") as z:
    z.writestr("pos_embed.npy", header.getvalue() + b"\0" * 16)
  with pytest.raises(MemoryError, match=r"huge\.npz: entry 'pos_embed' does not fit in memory "
                                        r"\(Unable to allocate"):
    convert.load_checkpoint(str(huge))
  with pytest.MonkeyPatch.context() as mp:      # numpy's bare MemoryError() has no text
    mp.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda self, k: (_ for _ in ()).throw(
        MemoryError()))
    with pytest.raises(MemoryError, match=r"entry 'foo' does not fit in memory \(MemoryError\)$"):
      convert.load_checkpoint(str(q))


def test_non_array_entries_rejected():
  with pytest.raises(ValueError, match=r"x\.pth: entries \['epoch'\] are not arrays"):
    convert._to_numpy_dict({"a": np.zeros(1), "epoch": 3}, "x.pth")


# ----------------------------------------------------------------------------- saving + CLI


def test_convert_checkpoint_saves_with_meta(tmp_path):
  cfg, params, sd = tiny_sd()
  src = tmp_path / "tiny.safetensors"
  save_file(sd, str(src))
  out = tmp_path / "weights" / "test_tiny_vit"
  path, _, meta = convert.convert_checkpoint(cfg, str(src), str(out))
  cfg2, loaded = checkpoint.load_weights(path)
  assert cfg2 == cfg
  assert_trees_equal(params, loaded)
  _, saved_meta = checkpoint.read_weights_config(path)
  assert saved_meta == meta
  assert saved_meta["source_file"] == "tiny.safetensors"
  assert saved_meta["source_sha256"] == file_sha256(str(src))
  assert len(saved_meta["source_sha256"]) == 64
  assert saved_meta["timm_name"] == "test_tiny_vit" and saved_meta["img_size"] == 32
  assert saved_meta["converted_at"].endswith("+00:00")
  with pytest.raises(FileExistsError, match="already exists"):
    convert.convert_checkpoint(cfg, str(src), str(out))
  # Another run's weights saved there while this one converted: not replaced, with or without
  # overwrite; this run's kept beside, named.
  convert_file = convert.convert_file                  # (another publish: another inventory id)
  theirs = checkpoint.save_weights(str(tmp_path / "theirs"), cfg, params)
  for overwrite, target in ((True, out), (False, tmp_path / "weights" / "other")):

    def another_run_saves_meanwhile(*args, **kwargs):
      if os.path.exists(target):
        shutil.rmtree(target)
      shutil.copytree(theirs, target)
      return convert_file(*args, **kwargs)
    convert.convert_file = another_run_saves_meanwhile
    try:
      with pytest.raises(FileExistsError, match=f"{target}.*this run's output is kept in "
                                                f"{target}\\.partial-"):
        convert.convert_checkpoint(cfg, str(src), str(target), overwrite=overwrite)
    finally:
      convert.convert_file = convert_file
    (kept,) = (tmp_path / "weights").glob(f"{target.name}.partial-*")
    assert checkpoint.read_weights_config(str(kept))[1]["source_file"] == "tiny.safetensors"


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
  cfg, _, sd = tiny_sd()
  del sd["norm.bias"]
  src = tmp_path / "broken.safetensors"
  save_file(sd, str(src))
  parent = tmp_path / "weights"
  with pytest.raises(ConversionError, match="norm.bias"):
    convert.convert_checkpoint(cfg, str(src), str(parent / "m"))
  assert not parent.exists() or os.listdir(parent) == []
  # A failure while writing (after conversion succeeded) leaves no partial directory either.
  _, _, sd = tiny_sd()
  save_file(sd, str(src))

  class Boom:
    def save(self, path, tree):
      os.makedirs(path)
      open(os.path.join(path, "partial"), "w").close()
      raise OSError("disk full")

  monkeypatch.setattr(orbax_io, "checkpointer", lambda: Boom())
  with pytest.raises(OSError, match="disk full"):
    convert.convert_checkpoint(cfg, str(src), str(parent / "m"))
  assert os.listdir(parent) == []


def test_cli_run_and_errors(tmp_path, capsys):
  from experiments import convert as cli  # pylint: disable=g-import-not-at-top  (name clash)
  cfg, _, sd = tiny_sd()
  src = tmp_path / "tiny.safetensors"
  save_file(sd, str(src))
  out = cli.run("test_tiny_vit", str(src), out=str(tmp_path / "w"), verify=True)
  said = capsys.readouterr()
  text = said.out
  n = sum(v.size for v in sd.values())
  assert f"{n:,} parameters" in text and "verify: logits (1, 10)" in text
  assert "ignores its input" not in said.err
  save_file(dict(sd, **{"head.weight": np.zeros_like(sd["head.weight"])}), str(src))
  cli.run("test_tiny_vit", str(src), out=str(tmp_path / "w0"), verify=True)
  assert capsys.readouterr().err == (
      "warning: verify: the logits are the same for two different images: the model ignores "
      "its input (a zeroed head, as a checkpoint made for fine-tuning has, or weights that did "
      "not load as meant)\n")
  save_file(dict(sd, **{"head.weight": np.full_like(sd["head.weight"], 1e30)}), str(src))
  cli.run("test_tiny_vit", str(src), out=str(tmp_path / "w1"), verify=True)
  assert capsys.readouterr().err == (       # (a probe: 'top-1 class 0' of a tie, unsaid)
      "warning: verify: all 10 logits are one value: every class ties and top-1 class 0 is an "
      "arbitrary pick (a head that did not load as meant)\n")
  assert checkpoint.read_weights_config(out)[0] == cfg
  assert cli.default_out("vit_small_patch14_dinov2", 224, 518) == os.path.join(
      "weights", "vit_small_patch14_dinov2_224")
  assert cli.default_out("deit_tiny_patch16_224", None, 224) == os.path.join(
      "weights", "deit_tiny_patch16_224")
  with pytest.raises(KeyError, match="Did you mean: deit_tiny_patch16_224"):
    cli.run("deit_tiny_patch16_22", str(src))


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.convert", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_a_path_that_is_not_utf8_prints_escaped_instead_of_failing_after_the_write(tmp_path):
  """Under a UTF-8 locale stdout is strict: printing `\\udcff` failed after --out was written
  (exit 1, and a rerun then said "already exists")."""
  cfg = get_config("test_tiny_vit")
  src = os.path.join(os.fsencode(tmp_path), b"\xff.safetensors")
  save_file(to_timm_state_dict(cfg, init_params(cfg, 0)), os.fsdecode(src))
  r = subprocess.run([sys.executable, "-m", "experiments.convert", "--model=test_tiny_vit",
                      b"--checkpoint=" + src, f"--out={tmp_path / 'w'}"], cwd=ROOT,
                     capture_output=True, timeout=120,
                     env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONIOENCODING="utf-8:strict"))
  assert r.returncode == 0, r.stderr[-2000:]
  assert b"converted \\udcff.safetensors (safetensors" in r.stdout


def test_a_model_name_for_a_config_is_a_type_error_naming_it(tmp_path):
  """convert_checkpoint('vit_digits', ...) failed with "'str' object has no attribute
  'img_size'"."""
  cfg = get_config("test_tiny_vit")
  sd = to_timm_state_dict(cfg, init_params(cfg, 0))
  with pytest.raises(TypeError, match="cfg must be a vitprune ViTConfig .* got str "):
    convert_state_dict("test_tiny_vit", sd)
  with pytest.raises(TypeError, match="cfg must be a vitprune ViTConfig"):
    convert.convert_checkpoint("test_tiny_vit", str(tmp_path / "x.npz"), str(tmp_path / "w"))
  assert os.listdir(tmp_path) == []
  np.savez(tmp_path / "sd.npz", **sd)          # (it read cfg.num_heads first: AttributeError)
  with pytest.raises(TypeError, match="cfg must be a vitprune ViTConfig .* got str "):
    convert.convert_file("test_tiny_vit", str(tmp_path / "sd.npz"))


def test_the_success_lines_escape_control_characters_in_names(tmp_path, capsys):
  """A checkpoint or --out name holding a newline or a terminal escape split the line and
  recoloured the terminal."""
  from experiments import convert as cli  # pylint: disable=g-import-not-at-top  (name clash)
  cfg = get_config("test_tiny_vit")
  src = tmp_path / "a\nb\x1b[31m.safetensors"
  save_file(to_timm_state_dict(cfg, init_params(cfg, 0)), str(src))
  out = cli.run("test_tiny_vit", str(src), out=str(tmp_path / "o\tx"))
  assert os.path.isdir(out)
  first = capsys.readouterr().out.splitlines()[0]
  assert first.startswith("converted a\\nb\\x1b[31m.safetensors (safetensors, sha256 ")
  assert first.endswith(f") -> {tmp_path}/o\\tx")


def test_cli_subprocess_exit_codes(tmp_path):
  bad = tmp_path / "bad.safetensors"
  bad.write_bytes(b"\x00" * 20)
  r = _cli("--model=test_tiny_vit", f"--checkpoint={bad}", f"--out={tmp_path / 'w'}")
  assert r.returncode == 1, r
  assert r.stderr.startswith("error: ") and "bad.safetensors" in r.stderr
  assert "Traceback" not in r.stderr and not (tmp_path / "w").exists()
  r = _cli("--model=deit_smal_patch16_224", f"--checkpoint={bad}")
  assert r.returncode == 1 and "Did you mean: deit_small_patch16_224" in r.stderr
  assert "Traceback" not in r.stderr
  r = _cli("--model=test_tiny_vit", f"--checkpoint={tmp_path / 'missing.pth'}")
  assert r.returncode == 1 and "checkpoint file not found" in r.stderr
  assert "Traceback" not in r.stderr


def test_non_finite_weights_impossible_sizes_and_failed_verify_write_nothing(tmp_path):
  cfg, _, sd = tiny_sd()
  src = tmp_path / "nan.safetensors"
  bad = dict(sd)
  bad["blocks.0.attn.qkv.bias"] = bad["blocks.0.attn.qkv.bias"].copy()
  bad["blocks.0.attn.qkv.bias"][1] = np.nan
  save_file(bad, str(src))
  out = tmp_path / "weights" / "m"
  with pytest.raises(ValueError, match=r"NaN/inf values in \['blocks.0.attn.qkv.bias'\]"):
    convert.convert_checkpoint(cfg, str(src), str(out))
  # float64 values float32 cannot hold: not "NaN/inf", and no overflow warning line before it
  wide = dict(sd, **{"head.weight": np.full(sd["head.weight"].shape, 1e300)})
  save_file(wide, str(src))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(src))}: checkpoint has values "
                       r"beyond float32's range \(\|x\| > 3.4e38\) in \['head.weight'\]; "
                       r"refusing to convert it$"):      # (naming the file, as a bad read does)
      convert.convert_checkpoint(cfg, str(src), str(out))
    # ... also in the position embedding resampled to another size (cast before the checks)
    pos = dict(sd, pos_embed=np.full(sd["pos_embed"].shape, 1e300))
    with pytest.raises(ValueError, match=r"beyond float32's range .* in \['pos_embed'\]"):
      convert.convert_state_dict(cfg.replace(img_size=48), pos)
    # ... and float32 values whose cubic resampling overshoots its range: one line saying so
    # (it was numpy's overflow warning, then 'parameters hold NaN/inf' when saving)
    side = int(np.sqrt(sd["pos_embed"].shape[1] - 1))
    checker = (np.indices((side, side)).sum(0) % 2).reshape(-1, 1)
    edge = np.where(checker, 3.3e38, -3.3e38).astype(np.float32)
    pos = dict(sd, pos_embed=np.concatenate([sd["pos_embed"][:, :1], edge[None].repeat(
        sd["pos_embed"].shape[2], axis=2)], axis=1))
    with pytest.raises(ValueError, match=rf"^pos_embed resampled from a {side}x{side} to a "
                       r"6x6 grid \(bicubic\) leaves float32's range; refusing to convert it$"):
      convert.convert_state_dict(cfg.replace(img_size=48), pos)
  save_file(sd, str(src))
  with pytest.raises(ValueError, match="img_size must be a positive integer, got -32"):
    convert.convert_checkpoint(cfg.replace(img_size=-32), str(src), str(out))
  # Finite weights whose outputs overflow: verify fails before anything is written.
  huge = dict(sd, **{"head.weight": np.full_like(sd["head.weight"], 3e38)})
  save_file(huge, str(src))
  with pytest.raises(ValueError, match=rf"^{re.escape(str(src))}: verify: the converted model "
                     r"produced non-finite outputs \(its largest weight: head\.weight, \|x\| up "
                     r"to 3e\+38\)$"):
    convert.convert_checkpoint(cfg, str(src), str(out), verify=True)
  assert not out.parent.exists() or os.listdir(out.parent) == []
  save_file(sd, str(src))
  path, params, meta = convert.convert_checkpoint(cfg, str(src), str(out), verify=True)
  want = np.asarray(forward(params, np.random.default_rng(0).standard_normal(
      (1, 32, 32, 3)).astype(np.float32), cfg=cfg))
  assert meta["verified"]["top1"] == int(want.argmax())
  assert checkpoint.read_weights_config(path)[1]["verified"] == meta["verified"]
  assert meta["verified"]["input_independent"] is False
  assert meta["verified"]["classes_tied"] is False
  # A zeroed head: finite logits, the same for every image (verify passed it without a word).
  zeroed = dict(sd, **{"head.weight": np.zeros_like(sd["head.weight"])})
  save_file(zeroed, str(src))
  _, _, meta = convert.convert_checkpoint(cfg, str(src), str(out), verify=True, overwrite=True)
  assert meta["verified"]["input_independent"] is True
  assert meta["verified"]["classes_tied"] is True                  # (its zero bias: all 0)
  # A head whose columns are one huge value: every class ties (top-1 class 0 passed unsaid).
  tied = dict(sd, **{"head.weight": np.full_like(sd["head.weight"], 1e30)})
  save_file(tied, str(src))
  _, _, meta = convert.convert_checkpoint(cfg, str(src), str(out), verify=True, overwrite=True)
  assert meta["verified"]["classes_tied"] is True and meta["verified"]["std"] == 0.0


def test_overwrite_refuses_a_foreign_folder(tmp_path):
  cfg, _, sd = tiny_sd()
  src = tmp_path / "m.safetensors"
  save_file(sd, str(src))
  out = tmp_path / "out"
  out.mkdir()
  (out / "NOTES.txt").write_text("keep me")
  with pytest.raises(FileExistsError, match=f"refusing to replace {out}: it is a folder"):
    convert.convert_checkpoint(cfg, str(src), str(out), overwrite=True)
  assert os.listdir(out) == ["NOTES.txt"] and sorted(os.listdir(tmp_path)) == [
      "m.safetensors", "out"]


def test_output_checks_come_before_reading_the_checkpoint(tmp_path):
  """An output orbax cannot take was refused only inside save_weights, after the conversion
  (and --verify); an empty directory was refused though the CLI accepted it."""
  cfg = get_config("test_tiny_vit")
  bad = os.fsdecode(os.fsencode(str(tmp_path)) + b"/w\xff")
  with pytest.raises(OSError, match="not valid UTF-8"):         # not: checkpoint missing
    convert.convert_checkpoint(cfg, str(tmp_path / "missing.npz"), bad)
  with pytest.raises(OSError, match="is a mount point"):
    convert.convert_checkpoint(cfg, str(tmp_path / "missing.npz"), "/", overwrite=True)
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="missing.npz"):  # past the output checks
    convert.convert_checkpoint(cfg, str(tmp_path / "missing.npz"), str(tmp_path / "empty"))


def test_a_conversion_error_lists_up_to_eight_keys_whole_and_counts_the_rest():
  eight = [f"blocks.{i}.norm1.weight" for i in range(8)]
  lines = convert.ConversionError("m", missing=eight, unexpected=eight + ["x"]).args[0].split("\n")
  assert lines[1] == f"  missing keys (8): {eight};"
  assert lines[2] == f"  unexpected keys (9): {eight} and 1 more"


def test_verify_calls_logits_within_one_millionth_of_each_other_tied():
  cfg = get_config("test_tiny_vit")
  params = init_params(cfg, 0)
  params["head"]["kernel"] = jax.numpy.zeros_like(params["head"]["kernel"])  # logits = the bias
  ramp = np.arange(cfg.num_classes) / max(cfg.num_classes - 1, 1)
  for spread, tied in ((5e-7, True), (2e-6, False)):       # relative to logits near 1.0
    params["head"]["bias"] = jax.numpy.asarray(1.0 + spread * ramp, np.float32)
    assert convert.verify_forward(cfg, params)["classes_tied"] is tied, spread


def test_the_size_of_a_checkpoint_without_a_cls_token_is_its_patch_embeddings_width():
  sd = {"patch_embed.proj.weight": np.zeros((32, 3, 4, 4)), "blocks.0.norm1.weight": 0,
        "blocks.3.norm1.weight": 0}
  assert convert.state_dict_size(sd) == (4, 32)
  assert convert.state_dict_size(dict(sd, cls_token=np.zeros((1, 1, 48)))) == (4, 48)


def test_the_weights_meta_records_the_head_dropped_and_the_keys_ignored(tmp_path):
  cfg, params, sd = tiny_sd()
  src = tmp_path / "tiny.safetensors"
  save_file(dict(sd, mask_token=np.zeros((1, cfg.embed_dim), np.float32)), str(src))
  features_only = cfg.replace(num_classes=0)
  _, meta = convert_file(features_only, str(src), drop_head=True, ignore_keys=("mask_token",))
  assert (meta["drop_head"], meta["ignore_keys"], meta["num_classes"]) == (
      True, ["mask_token"], 0)
  head = params["head"]["kernel"].size + params["head"]["bias"].size
  assert meta["num_params"] == sum(np.size(x) for x in jax.tree.leaves(params)) - head


def test_the_cli_passes_each_flag_on_and_says_what_it_converted(tmp_path):
  """Mutation audit of experiments/convert.py: --img_size names the default --out and is
  resampled for (said), --verify prints the top-1 class, --num_classes / --drop_head /
  --ignore_keys / --overwrite reach the conversion, and the first line holds 12 sha256 digits."""
  from experiments import convert as cli  # pylint: disable=g-import-not-at-top  (name clash)
  cfg, _, sd = tiny_sd()
  save_file(sd, str(tmp_path / "t.safetensors"))
  sha = file_sha256(str(tmp_path / "t.safetensors"))[:12]
  code, out, err = run_cli_in_process(tmp_path, "convert", [
      "--model=test_tiny_vit", "--checkpoint=t.safetensors", "--img_size=48", "--verify"])
  assert (code, err) == (0, ""), err
  made = tmp_path / "weights" / "test_tiny_vit_48"          # (the default --out at 48 pixels)
  lines = out.splitlines()
  assert lines[:3] == [
      f"converted t.safetensors (safetensors, sha256 {sha}) -> {made}",
      "test_tiny_vit: 24,874 parameters, img_size 48, num_classes 10",
      "pos_embed resampled (1, 17, 32) -> (1, 37, 32) (bicubic, antialias=True)"]
  assert re.fullmatch(r"verify: logits \(1, 10\), mean [+-]\d\.\d{6}, std \d\.\d{6}, "
                      r"top-1 class \d", lines[3]) and len(lines) == 4, out
  assert checkpoint.read_weights_config(str(made))[0] == cfg.replace(img_size=48)
  assert cli.default_out("test_tiny_vit", 32, 32) == os.path.join("weights", "test_tiny_vit")
  save_file(dict(sd, mask_token=np.zeros((1, cfg.embed_dim), np.float32)),
            str(tmp_path / "m.safetensors"))
  features = ["--model=test_tiny_vit", "--checkpoint=m.safetensors", "--num_classes=0",
              "--drop_head", "--ignore_keys=mask_token", "--out=f"]
  code, out, err = run_cli_in_process(tmp_path, "convert", features)
  assert (code, err) == (0, ""), err
  assert out.splitlines()[1] == "test_tiny_vit: 23,904 parameters, img_size 32, num_classes 0"
  assert checkpoint.read_weights_config(str(tmp_path / "f"))[0] == cfg.replace(num_classes=0)
  assert run_cli_in_process(tmp_path, "convert", features) == (
      1, "", "error: --out=f already exists (pass --overwrite to replace it)\n")
  code, out, err = run_cli_in_process(tmp_path, "convert", features + ["--overwrite"])
  assert (code, err) == (0, "") and out.startswith("converted m.safetensors"), err


def test_big_vision_npz_weights_are_never_dropped_in_silence(tmp_path):
  """A scanned array with more entries than the depth lost its extra blocks, and a timm-named key
  beside its big_vision source replaced the converted one: both converted, exit 0."""
  cfg = get_config("test_tiny_vit")
  sd = to_timm_state_dict(cfg, init_params(cfg, 0))
  mixed = dict(sd, **{"embedding/kernel": np.ones((8, 8, 3, 32), np.float32)})
  np.savez(tmp_path / "mixed.npz", **mixed)
  with pytest.raises(ValueError, match="'patch_embed.proj.weight' under its timm name"):
    convert.load_checkpoint(str(tmp_path / "mixed.npz"))
  w = {"params/embedding/kernel": np.zeros((8, 8, 3, 32), np.float32),
       "params/Transformer/encoderblock/LayerNorm_0/scale": np.ones((2, 32), np.float32),
       "params/Transformer/encoderblock/LayerNorm_0/bias": np.zeros((3, 32), np.float32)}
  np.savez(tmp_path / "scan.npz", **w)
  with pytest.raises(ValueError, match="not one entry per block of the scanned depth 2"):
    convert.load_checkpoint(str(tmp_path / "scan.npz"))
