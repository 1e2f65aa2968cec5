"""vitprune.checkpoint: save/load round trips, refusals, corruption and atomicity."""
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest

from vitprune import atomic, checkpoint
from vitprune.model import init_params
from vitprune.registry import get_config

TINY = ["test_tiny_vit", "test_tiny_distilled", "test_tiny_dinov2_reg"]


@pytest.mark.parametrize("name", TINY)
def test_round_trip(tmp_path, name):
  cfg = get_config(name)
  params = init_params(cfg, seed=7)
  path = checkpoint.save_weights(str(tmp_path / name), cfg, params, meta={"k": [1, "x"]})
  assert path == str(tmp_path / name)
  assert sorted(os.listdir(path)) == [".vitprune-files.json", "config.json", "params"]
  cfg2, loaded = checkpoint.load_weights(path)
  assert cfg2 == cfg and hash(cfg2) == hash(cfg)
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
    assert b.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert checkpoint.read_weights_config(path)[1] == {"k": [1, "x"]}


def test_overwrite_refused_then_allowed(tmp_path):
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  with pytest.raises(FileExistsError, match="already exists"):
    checkpoint.save_weights(path, cfg, init_params(cfg, 1))
  checkpoint.save_weights(path, cfg, init_params(cfg, 1), overwrite=True)
  _, loaded = checkpoint.load_weights(path)
  np.testing.assert_array_equal(loaded["cls_token"], init_params(cfg, 1)["cls_token"])
  assert os.listdir(tmp_path) == ["w"]  # no temp or old directories left behind


def test_wrong_params_rejected_before_writing(tmp_path):
  cfg = get_config("test_tiny_vit")
  params = init_params(get_config("test_tiny_distilled"), 0)
  with pytest.raises(ValueError, match=r"unexpected: \['dist_token', 'head_dist\.bias'"):
    checkpoint.save_weights(str(tmp_path / "w"), cfg, params)
  assert not (tmp_path / "w").exists()


def test_params_of_another_model_are_named_in_one_short_line(tmp_path):
  """Another model's params/ in place of these weights' (a probe swapped an artifact's): orbax's
  refusal listed every stored key, 1.3 kB in one line; the restore names two and counts."""
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  other = get_config("test_tiny_distilled")
  shutil.rmtree(os.path.join(path, "params"))
  from vitprune import orbax_io  # pylint: disable=g-import-not-at-top
  orbax_io.save(os.path.join(path, "params"), init_params(other, 0))
  with pytest.raises(ValueError, match=r"the stored weights are not this model's structure: "
                     r"extra 3 \(\['dist_token'\], \['head_dist'\]\['bias'\] and 1 more\)") as e:
    checkpoint.load_weights(path)
  assert len(str(e.value)) < 400 and "\n" not in str(e.value)
  # The other way round (these weights' leaves missing), orbax words it otherwise.
  path = checkpoint.save_weights(str(tmp_path / "d"), other, init_params(other, 0))
  shutil.rmtree(os.path.join(path, "params"))
  orbax_io.save(os.path.join(path, "params"), init_params(cfg, 0))
  with pytest.raises(ValueError, match=r"the stored weights are not this model's structure: "
                     r"missing 3 \(\['dist_token'\], \['head_dist'\]\['bias'\] and 1 more\)$"):
    checkpoint.load_weights(path)


def test_orbax_warnings_are_python_warnings_on_one_line(tmp_path):
  """Params missing orbax's metadata file still restore; orbax's absl line ('W1205 04:13:23.94
  ... checkpoint.py:202] Metadata file does not exist') is a one-line Python warning instead."""
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  os.unlink(os.path.join(path, "params", "_CHECKPOINT_METADATA"))
  with pytest.warns(UserWarning, match=r"^orbax: Metadata file does not exist: .*"
                                       r"_CHECKPOINT_METADATA$"):
    _, loaded = checkpoint.load_weights(path)
  np.testing.assert_array_equal(loaded["cls_token"], init_params(cfg, 0)["cls_token"])


def test_corrupted_config_json(tmp_path):
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write('{"format": "vitprune-weights", "vers')
  with pytest.raises(ValueError, match=r"config\.json is corrupted"):
    checkpoint.load_weights(path)


def test_config_json_wrong_format_and_fields(tmp_path):
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  cfile = os.path.join(path, "config.json")
  doc = json.load(open(cfile))
  json.dump(dict(doc, format="other"), open(cfile, "w"))
  with pytest.raises(ValueError, match="format 'other' is not 'vitprune-weights'"):
    checkpoint.read_weights_config(path)
  json.dump(dict(doc, config=dict(doc["config"], bogus=1)), open(cfile, "w"))
  with pytest.raises(ValueError, match=r"unknown fields \['bogus'\]"):
    checkpoint.read_weights_config(path)
  for version in (3, 0, "1", None, True):   # a future (or no) version is refused, not guessed
    json.dump(dict(doc, version=version), open(cfile, "w"))
    with pytest.raises(ValueError, match=rf"config.json: unsupported version {version!r}$"):
      checkpoint.read_weights_config(path)


def test_missing_params_dir_and_missing_directory(tmp_path):
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  import shutil
  shutil.rmtree(os.path.join(path, "params"))
  with pytest.raises(FileNotFoundError, match="has no params/ checkpoint"):
    checkpoint.load_weights(path)
  with pytest.raises(FileNotFoundError, match=r"nothing does not exist$"):   # (not "no
    checkpoint.load_weights(str(tmp_path / "nothing"))                   # config.json")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match=r"empty is not a vitprune weights directory "
                     r"\(no config.json\)$"):
    checkpoint.load_weights(str(tmp_path / "empty"))
  (tmp_path / "empty" / "config.json").mkdir()             # (said: "no config.json")
  with pytest.raises(FileNotFoundError, match=r"empty is not a vitprune weights directory "
                     r"\(its config.json is a folder, not a file\)$"):
    checkpoint.load_weights(str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match=r"config.json is a file, not a vitprune weights "
                     r"directory \(give the folder holding config.json and params/\)$"):
    checkpoint.load_weights(os.path.join(path, "config.json"))   # (said: "no config.json")


def test_failure_mid_save_leaves_no_directory(tmp_path, monkeypatch):
  cfg = get_config("test_tiny_dinov2_reg")

  seen = []

  def boom(path, obj, **kw):
    seen.append(sorted(os.listdir(os.path.dirname(path))))  # the staging dir, mid-save
    raise RuntimeError("simulated crash while writing config.json")

  monkeypatch.setattr(atomic, "write_json", boom)
  with pytest.raises(RuntimeError, match="simulated crash"):
    checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  assert seen and "params" in seen[0]  # the crash happened after params/ was written
  assert os.listdir(tmp_path) == []


def test_failure_mid_overwrite_keeps_old_weights(tmp_path, monkeypatch):
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  def full(path, obj, **kw):
    raise OSError("disk full")

  monkeypatch.setattr(atomic, "write_json", full)
  with pytest.raises(OSError, match="disk full"):
    checkpoint.save_weights(path, cfg, init_params(cfg, 1), overwrite=True)
  monkeypatch.undo()
  assert os.listdir(tmp_path) == ["w"]
  _, loaded = checkpoint.load_weights(path)
  np.testing.assert_array_equal(loaded["cls_token"], init_params(cfg, 0)["cls_token"])


def test_weights_replaced_while_read_are_read_again(tmp_path, monkeypatch):
  """A reader racing another run's --overwrite met two versions' files and reported corrupt
  weights (orbax: "Truncated Zstd-compressed stream"; a probe): the folder replaced meanwhile
  is read again, and the same folder's own failure is still the error."""
  import shutil  # pylint: disable=g-import-not-at-top
  from vitprune import orbax_io  # pylint: disable=g-import-not-at-top
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  newer = checkpoint.save_weights(str(tmp_path / "v"), cfg, init_params(cfg, 1))
  restore, calls = orbax_io.restore, []

  def replaced_while_read(*args, **kwargs):
    calls.append(args[0])
    if len(calls) == 1:              # another run publishes its weights over the folder
      os.rename(path, str(tmp_path / "old"))
      shutil.copytree(newer, path)
      raise ValueError("FAILED_PRECONDITION: Truncated Zstd-compressed stream")
    return restore(*args, **kwargs)
  monkeypatch.setattr(orbax_io, "restore", replaced_while_read)
  _, loaded = checkpoint.load_weights(path)
  assert len(calls) == 2
  np.testing.assert_array_equal(loaded["cls_token"], init_params(cfg, 1)["cls_token"])

  def corrupt(*args, **kwargs):
    calls.append(args[0])
    raise ValueError("Truncated Zstd-compressed stream")
  monkeypatch.setattr(orbax_io, "restore", corrupt)
  calls.clear()
  with pytest.raises(ValueError, match=r"could not restore parameters from .*Truncated Zstd"):
    checkpoint.load_weights(path)
  assert len(calls) == 1              # (not replaced: read once)


def test_extra_json_files_are_part_of_the_atomic_write(tmp_path):
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0),
                                 extra_json={"metrics.json": {"test_accuracy": 0.5}})
  with open(os.path.join(path, "metrics.json")) as f:
    assert json.load(f) == {"test_accuracy": 0.5}
  # '' / '.' / '..' failed after the save with a raw OSError; the inventory file's name was
  # accepted and then overwritten by the folder's file list.
  for bad in ("config.json", "params", "../x.json", "", ".", "..", ".vitprune-files.json", 3):
    with pytest.raises(ValueError, match="must be a plain file name"):
      checkpoint.save_weights(str(tmp_path / "v"), cfg, init_params(cfg, 0),
                              extra_json={bad: {}})
  # What a JSON file cannot hold is named, before any work (json's "Object of type set" / "Out
  # of range float values" named nothing).
  for kw, said in (({"meta": {"tags": {"a"}}}, r"meta\['tags'\] is a set"),
                   ({"extra_json": {"m.json": {"loss": float("nan")}}},
                    r"extra_json\['m.json'\]\['loss'\] is nan")):
    with pytest.raises(ValueError, match=f"^{said}, which a JSON file cannot hold$"):
      checkpoint.save_weights(str(tmp_path / "v"), cfg, init_params(cfg, 0), **kw)
  assert sorted(os.listdir(tmp_path)) == ["w"]     # failed writes left nothing behind


def test_class_names_recorded_and_validated(tmp_path):
  cfg = get_config("test_tiny_vit")
  names = [f"c{i}" for i in range(cfg.num_classes)]
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0),
                                 class_names=names)
  assert checkpoint.read_class_names(path) == tuple(names)
  plain = checkpoint.save_weights(str(tmp_path / "p"), cfg, init_params(cfg, 0))
  assert checkpoint.read_class_names(plain) is None
  with pytest.raises(ValueError, match="class_names has 3 names but the model has 10 classes"):
    checkpoint.save_weights(str(tmp_path / "v"), cfg, init_params(cfg, 0),
                            class_names=["a", "b", "c"])
  with pytest.raises(ValueError, match="class_names must be a list of non-empty strings"):
    checkpoint.save_weights(str(tmp_path / "v"), cfg, init_params(cfg, 0), class_names="abc")
  cfile = os.path.join(path, "config.json")
  doc = json.load(open(cfile))
  json.dump(dict(doc, class_names=names[:-1] + [names[0]]), open(cfile, "w"))
  with pytest.raises(ValueError, match=r"config\.json: class_names repeats \['c0'\]"):
    checkpoint.read_weights_config(path)
  assert sorted(os.listdir(tmp_path)) == ["p", "w"]


def test_non_finite_params_and_impossible_configs_refused(tmp_path):
  cfg = get_config("test_tiny_vit")
  params = init_params(cfg, 0)
  params["head"]["bias"] = params["head"]["bias"].at[3].set(np.inf)
  with pytest.raises(ValueError, match=r"NaN/inf values in \['head\.bias'\]; refusing to save"):
    checkpoint.save_weights(str(tmp_path / "w"), cfg, params)
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  cfile = os.path.join(path, "config.json")
  doc = json.load(open(cfile))
  for field, bad, match in [("img_size", -32, "img_size must be a positive integer"),
                            ("depth", "2", "depth must be a positive integer"),
                            ("norm_eps", float("inf"), "Infinity is not a JSON number")]:
    json.dump(dict(doc, config=dict(doc["config"], **{field: bad})), open(cfile, "w"))
    with pytest.raises(ValueError, match=match):
      checkpoint.read_weights_config(path)
  with open(cfile, "w") as f:          # a number no float holds: read as inf by plain json
    f.write(json.dumps(dict(doc, config=dict(doc["config"], norm_eps=123.0))).replace(
        "123.0", "1e400"))
  with pytest.raises(ValueError, match="not valid JSON: number 1e400 is out of range"):
    checkpoint.read_weights_config(path)
  json.dump(dict(doc, meta=[1]), open(cfile, "w"))
  with pytest.raises(ValueError, match="'meta' must be an object"):
    checkpoint.read_weights_config(path)
  assert os.listdir(tmp_path) == ["w"]


def test_non_finite_params_written_by_hand_are_refused_on_load(tmp_path):
  """save_weights refuses NaN, but a directory written with orbax directly (a diverged run)
  loaded: prune then failed with a traceback, estimate only after the whole evaluation."""
  import shutil  # pylint: disable=g-import-not-at-top
  from vitprune import orbax_io  # pylint: disable=g-import-not-at-top
  cfg = get_config("test_tiny_vit")
  params = jax.tree.map(np.array, init_params(cfg, 0))      # writable copies
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, params)
  params["blocks"][1]["mlp"]["fc1"]["kernel"][0, 0] = np.nan
  shutil.rmtree(os.path.join(path, "params"))
  orbax_io.save(os.path.join(path, "params"), params)
  with pytest.raises(ValueError, match=re.escape(
      f"the parameters in {path}/params hold NaN/inf values in ['blocks.1.mlp.fc1.kernel']; "
      "refusing to load them")):          # (dotted: the keystr list read [\"['blocks'][1]...)
    checkpoint.load_weights(path)


def test_a_flipped_byte_in_the_parameters_is_refused_on_load(tmp_path):
  """One byte of the shipped checkpoint's data XOR 0xff made one weight 3.1e35 (finite): prune
  reported accuracy 0.0000 with exit 0. save_weights now records the tree's digest."""
  import shutil  # pylint: disable=g-import-not-at-top
  from vitprune.digest import params_sha256  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  shipped = os.path.join(root, "weights", "vit_digits")
  recorded = json.load(open(os.path.join(shipped, "config.json")))["params_sha256"]
  assert params_sha256(checkpoint.load_weights(shipped)[1]) == recorded
  bad = str(tmp_path / "w")
  shutil.copytree(shipped, bad)
  data = max((os.path.join(d, f) for d, _, fs in os.walk(os.path.join(bad, "params"))
              for f in fs if "/d/" in os.path.join(d, f)), key=os.path.getsize)
  with open(data, "r+b") as f:
    f.seek(os.path.getsize(data) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(ValueError, match=re.escape(
      f"the parameters in {bad}/params do not match the params_sha256 its config.json records "
      "(corrupted or edited since they were saved, or being replaced by another writer: "
      "read them again once it is done; a change meant: save them with "
      "vitprune.save_weights)")):
    checkpoint.load_weights(bad)


def test_the_params_digest_is_recorded_checked_and_optional(tmp_path):
  from vitprune.digest import params_sha256  # pylint: disable=g-import-not-at-top
  cfg = get_config("test_tiny_vit")
  params = init_params(cfg, 0)
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, params)
  cfile = os.path.join(path, "config.json")
  doc = json.load(open(cfile))
  assert doc["params_sha256"] == params_sha256(params)
  json.dump(dict(doc, params_sha256="ABC"), open(cfile, "w"))
  with pytest.raises(ValueError, match="params_sha256 must be a 64-digit hex string, got 'ABC'"):
    checkpoint.load_weights(path)
  json.dump(dict(doc, params_sha256="0" * 64), open(cfile, "w"))
  with pytest.raises(ValueError, match="do not match the params_sha256"):
    checkpoint.load_weights(path)
  assert doc["version"] == checkpoint.VERSION == 2
  v1 = dict(doc, version=1)                      # (version 1: the digests of its day, if any)
  older = {k: v for k, v in v1.items() if k not in checkpoint.DIGEST_KEYS}   # (before them)
  json.dump(older, open(cfile, "w"))
  assert params_sha256(checkpoint.load_weights(path)[1]) == params_sha256(params)
  json.dump(dict(older, params_sha256=doc["params_sha256"]), open(cfile, "w"))   # (later ones)
  assert params_sha256(checkpoint.load_weights(path)[1]) == params_sha256(params)
  json.dump({k: v for k, v in v1.items() if k != "meta_sha256"}, open(cfile, "w"))
  assert params_sha256(checkpoint.load_weights(path)[1]) == params_sha256(params)
  # Only the parameters' digest deleted: the edited parameters would load unchecked.
  json.dump({k: v for k, v in v1.items() if k != "params_sha256"}, open(cfile, "w"))
  with pytest.raises(ValueError, match=re.escape(
      f"{cfile}: records config_sha256 but not params_sha256 (edited? every version that wrote "
      "config_sha256 wrote params_sha256); save the weights again with vitprune.save_weights")):
    checkpoint.load_weights(path)
  json.dump({k: v for k, v in v1.items() if k != "config_sha256"}, open(cfile, "w"))
  with pytest.raises(ValueError, match="records meta_sha256 but not config_sha256"):
    checkpoint.read_weights_config(path)
  # Version 2 records every digest: the last one deleted was the one edit nothing caught.
  for key in checkpoint.DIGEST_KEYS:
    json.dump({k: v for k, v in doc.items() if k != key}, open(cfile, "w"))
    with pytest.raises(ValueError, match=re.escape(
        f"{cfile}: records no {key} (edited? every version-2 folder records params_sha256, "
        "config_sha256, meta_sha256); save the weights again with vitprune.save_weights")):
      checkpoint.read_weights_config(path)
  json.dump(dict(doc, params_sha256=None), open(cfile, "w"))    # (switched the check off)
  with pytest.raises(ValueError, match=re.escape(f"{cfile}: params_sha256 is null (edited?)")):
    checkpoint.load_weights(path)


def test_integer_values_in_a_checkpoint_are_refused_not_cast(tmp_path):
  """int32 values in params/ (written with orbax by hand) were restored as float32 without a
  word; convert refuses an integer checkpoint, and so must the loader."""
  from vitprune import orbax_io  # pylint: disable=g-import-not-at-top
  cfg = get_config("test_tiny_vit")
  params = init_params(cfg, 0)
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, params)
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(os.path.join(path, "params"))
  orbax_io.save(os.path.join(path, "params"), jax.tree.map(
      lambda a: (np.asarray(a) * 100).astype(np.int32), params))
  n = len(jax.tree.leaves(params))
  with pytest.raises(ValueError, match=re.escape(
      f"could not restore parameters from {path}/params: values stored in other dtypes than the "
      "float32 restored (orbax would cast them): ['blocks'][0]['attn']['proj']['bias'] is int32, "
      "['blocks'][0]['attn']['proj']['kernel'] is int32, ['blocks'][0]['attn']['qkv']['bias'] is "
      f"int32 and {n - 3} more")):
    checkpoint.load_weights(path)


def test_files_beside_the_shipped_weights_are_never_replaced_with_them(tmp_path):
  """The shipped weights/vit_digits had no inventory, so `train_digits --out=weights/vit_digits
  --overwrite` (README's own command) deleted a NOTES.txt or a run folder kept in it; a weights
  folder written before inventories is held to the weights layout."""
  import shutil  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  shipped = os.path.join(root, "weights", "vit_digits")
  assert atomic.published_folder_around(os.path.join(shipped, "sub")) == shipped
  assert atomic.unlisted_files(shipped) == []
  for inventory in (True, False):
    w = str(tmp_path / f"w{inventory}")
    shutil.copytree(shipped, w)
    if not inventory:
      assert all(checkpoint.is_weights_dir.layout.fullmatch(rel) for rel in atomic._tree_files(w)
                 if rel != atomic.INVENTORY_FILE)   # pylint: disable=protected-access
      os.remove(os.path.join(w, atomic.INVENTORY_FILE))
    atomic.check_replaceable(w, checkpoint.is_weights_dir)
    os.makedirs(os.path.join(w, "myrun"))
    open(os.path.join(w, "myrun", "results.csv"), "w").close()
    open(os.path.join(w, "NOTES.txt"), "w").close()
    for is_ours in (checkpoint.is_weights_dir, atomic.is_vitprune_output):   # (the default too)
      with pytest.raises(atomic.ForeignOutputError, match=re.escape(
          f"refusing to replace {w}: it holds NOTES.txt, myrun/results.csv, which vitprune did "
          "not write there")):
        atomic.check_replaceable(w, is_ours)


def test_the_library_writes_no_output_inside_a_published_folder_nor_at_an_empty_path(tmp_path):
  """The CLIs refused weights or an artifact inside weights/vit_digits; save_weights and
  export_artifact wrote them, and the folder was never replaced again ('it holds art/...,
  which vitprune did not write there'). save_weights('') offered to overwrite the working
  directory (a probe)."""
  import shutil  # pylint: disable=g-import-not-at-top
  from vitprune import deploy  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  w = str(tmp_path / "w")
  shutil.copytree(os.path.join(root, "weights", "vit_digits"), w)
  cfg, params = checkpoint.load_weights(w)
  for write in (lambda p: checkpoint.save_weights(p, cfg, params),
                lambda p: deploy.export_artifact(p, cfg, params, verify=False)):
    with pytest.raises(ValueError, match=re.escape(
        f"{w}/sub is inside {w}, a folder vitprune wrote as a whole (it lists its files in "
        ".vitprune-files.json): write elsewhere")):
      write(os.path.join(w, "sub"))
    with pytest.raises(ValueError, match=r"^the (weights|artifact) path is empty$"):
      write("")
  assert sorted(os.listdir(w)) == [".vitprune-files.json", "config.json", "metrics.json",
                                   "params"]
  with pytest.raises(ValueError, match="^the output path is empty$"):
    with atomic.staged_dir("", overwrite=True):
      pass


def test_every_public_reader_names_a_missing_or_empty_path(monkeypatch, tmp_path):
  """load(None) failed as "expected str, bytes or os.PathLike object, not NoneType", naming no
  argument, and ImageFolder('') read the working directory as the dataset (a probe)."""
  import pathlib  # pylint: disable=g-import-not-at-top
  from vitprune import convert, data, deploy  # pylint: disable=g-import-not-at-top
  from vitprune.edge import runtime  # pylint: disable=g-import-not-at-top
  from vitprune.profile import records  # pylint: disable=g-import-not-at-top
  from vitprune.records import estimate, manifest, solution  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)        # ('' must not read it)
  readers = [("the weights path", checkpoint.load_weights), ("the artifact path", deploy.load),
             ("the dataset root", data.ImageFolder),
             ("the checkpoint path", convert.load_checkpoint),
             # (a review: these still said "expected str, bytes or os.PathLike object", and
             # read_solution('') named the working directory as a solution file)
             ("the profile path", records.load), ("the estimate path", estimate.read_estimate),
             ("the solution path", solution.read_solution),
             ("the artifact path", manifest.read_manifest), ("the artifact path", runtime.load)]
  for name, read in readers:
    with pytest.raises(ValueError, match=f"^{name} is empty$"):
      read("")
    for bad, shown in ((None, "NoneType None"), (3, "int 3"), (b"w", "bytes b'w'")):
      with pytest.raises(TypeError, match=re.escape(
          f"{name} must be a path (str or os.PathLike), got {shown}")):
        read(bad)
  root = pathlib.Path(__file__).resolve().parent.parent
  cfg, _ = checkpoint.load_weights(root / "weights" / "vit_digits")     # (a Path is a path)
  assert cfg.name == "vit_digits"


def test_corrupt_checkpoint_data_is_one_line_from_the_cli(tmp_path):
  # Zeroed bytes inside orbax's data file: the restore fails while its I/O threads print
  # 'Event loop is closed' tracebacks; the CLI must still print exactly one line.
  import shutil  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  bad = tmp_path / "w"
  shutil.copytree(os.path.join(root, "weights", "vit_digits"), bad)
  data = max((os.path.join(d, f) for d, _, fs in os.walk(bad / "params") for f in fs
              if os.sep + "d" + os.sep in os.path.join(d, f) + os.sep), key=os.path.getsize)
  size = os.path.getsize(data)
  with open(data, "r+b") as f:
    f.seek(size // 2)
    f.write(b"\0" * 64)
  for _ in range(3):        # the threads' timing varies from run to run
    r = subprocess.run([sys.executable, "-m", "experiments.deploy", f"--weights={bad}",
                        f"--out={tmp_path / 'art'}"], cwd=root, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 1 and r.stdout == "", r.stderr[-3000:]
    assert r.stderr.startswith("error: could not restore parameters from ")
    assert r.stderr.count("\n") == 1, r.stderr[-3000:]
  assert not os.path.exists(tmp_path / "art")


@pytest.mark.parametrize("special", ["fifo", "link to /dev/zero"])
def test_a_special_file_inside_params_is_refused_unopened(tmp_path, special):
  """A FIFO at params/_METADATA made every reader of the weights (deploy, run_deployed's
  artifact params/ alike) block for ever inside orbax."""
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  target = os.path.join(path, "params", "_METADATA")
  os.unlink(target)
  os.mkfifo(target) if special == "fifo" else os.symlink("/dev/zero", target)
  with pytest.raises(ValueError, match=re.escape(f"{target} is not a regular file (a FIFO, "
                                                 "device or socket) inside the checkpoint")):
    checkpoint.load_weights(path)


def test_missing_data_files_are_named_without_the_storage_spec(tmp_path):
  """Deleted data files: the error line carried a kilobyte of tensorstore's settings."""
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  data = os.path.join(path, "params", "d")
  names = os.listdir(data)
  for name in names:
    os.unlink(os.path.join(data, name))
  with pytest.raises(ValueError, match=re.escape(
      f"could not restore parameters from {path}/params: NOT_FOUND: ")) as e:
    checkpoint.load_weights(path)
  assert "tensorstore_spec" not in str(e.value) and names[0] in str(e.value)
  assert len(str(e.value)) < 500, str(e.value)


def test_a_fifo_behind_a_linked_folder_inside_params_is_refused_unopened(tmp_path):
  """The walk did not follow a linked folder: a FIFO behind one blocked the restore for ever
  (a loop of links still ends the walk)."""
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  data = os.path.join(path, "params", "ocdbt.process_0", "d")
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  os.symlink(path, elsewhere / "loop")              # a link back up: the walk must still end
  for name in sorted(os.listdir(data)):
    os.mkfifo(elsewhere / name)
  shutil.rmtree(data)
  os.symlink(elsewhere, data)
  with pytest.raises(ValueError, match=r"is not a regular file \(a FIFO, device or socket\) "
                                       "inside the checkpoint"):
    checkpoint.load_weights(path)


def test_the_special_file_walk_stops_at_orbaxs_depth(tmp_path):
  """Links are followed, but no deeper than orbax's layout (params/ocdbt.process_0/d/<file>):
  a link to / inside a checkpoint walked the whole disk."""
  from vitprune import orbax_io  # pylint: disable=g-import-not-at-top
  (tmp_path / "ocdbt.process_0" / "d" / "deeper").mkdir(parents=True)
  os.mkfifo(tmp_path / "ocdbt.process_0" / "d" / "deeper" / "fifo")    # never opened by orbax
  orbax_io._check_regular_tree(str(tmp_path))
  os.mkfifo(tmp_path / "ocdbt.process_0" / "d" / "fifo")
  with pytest.raises(OSError, match="d/fifo is not a regular file"):
    orbax_io._check_regular_tree(str(tmp_path))


def test_weights_load_with_stderr_closed(tmp_path):
  # The restore holds back fd 2 only when there is one: a process started with stderr closed
  # (2>&-, some service managers) still loads good weights.
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = ("from vitprune import checkpoint; checkpoint.load_weights('weights/vit_digits'); "
          "print('loaded')")
  import shlex  # pylint: disable=g-import-not-at-top
  r = subprocess.run(["sh", "-c", f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)} "
                      "2>&-"], cwd=root, stdout=subprocess.PIPE, text=True, timeout=180)
  assert r.returncode == 0 and r.stdout.strip().endswith("loaded")


def test_a_path_orbax_cannot_take_is_refused_before_any_work(tmp_path, monkeypatch):
  """A --out whose name is not UTF-8 reached tensorstore after the export: 795 lines of
  tracebacks and no error line."""
  from vitprune import orbax_io  # pylint: disable=g-import-not-at-top
  cfg = get_config("test_tiny_vit")
  bad = os.fsdecode(os.fsencode(str(tmp_path)) + b"/w\xff")
  with pytest.raises(OSError, match=r"w\\udcff': orbax checkpoints \(weights\) cannot be read or "
                                    r"written at a path whose name is not valid UTF-8"):
    checkpoint.save_weights(bad, cfg, init_params(cfg, 0))
  with pytest.raises(OSError, match="not valid UTF-8"):
    orbax_io.restore(bad, None)
  assert os.listdir(tmp_path) == []
  assert orbax_io.storage_path(str(tmp_path / "é")) == str(tmp_path / "é")
  # tensorstore reads a backslash as a folder separator: a save to 'w\\1' reported success, put
  # the tensors under '.w/1...' and left 'w\\1' unloadable.
  monkeypatch.chdir(tmp_path)
  for bad in (str(tmp_path / "w\\1"), "w\\1"):
    with pytest.raises(OSError, match=re.escape(f"'{tmp_path}/w\\\\1': orbax checkpoints "
                                                "(weights) cannot use a path holding a backslash")):
      checkpoint.save_weights(bad, cfg, init_params(cfg, 0))
    with pytest.raises(OSError, match=r"holding a backslash"):
      orbax_io.restore(bad, None)
  assert os.listdir(tmp_path) == []
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  shutil.copytree(os.path.join(root, "weights", "vit_digits"), tmp_path / "c\\d")
  with pytest.raises(OSError, match=r"holding a backslash"):     # not wrapped as a ValueError
    checkpoint.load_weights(str(tmp_path / "c\\d"))


def test_failed_orbax_futures_reported_late_are_dropped():
  """A full disk during a save: orbax's failed futures were reported by asyncio when collected,
  after the run's one error line ("Future exception was never retrieved" and a traceback, 4 to
  127 lines, in 3 of 25 runs of a fault probe)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = (
      "import asyncio, gc, sys\n"
      f"sys.path.insert(0, {root!r})\n"
      "from vitprune import console, orbax_io\n"
      "if sys.argv[1] == 'cli': console.setup_process()\n"
      "kept = []\n"
      "try:\n"
      "  with orbax_io._stderr_kept_unless_failing():\n"
      "    loop = asyncio.new_event_loop()\n"
      "    fut = loop.create_future()\n"
      "    fut.set_exception(OSError(28, 'No space left on device'))\n"
      "    kept.append(fut)          # still referenced: collected only after the block\n"
      "    raise OSError(28, 'No space left on device')\n"
      "except OSError as e:\n"
      "  print(f'error: {e}', file=sys.stderr)\n"
      "kept.clear()\n"
      "gc.collect()\n")
  r = subprocess.run([sys.executable, "-c", script, "cli"], capture_output=True, text=True,
                     timeout=60)
  assert (r.returncode, r.stderr) == (0, "error: [Errno 28] No space left on device\n"), r.stderr
  r = subprocess.run([sys.executable, "-c", script, "library"], capture_output=True, text=True,
                     timeout=60)             # a library user's process keeps asyncio's reports
  assert r.returncode == 0 and "Future exception was never retrieved" in r.stderr, r.stderr


@pytest.mark.parametrize("code, expected", [
    (28, r"^\[Errno 28\] No space left on device while writing .*/w$"),
    (27, r"^\[Errno 27\] File too large while writing .*/w$"),        # (mutation audit:
    (122, r"^\[Errno 122\] Disk quota exceeded while writing .*/w$"),  # EFBIG, EDQUOT too)
    (5, r"^RESOURCE_EXHAUSTED: Error writing .*os_error_code='5'\]$")])
def test_a_full_disk_under_orbax_names_the_output_not_its_temporary(tmp_path, monkeypatch, code,
                                                                   expected):
  """tensorstore reports a full disk as 'RESOURCE_EXHAUSTED: Error writing ... at local file
  "<out>/.w.tmp-.../params.orbax-checkpoint-tmp/..." ... [os_error_code='28']': the error line
  named a hidden temporary that no longer exists, not the output the user asked for. Other
  failures pass unchanged."""
  from vitprune import orbax_io  # pylint: disable=g-import-not-at-top

  class FullDisk:
    def save(self, directory, tree):
      del tree
      raise ValueError(f'RESOURCE_EXHAUSTED: Error writing "a/0" in OCDBT database at local '
                       f'file "{directory}/ocdbt.process_0/": Failed to write 41756 bytes to '
                       f"file 13: No space left on device [os_error_code='{code}']")

  monkeypatch.setattr(orbax_io, "checkpointer", FullDisk)
  cfg = get_config("test_tiny_vit")
  with pytest.raises((OSError, ValueError), match=expected):
    checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  assert os.listdir(tmp_path) == []


def test_an_interrupted_save_waits_for_orbax_before_the_cleanup(tmp_path, monkeypatch):
  """Ctrl-C in `wait_until_finished`: orbax's background thread still wrote into the staged
  directory after its cleanup, leaving `.w.tmp-*/params/...` behind (2 of ~15 runs)."""
  from vitprune import orbax_io  # pylint: disable=g-import-not-at-top
  events = []

  class Interrupted:
    def save(self, directory, tree):
      del tree
      events.append("save")
      self.directory = directory

    def wait_until_finished(self):
      raise KeyboardInterrupt

    def close(self):                  # the background write finishing
      os.makedirs(os.path.join(self.directory, "late"))
      events.append("closed")

  monkeypatch.setattr(orbax_io, "checkpointer", Interrupted)
  cfg = get_config("test_tiny_vit")
  with pytest.raises(KeyboardInterrupt):
    checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  assert events == ["save", "closed"]
  assert os.listdir(tmp_path) == []            # removed after the write, not before it


def test_a_stuck_background_write_never_keeps_a_failed_save_from_ending(tmp_path, monkeypatch):
  """The wait for orbax's writes after a failure is bounded: a write stuck on slow storage
  made a Ctrl-C wait for it, every further signal held, with nothing printed."""
  import time  # pylint: disable=g-import-not-at-top
  from vitprune import orbax_io  # pylint: disable=g-import-not-at-top

  class Stuck:
    def save(self, directory, tree):
      del directory, tree

    def wait_until_finished(self):
      raise KeyboardInterrupt

    def close(self):
      time.sleep(30)

  monkeypatch.setattr(orbax_io, "checkpointer", Stuck)
  monkeypatch.setattr(orbax_io, "SETTLE_S", 0.2)
  cfg = get_config("test_tiny_vit")
  params = init_params(cfg, 0)
  t0 = time.perf_counter()
  with pytest.raises(KeyboardInterrupt):
    checkpoint.save_weights(str(tmp_path / "w"), cfg, params)
  # Not the stuck close's 30 s (the bound leaves room for a loaded machine: 5.7 s was seen).
  assert time.perf_counter() - t0 < 20 and os.listdir(tmp_path) == []


def test_an_edited_config_and_loose_arguments_are_refused(tmp_path):
  """num_heads 4 -> 8 in a copy's config.json loaded (logits off by up to 0.64); a cfg given
  by name was an AttributeError; overwrite='no' replaced the weights (bool('no'))."""
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  cfile = os.path.join(path, "config.json")
  doc = json.load(open(cfile))
  json.dump(dict(doc, config=dict(doc["config"], num_heads=4)), open(cfile, "w"))
  with pytest.raises(ValueError, match=re.escape(
      f"{cfile}: its config no longer hashes to the config_sha256 it records (edited?")):
    checkpoint.load_weights(path)
  unrecorded = {k: v for k, v in doc.items() if k not in ("config_sha256", "meta_sha256")}
  unrecorded["version"] = 1
  json.dump(unrecorded, open(cfile, "w"))                       # not recorded (older): loads
  checkpoint.load_weights(path)
  # Nulled, it let an edited num_heads load as another model (no version writes null).
  json.dump(dict(doc, config_sha256=None, config=dict(doc["config"], num_heads=4)),
            open(cfile, "w"))
  with pytest.raises(ValueError, match=re.escape(f"{cfile}: config_sha256 is null (edited?); "
                                                 "save the weights again")):
    checkpoint.load_weights(path)
  # Without the digest the field types are still checked: "name": 5 loaded as a model named 5.
  for field, value, message in (("name", 5, "config.name must be a non-empty str, got 5"),
                                 ("mlp_type", 5, "unknown mlp_type 5"),
                                 ("depth", 2.0, "depth must be a positive integer, got 2.0")):
    json.dump(dict(unrecorded, config=dict(doc["config"], **{field: value})),
              open(cfile, "w"))
    with pytest.raises(ValueError, match=re.escape(cfile) + ": .*" + re.escape(message)):
      checkpoint.read_weights_config(path)

  # The class names (images are labelled by them) and the meta (the training split the data
  # guards read) are held by meta_sha256: reversed names scored vit_digits at 0.0084.
  named = checkpoint.save_weights(str(tmp_path / "n"), cfg, init_params(cfg, 0),
                                  class_names=list("abcdefghij"),
                                  meta={"dataset": "sklearn_digits", "split": {"seed": 1}})
  nfile = os.path.join(named, "config.json")
  ndoc = json.load(open(nfile))
  assert checkpoint.read_class_names(named) == tuple("abcdefghij")
  for edit in (dict(class_names=list("jihgfedcba")), dict(class_names=None),
               dict(meta={"dataset": "sklearn_digits", "split": {"seed": 0}})):
    json.dump(dict(ndoc, **edit), open(nfile, "w"))
    for read in (checkpoint.read_weights_config, checkpoint.read_class_names,
                 checkpoint.load_weights):
      with pytest.raises(ValueError, match=re.escape(
          f"{nfile}: its class_names and meta no longer hash to the meta_sha256 it records")):
        read(named)
  json.dump(dict({k: v for k, v in ndoc.items() if k != "meta_sha256"}, version=1,
                 class_names=list("jihgfedcba")), open(nfile, "w"))
  assert checkpoint.read_class_names(named) == tuple("jihgfedcba")   # not recorded: as given
  json.dump(dict({k: v for k, v in ndoc.items() if k != "meta_sha256"},   # (a probe: these
                 class_names=list("jihgfedcba")), open(nfile, "w"))       # loaded, relabelled)
  with pytest.raises(ValueError, match=re.escape(f"{nfile}: records no meta_sha256 (edited?")):
    checkpoint.read_class_names(named)
  json.dump(dict(ndoc, meta={"dataset": "sklearn_digits", "split": {"seed": 0}},
                 meta_sha256=None), open(nfile, "w"))              # (lifted the data guard)
  with pytest.raises(ValueError, match=re.escape(f"{nfile}: meta_sha256 is null (edited?)")):
    checkpoint.read_weights_config(named)
  shutil.rmtree(named)
  with pytest.raises(TypeError, match="overwrite must be True or False, got 'no'"):
    checkpoint.save_weights(path, cfg, init_params(cfg, 0), overwrite="no")
  with pytest.raises(TypeError, match="cfg must be a vitprune ViTConfig"):
    checkpoint.save_weights(str(tmp_path / "v"), "test_tiny_vit", init_params(cfg, 0))
  assert sorted(os.listdir(tmp_path)) == ["w"]


def test_an_absent_meta_is_the_empty_meta_and_a_source_that_is_no_folder_names_no_classes(
    tmp_path):
  """Mutation audit: meta_sha256 hashes an absent meta as {} (as the reader returns it), so a
  folder without "meta" whose digest covers {} loads; only a folder names classes."""
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  cfile = os.path.join(path, "config.json")
  with open(cfile) as f:
    doc = json.load(f)
  assert doc["meta"] == {} and doc["meta_sha256"] == checkpoint.meta_sha256({"meta": {}})
  with open(cfile, "w") as f:
    json.dump({k: v for k, v in doc.items() if k != "meta"}, f)
  assert checkpoint.read_weights_config(path) == (cfg, {})
  assert checkpoint.read_class_names(path) is None
  for source in (cfile, "init_params(seed=0)"):   # (a file: not a weights folder's names)
    assert checkpoint.source_class_names(source) is None
  assert checkpoint.source_class_names(path) is None


def test_class_names_given_as_numbers_are_recorded_as_strings(tmp_path):
  """Mutation audit: a list or tuple of labels (0..9, as range gives them) is recorded as the
  strings '0'..'9' that image folders are named by, not refused as names that are no strings."""
  cfg = get_config("test_tiny_vit")
  for kind in (list, tuple):
    path = checkpoint.save_weights(str(tmp_path / kind.__name__), cfg, init_params(cfg, 0),
                                   class_names=kind(range(cfg.num_classes)))
    assert checkpoint.read_class_names(path) == tuple(str(i) for i in range(10))
    with open(os.path.join(path, "config.json")) as f:
      assert json.load(f)["class_names"] == list("0123456789")


def test_a_non_ascii_path_is_refused_where_python_reads_file_names_as_ascii(tmp_path):
  """Mutation audit: under a C/POSIX locale (no UTF-8 mode) Python reads the name's bytes as
  escapes that tensorstore would take otherwise; the path is refused naming the remedy."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  if sys.platform != "linux" or not str(tmp_path).isascii():    # (macOS: always UTF-8)
    pytest.skip("file names read as ascii under a C locale: Linux, an ASCII temporary folder")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8"))}
  env.update(LC_ALL="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0")
  code = ("import os, sys; from vitprune import orbax_io\n"
          "assert sys.getfilesystemencoding() == 'ascii', sys.getfilesystemencoding()\n"
          "print(orbax_io.storage_path(os.fsdecode(sys.argv[1].encode('ascii') + b'/w')))\n"
          "orbax_io.storage_path(os.fsdecode(sys.argv[1].encode('ascii') + b'/w\\xc3\\xa9'))")
  r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=root, env=env,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 1 and r.stdout == f"{tmp_path}/w\n", (r.stdout, r.stderr)
  assert ("OSError: '" + f"{tmp_path}/w" + "\\udcc3\\udca9': orbax checkpoints (weights) cannot "
          "use a non-ASCII path while Python reads file names as ascii (a C/POSIX locale); set "
          "PYTHONUTF8=1 or a UTF-8 locale, or choose an ASCII path") in r.stderr, r.stderr


def test_a_dangling_link_inside_params_is_left_to_orbax(tmp_path):
  """Mutation audit: the special-file walk skips a link to nothing (orbax reports a file it
  misses); one beside the checkpoint's files does not stop a good restore."""
  cfg = get_config("test_tiny_vit")
  params = init_params(cfg, 0)
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, params)
  os.symlink(tmp_path / "nowhere", os.path.join(path, "params", "stale-link"))
  os.symlink(tmp_path / "nowhere", os.path.join(path, "params", "ocdbt.process_0", "gone"))
  _, got = checkpoint.load_weights(path)
  assert jax.tree.all(jax.tree.map(np.array_equal, got, params))


def test_orbax_warnings_leave_no_raw_log_record(tmp_path, caplog):
  """Mutation audit: the absl record turned into a Python warning is dropped, not also passed
  on to the log handlers (absl's printed it raw: 'W1205 04:13:23.948 ... Metadata file ...')."""
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  os.unlink(os.path.join(path, "params", "_CHECKPOINT_METADATA"))
  caplog.clear()
  with pytest.warns(UserWarning, match="^orbax: Metadata file does not exist"):
    checkpoint.load_weights(path)
  assert not [r for r in caplog.records if "Metadata file does not exist" in r.getMessage()]


def test_what_a_successful_orbax_call_writes_to_fd_2_is_replayed(capfd):
  """Mutation audit: the hold-back of fd 2 drops what a failing restore printed, but replays
  what a successful one did (a warning of the library, a note of the user's own threads)."""
  from vitprune import orbax_io  # pylint: disable=g-import-not-at-top
  capfd.readouterr()
  with orbax_io._stderr_kept_unless_failing():
    os.write(2, b"kept line\n" * 3)
  with pytest.raises(RuntimeError, match="^bad$"):
    with orbax_io._stderr_kept_unless_failing():
      os.write(2, b"dropped line\n")
      raise RuntimeError("bad")
  assert capfd.readouterr().err == "kept line\n" * 3


def test_a_structure_with_the_same_leaf_paths_nested_otherwise_is_named_so():
  """Mutation audit: where orbax finds the trees differ but every leaf path is on both sides
  (a list stored, a tuple asked for), the message says so instead of ending in nothing."""
  from vitprune import orbax_io  # pylint: disable=g-import-not-at-top
  assert orbax_io._structure_difference({"a": [1, 2]}, {"a": (1, 2)}) == (
      "the stored weights are not this model's structure: the same leaves, nested otherwise")


@pytest.mark.parametrize("dtype", [np.int32, np.float16])
def test_one_leaf_stored_in_another_dtype_is_enough_to_refuse_the_checkpoint(tmp_path, dtype):
  """Mutation audits: a single int32 leaf among float32 ones is refused by name, not cast; a
  float16 one too (another float dtype than the float32 restored, not only integers)."""
  from vitprune import orbax_io  # pylint: disable=g-import-not-at-top
  cfg = get_config("test_tiny_vit")
  params = init_params(cfg, 0)
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, params)
  shutil.rmtree(os.path.join(path, "params"))
  orbax_io.save(os.path.join(path, "params"), dict(
      jax.tree.map(np.asarray, params), cls_token=np.asarray(params["cls_token"], dtype)))
  with pytest.raises(ValueError, match=re.escape(
      f"could not restore parameters from {path}/params: values stored in other dtypes than the "
      f"float32 restored (orbax would cast them): ['cls_token'] is {np.dtype(dtype).name}") + "$"):
    checkpoint.load_weights(path)


def test_the_recorded_params_digest_is_read_without_loading(tmp_path):
  """`recorded_params_sha256` (the estimate CLI names its output by it) is the parameters'
  digest, None for a folder written before digests (a mutation audit: returning another of
  the recorded digests passed every test)."""
  from vitprune.digest import params_sha256  # pylint: disable=g-import-not-at-top
  cfg = get_config("test_tiny_vit")
  params = init_params(cfg, 0)
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, params)
  assert checkpoint.recorded_params_sha256(path) == params_sha256(params)
  cfile = os.path.join(path, "config.json")
  doc = json.load(open(cfile))
  json.dump(dict({k: v for k, v in doc.items() if k not in checkpoint.DIGEST_KEYS}, version=1),
            open(cfile, "w"))
  assert checkpoint.recorded_params_sha256(path) is None


def test_a_config_that_is_not_an_object_is_named(tmp_path):
  # (without the check: a TypeError or AttributeError from inside config_from_dict)
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  cfile = os.path.join(path, "config.json")
  doc = json.load(open(cfile))
  for config in ([], "test_tiny_vit", None):
    json.dump(dict(doc, config=config), open(cfile, "w"))
    for read in (checkpoint.read_weights_config, checkpoint.load_weights):
      with pytest.raises(ValueError, match=re.escape(
          f"{cfile}: 'config' must be an object of ViTConfig fields") + "$"):
        read(path)



def test_orbax_io_refuses_a_bracket_or_a_backslash_above_a_relative_path(tmp_path, monkeypatch):
  """Mutation audit: orbax_io.save itself refuses a '[' in its folder (its callers check first;
  the library function must not publish unreadable weights either), and a backslash is looked
  for in the absolute path, where a relative name without one lies below a folder with one."""
  from vitprune import orbax_io  # pylint: disable=g-import-not-at-top
  with pytest.raises(OSError, match=r"cannot be written under a path holding '\[' or '\]'"):
    orbax_io.save(str(tmp_path / "w[1]"), {"a": np.zeros(2, np.float32)})
  assert os.listdir(tmp_path) == []
  folder = tmp_path / "a\\b"
  folder.mkdir()
  monkeypatch.chdir(folder)
  with pytest.raises(OSError, match="^" + re.escape(
      f"{str(folder / 'w')!r}: orbax checkpoints (weights) cannot use a path holding a "
      "backslash")):
    orbax_io.storage_path("w")
