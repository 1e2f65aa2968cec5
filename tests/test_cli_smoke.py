"""One happy-path subprocess per CLI on tiny inputs (solve, deploy and run_deployed have theirs in
test_solve.py / test_deploy.py): exit 0, the printed result, the files written."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from vitprune import checkpoint
from vitprune.convert import to_timm_state_dict
from vitprune.model import init_params
from vitprune.profile import records
from vitprune.records.estimate import read_estimate
from vitprune.registry import get_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = get_config("test_tiny_vit")


def _cli(name, *args, cwd=ROOT):
  r = subprocess.run([sys.executable, "-m", f"experiments.{name}", *args], cwd=cwd,
                     capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT))
  assert r.returncode == 0, r.stderr[-3000:]
  return r


def test_profile(tmp_path):
  r = _cli("profile", "--model=test_tiny_vit", "--mode=model", "--tokens=17,9",
           "--min_run_time=0.005", "--max_retries=0", "--noprogress", f"--out_dir={tmp_path}")
  prof = records.load(str(tmp_path / "test-tiny-vit_model_b1_float32_cpu.json"))
  assert sorted(p.tokens for p in prof.points) == [9, 17]
  assert "== test_tiny_vit | float32" in r.stdout


def test_prune():
  r = _cli("prune", "--model=test_tiny_vit", "--batch_size=2", "--repeats=3", "--warmup=0")
  assert "test_tiny_vit  method=pomt" in r.stdout and "speed-up:" in r.stdout
  # A registry model runs on random-init weights, which the output now says (it did not).
  assert r.stdout.splitlines()[-1] == ("weights: init_params(seed=0) (random-init, not trained: "
                                       "the agreement compares two untrained graphs)")
  r = _cli("prune", "--batch_size=2", "--repeats=3", "--warmup=0")       # the embedded weights
  assert r.stdout.splitlines()[-1].startswith("weights: ") and "random-init" not in r.stdout


def test_estimate(tmp_path):
  r = _cli("estimate", "--model=test_tiny_vit", "--tokens=17,9", "--num_images=8",
           "--batch_size=8", f"--out_dir={tmp_path}", "--out_name=e.json")
  est = read_estimate(str(tmp_path / "e.json"))
  assert est.model == "test_tiny_vit" and sorted(est.tokens) == [9, 17]
  assert f"wrote {tmp_path / 'e.json'}" in r.stdout


def test_benchmark(tmp_path):
  r = _cli("benchmark", "--model=test_tiny_vit", "--data=none", "--batch_size=1",
           "--min_run_time=0.005", "--variants=tome:r2", "--noprogress", f"--out_dir={tmp_path}")
  assert sorted(os.listdir(tmp_path)) == [f"test_tiny_vit_cpu.{e}" for e in ("csv", "md", "png")]
  assert "| tome:r2 |" in r.stdout


def test_convert(tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top  (test dep)
  sd = to_timm_state_dict(TINY, init_params(TINY, 0))
  save_file(sd, str(tmp_path / "t.safetensors"))
  r = _cli("convert", "--model=test_tiny_vit", f"--checkpoint={tmp_path / 't.safetensors'}",
           f"--out={tmp_path / 'w'}")
  assert checkpoint.read_weights_config(str(tmp_path / "w"))[0] == TINY
  assert f"-> {tmp_path / 'w'}" in r.stdout


def test_edge_kit(tmp_path):
  r = _cli("edge_kit", "--model=test_tiny_vit", "--tokens=17", "--cache_dir=",
           f"--out={tmp_path / 'kit'}")
  with open(tmp_path / "kit" / "kit.json") as f:
    assert len(json.load(f)["points"]) == 1
  assert f"wrote {tmp_path / 'kit'}" in r.stdout


def test_train_digits(tmp_path, capsys):
  r = _cli("train_digits", "--epochs=1", "--warmup_epochs=0", "--batch_size=32",
           "--max_steps=2", f"--out={tmp_path / 'w'}")
  cfg, meta = checkpoint.read_weights_config(str(tmp_path / "w"))
  assert cfg.name == "vit_digits" and meta["epochs"] == 1 and meta["max_steps"] == 2
  metrics = json.loads((tmp_path / "w" / "metrics.json").read_text())
  assert metrics["history"][-1]["steps"] == 2 and metrics["max_steps"] == 2
  assert "held-out accuracy" in r.stdout
  total = 1438 // 32                                        # (1 epoch of the training digits)
  assert f"\nstopped after 2 steps of {total} (--max_steps)\nheld-out accuracy " in r.stdout
  # Smoke-run weights (written over weights/vit_digits by a walkthrough) were then used by every
  # CLI with nothing said: loading them says so; the embedded weights say nothing.
  from experiments import common  # pylint: disable=g-import-not-at-top
  capsys.readouterr()
  common.load_model(None, str(tmp_path / "w"))
  assert capsys.readouterr() == ("", f"note: {tmp_path / 'w'} were trained for 2 steps only "
                                 "(train_digits --max_steps, a smoke run, held-out accuracy "
                                 f"{meta['test_accuracy']:.4f})\n")
  common.load_model(None, None)
  assert capsys.readouterr() == ("", "")
  common.note_smoke_run("w", {"max_steps": 1})          # (it said "1 steps")
  assert "were trained for 1 step only (" in capsys.readouterr().err
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  code, _, err = run_cli_in_process(ROOT, "deploy", [f"--weights={tmp_path / 'w'}",
                                                     "--schedule=full", "--noverify",
                                                     f"--out={tmp_path / 'art'}"])
  assert code == 0 and f"note: {tmp_path / 'w'} were trained for 2 steps only" in err, err
  # Another run's weights saved at --out while this one trained (a probe: the training was
  # thrown away): refused at saving, this run's weights kept beside, named.
  from experiments import train_digits  # pylint: disable=g-import-not-at-top
  out, train = tmp_path / "w3", train_digits.train

  def another_run_saves_meanwhile(*args, **kwargs):
    shutil.copytree(tmp_path / "w", out)
    return train(*args, **kwargs)
  train_digits.train = another_run_saves_meanwhile
  try:
    with pytest.raises(FileExistsError, match=f"{out} was created by another run while this "
                       f"one worked .*; this run's output is kept in {out}\\.partial-"):
      train_digits.main(common.parse(train_digits.define_flags, [
          "--epochs=1", "--warmup_epochs=0", "--batch_size=32", "--max_steps=2", f"--out={out}"]))
  finally:
    train_digits.train = train
  (kept,) = tmp_path.glob("w3.partial-*")
  assert checkpoint.read_weights_config(str(kept))[1]["max_steps"] == 2
