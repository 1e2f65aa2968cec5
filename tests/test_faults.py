"""Nothing lost, nothing silently wrong: SIGKILL at every write phase, concurrent writers,
foreign folders, profile merges and labels by class name."""
import dataclasses
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from vitprune import atomic, checkpoint, data, digits
from vitprune.profile import records
from vitprune.registry import get_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = {"format": "vitprune-test", "version": 1}
IS_OURS = atomic.json_marker("marker.json", "vitprune-test")


def _run_killed_at(phase, body):
  """Runs `body` (Python source) in a subprocess whose `atomic.fault_hook` SIGKILLs it when the
  write reaches `phase`; asserts that it was killed there."""
  script = textwrap.dedent(f"""
      import os, signal, sys
      from vitprune import atomic
      def hook(phase):
        if phase == {phase!r}:
          os.kill(os.getpid(), signal.SIGKILL)
      atomic.fault_hook = hook
  """) + textwrap.dedent(body)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == -signal.SIGKILL, (phase, proc.returncode, proc.stderr[-2000:])


def _hidden(parent):
  return sorted(n for n in os.listdir(parent) if n.startswith("."))


def _write_ours(path, text):
  with atomic.staged_dir(str(path), overwrite=True, is_ours=IS_OURS) as tmp:
    atomic.write_json(os.path.join(tmp, "marker.json"), MARKER)
    with open(os.path.join(tmp, "data.txt"), "w") as f:
      f.write(text)


# ----------------------------------------------------------------------------- staged_dir


@pytest.mark.parametrize("phase, survivor", [("staged", "old"), ("moved_aside", "old"),
                                             ("published", "new")])
def test_staged_dir_sigkill_then_next_run_recovers_and_cleans(tmp_path, phase, survivor):
  target = tmp_path / "out"
  _write_ours(target, "old")
  _run_killed_at(phase, f"""
      from vitprune import atomic
      is_ours = atomic.json_marker("marker.json", "vitprune-test")
      with atomic.staged_dir({str(target)!r}, overwrite=True, is_ours=is_ours) as tmp:
        atomic.write_json(os.path.join(tmp, "marker.json"), {MARKER!r})
        open(os.path.join(tmp, "data.txt"), "w").write("new")
  """)
  assert _hidden(tmp_path)                       # the killed run left temporaries behind
  atomic.cleanup_stale(str(target))              # what the next write of `out` does first
  assert (target / "data.txt").read_text() == survivor
  assert os.listdir(tmp_path) == ["out"]
  _write_ours(target, "next")
  assert (target / "data.txt").read_text() == "next" and os.listdir(tmp_path) == ["out"]


def test_write_bytes_sigkill_keeps_old_file_and_next_write_cleans(tmp_path):
  path = tmp_path / "x.json"
  atomic.write_bytes(str(path), b"old")
  _run_killed_at("file_written", f"""
      from vitprune import atomic
      atomic.write_bytes({str(path)!r}, b"new")
  """)
  assert path.read_bytes() == b"old" and len(os.listdir(tmp_path)) == 2
  atomic.write_bytes(str(path), b"next")
  assert path.read_bytes() == b"next" and os.listdir(tmp_path) == ["x.json"]


def test_stale_temporaries_of_live_processes_are_kept(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  dead_pid = int(dead.stdout)
  live = tmp_path / f".out.tmp-{os.getpid()}-abc"
  stale = tmp_path / f".out.tmp-{dead_pid}-abc"
  other = tmp_path / f".other.tmp-{dead_pid}-abc"
  for d in (live, stale, other):
    d.mkdir()
  atomic.cleanup_stale(str(tmp_path / "out"))
  assert live.exists() and other.exists() and not stale.exists()


def test_a_sweep_of_killed_keeps_is_best_effort(tmp_path, monkeypatch):
  """`cleanup_stale_named` sweeps what killed writers of fresh names left; a name it cannot
  clean (another user's lock: PermissionError) is left, the others are still swept, and the
  writer that sweeps does not fail (a review: one such lock failed an estimate already
  written)."""
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  stale = [tmp_path / f".e_{k}.json.tmp-{int(dead.stdout)}-abc" for k in "ab"]
  for d in stale:
    d.mkdir()
  clean = atomic.cleanup_stale

  def refusing(path):
    if os.path.basename(path) == "e_a.json":
      raise PermissionError(13, "Permission denied", path)
    clean(path)
  monkeypatch.setattr(atomic, "cleanup_stale", refusing)
  atomic.cleanup_stale_named(str(tmp_path), "e_", ".json")
  assert stale[0].exists() and not stale[1].exists()
  atomic.cleanup_stale_named(str(tmp_path / "no_such_folder"), "e_", ".json")


def test_temporaries_of_another_pid_namespace_are_judged_by_their_lock(tmp_path):
  """Fault probe: a writer in another container sharing the folder (`unshare -p`) has a PID this
  process cannot see, so its staging folder was deleted mid-write as a dead writer's (the other
  run then failed with a raw errno after all its work). Temporaries carry a tag of the host and
  PID namespace: this namespace's are judged by their PID, another's by the lock their writer
  holds on them, so a dead foreign writer's are still cleaned up and its committed transaction
  rolled forward (review: ignoring them left a file set mixed for good)."""
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  dead_pid = int(dead.stdout)
  ours = atomic._namespace_tag()
  elsewhere = "0" * 8 if ours != "0" * 8 else "1" * 8
  assert atomic._temp_prefix("out", "tmp") == f".out.tmp-{os.getpid()}-{ours}-"
  held = tmp_path / f".out.tmp-{dead_pid}-{elsewhere}-abc_1234"     # alive over there
  stale = tmp_path / f".out.tmp-{dead_pid}-{ours}-abc_1234"
  old_style = tmp_path / f".out.tmp-{dead_pid}-abc_1234"            # before the tag
  gone = tmp_path / f".out.commit-{dead_pid}-{elsewhere}-xyz_1234"  # its writer died
  for d in (held, stale, old_style, gone):
    d.mkdir()
  (gone / "a").write_text("new")
  (gone / ".order").write_text("a\n")
  (tmp_path / "a").write_text("old")
  holder = subprocess.Popen(
      [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
       "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
       str(held)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    atomic.cleanup_stale(str(tmp_path / "out"))
    assert held.exists() and not stale.exists() and not old_style.exists()
    assert not gone.exists() and (tmp_path / "a").read_text() == "new"    # rolled forward
  finally:
    holder.communicate("")
  atomic.cleanup_stale(str(tmp_path / "out"))
  assert not held.exists()                             # its writer is gone now
  with atomic.staged_dir(str(tmp_path / "out")) as tmp:     # this process's own temporaries
    assert os.path.basename(tmp).startswith(f".out.tmp-{os.getpid()}-{ours}-")
    assert not atomic._unheld(tmp)                          # held while it works
    open(os.path.join(tmp, "config.json"), "w").write("{}")
  assert sorted(os.listdir(tmp_path)) == ["a", "out"]


def test_concurrent_writers_exactly_one_wins(tmp_path):
  for pre_existing_empty in (False, True):
    target = tmp_path / f"out{int(pre_existing_empty)}"
    if pre_existing_empty:
      target.mkdir()
    barrier = threading.Barrier(2)
    results = {}

    def writer(i):
      try:
        with atomic.staged_dir(str(target), overwrite=False) as tmp:
          with open(os.path.join(tmp, "who.txt"), "w") as f:
            f.write(str(i))
          barrier.wait(timeout=60)        # both have passed the existence check
        results[i] = "won"
      except FileExistsError as e:
        results[i] = str(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    winners = [i for i, r in results.items() if r == "won"]
    assert len(winners) == 1, results
    loser = results[1 - winners[0]]
    assert loser.startswith(f"{target} was created while this run worked: refusing to "
                            f"replace {target}: it is a folder that is not")   # (no marker)
    assert (target / "who.txt").read_text() == str(winners[0])
    # The loser's output is kept whole beside it, named (its work was deleted).
    (kept,) = glob.glob(f"{target}.partial-*")
    assert loser.endswith(f"; this run's output is kept in {kept}")
    assert (tmp_path / kept / "who.txt").read_text() == str(1 - winners[0])
    shutil.rmtree(kept)
  assert sorted(os.listdir(tmp_path)) == ["out0", "out1"]


def test_overwrite_refuses_foreign_folders_and_files(tmp_path):
  foreign = tmp_path / "out"
  foreign.mkdir()
  (foreign / "NOTES.txt").write_text("mine")
  with pytest.raises(atomic.ForeignOutputError, match=f"refusing to replace {foreign}: it is a "
                                                      "folder"):
    with atomic.staged_dir(str(foreign), overwrite=True) as tmp:
      open(os.path.join(tmp, "x"), "w").close()
  with pytest.raises(FileExistsError, match="already exists"):
    with atomic.staged_dir(str(foreign), overwrite=False) as tmp:
      open(os.path.join(tmp, "x"), "w").close()
  afile = tmp_path / "file"
  afile.write_text("mine too")
  with pytest.raises(atomic.ForeignOutputError, match="it is a regular file"):
    with atomic.staged_dir(str(afile)) as tmp:     # the transitional default refuses too
      pass
  (foreign / "profile.json").write_text('{"format": "vitprune-latency-profile"}')
  with pytest.raises(atomic.ForeignOutputError, match="not a vitprune weights, artifact or"):
    with atomic.staged_dir(str(foreign)) as tmp:   # a folder holding one of our files: not ours
      pass
  (foreign / "profile.json").unlink()
  cfg = get_config("test_tiny_vit")
  from vitprune.model import init_params
  with pytest.raises(atomic.ForeignOutputError, match="not a vitprune-weights folder"):
    checkpoint.save_weights(str(foreign), cfg, init_params(cfg, 0), overwrite=True)
  assert (foreign / "NOTES.txt").read_text() == "mine" and os.listdir(foreign) == ["NOTES.txt"]
  assert afile.read_text() == "mine too"
  assert sorted(os.listdir(tmp_path)) == ["file", "out"]


# ----------------------------------------------------------------------------- weights


@pytest.mark.parametrize("phase", ["staged", "moved_aside"])
def test_save_weights_sigkill_keeps_previous_weights(tmp_path, phase):
  from vitprune.model import init_params
  cfg = get_config("test_tiny_vit")
  path = checkpoint.save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  _run_killed_at(phase, f"""
      from vitprune import checkpoint
      from vitprune.model import init_params
      from vitprune.registry import get_config
      cfg = get_config("test_tiny_vit")
      checkpoint.save_weights({path!r}, cfg, init_params(cfg, 1), overwrite=True)
  """)
  atomic.cleanup_stale(path)
  _, loaded = checkpoint.load_weights(path)
  np.testing.assert_array_equal(loaded["cls_token"], init_params(cfg, 0)["cls_token"])
  assert os.listdir(tmp_path) == ["w"]
  checkpoint.save_weights(path, cfg, init_params(cfg, 2), overwrite=True)
  _, loaded = checkpoint.load_weights(path)
  np.testing.assert_array_equal(loaded["cls_token"], init_params(cfg, 2)["cls_token"])
  assert os.listdir(tmp_path) == ["w"]


# ----------------------------------------------------------------------------- profiles

CFG = get_config("test_tiny_vit")


def _point(n, median, batch=1):
  return records.Point(component="model", batch_size=batch, tokens=n, median_s=median,
                       q25_s=median, q75_s=median, num_samples=3, samples_s=(median,) * 3)


def _profile(tokens, median, created="2025-01-01T00:00:00+00:00", cfg=CFG, dtype="float32"):
  return records.analyze(records.Profile(
      model=cfg.name, config=dataclasses.asdict(cfg), device_kind="cpu", platform="cpu",
      jax_version="0", jaxlib_version="0", dtype=dtype, modes=("model",), reducer="keep_first",
      timing={}, points=tuple(_point(n, median) for n in tokens), created=created))


def _medians(path):
  return {p.tokens: p.median_s for p in records.load(path).points}


def test_profile_merge_keeps_earlier_points_and_refuses_mismatches(tmp_path):
  from vitprune.profile import runner
  first = runner.write_outputs(_profile(range(17, 9, -1), 1e-3), str(tmp_path))
  second = runner.write_outputs(_profile([12, 11, 5, 4], 2e-3,
                                         created="2025-01-02T00:00:00+00:00"), str(tmp_path))
  assert first == second
  got = _medians(first["json"])
  assert sorted(got) == [4, 5] + list(range(10, 18))
  assert got[12] == got[11] == got[5] == 2e-3 and got[17] == got[10] == 1e-3
  csv_rows = open(first["csv"]).read().strip().split("\n")[1:]
  assert sorted(int(r.split(",")[6]) for r in csv_rows) == sorted(got)
  before = {k: open(p, "rb").read() for k, p in first.items()}
  other = _profile([17], 5e-3, cfg=get_config("test_tiny_distilled"))
  with pytest.raises(ValueError, match="cannot merge into .*different model: 'test_tiny_vit' vs "
                                       "'test_tiny_distilled'"):
    records.save(other, str(tmp_path), stem=os.path.basename(first["json"])[:-5])
  assert {k: open(p, "rb").read() for k, p in first.items()} == before
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "test-tiny-vit_model_b1_float32_cpu.json").write_text('{"mine": 1}')
  with pytest.raises(ValueError, match="refusing to replace .*not a readable latency profile"):
    records.save(_profile([17], 1e-3), str(foreign))
  (foreign / "test-tiny-vit_model_b1_float32_cpu.json").unlink()
  (foreign / "test-tiny-vit_model_b1_float32_cpu.csv").write_text("mine")
  with pytest.raises(ValueError, match="no profile .* beside them"):
    records.save(_profile([17], 1e-3), str(foreign))
  assert os.listdir(foreign) == ["test-tiny-vit_model_b1_float32_cpu.csv"]
  # A link to a profile (or its CSV) was read through, merged into, and replaced by a file.
  linked = tmp_path / "linked"
  for kind, target in first.items():
    linked.mkdir(exist_ok=True)
    name = os.path.basename(target)
    for k, p in first.items():
      if os.path.basename(p) != name:
        shutil.copy(p, linked / os.path.basename(p))
    os.symlink(target, linked / name)
    with pytest.raises(ValueError, match=f"refusing to replace .*{re.escape(name)}: it is a "
                                         "symbolic link, not a file vitprune wrote"):
      runner.write_outputs(_profile([17], 1e-3), str(linked))
    assert os.path.islink(linked / name), kind
    shutil.rmtree(linked)
  assert {k: open(p, "rb").read() for k, p in first.items()} == before
  assert sorted(os.listdir(tmp_path)) == sorted(
      ["foreign"] + [os.path.basename(p) for p in first.values()])


def test_concurrent_profile_merges_lose_nothing(tmp_path):
  writers = 4
  barrier = threading.Barrier(writers)
  errors = []

  def write(i):
    try:
      barrier.wait(timeout=60)
      records.save(_profile([10 + i, 2 + i], float(i + 1)), str(tmp_path))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  path = tmp_path / "test-tiny-vit_model_b1_float32_cpu.json"
  got = _medians(str(path))
  assert got == {**{10 + i: float(i + 1) for i in range(writers)},
                 **{2 + i: float(i + 1) for i in range(writers)}}
  assert sorted(os.listdir(tmp_path)) == [path.name[:-5] + ".csv", path.name]


@pytest.mark.parametrize("phase, survivor", [
    ("staged", "old"), ("committed", "new"),
    ("renamed:test-tiny-vit_model_b1_float32_cpu.csv", "new")])
def test_profile_write_sigkill_leaves_one_consistent_set(tmp_path, phase, survivor):
  from vitprune.profile import runner
  paths = runner.write_outputs(_profile([17, 9], 1e-3), str(tmp_path))
  old = {k: open(p, "rb").read() for k, p in paths.items()}
  _run_killed_at(phase, f"""
      import dataclasses
      from vitprune.profile import records, runner
      from vitprune.registry import get_config
      cfg = get_config("test_tiny_vit")
      pt = lambda n: records.Point(component="model", batch_size=1, tokens=n, median_s=2e-3,
                                   q25_s=2e-3, q75_s=2e-3, num_samples=3, samples_s=(2e-3,) * 3)
      prof = records.Profile(model=cfg.name, config=dataclasses.asdict(cfg), device_kind="cpu",
                             platform="cpu", jax_version="0", jaxlib_version="0",
                             dtype="float32", modes=("model",), reducer="keep_first", timing={{}},
                             points=(pt(17), pt(5)), created="2025-02-01T00:00:00+00:00")
      runner.write_outputs(records.analyze(prof), {str(tmp_path)!r})
  """)
  # The next profile run's up-front check finishes the killed commit first, as the write does
  # (it refused the CSV/PNG of a killed commit as files "not written by vitprune").
  nxt = _profile([3], 4e-3)
  records.check_save(nxt, str(tmp_path), records.file_stem(nxt), extra=("png",))
  got = _medians(paths["json"])
  if survivor == "old":
    assert {k: open(p, "rb").read() for k, p in paths.items()} == old
  else:
    assert got == {17: 2e-3, 9: 1e-3, 5: 2e-3}
  assert open(paths["csv"]).read() == records.to_csv(records.load(paths["json"]))
  assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths.values())
  runner.write_outputs(_profile([3], 4e-3, created="2025-03-01T00:00:00+00:00"), str(tmp_path))
  assert _medians(paths["json"])[3] == 4e-3
  assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths.values())


# ----------------------------------------------------------------------------- labels by name


def test_imagefolder_subset_of_classes_labelled_by_name(tmp_path):
  import jax.numpy as jnp
  from vitprune.model import jitted_forward
  wdir = os.path.join(ROOT, "weights", "vit_digits")
  names = checkpoint.read_class_names(wdir)
  assert names == digits.DIGITS_CLASSES
  cfg, params = checkpoint.load_weights(wdir)
  root = digits.write_digits_imagefolder(tmp_path / "d", split="test", limit=40)
  for c in os.listdir(root):
    if c not in ("3", "5") and not c.startswith("."):
      shutil.rmtree(os.path.join(root, c))
  # Without names, the sorted folder position would call '3' class 0 and '5' class 1.
  assert data.ImageFolder(root).labels.max() == 1
  with pytest.raises(ValueError, match="has 2 class folders .* but the model has 10 classes "
                                       "and records no class names"):
    data.ImageFolder(root, num_classes=cfg.num_classes)
  ds = data.ImageFolder(root, class_names=names, num_classes=cfg.num_classes)
  want = np.array([int(f.split("/")[0]) for f in ds.files])
  np.testing.assert_array_equal(ds.labels, want)
  assert set(want) == {3, 5} and ds.classes == names and ds.folder_classes == ("3", "5")
  images, labels, idx = next(data.iterate_batches(ds, cfg.preprocessing, len(ds)))
  pred = np.asarray(jitted_forward(params, jnp.asarray(images), cfg=cfg)).argmax(-1)
  right = pred == want                          # the images the model classifies right
  assert right.mean() > 0.5
  assert np.mean(pred[right] == labels[right]) == 1.0
  assert np.mean(pred == labels) == right.mean()
  assert data.dataset_fingerprint(ds) != data.dataset_fingerprint(data.ImageFolder(root))


def test_imagefolder_unknown_class_name_is_a_clear_error(tmp_path):
  root = digits.write_digits_imagefolder(tmp_path / "d", split="test", limit=20)
  os.rename(os.path.join(root, "7"), os.path.join(root, "seven"))
  with pytest.raises(ValueError, match=r"class folder 'seven' in .* is not among the "
                                       r"model's class names \['0', '1'"):
    data.ImageFolder(root, class_names=digits.DIGITS_CLASSES)
  with pytest.raises(ValueError, match="has 3 names but the model has 10 classes"):
    data.ImageFolder(root, class_names=["a", "b", "c"], num_classes=10)
  with pytest.raises(ValueError, match=r"repeats \['a'\]"):
    data.ImageFolder(root, class_names=["a", "a"])


def test_the_up_front_profile_check_creates_no_folder(tmp_path):
  """A profile run killed while measuring left its --out_dir (and every parent it lacked)
  behind, empty: the up-front check took the writers' lock, which made the folder."""
  nxt = _profile([3], 4e-3)
  out = tmp_path / "a" / "b"
  records.check_save(nxt, str(out), records.file_stem(nxt), extra=("png",))
  assert os.listdir(tmp_path) == []
  (tmp_path / "f").write_text("x")        # still refused up front, before anything is measured
  for bad, match in ((tmp_path / "f", "is a regular file, not a directory"),
                     (tmp_path / "f" / "sub", r"f is a file, not a directory")):
    with pytest.raises(NotADirectoryError, match=match):
      records.check_save(nxt, str(bad), records.file_stem(nxt), extra=("png",))
  assert os.listdir(tmp_path) == ["f"]


def test_a_temporary_is_locked_before_a_cleaner_can_judge_it(tmp_path, monkeypatch):
  """Review: a temporary got its judged name from mkdtemp before its writer locked it, so a
  cleaner in another namespace could delete it in between (5-9 of 1500 writes failed with a
  raw FileNotFoundError). It is made as `.NAME.new-...` (judged by PID in this namespace only,
  never by another's), locked, then renamed; a failure there leaves nothing, and no fd."""
  seen = []
  real_rename = os.rename

  def rename(src, dst, *a, **kw):
    if ".new-" in os.path.basename(src):
      seen.append((os.path.basename(dst).split("-")[0], atomic._unheld(src)))
    return real_rename(src, dst, *a, **kw)

  monkeypatch.setattr(atomic.os, "rename", rename)
  atomic.write_json(str(tmp_path / "a.json"), {"x": 1})
  for _ in range(2):                         # the second replaces: moves the old aside
    with atomic.staged_dir(str(tmp_path / "d"), is_ours=lambda p: True) as tmp:
      open(os.path.join(tmp, "x"), "w").write("x")
  with atomic.staged_files(str(tmp_path), "s", ["s.txt"]) as tmp:
    open(os.path.join(tmp, "s.txt"), "w").write("s")
  assert seen == [(".a.json.tmp", False), (".d.tmp", False), (".d.tmp", False),
                  (".d.old", False), (".s.tmp", False)]
  monkeypatch.setattr(atomic.os, "rename", real_rename)
  # A `.new-` left by a writer killed while making it: ours by PID, another's never.
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  ours, elsewhere = atomic._namespace_tag(), "f" * 8
  mine = tmp_path / f".d.new-{int(dead.stdout)}-{ours}-abc_1234"
  theirs = tmp_path / f".d.new-{int(dead.stdout)}-{elsewhere}-abc_1234"
  mine.mkdir()
  theirs.mkdir()
  atomic.cleanup_stale(str(tmp_path / "d"))
  assert not mine.exists() and theirs.exists()
  theirs.rmdir()
  # Interrupted while claiming: nothing left, no fd held.
  fds = len(os.listdir("/proc/self/fd"))

  def chmod(*a, **kw):
    raise KeyboardInterrupt

  monkeypatch.setattr(atomic.os, "chmod", chmod)
  with pytest.raises(KeyboardInterrupt):
    with atomic.staged_dir(str(tmp_path / "e")):
      pass
  assert len(os.listdir("/proc/self/fd")) == fds
  assert sorted(os.listdir(tmp_path)) == ["a.json", "d", "s.txt"]
