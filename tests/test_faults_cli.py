"""SIGKILL in the middle of each CLI's write: the previous good output survives whole and the
next run succeeds (the CLIs write through `vitprune.atomic`, whose phases the hook names)."""
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from experiments import common
from experiments import profile as profile_cli
from experiments import solve as solve_cli
from tests.conftest import solution_file
from tests.test_solve import CFG as SOLVE_CFG, N, _acc, _block_profile, _estimate
from vitprune import atomic, deploy
from vitprune.checkpoint import save_weights
from vitprune.model import init_params
from vitprune.reduce.methods import make_reducer
from vitprune.schedule import parse_schedule
from vitprune.records.solution import read_solution
from vitprune.registry import get_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = get_config("test_tiny_vit")


def _kill_cli_at(phase, module, *args, sig=signal.SIGKILL):
  """Runs `python -m module args` with a hook that sends `sig` to the process at `phase` ->
  the CompletedProcess (after SIGKILL: checked to have died of it)."""
  script = textwrap.dedent(f"""
      import os, runpy, signal, sys
      from vitprune import atomic
      def hook(name):
        if name == {phase!r}:
          os.kill(os.getpid(), {int(sig)})
      atomic.fault_hook = hook
      sys.argv = [{module!r}, *{list(args)!r}]
      runpy.run_module({module!r}, run_name="__main__")
  """)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  if sig == signal.SIGKILL:
    assert proc.returncode == -signal.SIGKILL, (phase, proc.returncode, proc.stderr[-2000:])
  return proc


def _snapshot(path):
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, path)] = f.read()
  return out


@pytest.mark.parametrize("phase", ["staged", "moved_aside"])
def test_deploy_killed_keeps_the_previous_artifact(tmp_path, phase):
  params = init_params(TINY, 0)
  weights = save_weights(str(tmp_path / "w"), TINY, params)
  out = str(tmp_path / "art")
  deploy.export_artifact(out, TINY, params, verify=False)          # the previous good artifact
  before = _snapshot(out)
  _kill_cli_at(phase, "experiments.deploy", f"--weights={weights}", "--method=pomt",
               "--schedule=keep@1:9", f"--out={out}", "--overwrite", "--noverify")
  atomic.cleanup_stale(out)                    # what the next writer of `out` does first
  assert _snapshot(out) == before                                  # untouched, still loads
  assert deploy.load(out).manifest.schedule_text == "full"
  deploy.export_artifact(out, TINY, params, verify=False, overwrite=True)  # the next run
  assert sorted(os.listdir(tmp_path)) == ["art", "w"]              # temporaries cleaned


def test_solve_killed_keeps_the_previous_solution(tmp_path):
  ps = _block_profile(tmp_path)
  es = _estimate(tmp_path, [1, 3], list(range(4, N)), _acc)
  out = tmp_path / "solve"
  previous = solution_file(str(tmp_path / "keep.json"), SOLVE_CFG, [N] * 7)
  out.mkdir()
  stem = out / "solve_test_vit_multi_b8_float32_cpu.json"
  os.replace(previous, stem)
  before = stem.read_bytes()
  _kill_cli_at("file_written", "experiments.solve", f"--profile={ps}", f"--estimate={es}",
               "--mode=multi", f"--out_dir={out}")
  assert stem.read_bytes() == before and read_solution(str(stem)).chosen.counts == (N,) * 7
  sol, _ = solve_cli.main(common.parse(solve_cli.define_flags, [     # the next run
      f"--profile={ps}", f"--estimate={es}", "--mode=multi", f"--out_dir={out}"]))
  assert read_solution(str(stem)) == sol
  assert not [n for n in os.listdir(out) if n.startswith(".")]     # and it cleaned up


def test_estimate_killed_keeps_the_previous_estimate(tmp_path):
  es = _estimate(tmp_path, [None], [5, 9, 17], lambda l, n: 0.5, cfg=TINY, batch=4,
                 name="e.json")
  before = open(es, "rb").read()
  _kill_cli_at("file_written", "experiments.estimate", "--model=test_tiny_vit",
               "--data=digits", "--num_images=20", "--tokens=9,17", "--method=random",
               f"--out_dir={tmp_path}", "--out_name=e.json", "--overwrite")
  assert open(es, "rb").read() == before
  assert json.loads(before)["format"] == "vitprune-estimate"
  # A hidden temporary under the name of its flags was removed only by a run of the same flags
  # (a probe: two later estimates of other counts left it for good); an estimate of the model
  # sweeps those of its names, and nothing else of the folder (a review: a shared folder's
  # '.app-settings.json.lock' was deleted).
  out = tmp_path / "out"
  args = ["--model=test_tiny_vit", "--data=digits", "--num_images=20", "--method=random",
          f"--out_dir={out}"]
  _kill_cli_at("file_written", "experiments.estimate", *args, "--tokens=9,17")
  left = [n for n in os.listdir(out) if n.startswith(".test_tiny_vit_")]
  assert left
  (out / ".app-settings.json.lock").write_text("12345")
  from experiments import estimate as estimate_cli  # pylint: disable=g-import-not-at-top
  estimate_cli.main(common.parse(estimate_cli.define_flags, [*args, "--tokens=17"]))
  assert [n for n in os.listdir(out) if n.startswith(".")] == [".app-settings.json.lock"]


def test_main_job_killed_keeps_the_previous_outputs(tmp_path):
  out = tmp_path / "pipeline"
  args = [f"--out_dir={out}", "--min_run_time=0.005", "--max_retries=0", "--noprogress",
          "--tokens=65,33", "--num_images=20"]
  profile_cli.main(common.parse(profile_cli.define_flags, args))   # the previous run
  before = _snapshot(out)
  assert "summary.json" in before
  _kill_cli_at("moved_aside", "experiments.profile", *args)
  atomic.cleanup_stale(str(out))                                   # what the next run does first
  assert _snapshot(out) == before                                  # the previous run, whole
  assert sorted(os.listdir(tmp_path)) == ["pipeline"]


@pytest.mark.parametrize("phase", ["moved_aside", "published"])
def test_sigterm_while_the_main_job_publishes_keeps_the_new_outputs(tmp_path, phase):
  """SIGTERM right after the main job moved its previous outputs aside: the cleanup deleted
  them and the new ones (the whole --out_dir gone, exit 143). Now the publish finishes, and the
  error line says the outputs were written."""
  out = tmp_path / "pipeline"
  args = [f"--out_dir={out}", "--min_run_time=0.005", "--max_retries=0", "--noprogress",
          "--tokens=65,33", "--num_images=20"]
  profile_cli.main(common.parse(profile_cli.define_flags, args))   # the previous run
  before = _snapshot(out)
  proc = _kill_cli_at(phase, "experiments.profile", *args, sig=signal.SIGTERM)
  assert proc.returncode == 143, proc.stderr[-2000:]
  assert proc.stderr.splitlines()[-1] == f"error: terminated (after writing {out})"
  after = _snapshot(out)
  assert after != before and sorted(after) == sorted(before)      # the new run's, whole
  assert sorted(os.listdir(tmp_path)) == ["pipeline"]


@pytest.mark.parametrize("sig, code, text", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")])
def test_a_signal_while_training_is_one_line_and_its_exit_code(tmp_path, sig, code, text):
  """SIGINT (SIGTERM) while training (3 s after the data is loaded): one error line, exit 130
  (143), no output. A normal interpreter exit there crashed in XLA's destructors (SIGSEGV in 3
  of 3 runs of this test before `common._exit_interrupted`; 0 of 4 after); SIGTERM's default
  action killed the process without its cleanup."""
  import time  # pylint: disable=g-import-not-at-top
  out = tmp_path / "w"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
  p = subprocess.Popen([sys.executable, "-m", "experiments.train_digits",   # (40 epochs)
                        f"--out={out}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  try:
    first = p.stdout.readline()      # printed once the data is loaded, before the first step
    time.sleep(3.0)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
  finally:
    p.kill()
  assert first.startswith("vit_digits:"), first
  assert p.returncode == code, (p.returncode, err[-2000:])
  assert [l for l in err.splitlines() if l.startswith("error:")] == [f"error: {text}"], err
  assert "Traceback" not in err and "Fatal Python error" not in err, err[-2000:]
  assert not out.exists()


@pytest.mark.parametrize("platform", ["bogus", "rocm"])     # (cuda exists on the GPU image)
def test_an_unavailable_jax_platform_is_one_line_before_any_work(tmp_path, platform):
  """JAX_PLATFORMS=gpu/cuda on a CPU-only machine: a 56-66 line traceback, or an empty
  AssertionError reported as 'could not restore parameters'."""
  env = dict(os.environ, JAX_PLATFORMS=platform, PYTHONPATH=ROOT)
  env.pop("JAX_PLATFORM_NAME", None)
  proc = subprocess.run([sys.executable, "-m", "experiments.estimate", "--tokens=65",
                         "--num_images=10", f"--out_dir={tmp_path / 'e'}"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert proc.stderr.startswith(f"error: JAX_PLATFORMS='{platform}': JAX cannot start that "
                                "backend on this machine ("), proc.stderr[-2000:]
  assert len(proc.stderr.splitlines()) == 1 and not (tmp_path / "e").exists()


def test_a_bad_xla_flag_is_reported_not_swallowed(tmp_path):
  """XLA exits the process from C++ on an unknown XLA_FLAGS entry; the backend started inside
  the weights restore, whose stderr is held back, and the run ended with status 1 and no output
  at all."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, XLA_FLAGS="--xla_no_such_flag")
  proc = subprocess.run([sys.executable, "-m", "experiments.prune", "--schedule=keep@3:35",
                         "--repeats=3"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode != 0
  assert "Unknown flag in XLA_FLAGS: --xla_no_such_flag" in proc.stderr, proc.stderr[-2000:]
  assert len(proc.stderr.splitlines()) == 1, proc.stderr[-2000:]


# ---------------------------------------------------------------------- two runs into one output
# (a probe: each CLI run twice at once into one output exited 0 both times, each printing that
# it wrote the output, which then held the other run's result)

def _republish(path):
  """What another run's publish does to a folder: the same files, another folder there."""
  side, aside = f"{path}.side", f"{path}.aside"
  shutil.copytree(path, side)
  os.rename(path, aside)
  os.rename(side, path)
  shutil.rmtree(aside)


def test_a_solution_another_solve_wrote_meanwhile_is_kept_not_replaced(tmp_path, monkeypatch):
  from vitprune import solve_stage  # pylint: disable=g-import-not-at-top
  from vitprune.records.solution import write_solution  # pylint: disable=g-import-not-at-top
  ps = _block_profile(tmp_path)
  es = _estimate(tmp_path, [1, 3], list(range(4, N)), _acc)
  out = tmp_path / "solve"
  argv = [f"--profile={ps}", f"--estimate={es}", "--mode=multi", f"--out_dir={out}"]
  first, paths = solve_cli.main(common.parse(solve_cli.define_flags, argv))
  solve = solve_stage.solve_multilayer

  def another_run_writes_meanwhile(*args, **kwargs):
    sol = solve(*args, **kwargs)
    write_solution(dataclasses.replace(sol, created="the other run"), str(out))
    return sol
  monkeypatch.setattr(solve_stage, "solve_multilayer", another_run_writes_meanwhile)
  with pytest.raises(FileExistsError, match=re.escape(
      f"{paths['json']} was written by another run meanwhile (two runs into one --out_dir at "
      f"once: give each run its own); the results are kept in {out}/") + r"\S+\.kept-"):
    solve_cli.main(common.parse(solve_cli.define_flags, argv + ["--accuracy_floor=0.5"]))
  assert read_solution(paths["json"]).created == "the other run"     # not replaced
  (kept,) = [n for n in os.listdir(out) if ".kept-" in n]
  assert read_solution(str(out / kept)).settings["accuracy_floor"] == 0.5
  monkeypatch.undo()                   # the same run alone: it replaces the file it began with
  again, _ = solve_cli.main(common.parse(solve_cli.define_flags, argv))
  assert read_solution(paths["json"]) == again and again.chosen == first.chosen

  def a_file_not_ours_appears_meanwhile(*args, **kwargs):
    os.remove(paths["json"])
    open(paths["json"], "w").write("my notes")
    return solve(*args, **kwargs)
  monkeypatch.setattr(solve_stage, "solve_multilayer", a_file_not_ours_appears_meanwhile)
  for name in os.listdir(out):
    if ".kept-" in name:
      os.remove(out / name)
  with pytest.raises(FileExistsError, match=re.escape(f"refusing to replace {paths['json']}: ")
                     + r".*; the results are kept in .*\.kept-"):
    solve_cli.main(common.parse(solve_cli.define_flags, argv))
  assert open(paths["json"]).read() == "my notes"
  (kept,) = [n for n in os.listdir(out) if ".kept-" in n]
  assert read_solution(str(out / kept)).chosen == first.chosen


def test_an_estimate_overwritten_meanwhile_is_kept_not_replaced(tmp_path, monkeypatch):
  from experiments import estimate as estimate_cli  # pylint: disable=g-import-not-at-top
  from vitprune import estimate as estimate_lib  # pylint: disable=g-import-not-at-top
  from vitprune.records.estimate import read_estimate  # pylint: disable=g-import-not-at-top
  argv = ["--model=test_tiny_vit", "--data=digits", "--num_images=20", "--tokens=9,17",
          "--method=random", f"--out_dir={tmp_path}", "--out_name=e.json", "--overwrite"]
  estimate_cli.main(common.parse(estimate_cli.define_flags, argv + ["--seed=1"]))
  out = str(tmp_path / "e.json")
  evaluate = estimate_lib.evaluate

  def another_run_writes_meanwhile(*args, **kwargs):
    result = evaluate(*args, **kwargs)
    doc = json.load(open(out))
    atomic.replace_json(out, dict(doc, created="the other run"), doc["format"])
    return result
  monkeypatch.setattr(estimate_lib, "evaluate", another_run_writes_meanwhile)
  with pytest.raises(FileExistsError, match=re.escape(
      f"{out} was written by another run meanwhile (two runs of one --out_name at once: give "
      f"each run its own); the results are kept in {tmp_path}/e.kept-")):
    estimate_cli.main(common.parse(estimate_cli.define_flags, argv + ["--seed=2"]))
  assert json.load(open(out))["created"] == "the other run"
  (kept,) = [n for n in os.listdir(tmp_path) if n.startswith("e.kept-")]
  assert read_estimate(str(tmp_path / kept)).seed == 2


def test_weights_artifacts_and_digit_folders_published_meanwhile_are_not_replaced(
    tmp_path, monkeypatch):
  from vitprune import checkpoint, digits  # pylint: disable=g-import-not-at-top
  params = init_params(TINY, 0)
  weights = save_weights(str(tmp_path / "w"), TINY, params)
  began = atomic.output_stamp(weights)
  _republish(weights)                                        # another run, meanwhile
  with pytest.raises(atomic.ReplacedMeanwhileError, match=re.escape(
      f"{weights} was written by another run after this one began") + ".* this run's output "
      f"is kept in {re.escape(weights)}\\.partial-[0-9a-f]{{8}}$"):
    save_weights(weights, TINY, init_params(TINY, 1), overwrite=True, replaces=began)
  _, held = checkpoint.load_weights(weights)
  assert (held["cls_token"] == params["cls_token"]).all()
  save_weights(weights, TINY, init_params(TINY, 1), overwrite=True,
               replaces=atomic.output_stamp(weights))        # the folder it began with
  # Without --overwrite: nothing there when training began, another run's weights there when
  # saving (a probe: the minutes of training were thrown away, with a hint to pass --overwrite,
  # which would replace the other run's weights).
  fresh = str(tmp_path / "w2")
  began = atomic.output_stamp(fresh)
  assert began is None
  save_weights(fresh, TINY, params)                          # another run, meanwhile
  with pytest.raises(FileExistsError, match=re.escape(
      f"{fresh} was created by another run while this one worked (overwrite would replace that "
      f"run's output: give each run its own); this run's output is kept in {fresh}.partial-")):
    save_weights(fresh, TINY, init_params(TINY, 1), replaces=began)
  (kept,) = [n for n in os.listdir(tmp_path) if n.startswith("w2.partial-")]
  _, held = checkpoint.load_weights(str(tmp_path / kept))
  assert (held["cls_token"] == init_params(TINY, 1)["cls_token"]).all()
  shutil.rmtree(tmp_path / kept)
  shutil.rmtree(fresh)
  with pytest.raises(FileExistsError, match=r"already exists \(pass overwrite"):   # (at once)
    save_weights(weights, TINY, params)
  # The library writers stamp the folder as they begin: an artifact's export, a digits folder.
  art = str(tmp_path / "art")
  deploy.export_artifact(art, TINY, params, verify=False)
  export = deploy.export_forward

  def export_while_another_publishes(*args, **kwargs):
    _republish(art)
    return export(*args, **kwargs)
  monkeypatch.setattr(deploy, "export_forward", export_while_another_publishes)
  with pytest.raises(atomic.ReplacedMeanwhileError, match=re.escape(
      f"{art} was written by another run after this one began")):
    deploy.export_artifact(art, TINY, params, verify=False, overwrite=True,
                           schedule=parse_schedule(TINY, "keep@1:9"),
                           reducer=make_reducer("pomt"))
  assert deploy.load(art).manifest.schedule_text == "full"
  monkeypatch.undo()
  folder = digits.write_digits_imagefolder(str(tmp_path / "d"), limit=10)
  arrays = digits.load_digits_arrays

  def load_while_another_publishes():
    _republish(folder)
    return arrays()
  monkeypatch.setattr(digits, "load_digits_arrays", load_while_another_publishes)
  with pytest.raises(atomic.ReplacedMeanwhileError, match="was written by another run after"):
    digits.write_digits_imagefolder(folder, limit=20, overwrite=True)
  assert sum(len(fs) for _, _, fs in os.walk(folder)) < 20
  # What each refused run made is kept beside, whole (minutes of compiles or training).
  kept = sorted(n for n in os.listdir(tmp_path) if ".partial-" in n)
  assert [n.split(".partial-")[0] for n in kept] == ["art", "d", "w"]
  assert deploy.load(str(tmp_path / kept[0])).manifest.schedule_text == "keep@1:9"
  _, held = checkpoint.load_weights(str(tmp_path / kept[2]))
  assert (held["cls_token"] == init_params(TINY, 1)["cls_token"]).all()
  assert sum(len(fs) for _, _, fs in os.walk(tmp_path / kept[1])) > 20   # (20 PNGs + marker)
  assert sorted(set(os.listdir(tmp_path)) - set(kept)) == ["art", "d", "w"]   # no temporaries
