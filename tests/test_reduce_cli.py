"""vitprune.prune (the library entry point) and experiments/prune.py (the CLI, in-process)."""
import numpy as np
import pytest
from absl import app
from absl import flags
from absl.testing import flagsaver

from vitprune import model
from vitprune import prune as prune_lib
from vitprune import schedule as S
from vitprune.reduce import make_reducer
from vitprune.registry import get_config

from tests.conftest import load_cli

prune = None  # experiments.prune, loaded per test module by the fixture below


@pytest.fixture(autouse=True, scope="module")
def _load_cli():
  global prune
  prune = load_cli("prune")


CFG = get_config("test_tiny_vit")


def test_default_schedules_are_valid_for_every_method():
  for cfg in (CFG, get_config("deit_small_patch16_224")):
    for method in ("pomt", "topk", "tome", "evit", "random"):
      s = prune_lib.default_schedule(cfg, method)
      assert S.check_schedule(cfg, s, make_reducer(method)) == s
      assert s != S.full_schedule(cfg)
  assert prune_lib.default_schedule(CFG, "pomt").counts == (17, 17, 13)  # 16 // 4 at block 1


def test_run_prune_full_schedule_agrees_exactly():
  params = model.init_params(CFG, 0)
  images = prune.synthetic_images(CFG, 3, seed=1)
  assert images.shape == (3, 32, 32, 3) and np.isfinite(images).all()
  np.testing.assert_array_equal(images, prune.synthetic_images(CFG, 3, seed=1))
  r = prune_lib.run_prune(CFG, params, images, method="pomt", schedule=S.full_schedule(CFG),
                      labels=np.array([-1, -1, -1]), warmup=0, repeats=2)
  assert r["agreement"] == 1.0 and r["counts"] == [17, 17, 17] and r["schedule"] == "full"
  assert r["full"]["median_s"] > 0 and r["pruned"]["compile_s"] > 0
  assert "accuracy_full" not in r
  text = prune.format_result(r)
  assert "tokens entering block: 0:17 1:17  | leaving the last: 17" in text


def test_run_prune_pruned_with_labels():
  params = model.init_params(CFG, 0)
  images = prune.synthetic_images(CFG, 4, seed=0)
  full = np.asarray(model.jitted_forward(params, images, cfg=CFG)).argmax(-1)
  labels = np.array([full[0], full[1], -1, (full[3] + 1) % 10])
  r = prune_lib.run_prune(CFG, params, images, method="tome", schedule=S.parse_schedule(CFG, "r8"),
                      labels=labels, warmup=0, repeats=1)
  assert r["counts"] == [17, 9, 5] and 0.0 <= r["agreement"] <= 1.0
  assert r["accuracy_full"] == pytest.approx(2 / 3)


def test_agreement_metrics():
  a = np.array([[0., 1.], [1., 0.], [1., 0.]])
  b = np.array([[0., 2.], [0., 1.], [3., 0.]])
  assert prune_lib.agreement(a, b, np.ones(3, bool), True) == pytest.approx(2 / 3)
  assert prune_lib.agreement(a, b, np.array([True, False, True]), True) == 1.0
  assert prune_lib.agreement(a, b, np.ones(3, bool), False) == pytest.approx(2 / 3)


def test_run_prune_errors():
  params = model.init_params(CFG, 0)
  images = prune.synthetic_images(CFG, 1, seed=0)
  with pytest.raises(ValueError, match="tome can remove at most 8"):
    prune_lib.run_prune(CFG, params, images, method="tome", schedule=S.Schedule([17, 8, 8]))
  with pytest.raises(ValueError, match="valid: evit, pomt"):
    prune_lib.run_prune(CFG, params, images, method="dynamicvit", schedule=None)
  with pytest.raises(ValueError, match="repeats >= 1"):
    prune_lib.run_prune(CFG, params, images, method="pomt", schedule=None, repeats=0)


@pytest.mark.parametrize("argv,match", [
    (["--model=test_tiny_vit", "--schedule=keep@5:3"], "layer 5 is out of range"),
    (["--model=test_tiny_vit", "--method=tome", "--schedule=list:17,8,8"],
     "tome can remove at most 8"),
    (["--method=pomt", "--schedule=embed:10"], "which pomt cannot do"),
    (["--model=deit_tiny"], "Did you mean"),
    (["--batch_size=0"], "--batch_size must be >= 1"),
    (["--images=/nonexistent/dir"], "does not exist"),
    (["--weights=/nonexistent/dir"], "nonexistent"),
])
def test_cli_errors(argv, match):
  with flagsaver.flagsaver():
    flags.FLAGS(["prune"] + argv)
    with pytest.raises(app.UsageError, match=match):
      prune.main(["prune"])


def test_cli_default_prunes_the_embedded_model_on_digits(capsys):
  with flagsaver.flagsaver():
    flags.FLAGS(["prune", "--batch_size=8", "--repeats=3", "--warmup=1"])
    prune.main(["prune"])
  out = capsys.readouterr().out
  assert "vit_digits  method=pomt  schedule=keep@3:49  batch=8" in out
  assert "tokens entering block: 0:65 1:65 2:65 3:65 4:49 5:49  | leaving the last: 49" in out
  assert "top-1 accuracy: unpruned" in out and "speed-up:" in out
