"""vitprune.atomic: a failed write never replaces or half-writes the target."""
import contextlib
import errno
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from vitprune import atomic
from vitprune import config


def test_write_bytes_and_json_round_trip(tmp_path):
  path = tmp_path / "sub" / "x.json"   # the directory is created
  assert atomic.write_json(str(path), {"b": 1, "a": [1.5]}, sort_keys=True) == str(path)
  assert json.loads(path.read_text()) == {"a": [1.5], "b": 1}
  assert path.read_text().startswith('{\n  "a"')
  atomic.write_bytes(str(path), b"raw")
  assert path.read_bytes() == b"raw"
  assert oct(os.stat(path).st_mode & 0o777) == "0o644"
  assert os.listdir(path.parent) == ["x.json"]


def test_failures_keep_the_old_file_and_leave_no_temp(tmp_path):
  path = tmp_path / "x.json"
  atomic.write_bytes(str(path), b"old")
  with pytest.raises(TypeError, match="needs bytes, got str"):
    atomic.write_bytes(str(path), "not bytes")
  with pytest.raises(ValueError, match="Out of range float values"):
    atomic.write_json(str(path), {"x": float("nan")})
  with pytest.raises(TypeError, match="not JSON serializable"):
    atomic.write_json(str(path), {"x": object()})
  assert path.read_bytes() == b"old"
  assert os.listdir(tmp_path) == ["x.json"]


def test_staged_dir_publishes_replaces_and_rolls_back(tmp_path):
  target = tmp_path / "art"
  with atomic.staged_dir(str(target)) as tmp:
    assert os.path.isdir(tmp) and not target.exists()
    (tmp_path / tmp / "a.txt").write_text("one")
  assert (target / "a.txt").read_text() == "one"
  ours = lambda p: os.path.isfile(os.path.join(p, "a.txt")) or os.path.isfile(
      os.path.join(p, "b.txt"))
  with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:   # replace ours
    (tmp_path / tmp / "b.txt").write_text("two")
  assert sorted(os.listdir(target)) == [atomic.INVENTORY_FILE, "b.txt"]
  with pytest.raises(RuntimeError, match="boom"):
    with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:
      (tmp_path / tmp / "c.txt").write_text("three")
      raise RuntimeError("boom")
  assert sorted(os.listdir(target)) == [atomic.INVENTORY_FILE, "b.txt"]   # old content intact
  assert sorted(os.listdir(tmp_path)) == ["art"]           # no staging or old dirs left


def test_a_published_directory_holding_files_we_did_not_write_is_not_replaced(tmp_path):
  """--overwrite replaces our directory only while it holds nothing but what we published
  (its inventory): a user's NOTES.txt or a board profile written into a kit is never deleted,
  at the top or deeper; a directory from before inventories keeps the marker rule."""
  target = tmp_path / "art"
  ours = lambda p: os.path.isfile(os.path.join(p, "m.json"))
  with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:
    os.makedirs(os.path.join(tmp, "sub"))
    for name in ("m.json", "sub/w.bin"):
      (tmp_path / tmp / name).write_text("x")
  assert atomic.unlisted_files(str(target)) == []
  for extra in ("NOTES.txt", "sub/board.json"):
    (target / extra).write_text("mine")
    with pytest.raises(atomic.ForeignOutputError, match=f"holds {extra}, which vitprune did not"):
      with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:
        (tmp_path / tmp / "m.json").write_text("y")
    assert (target / extra).read_text() == "mine"
    os.unlink(target / extra)
  # A link to a folder of the user's data and an empty folder (a probe: deleted without a
  # word, as a walk lists files only): named and kept as well.
  (tmp_path / "mydata").mkdir()
  (tmp_path / "mydata" / "p.txt").write_text("precious")
  for extra, make in (("my_data_link", lambda p: os.symlink(tmp_path / "mydata", p)),
                      ("empty/", os.mkdir), ("sub/deeper/", os.mkdir)):
    make(target / extra)
    with pytest.raises(atomic.ForeignOutputError, match=f"holds {extra}, which vitprune did not"):
      with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:
        (tmp_path / tmp / "m.json").write_text("y")
    assert os.path.lexists(target / extra)
    (os.unlink if os.path.islink(target / extra) else os.rmdir)(target / extra)
  assert (tmp_path / "mydata" / "p.txt").read_text() == "precious"
  with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:   # clean again: ok
    (tmp_path / tmp / "m.json").write_text("new")
    os.makedirs(os.path.join(tmp, "made_empty"))      # an empty folder of ours is listed
  assert (target / "m.json").read_text() == "new"
  assert atomic.unlisted_files(str(target)) == []
  os.unlink(target / atomic.INVENTORY_FILE)        # written before inventories: marker alone
  (target / "NOTES.txt").write_text("mine")
  assert atomic.unlisted_files(str(target)) == []


def test_a_folder_whose_inventory_is_lost_is_held_to_its_layout(tmp_path):
  """--overwrite deleted a user's NOTES.txt from an artifact, kit or digits folder whose
  inventory was missing (copied with `cp -r dir/* copy/`) or damaged: its marker alone decided.
  Without a readable inventory the folder is held to its marker's layout, and the refusal says
  why; one holding nothing else is still replaced."""
  ours = atomic.json_marker("m.json", "fmt", layout=(r"w\.bin", r"sub/.+"))
  assert ours.layout.pattern == r"m\.json|w\.bin|sub/.+"
  assert atomic.json_marker("m.json", "fmt").layout is None
  target = tmp_path / "out"
  inventory = target / atomic.INVENTORY_FILE

  def publish(text):
    with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:
      os.makedirs(os.path.join(tmp, "sub", "deep"))
      for name, body in (("m.json", '{"format": "fmt"}'), ("w.bin", text),
                         ("sub/deep/x", text)):
        (tmp_path / tmp / name).write_text(body)
  publish("1")
  whole = inventory.read_text()
  for lose in (lambda: os.remove(inventory), lambda: inventory.write_text(whole[:10]),
               lambda: inventory.write_text('{"format": "vitprune-inventory"}'),
               lambda: inventory.write_text('{"files": 3}'), None):
    if lose is not None:
      lose()
    lost = (" (its list of what vitprune wrote, .vitprune-files.json, is missing or damaged, "
            "so its layout decides)") if lose is not None else ""
    assert atomic.unlisted_files(str(target), ours.layout) == []
    for extra, make in (("NOTES.txt", lambda p: p.write_text("mine")),
                        ("w.bin.orig", lambda p: p.write_text("mine")), ("mine/", os.mkdir)):
      make(target / extra)
      with pytest.raises(atomic.ForeignOutputError, match=re.escape(
          f"refusing to replace {target}: it holds {extra}, which vitprune did not write "
          f"there{lost}; move them away or choose another output path")):
        publish("2")
      assert os.path.exists(target / extra) and (target / "w.bin").read_text() == "1"
      (os.rmdir if extra.endswith("/") else os.remove)(target / extra)
    if lose is not None:
      assert atomic.unlisted_files(str(target)) == []      # no layout: the predicate decides
      publish("1")                                           # nothing else: replaced
  assert json.loads(inventory.read_text())["files"] == json.loads(whole)["files"]


def test_a_file_another_run_wrote_meanwhile_is_not_replaced(tmp_path):
  """A file's stamp when a run began: at its write, another run's file there since (written,
  or rewritten with the same bytes) is refused; the one it began with is replaced."""
  path = str(tmp_path / "e.json")
  began = atomic.file_stamp(path)
  assert began is None
  atomic.replace_json(path, {"format": "fmt", "v": 1}, "fmt")          # another run, meanwhile
  message = re.escape(f"{path} was written by another run after this one began (two runs "
                      "writing one output at once): this run does not replace that run's "
                      "output; give each run its own output")
  with pytest.raises(atomic.ReplacedMeanwhileError, match=message):
    atomic.replace_json(path, {"format": "fmt", "v": 2}, "fmt", replaces=began)
  assert json.loads(open(path).read())["v"] == 1
  stamp = atomic.file_stamp(path)
  assert stamp[:2] == (os.stat(path).st_dev, os.stat(path).st_ino)
  atomic.replace_json(path, {"format": "fmt", "v": 3}, "fmt", replaces=stamp)
  stamp = atomic.file_stamp(path)
  atomic.replace_json(path, {"format": "fmt", "v": 3}, "fmt")        # the same bytes, anew
  with pytest.raises(atomic.ReplacedMeanwhileError, match=message):
    atomic.replace_json(path, {"format": "fmt", "v": 4}, "fmt", replaces=stamp)
  atomic.replace_json(path, {"format": "fmt", "v": 5}, "fmt")        # ANY_OUTPUT: as before
  assert json.loads(open(path).read())["v"] == 5
  stamp = atomic.file_stamp(path)
  os.remove(path)                             # removed meanwhile: nobody's output is lost
  atomic.replace_json(path, {"format": "fmt", "v": 6}, "fmt", replaces=stamp)
  assert json.loads(open(path).read())["v"] == 6
  assert sorted(os.listdir(tmp_path)) == ["e.json"]


def _kept_aside(tmp_path):
  """The one `out.partial-*` folder a refused publish kept beside `out`: its `v`, the folder
  removed (nothing else beside `out`)."""
  (kept,) = [p for p in tmp_path.iterdir() if p.name != "out"]
  assert kept.name.startswith("out.partial-") and (kept / atomic.INVENTORY_FILE).is_file()
  v = (kept / "v").read_text()
  shutil.rmtree(kept)
  return v


def test_an_output_another_run_published_meanwhile_is_not_replaced(tmp_path):
  """Two main jobs into one folder at once both exited 0: the one that finished second replaced
  the first one's outputs, whose printed paths then held the other's numbers. With the stamp
  of the folder when its work began, a writer refuses to replace one published since."""
  target = tmp_path / "out"
  ours = atomic.json_marker("m.json", "fmt")

  def publish(text, **kw):
    with atomic.staged_dir(str(target), overwrite=True, is_ours=ours, **kw) as tmp:
      for name, body in (("m.json", '{"format": "fmt"}'), ("v", text)):
        (tmp_path / tmp / name).write_text(body)
  began = atomic.output_stamp(str(target))
  assert began is None
  publish("first")                                  # another run published meanwhile
  stamp = atomic.output_stamp(str(target))
  publish_id = json.loads((target / atomic.INVENTORY_FILE).read_text())["publish"]
  assert stamp == (os.stat(target).st_dev, os.stat(target).st_ino, publish_id)
  # Another folder, or one at the same inode (ext4 hands a deleted folder's inode to the next
  # one made: a run stamped, the folder was deleted, another run published) of another publish.
  for before in (began, (stamp[0], stamp[1] + 1, publish_id), stamp[:2] + ("0" * 16,)):
    with pytest.raises(atomic.ReplacedMeanwhileError, match=re.escape(
        f"{target} was written by another run after this one began (two runs into one output "
        "folder at once): this run does not replace that run's outputs; give each run its own "
        f"folder; this run's output is kept in {target}.partial-")):
      publish("second", replaces=before)
    assert (target / "v").read_text() == "first" and _kept_aside(tmp_path) == "second"
  # Another run publishing between that check and the move aside (a reviewer: its folder was
  # moved aside and deleted, both runs exiting 0): put back, and refused.
  check, calls = atomic.check_replaceable, []

  def another_publishes_meanwhile(*args):
    calls.append(args)
    if len(calls) == 2:                              # the check while publishing
      os.rename(target, tmp_path / "gone")
      (tmp_path / "gone").rename(target)             # (the same folder: stamp unchanged)
      publish("other")
    return check(*args)
  atomic.check_replaceable = another_publishes_meanwhile
  try:
    with pytest.raises(atomic.ReplacedMeanwhileError, match="written by another run after"):
      publish("second", replaces=stamp)
  finally:
    atomic.check_replaceable = check
  assert (target / "v").read_text() == "other" and _kept_aside(tmp_path) == "second"
  with pytest.raises(atomic.ReplacedMeanwhileError, match="^raised inside$"):  # not staged
    with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:  # whole: not kept
      (tmp_path / tmp / "v").write_text("half")
      raise atomic.ReplacedMeanwhileError("raised inside")
  assert sorted(os.listdir(tmp_path)) == ["out"]
  stamp = atomic.output_stamp(str(target))
  publish("second", replaces=stamp)                 # the folder it began with: replaced
  assert (target / "v").read_text() == "second" and atomic.output_stamp(str(target)) != stamp
  publish("third")                                  # ANY_OUTPUT (the default): as before
  assert (target / "v").read_text() == "third"
  # A writer killed after moving the folder aside (a dead PID): the next run's stamp is of the
  # folder put back, not "none" (its publish then refused a folder it had itself restored).
  tag = atomic._namespace_tag()                    # pylint: disable=protected-access
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True).stdout.strip()
  old = tmp_path / f".out.old-{dead}-{tag}-abcd"
  old.mkdir()
  os.rename(target, old / "out")
  stamp = atomic.output_stamp(str(target))
  assert stamp is not None and not old.exists() and (target / "v").read_text() == "third"
  publish("fourth", replaces=stamp)
  assert (target / "v").read_text() == "fourth"


def test_special_files_are_never_opened_as_outputs(tmp_path):
  """A FIFO (or /dev/zero) given as an output is refused by what it is, without opening it
  (reading one blocked forever or filled memory)."""
  fifo = tmp_path / "out.json"
  os.mkfifo(fifo)
  with pytest.raises(atomic.ForeignOutputError, match="a special file"):
    atomic.check_replaceable_json(str(fifo), "vitprune-x")
  with pytest.raises(atomic.ForeignOutputError, match="a special file"):
    atomic.check_replaceable_json("/dev/zero", "vitprune-x")


def test_a_new_dir_check_restores_an_output_a_killed_writer_moved_aside(tmp_path):
  """Killed between moving the old output aside and publishing: the next run's up-front check
  (`common.check_new_dir`) puts it back before any work, so it is refused as existing (or
  replaced with --overwrite) instead of missing until a later export."""
  from experiments import common   # pylint: disable=g-import-not-at-top
  out = tmp_path / "art"
  aside = tmp_path / ".art.old-999999999-abc"          # no such process
  (aside / "art").mkdir(parents=True)
  (aside / "art" / "manifest.json").write_text("{}")
  with pytest.raises(FileExistsError, match="already exists"):
    common.check_new_dir(str(out), "out")
  assert (out / "manifest.json").read_text() == "{}" and not aside.exists()


def test_an_empty_folder_made_where_an_output_was_moved_aside_does_not_lose_it(tmp_path):
  """Killed between moving the old output aside and publishing, then an empty folder made in
  its place (`mkdir -p`): the next write deleted the moved-aside output as if replaced, while
  an empty folder is free (any output takes it): the previous one is put back onto it."""
  out = tmp_path / "art"
  aside = tmp_path / ".art.old-999999999-abc"          # no such process
  (aside / "art").mkdir(parents=True)
  (aside / "art" / "manifest.json").write_text("{}")
  out.mkdir()
  atomic.cleanup_stale(str(out))
  assert (out / "manifest.json").read_text() == "{}" and not aside.exists()
  (aside / "art").mkdir(parents=True)                  # a folder of files there: not replaced
  (aside / "art" / "manifest.json").write_text("old")
  atomic.cleanup_stale(str(out))
  assert (out / "manifest.json").read_text() == "{}"
  assert (aside / "art" / "manifest.json").read_text() == "old"    # (nor deleted: below)
  shutil.rmtree(aside)
  shutil.rmtree(out)
  out.mkdir()                                          # a run stamping what it replaces
  (aside / "art").mkdir(parents=True)
  (aside / "art" / "manifest.json").write_text("{}")
  stamp = atomic.output_stamp(str(out))
  assert (out / "manifest.json").read_text() == "{}" and not aside.exists()
  is_ours = lambda p: os.path.isfile(os.path.join(p, "manifest.json"))
  with atomic.staged_dir(str(out), overwrite=True, is_ours=is_ours, replaces=stamp) as tmp:
    (tmp_path / tmp / "manifest.json").write_text("new")
  assert (out / "manifest.json").read_text() == "new" and os.listdir(tmp_path) == ["art"]


def test_a_moved_aside_output_is_deleted_only_for_an_output_vitprune_published(tmp_path):
  """Killed between moving the old output aside and publishing, then something else put where
  it was: the next write deleted the previous output whatever took its place. Only a newer
  output vitprune published (its inventory) replaces it; a user's file, a folder of theirs or a
  link keep it aside, and it is put back once the path is free again."""
  out, aside = tmp_path / "art", tmp_path / ".art.old-999999999-abc"     # no such process

  def moved_aside():
    (aside / "art").mkdir(parents=True)
    (aside / "art" / "manifest.json").write_text("previous")
  elsewhere = tmp_path / "elsewhere"
  with atomic.staged_dir(str(elsewhere)) as tmp:         # an output vitprune published
    (tmp_path / tmp / "manifest.json").write_text("published")
  for taken in ("file", "folder", "link"):
    moved_aside()
    if taken == "file":
      out.write_text("a user's notes")
    elif taken == "folder":
      out.mkdir()
      (out / "notes.txt").write_text("a user's notes")
    else:
      out.symlink_to(elsewhere)                          # (a link: not published there)
    atomic.cleanup_stale(str(out))
    assert (aside / "art" / "manifest.json").read_text() == "previous", taken
    assert sorted(os.listdir(tmp_path)) == [".art.old-999999999-abc", "art", "elsewhere"]
    with pytest.raises(atomic.ForeignOutputError, match=re.escape(     # (a review: said nothing
        f" (the previous output there is kept in {aside / 'art'}, moved aside by a writer "
        "killed while replacing it: put back once the path is free)")):   # of it)
      atomic.check_output_dir_target(str(out), True, atomic.json_marker("manifest.json", "x"))
    shutil.rmtree(out) if taken == "folder" else out.unlink()
    atomic.cleanup_stale(str(out))                       # the path free again: put back
    assert (out / "manifest.json").read_text() == "previous" and not aside.exists(), taken
    shutil.rmtree(out)
  moved_aside()
  os.rename(elsewhere, out)
  atomic.cleanup_stale(str(out))
  assert (out / "manifest.json").read_text() == "published" and not aside.exists()


def test_cleaning_up_where_no_folder_is_does_nothing(tmp_path):
  """The checks before the work clean up a path whose folder may be missing or a file (a flag's
  typo): there was nothing to leave, and the check that follows names the problem."""
  (tmp_path / "f").write_text("a file")
  for path in (tmp_path / "f" / "out", tmp_path / "missing" / "out"):
    atomic.cleanup_stale(str(path))
  assert os.listdir(tmp_path) == ["f"] and (tmp_path / "f").read_text() == "a file"


def test_a_moved_aside_output_that_cannot_be_put_back_is_kept_aside(tmp_path, monkeypatch):
  """The restore failing (a file made in the empty folder meanwhile: ENOTEMPTY) deleted the
  previous output all the same (a review)."""
  out = tmp_path / "art"
  aside = tmp_path / ".art.old-999999999-abc"          # no such process
  (aside / "art").mkdir(parents=True)
  (aside / "art" / "manifest.json").write_text("{}")
  out.mkdir()
  rename = os.rename

  def refused(src, dst):
    if os.path.abspath(dst) == str(out):
      raise OSError(errno.ENOTEMPTY, "Directory not empty", dst)
    return rename(src, dst)
  monkeypatch.setattr(atomic.os, "rename", refused)
  atomic.cleanup_stale(str(out))
  assert (aside / "art" / "manifest.json").read_text() == "{}" and not os.listdir(out)
  monkeypatch.setattr(atomic.os, "rename", rename)
  is_ours = lambda p: os.path.isfile(os.path.join(p, "manifest.json"))
  with pytest.raises(FileExistsError, match="already exists"):    # (the next writer's check
    atomic.check_output_dir_target(str(out), False, is_ours)      # puts it back first)
  assert (out / "manifest.json").read_text() == "{}" and not aside.exists()


def test_a_writer_another_user_runs_is_alive_and_pid_0_is_no_writer(tmp_path, monkeypatch):
  """A temporary is a dead writer's by its PID: one this process may not signal (another
  user's live writer, PermissionError) is alive and kept; PID 0 names no writer: removed."""
  tag = atomic._namespace_tag()
  live = tmp_path / f".r.json.tmp-4242-{tag}-abc"
  none = tmp_path / f".r.json.tmp-0-{tag}-abc"
  live.write_text("another user's half-written file")
  none.write_text("x")

  def kill(pid, sig):
    assert sig == 0
    if pid == 4242:
      raise PermissionError(1, "Operation not permitted")
    raise ProcessLookupError(3, "No such process")

  monkeypatch.setattr(atomic.os, "kill", kill)
  atomic.cleanup_stale(str(tmp_path / "r.json"))
  assert live.exists() and not none.exists()


def test_a_reader_of_an_output_a_killed_writer_moved_aside_says_where_it_is(tmp_path):
  """Killed between moving the old output aside and publishing, then read before any write: the
  readers said only 'not a deployment artifact directory' (or kit, or weights) while the
  previous one lay beside it, whole (a probe)."""
  from vitprune.edge import kit  # pylint: disable=g-import-not-at-top
  from vitprune.records import manifest  # pylint: disable=g-import-not-at-top
  from vitprune import checkpoint  # pylint: disable=g-import-not-at-top
  for name in ("art", "kit", "w"):
    (tmp_path / f".{name}.old-999999999-abc" / name).mkdir(parents=True)   # no such process
    (tmp_path / f".{name}.old-{os.getpid()}-def" / name).mkdir(parents=True)   # a live writer
  note = (" (a writer killed while replacing it left the previous one in {p}/.{n}.old-999999999-"
          "abc/{n}: the next write of {n} puts it back, or move it back yourself)")
  assert atomic.moved_aside_note(str(tmp_path / "art")) == note.format(p=tmp_path, n="art")
  for read, name, what in ((manifest.read_manifest, "art", "is not a deployment artifact "
                            "directory (it does not exist or is not a directory)"),
                           (kit.read_kit, "kit", "is not a kit directory"),
                           (checkpoint.load_weights, "w", "does not exist")):
    with pytest.raises((ValueError, OSError), match=re.escape(
        f"{tmp_path / name} {what}" + note.format(p=tmp_path, n=name))):
      read(str(tmp_path / name))
  from experiments import common  # pylint: disable=g-import-not-at-top
  with pytest.raises(FileNotFoundError, match=re.escape(   # (the CLIs' up-front --weights check)
      f"--weights={tmp_path / 'w'} does not exist" + note.format(p=tmp_path, n="w"))):
    common.model_config(None, str(tmp_path / "w"))
  assert atomic.moved_aside_note(str(tmp_path / "other")) == ""
  (tmp_path / "art").mkdir()                  # there: nothing to say
  assert atomic.moved_aside_note(str(tmp_path / "art")) == ""


def test_replace_json_refuses_a_file_made_after_the_up_front_check(tmp_path):
  """run_deployed / vitprune.edge --output: the path was checked up front only, so a file a
  user created there during a long run was replaced at the end (exit 0)."""
  path = str(tmp_path / "result.json")
  atomic.check_replaceable_json(path, "vitprune-x")               # absent: fine up front
  with open(path, "w") as f:                                      # ... then someone writes it
    f.write('{"mine": "notes"}')
  with pytest.raises(atomic.ForeignOutputError, match="refusing to replace .*result.json"):
    atomic.replace_json(path, {"format": "vitprune-x", "v": 1}, "vitprune-x")
  assert open(path).read() == '{"mine": "notes"}'
  os.unlink(path)
  atomic.replace_json(path, {"format": "vitprune-x", "v": 1}, "vitprune-x")
  atomic.replace_json(path, {"format": "vitprune-x", "v": 2}, "vitprune-x")   # ours: replaced
  assert json.load(open(path))["v"] == 2 and sorted(os.listdir(tmp_path)) == ["result.json"]


def test_nothing_is_published_after_a_swallowed_interrupt(tmp_path, monkeypatch):
  """A Ctrl-C raised inside a callback is dropped by Python; the recorded interrupt still stops
  every publish: the old file and directory stay, no temporary is left."""
  from vitprune import console  # pylint: disable=g-import-not-at-top
  f = tmp_path / "r.json"
  atomic.write_json(str(f), {"v": 1})
  d = tmp_path / "out"
  monkeypatch.setattr(console, "_interrupted", True)
  with pytest.raises(KeyboardInterrupt):
    atomic.write_json(str(f), {"v": 2})
  with pytest.raises(KeyboardInterrupt):
    with atomic.staged_dir(str(d)) as tmp:
      open(os.path.join(tmp, "x"), "w").close()
  with pytest.raises(KeyboardInterrupt):
    with atomic.staged_files(str(tmp_path), "pair", ["a"]) as tmp:
      open(os.path.join(tmp, "a"), "w").close()
  assert json.loads(f.read_text()) == {"v": 1}
  assert sorted(os.listdir(tmp_path)) == ["r.json"]


@pytest.fixture
def cli_console(monkeypatch):
  """`vitprune.console` as in a command-line run, no interrupt yet."""
  from vitprune import console  # pylint: disable=g-import-not-at-top
  for name, value in (("_interrupted", False), ("_terminated", False), ("_held", 0),
                      ("_written", []), ("_is_cli", True)):
    monkeypatch.setattr(console, name, value)
  return console


@pytest.mark.parametrize("phase", ["moved_aside", "published"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_while_a_directory_is_published_leaves_the_new_one_whole(
    tmp_path, monkeypatch, cli_console, phase, sig):
  """Ctrl-C / SIGTERM between moving the old directory aside and renaming the new one in:
  the cleanup deleted the old copy AND the staged one (the whole output lost). Now the publish
  finishes, then the interrupt is raised, and the error line says the output was written."""
  import signal  # pylint: disable=g-import-not-at-top
  target = tmp_path / "art"
  ours = lambda p: os.path.isfile(os.path.join(p, "m.json"))
  with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:
    (tmp_path / tmp / "m.json").write_text("old")
  assert cli_console._written == [str(target)]
  cli_console._written.clear()
  signum = getattr(signal, sig)
  monkeypatch.setattr(atomic, "fault_hook", lambda name: name == phase and
                      cli_console._record_interrupt(signum, None))
  with pytest.raises(KeyboardInterrupt):
    with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:
      (tmp_path / tmp / "m.json").write_text("new")
  assert (target / "m.json").read_text() == "new"
  assert sorted(os.listdir(tmp_path)) == ["art"]              # no staged or old copy left
  text, code = cli_console.interrupt_exit()
  assert text.endswith(f"(after writing {target})") and code == 128 + signum


def test_a_file_added_while_the_old_output_is_moved_aside_is_never_deleted(tmp_path,
                                                                           monkeypatch):
  """A user's file added to our output folder after the up-front check (here: inside the moved
  copy, the last moment it can land) is seen before the old copy is deleted: the folder goes
  back with the file, and the publish is refused naming it."""
  target = tmp_path / "art"
  ours = lambda p: os.path.isfile(os.path.join(p, "m.json"))
  with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:
    (tmp_path / tmp / "m.json").write_text("old")

  def add_notes(name):
    if name == "moved_aside":
      (aside,) = glob.glob(str(tmp_path / ".*" / "art"))
      with open(os.path.join(aside, "NOTES.txt"), "w") as f:
        f.write("mine")
  monkeypatch.setattr(atomic, "fault_hook", add_notes)
  with pytest.raises(atomic.ForeignOutputError, match=r"refusing to replace .*art: it holds "
                                                      r"NOTES\.txt, which vitprune did not.*; "
                                                      r"this run's output is kept in .*art\."
                                                      r"partial-[0-9a-f]{8}$"):
    with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:
      (tmp_path / tmp / "m.json").write_text("new")
  assert (target / "NOTES.txt").read_text() == "mine" and (target / "m.json").read_text() == "old"
  (kept,) = glob.glob(str(tmp_path / "art.partial-*"))       # the new output, whole, beside it
  assert open(os.path.join(kept, "m.json")).read() == "new"
  shutil.rmtree(kept)
  assert sorted(os.listdir(tmp_path)) == ["art"]          # no staged or old copy left


def test_a_signal_while_a_file_set_rolls_forward_finishes_it(tmp_path, monkeypatch,
                                                             cli_console):
  """The profile's and the solution's file sets: a signal between their renames left new and
  old files side by side and the commit directory behind."""
  import signal  # pylint: disable=g-import-not-at-top
  for v in ("old", "new"):
    if v == "new":
      cli_console._written.clear()
      monkeypatch.setattr(atomic, "fault_hook", lambda name: name == "renamed:a.csv" and
                          cli_console._record_interrupt(signal.SIGTERM, None))
    with contextlib.ExitStack() as stack:
      if v == "new":
        stack.enter_context(pytest.raises(KeyboardInterrupt))
      with atomic.staged_files(str(tmp_path), "p", ["a.csv", "a.json"]) as tmp:
        for n in ("a.csv", "a.json"):
          open(os.path.join(tmp, n), "w").write(v)
  assert [open(tmp_path / n).read() for n in ("a.csv", "a.json")] == ["new", "new"]
  assert sorted(os.listdir(tmp_path)) == ["a.csv", "a.json"]
  assert cli_console.interrupt_exit() == (f"terminated (after writing {tmp_path / 'a.json'})",
                                          143)
  # A file rewritten after every phase (predictor_accuracy) was counted once per write: "after
  # writing new.json and 1 more" with no other file.
  cli_console._written[:] = [str(tmp_path / "a.json"), str(tmp_path / "a.csv"),
                              str(tmp_path / "a.json")]
  assert cli_console.interrupt_exit()[0] == (f"terminated (after writing {tmp_path / 'a.json'} "
                                             "and 1 more)")
  cli_console._written[:] = [str(tmp_path / "a.json")] * 3
  assert cli_console.interrupt_exit()[0] == f"terminated (after writing {tmp_path / 'a.json'})"
  # A written path holding a newline or an escape split the error line (it is printed as is).
  cli_console._written[:] = [str(tmp_path / "a\nb\x1b")]
  open(tmp_path / "a\nb\x1b", "w").close()
  cli_console._record_interrupt(signal.SIGTERM, None)
  assert cli_console.interrupt_exit()[0] == f"terminated (after writing {tmp_path}/a\\nb\\x1b)"


def test_a_second_signal_during_the_cleanup_of_an_interrupted_write_is_held(
    tmp_path, monkeypatch, cli_console):
  """Ctrl-C, then SIGTERM while the staged folder was being removed (deploy, 4 of 4 probe runs):
  the second signal cut the removal short and left the hidden folder. A signal while waiting
  for a writers' lock left the lock file it had made."""
  import shutil  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  rmtree = shutil.rmtree

  def second_signal_then_rmtree(*args, **kwargs):
    cli_console._record_interrupt(signal.SIGTERM, None)
    rmtree(*args, **kwargs)
  monkeypatch.setattr(shutil, "rmtree", second_signal_then_rmtree)
  with pytest.raises(KeyboardInterrupt):
    with atomic.staged_dir(str(tmp_path / "art"), overwrite=False) as tmp:
      open(os.path.join(tmp, "params"), "w").close()
      cli_console._record_interrupt(signal.SIGINT, None)    # (the first: raised here)
  assert os.listdir(tmp_path) == []
  assert cli_console.interrupt_exit() == ("terminated", 143)      # (the later one is said)
  monkeypatch.setattr(cli_console, "_interrupted", False)
  monkeypatch.setattr(cli_console, "_terminated", False)

  def interrupted_flock(fd, op):
    cli_console._record_interrupt(signal.SIGINT, None)
  monkeypatch.setattr(atomic.fcntl, "flock", interrupted_flock)
  with pytest.raises(KeyboardInterrupt):
    with atomic.locked(str(tmp_path / "e.json")):
      pass
  assert os.listdir(tmp_path) == []
  monkeypatch.undo()
  # The first Ctrl-C arriving while a failed write cleans up is raised once it is clean (not
  # left recorded while a caller that catches the write's OSError goes on working).
  import errno  # pylint: disable=g-import-not-at-top
  for name, value in (("_interrupted", False), ("_terminated", False), ("_held", 0)):
    monkeypatch.setattr(cli_console, name, value)
  unlink = os.unlink

  def full(*args):
    raise OSError(errno.ENOSPC, "No space left on device")

  def interrupted_unlink(path, *args, **kwargs):
    cli_console._record_interrupt(signal.SIGINT, None)
    unlink(path, *args, **kwargs)
  monkeypatch.setattr(atomic.os, "replace", full)
  monkeypatch.setattr(atomic.os, "unlink", interrupted_unlink)
  with pytest.raises(KeyboardInterrupt) as e:
    atomic.write_bytes(str(tmp_path / "r.json"), b"{}")
  monkeypatch.undo()
  assert os.listdir(tmp_path) == []
  assert isinstance(cli_console.failure_of(e.value), OSError)      # (the error goes with it)
  assert "No space left on device" in cli_console.interrupt_exit(
      cli_console.failure_of(e.value))[0]


def test_a_failed_publish_with_a_signal_held_keeps_its_error(tmp_path, monkeypatch,
                                                             cli_console):
  """A SIGTERM held while the publish ran, then the publish failed (another writer published
  meanwhile): the cleanup raised the interrupt in the error's place, and the CLI said
  'error: terminated' alone; the error is now raised with the interrupt and both are said."""
  import signal  # pylint: disable=g-import-not-at-top
  target = str(tmp_path / "w")

  def publish(tmp, path, is_ours):
    cli_console._record_interrupt(signal.SIGTERM, None)
    raise FileExistsError(f"{path} already exists (another writer published it meanwhile)")
  monkeypatch.setattr(atomic, "_publish_exclusive", publish)
  with pytest.raises(KeyboardInterrupt) as e:
    with atomic.staged_dir(target, overwrite=False) as tmp:
      open(os.path.join(tmp, "x"), "w").close()
  (kept,) = os.listdir(tmp_path)             # the whole output, kept beside the one taken
  assert kept.startswith("w.partial-") and sorted(os.listdir(tmp_path / kept)) == sorted(
      ["x", atomic.INVENTORY_FILE])
  assert cli_console.interrupt_exit(cli_console.failure_of(e.value)) == (
      f"{target} already exists (another writer published it meanwhile); this run's output is "
      f"kept in {tmp_path / kept} (terminated)", 143)
  # A plain interrupt carries no failure.
  assert cli_console.failure_of(KeyboardInterrupt()) is None


def test_the_cli_says_a_failed_publish_and_the_signal_held_during_it(tmp_path):
  """`common.run`: exit 143 with the failure's line and '(terminated)' (was 'error:
  terminated' alone)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  target = str(tmp_path / "w")
  code = (
      "import os, signal\n"
      "from experiments import common\n"
      "from vitprune import atomic, console\n"
      "def publish(tmp, path, is_ours):\n"
      "  console._record_interrupt(signal.SIGTERM, None)\n"
      "  raise FileExistsError(f'{path} already exists (another writer published it)')\n"
      "atomic._publish_exclusive = publish\n"
      "def main(fv):\n"
      f"  with atomic.staged_dir({target!r}, overwrite=False) as tmp:\n"
      "    open(os.path.join(tmp, 'x'), 'w').close()\n"
      "common.run(main, lambda fv: None)\n")
  r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                     timeout=120, env=dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu"))
  (kept,) = os.listdir(tmp_path)
  assert (r.returncode, r.stderr) == (
      143, f"error: {target} already exists (another writer published it); this run's output "
      f"is kept in {tmp_path / kept} (terminated)\n")


def test_a_full_disk_inside_a_staged_folder_names_the_output_not_the_temporary(tmp_path):
  """The main job on a full disk said '... while writing /x/.pipe.tmp-27685-aiprd341/profile/
  p.json', a hidden folder already removed; the output is named where the file was going."""
  import errno  # pylint: disable=g-import-not-at-top
  target = str(tmp_path / "pipe")
  for make in (lambda f: OSError(errno.ENOSPC, f"No space left on device while writing {f}"),
               lambda f: OSError(errno.ENOSPC, "No space left on device", f)):
    with pytest.raises(OSError) as e:
      with atomic.staged_dir(target, overwrite=False) as tmp:
        raise make(os.path.join(tmp, "profile", "p.json"))
    assert os.path.join(target, "profile", "p.json") in str(e.value)
    assert ".tmp-" not in str(e.value) and os.listdir(tmp_path) == []
    with pytest.raises(OSError) as e:                  # (a file set: the profile's, a solution's)
      with atomic.staged_files(str(tmp_path), "p", ["p.csv", "p.json"]) as tmp:
        raise make(os.path.join(tmp, "p.csv"))
    assert str(tmp_path / "p.csv") in str(e.value) and ".tmp-" not in str(e.value)
    assert os.listdir(tmp_path) == []


def test_replace_json_without_overwrite_refuses_a_file_made_meanwhile(tmp_path, monkeypatch):
  """Two estimates with the same --out_name and no --overwrite: both passed the up-front check
  and the second replaced the first. The check is made again under the writers' lock."""
  path = tmp_path / "e.json"
  atomic.replace_json(str(path), {"format": "f", "run": 1}, "f", overwrite=False)
  with pytest.raises(FileExistsError, match=r"e.json already exists \(pass overwrite"):
    atomic.replace_json(str(path), {"format": "f", "run": 2}, "f", overwrite=False)
  assert json.loads(path.read_text())["run"] == 1
  atomic.replace_json(str(path), {"format": "f", "run": 3}, "f")
  assert json.loads(path.read_text())["run"] == 3


def test_replace_json_notes_what_it_wrote_only_in_a_cli_process(tmp_path, cli_console,
                                                                 monkeypatch):
  atomic.replace_json(str(tmp_path / "r.json"), {"format": "f"}, "f")
  assert cli_console._written == [str(tmp_path / "r.json")]
  monkeypatch.setattr(cli_console, "_is_cli", False)        # a library user's process
  atomic.replace_json(str(tmp_path / "s.json"), {"format": "f"}, "f")
  assert cli_console._written == [str(tmp_path / "r.json")]


def test_a_mount_point_is_never_an_output_directory(tmp_path):
  """A mount point passed the up-front checks and the publishing rename failed with EBUSY after
  all the work."""
  assert atomic.is_free(str(tmp_path / "absent")) and atomic.is_free(str(tmp_path))
  (tmp_path / "f").write_text("x")
  assert not atomic.is_free(str(tmp_path)) and not atomic.is_free(str(tmp_path / "f"))
  with pytest.raises(OSError, match="^/ is a mount point"):
    atomic.check_replaceable("/", atomic.is_vitprune_output)
  with pytest.raises(OSError, match="^/ is a mount point"):
    with atomic.staged_dir("/", overwrite=False):
      pass
  atomic.check_not_mount_point(str(tmp_path))


def test_a_directory_where_a_file_set_goes_is_refused_before_committing(tmp_path):
  """The roll-forward of a committed set failed on a directory (EISDIR) after the PNG was
  replaced: old and new files mixed, and a commit directory left behind."""
  (tmp_path / "a.png").write_text("old")
  (tmp_path / "a.md").mkdir()
  with pytest.raises(IsADirectoryError, match=r"a\.md: it is a directory"):
    with atomic.staged_files(str(tmp_path), "a.json", ["a.png", "a.md", "a.json"]) as tmp:
      for n in ("a.png", "a.md", "a.json"):
        (tmp_path / os.path.basename(tmp) / n).write_text("new")
  assert (tmp_path / "a.png").read_text() == "old"
  assert sorted(os.listdir(tmp_path)) == ["a.md", "a.png"]
  with pytest.raises(atomic.ForeignOutputError, match=r"a\.md: it is a folder"):
    atomic.check_replaceable_json(str(tmp_path / "a.json"), "f", [str(tmp_path / "a.md")])
  # A file of the user's at a plot's name (a probe: replaced by the plot unsaid); a PNG passes.
  (tmp_path / "a.json").write_text('{"format": "f"}')
  with pytest.raises(atomic.ForeignOutputError, match=r"refusing to replace .*a\.png: it is not "
                                                      r"a PNG image, so vitprune did not write it"):
    atomic.check_replaceable_json(str(tmp_path / "a.json"), "f", [str(tmp_path / "a.png")])
  (tmp_path / "a.png").write_bytes(atomic.PNG_SIGNATURE + b"rest")
  atomic.check_replaceable_json(str(tmp_path / "a.json"), "f", [str(tmp_path / "a.png")])
  # A companion present without its JSON is no output of ours (mutation audit: unpinned).
  (tmp_path / "b.csv").write_text("my table")
  with pytest.raises(atomic.ForeignOutputError, match=r"^refusing to replace .*b\.csv: no f "
                     r"file b\.json is next to it; move it away or choose another output path$"):
    atomic.check_replaceable_json(str(tmp_path / "b.json"), "f", [str(tmp_path / "b.csv")])
  assert not atomic.foreign_plot(str(tmp_path / "a.md")) and not atomic.foreign_plot(
      str(tmp_path / "none.png"))


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
  """'[Errno 28] No space left on device' named no file: which output of the run failed?"""
  import errno  # pylint: disable=g-import-not-at-top

  def full(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OSError, match=r"^\[Errno 28\] No space left on device while writing "
                                    r".*/r\.json$"):
    atomic.write_json(str(tmp_path / "r.json"), {"v": 1})
  monkeypatch.undo()
  with pytest.raises(OSError, match=r"No space left on device while writing .*/out$"):
    with atomic.staged_dir(str(tmp_path / "out")):
      full()
  with pytest.raises(OSError, match=r"^boom$"):            # other errors pass unchanged
    with atomic.staged_dir(str(tmp_path / "out")):
      raise OSError("boom")
  assert os.listdir(tmp_path) == []


def test_a_failed_write_takes_back_the_folders_it_made(tmp_path, monkeypatch):
  """A full disk left the new output folders a/b/ (and their parents) of every CLI behind: a
  failed run changes no file. Folders that existed before, or that hold something, stay."""
  import errno  # pylint: disable=g-import-not-at-top

  def full(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")

  (tmp_path / "kept").mkdir()
  (tmp_path / "busy").mkdir()
  monkeypatch.setattr(os, "fsync", full)
  for write in (lambda: atomic.write_json(str(tmp_path / "a" / "b" / "r.json"), {}),
                lambda: atomic.replace_json(str(tmp_path / "a" / "b" / "r.json"), {"format": "f"},
                                            "f"),
                lambda: atomic.write_json(str(tmp_path / "kept" / "c" / "r.json"), {})):
    with pytest.raises(OSError, match="No space left on device while writing"):
      write()
  monkeypatch.undo()
  for stage in (lambda: atomic.staged_dir(str(tmp_path / "a" / "b" / "out")),
                lambda: atomic.staged_files(str(tmp_path / "a" / "b"), "k", ["x"])):
    with pytest.raises(OSError, match="No space left on device while writing"):
      with stage():
        full()
  assert sorted(os.listdir(tmp_path)) == ["busy", "kept"] and not os.listdir(tmp_path / "kept")
  (tmp_path / "busy" / "mine.txt").write_text("x")
  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OSError):
    atomic.write_json(str(tmp_path / "busy" / "d" / "r.json"), {})
  assert os.listdir(tmp_path / "busy") == ["mine.txt"]
  # Any other failure keeps the folders: another writer may be entering them (on a full disk it
  # fails too), and only a lack of room is the write's own doing.
  def denied(*a, **k):
    raise PermissionError(errno.EACCES, "Permission denied")
  monkeypatch.setattr(os, "fsync", denied)
  with pytest.raises(PermissionError):
    atomic.write_json(str(tmp_path / "e" / "f" / "r.json"), {})
  assert os.path.isdir(tmp_path / "e" / "f") and not os.listdir(tmp_path / "e" / "f")


def test_a_writer_waiting_on_a_failed_one_makes_the_folders_again(tmp_path):
  """The first writer of a new folder fails and takes the folder back while a second one waits
  on its lock: the second one makes it again and writes (its lock file's folder was gone)."""
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  target = tmp_path / "a" / "b" / "r.json"
  done = []

  def second():
    try:
      done.append(atomic.replace_json(str(target), {"format": "f"}, "f"))
    except Exception as e:  # pylint: disable=broad-except
      done.append(e)

  import errno  # pylint: disable=g-import-not-at-top
  waiter = threading.Thread(target=second)
  with pytest.raises(OSError, match="No space left on device"):
    with atomic.locked(str(target)):
      waiter.start()
      time.sleep(0.3)                    # the second one now waits on the lock
      raise OSError(errno.ENOSPC, "No space left on device")
  waiter.join(20)
  assert done == [str(target)] and json.loads(target.read_text()) == {"format": "f"}
  # A lock file that is a dangling link is an error, not a retry forever (nothing is missing)
  os.symlink(tmp_path / "gone" / "lock", tmp_path / ".x.json.lock")
  with pytest.raises(FileNotFoundError):
    with atomic.locked(str(tmp_path / "x.json")):
      pass


def test_a_writer_whose_new_folder_a_failed_one_took_back_makes_it_again(tmp_path,
                                                                           monkeypatch):
  """Two writers into one new folder: the one that failed for lack of room took the folder back
  while the other was between making it and creating its temporary (FileNotFoundError)."""
  import shutil  # pylint: disable=g-import-not-at-top
  cleanup = atomic.cleanup_stale

  def other_writer_took_it_back(path):
    cleanup(path)
    shutil.rmtree(tmp_path / "new")

  monkeypatch.setattr(atomic, "cleanup_stale", other_writer_took_it_back)
  atomic.write_json(str(tmp_path / "new" / "a.json"), {"a": 1})
  with atomic.staged_dir(str(tmp_path / "new" / "run")) as d:
    open(os.path.join(d, "x"), "w").close()
  assert sorted(os.listdir(tmp_path / "new")) == ["run"]     # (a.json went with the folder)
  assert sorted(os.listdir(tmp_path / "new" / "run")) == [".vitprune-files.json", "x"]
  # A writer that found the folder made by another (nothing of its own to take back) makes it
  # again, and takes it back when it then fails for lack of room too (it was left behind).
  import errno  # pylint: disable=g-import-not-at-top
  (tmp_path / "shared").mkdir()

  def taken_back_then_full(path):
    cleanup(path)
    shutil.rmtree(tmp_path / "shared", ignore_errors=True)

  def full(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(atomic, "cleanup_stale", taken_back_then_full)
  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OSError, match="No space left on device while writing"):
    atomic.write_json(str(tmp_path / "shared" / "b.json"), {})
  assert not (tmp_path / "shared").exists()


def test_no_inode_for_the_hidden_temporary_names_the_output(tmp_path, monkeypatch):
  """Out of inodes, mkstemp's error named the hidden temporary, gone by the time it was read."""
  import errno  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top

  def no_inode(prefix, dir):         # pylint: disable=redefined-builtin
    raise OSError(errno.ENOSPC, "No space left on device", os.path.join(dir, prefix + "x1"))

  monkeypatch.setattr(tempfile, "mkstemp", no_inode)
  monkeypatch.setattr(tempfile, "mkdtemp", no_inode)
  with pytest.raises(OSError, match=r"^\[Errno 28\] No space left on device while writing "
                     r".*/e\.json$"):
    atomic.write_json(str(tmp_path / "e.json"), {})
  monkeypatch.chdir(tmp_path)           # a relative path, as flags give them
  with pytest.raises(OSError, match=r"^\[Errno 28\] No space left on device while writing "
                     r"sub/e\.json$"):
    atomic.write_json("sub/e.json", {})
  with pytest.raises(OSError, match=r"No space left on device while writing .*/out$"):
    with atomic.staged_dir(str(tmp_path / "out")):
      pass
  assert os.listdir(tmp_path) == []


def test_an_output_below_a_dangling_link_says_so(tmp_path):
  """It said the dangling link was 'a file'."""
  os.symlink(tmp_path / "missing", tmp_path / "dang")
  with pytest.raises(NotADirectoryError, match=r"dang is a dangling symbolic link, not a "
                     r"directory$"):
    atomic.check_creatable(str(tmp_path / "dang" / "x.json"), "out")


def test_a_link_to_our_output_is_refused_as_a_link(tmp_path):
  """A symbolic link to a genuine output was refused as 'a symbolic link that is not a
  vitprune-weights folder', though what it points to is one: the link is the reason."""
  real = tmp_path / "real"
  real.mkdir()
  (real / "config.json").write_text("{}")

  def is_ours(p):
    return os.path.isfile(os.path.join(p, "config.json"))
  is_ours.description = "a vitprune-weights folder (with config.json)"
  os.symlink(real, tmp_path / "link")
  with pytest.raises(atomic.ForeignOutputError, match=r"link: it is a symbolic link to a "
                     r"vitprune-weights folder \(with config.json\); pass the folder itself "
                     r"\(a link is never replaced\)"):
    atomic.check_replaceable(str(tmp_path / "link"), is_ours)
  atomic.write_json(str(tmp_path / "r.json"), {"format": "vitprune-x"})
  os.symlink(tmp_path / "r.json", tmp_path / "l.json")
  with pytest.raises(atomic.ForeignOutputError, match=r"l.json: it is a symbolic link to a "
                     r"vitprune-x file; pass the file itself \(a link is never replaced\)"):
    atomic.check_output_json(str(tmp_path / "l.json"), "vitprune-x")
  (tmp_path / "other.json").write_text("{}")
  os.symlink(tmp_path / "other.json", tmp_path / "l2.json")             # not ours: as before
  with pytest.raises(atomic.ForeignOutputError, match="that is not a vitprune-x file"):
    atomic.check_output_json(str(tmp_path / "l2.json"), "vitprune-x")


def test_outputs_inside_a_published_folder_are_refused_by_its_inventory(tmp_path):
  """A folder vitprune published whole lists its files; an output inside it (or through a link
  into it) is refused; a file of that name that is not our inventory refuses nothing."""
  pub = tmp_path / "art"
  with atomic.staged_dir(str(pub)) as tmp:
    os.makedirs(os.path.join(tmp, "iree"))
  assert atomic.published_folder_around(str(pub / "iree" / "x.json")) == str(pub)
  assert atomic.published_folder_around(str(pub), itself=True) == str(pub)
  assert atomic.published_folder_around(str(pub)) is None           # replacing it whole: fine
  os.symlink(pub / "iree", tmp_path / "link")
  with pytest.raises(ValueError, match=re.escape(f"--out={tmp_path}/link/new/r.json is inside "
                                                 f"{pub}, a folder vitprune wrote as a whole")):
    atomic.check_output_file(str(tmp_path / "link" / "new" / "r.json"), "out")
  home = tmp_path / "home"
  home.mkdir()
  (home / atomic.INVENTORY_FILE).write_text('{"mine": 1}')
  atomic.check_output_file(str(home / "r.json"), "out")
  assert atomic.published_folder_around(str(home / "sub" / "r.json")) is None
  # A weights folder written before inventories existed (it still loads) is one too, by its
  # marker: outputs were written into it, and --overwrite then refused to replace it.
  legacy = tmp_path / "legacy"
  legacy.mkdir()
  (legacy / "config.json").write_text('{"format": "vitprune-weights"}')
  with pytest.raises(ValueError, match=re.escape(
      f"--out={legacy}/imgs/r.json is inside {legacy}, a folder vitprune wrote as a whole (its "
      "config.json marks it, a vitprune-weights folder): write elsewhere")):
    atomic.check_output_file(str(legacy / "imgs" / "r.json"), "out")
  assert atomic.published_folder_around(str(legacy)) is None       # replacing it whole: fine
  (home / "config.json").write_text('{"format": "mine"}')           # another format: not ours
  assert atomic.published_folder_around(str(home / "sub" / "r.json")) is None


def test_a_folder_made_while_the_run_worked_is_refused_with_the_way_out(tmp_path):
  """A NOTES.txt folder made at the output during training: 'already exists (pass
  --overwrite)', and --overwrite was then refused too. The refusal now says what is there; a
  folder of ours is another run's, which --overwrite would replace (it was hinted at). Both
  keep this run's output beside."""
  path = str(tmp_path / "w")
  with pytest.raises(FileExistsError, match=re.escape(
      f"{path} was created while this run worked: refusing to replace {path}: it is a folder "
      "that is not")):
    with atomic.staged_dir(path, overwrite=False) as tmp:
      open(os.path.join(tmp, "a.txt"), "w").close()
      os.makedirs(path)
      open(os.path.join(path, "NOTES.txt"), "w").close()
  assert os.listdir(path) == ["NOTES.txt"]
  other = str(tmp_path / "v")
  with pytest.raises(FileExistsError, match=re.escape(
      f"{other} was created by another run while this one worked (overwrite would replace that "
      f"run's output: give each run its own); this run's output is kept in {other}.partial-")):
    with atomic.staged_dir(other, overwrite=False) as tmp:
      open(os.path.join(tmp, "a.txt"), "w").close()
      with atomic.staged_dir(other, overwrite=False) as tmp2:     # another run of ours
        open(os.path.join(tmp2, "b.txt"), "w").close()
        open(os.path.join(tmp2, "config.json"), "w").write('{"format": "vitprune-weights"}')


def test_numpy_scalars_are_written_as_the_numbers_they_hold(tmp_path):
  """meta={'epochs': np.int64(3)} in save_weights, np.float32 metrics, np.int64 profile
  counts: a raw 'Object of type int64 is not JSON serializable' naming no field."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vitprune import jsonio  # pylint: disable=g-import-not-at-top
  doc = {"a": np.int64(3), "b": [np.float32(0.5), np.bool_(True)], "c": np.uint8(7)}
  path = atomic.write_json(str(tmp_path / "x.json"), doc)
  assert json.load(open(path)) == {"a": 3, "b": [0.5, True], "c": 7}
  assert jsonio.canonical(doc) == jsonio.canonical({"a": 3, "b": [0.5, True], "c": 7})
  with pytest.raises(TypeError, match="Object of type complex128 is not JSON serializable"):
    jsonio.canonical({"z": np.complex128(1j)})
  with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
    atomic.write_json(str(tmp_path / "y.json"), {"o": object()})
  assert sorted(os.listdir(tmp_path)) == ["x.json"]


def test_a_folder_where_files_cannot_be_removed_is_named(tmp_path, monkeypatch):
  """Fault probe: in an append-only folder (chattr +a) the write check's probe could be created
  but not removed, and the error was a raw errno naming the probe, not the folder or why."""
  real_unlink = os.unlink

  def unlink(path, *a, **kw):
    if os.path.basename(path).startswith(atomic.WRITE_CHECK_PREFIX):
      raise PermissionError(1, "Operation not permitted", path)
    return real_unlink(path, *a, **kw)

  monkeypatch.setattr(atomic.os, "unlink", unlink)
  with pytest.raises(PermissionError, match=rf"^--out_dir: {tmp_path} lets files be created but "
                                            r"not removed \(Operation not permitted; append-only"
                                            r"\?\), and outputs are published by renaming: write "
                                            r"elsewhere \(the probe \.vitprune-write-check-"):
    atomic.check_writable_dir(str(tmp_path), "--out_dir")
  monkeypatch.setattr(atomic.os, "unlink", real_unlink)
  atomic.check_writable_dir(str(tmp_path), "--out_dir")


def test_a_name_with_a_suffix_is_cut_to_fit_beside_its_temporaries(tmp_path):
  """Review: the main job's `<out_dir>.partial-XXXXXXXX` keep is 17 bytes longer than the
  --out_dir that passed check_name_fits, so it failed exactly when a later stage had failed and
  the measurements were to be kept. `fitting_name` cuts the name before the suffix to fit."""
  limit = os.pathconf(tmp_path, "PC_NAME_MAX")
  longest = "é" + "r" * (limit - atomic._temp_overhead() - 2)      # fits, just (2-byte é)
  out = tmp_path / longest
  atomic.check_name_fits(str(out), "out_dir")
  kept = atomic.fitting_name(str(out), ".partial-0badf00d")
  name = os.path.basename(kept)
  assert name.endswith(".partial-0badf00d") and longest.startswith(name[:-17])
  assert len(os.fsencode(name)) + atomic._temp_overhead() <= limit
  atomic.check_name_fits(kept, "keep")
  with atomic.staged_dir(kept, overwrite=False) as tmp:
    open(os.path.join(tmp, "config.json"), "w").write("{}")
  assert os.path.isdir(kept)
  assert atomic.fitting_name(str(tmp_path / "run"), ".partial-1") == str(tmp_path / "run.partial-1")
  cut = atomic.fitting_name(str(tmp_path / ("é" * limit)), ".p")     # never half a character
  assert os.path.basename(cut).encode().decode() == os.path.basename(cut)


def test_a_kept_name_is_fresh_and_fits_with_its_longest_extension(tmp_path):
  """The one home of `<stem>.kept-XXXXXXXX` (a profile's, a benchmark table's, results'): a
  fresh token per call, no extension in it, and, cut before the mark where the stem is long,
  room left for the longest extension written under it and its temporaries."""
  stem = str(tmp_path / "deit_b1")
  first, second = atomic.kept_name(stem, ".json"), atomic.kept_name(stem, ".json")
  assert first != second
  assert re.fullmatch(re.escape(stem) + r"\.kept-[0-9a-f]{8}", first)
  assert re.fullmatch(re.escape(stem) + r"\.kept-[0-9a-f]{8}", atomic.kept_name(stem, ""))
  limit = os.pathconf(tmp_path, "PC_NAME_MAX")
  long_stem = "s" * (limit - 10)
  kept = atomic.kept_name(str(tmp_path / long_stem), ".json")
  name = os.path.basename(kept)
  assert re.fullmatch(r"s+\.kept-[0-9a-f]{8}", name) and long_stem.startswith(name[:-14])
  assert len(os.fsencode(name + ".json")) + atomic._temp_overhead() == limit
  atomic.check_name_fits(kept + ".json", "keep")
  # The sweep of killed keeps looks for the cut prefix (the stem plus the mark missed them).
  prefix = atomic.kept_prefix(str(tmp_path / long_stem), ".json")
  assert kept.startswith(prefix) and prefix.endswith(".kept-") and len(kept) == len(prefix) + 8
  assert atomic.kept_prefix(stem, ".json") == stem + ".kept-"


def test_a_file_set_that_cannot_be_rolled_forward_says_what_happened(tmp_path, monkeypatch):
  """Fault probe: with one output made immutable (chattr +i), the roll-forward of a committed
  set stopped half-way with a raw errno naming the hidden commit folder; the files were left
  mixed without a word. The error names the file and says the next write finishes the set."""
  for n in ("p.png", "p.json"):
    (tmp_path / n).write_text("old")
  real_replace = os.replace

  def replace(src, dst, *a, **kw):
    if os.path.basename(dst) == "p.json":
      raise PermissionError(1, "Operation not permitted", src, None, dst)
    return real_replace(src, dst, *a, **kw)

  monkeypatch.setattr(atomic.os, "replace", replace)
  message = (rf"could not replace {tmp_path}/p.json \(Operation not permitted\); the other "
             r"files of its set may be the new ones already: .* the next write of the set "
             r"finishes replacing them once p.json can be replaced$")
  with pytest.raises(OSError, match=message):
    with atomic.staged_files(str(tmp_path), "p", ["p.png", "p.json"]) as tmp:
      for n in ("p.png", "p.json"):
        open(os.path.join(tmp, n), "w").write("new")
  assert (tmp_path / "p.png").read_text() == "new" and (tmp_path / "p.json").read_text() == "old"
  with pytest.raises(OSError, match=message):        # the next write, while it still cannot
    with atomic.staged_files(str(tmp_path), "p", ["p.png", "p.json"]):
      pass
  monkeypatch.setattr(atomic.os, "replace", real_replace)
  assert [n for n in os.listdir(tmp_path) if n.startswith(".p.commit-")]
  # The next write finishes it first, in this very process too (review: its own leftover was
  # judged alive by its PID, and rolled forward over a newer set once the process ended).
  with atomic.staged_files(str(tmp_path), "p", ["p.png", "p.json"]) as tmp:
    assert (tmp_path / "p.json").read_text() == "new"
    for n in ("p.png", "p.json"):
      open(os.path.join(tmp, n), "w").write("newer")
  assert [(tmp_path / n).read_text() for n in ("p.png", "p.json")] == ["newer", "newer"]
  assert sorted(os.listdir(tmp_path)) == ["p.json", "p.png"]


def test_a_switch_given_as_a_string_is_refused_before_anything_is_replaced(tmp_path):
  """overwrite='no' is truthy: export_artifact, convert and write_estimate replaced outputs
  with it. Every entry point of atomic's output checks takes True or False (staged_dir: None)."""
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("x")
  for call in (lambda: atomic.check_output_dir_target(str(out), "no", lambda p: True),
               lambda: atomic.check_output_file(str(tmp_path / "f.json"), overwrite="no"),
               lambda: atomic.replace_json(str(tmp_path / "f.json"), {"format": "x"}, "x",
                                           overwrite=1),
               lambda: atomic.staged_dir(str(out), overwrite="no").__enter__()):
    with pytest.raises(TypeError, match=r"^overwrite must be True or False, got ('no'|1)$"):
      call()
  assert os.listdir(out) == ["keep.txt"] and not (tmp_path / "f.json").exists()
  config.check_switch("overwrite", None, optional=True)
  config.check_switch("labelled", np.True_)          # (numpy's bools are bools, as elsewhere)
  with pytest.raises(TypeError, match="^verify must be True or False, got None$"):
    config.check_switch("verify", None)


def test_an_output_folder_never_ours_is_refused_as_such_with_or_without_overwrite(tmp_path):
  """A folder vitprune would never replace got 'already exists (pass --overwrite)', and with
  --overwrite then 'refusing to replace': the second answer comes first; ours, empty or absent
  folders are as before (ours: 'already exists' without overwrite, replaceable with it)."""
  foreign = tmp_path / "mine"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("x")
  ours = tmp_path / "ours"
  ours.mkdir()
  (ours / "marker").write_text("x")
  is_ours = lambda p: os.path.isfile(os.path.join(p, "marker"))
  for overwrite in (False, True):
    with pytest.raises(atomic.ForeignOutputError, match=r"^refusing to replace .*mine: it is a "
                       r"folder that is not a vitprune output; move it away or choose another "
                       r"output path$"):
      atomic.check_output_dir_target(str(foreign), overwrite, is_ours)
  with pytest.raises(FileExistsError, match=r"ours already exists \(pass overwrite=True"):
    atomic.check_output_dir_target(str(ours), False, is_ours)
  atomic.check_output_dir_target(str(ours), True, is_ours)
  (tmp_path / "empty").mkdir()
  for path in ("empty", "absent"):
    atomic.check_output_dir_target(str(tmp_path / path), False, is_ours)
  assert os.listdir(foreign) == ["notes.txt"] and os.listdir(ours) == ["marker"]


def test_a_probe_left_in_our_output_does_not_make_it_foreign(tmp_path):
  """`check_writable_dir`'s probe, left where it could not be removed (append-only, or a run
  killed between making and removing it), is no file of the user's: the output stays ours."""
  target = tmp_path / "art"
  ours = lambda p: os.path.isfile(os.path.join(p, "m.json"))
  with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:
    (tmp_path / tmp / "m.json").write_text("old")
  (target / f"{atomic.WRITE_CHECK_PREFIX}abc123").write_text("")
  assert atomic.unlisted_files(str(target)) == []
  with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:
    (tmp_path / tmp / "m.json").write_text("new")
  assert sorted(os.listdir(target)) == [atomic.INVENTORY_FILE, "m.json"]
  assert (target / "m.json").read_text() == "new"


def test_a_temporary_named_with_pid_0_is_removed(tmp_path):
  """kill(0, 0) signals this process's own group and succeeds: a temporary named with PID 0
  (no writer) was judged alive and kept for ever (here the real kill, not a stand-in)."""
  none = tmp_path / f".r.json.tmp-0-{atomic._namespace_tag()}-abc"
  none.write_text("x")
  atomic.cleanup_stale(str(tmp_path / "r.json"))
  assert not none.exists()


def test_a_lock_file_a_killed_writer_left_is_removed_by_the_next_write(tmp_path):
  """A lock file nobody holds (its holder killed) is swept by the next write of the file."""
  path = tmp_path / "x.json"
  (tmp_path / ".x.json.lock").write_text("")
  atomic.write_bytes(str(path), b"new")
  assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["x.json"]


def test_a_lock_file_made_anew_meanwhile_is_not_swept_as_stale(tmp_path, monkeypatch):
  """The sweep opened a killed holder's lock file; another writer then removed it and made its
  own (`locked` releases by unlinking): only the file the sweep locked may be removed, never
  the one another writer locks."""
  lock = tmp_path / ".x.json.lock"
  lock.write_text("")
  real_flock, swapped = atomic.fcntl.flock, []

  def flock(fd, op):
    if op & atomic.fcntl.LOCK_NB and not swapped:
      swapped.append(1)
      os.unlink(lock)
      lock.write_text("theirs")
    return real_flock(fd, op)

  monkeypatch.setattr(atomic.fcntl, "flock", flock)
  atomic.cleanup_stale(str(tmp_path / "x.json"))
  assert swapped and lock.read_text() == "theirs"


def test_a_file_set_missing_a_file_is_refused_by_name_and_replaces_nothing(tmp_path):
  """A set with a file not written is refused before its commit, naming the file (not a raw
  errno naming the hidden staging folder); the old files stay and no temporary is left."""
  for n in ("p.png", "p.json"):
    (tmp_path / n).write_text("old")
  with pytest.raises(FileNotFoundError, match=r"^staged_files: \['p.json'\] were not written$"):
    with atomic.staged_files(str(tmp_path), "p", ["p.png", "p.json"]) as tmp:
      open(os.path.join(tmp, "p.png"), "w").write("new")
  assert [(tmp_path / n).read_text() for n in ("p.png", "p.json")] == ["old", "old"]
  assert sorted(os.listdir(tmp_path)) == ["p.json", "p.png"]


def test_a_publish_failing_after_the_old_output_moved_aside_puts_it_back(tmp_path,
                                                                        monkeypatch):
  """The publishing rename failing for a reason other than a taken path (EIO, a quota) once the
  old output is moved aside: the old one goes back, never deleted with the hidden folder."""
  import errno  # pylint: disable=g-import-not-at-top
  target = tmp_path / "art"
  ours = lambda p: os.path.isfile(os.path.join(p, "m.json"))
  with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:
    (tmp_path / tmp / "m.json").write_text("old")
  real_rename, phases = os.rename, []

  def rename(src, dst, *a, **kw):
    if "moved_aside" in phases and os.path.basename(src).startswith(".art.tmp-"):
      raise OSError(errno.EIO, "Input/output error")
    return real_rename(src, dst, *a, **kw)

  monkeypatch.setattr(atomic, "fault_hook", phases.append)
  monkeypatch.setattr(atomic.os, "rename", rename)
  with pytest.raises(OSError, match="Input/output error"):
    with atomic.staged_dir(str(target), overwrite=True, is_ours=ours) as tmp:
      (tmp_path / tmp / "m.json").write_text("new")
  assert "moved_aside" in phases and (target / "m.json").read_text() == "old"
  assert sorted(os.listdir(tmp_path)) == ["art"]          # no staged or old copy left


def test_a_link_where_a_companion_file_goes_is_refused(tmp_path):
  """A link at a CSV/MD/PNG written with an output is the user's: refused, as a link."""
  (tmp_path / "mine.csv").write_text("a,b")
  (tmp_path / "p.csv").symlink_to(tmp_path / "mine.csv")
  with pytest.raises(atomic.ForeignOutputError, match=r"refusing to replace .*p\.csv: it is a "
                                                      r"symbolic link, not a file vitprune"):
    atomic.check_replaceable_json(str(tmp_path / "p.json"), "x",
                                  companions=[str(tmp_path / "p.csv")])
  assert (tmp_path / "mine.csv").read_text() == "a,b"


def test_a_folder_replaced_while_it_was_read_is_read_again(tmp_path):
  """A read that failed because another run published a new folder meanwhile is retried once;
  a folder that stayed the same raises its own error at once (no second read)."""
  folder = tmp_path / "w"
  folder.mkdir()
  calls = []

  def read():
    calls.append("read")
    if len(calls) == 1:
      (tmp_path / "new").mkdir()
      os.rename(tmp_path / "new", folder)            # another run publishes meanwhile
      raise ValueError("Truncated Zstd-compressed stream")
    return "whole"

  assert atomic.read_folder(str(folder), read) == "whole" and len(calls) == 2

  def broken():
    calls.append("broken")
    raise ValueError("corrupt")

  with pytest.raises(ValueError, match="^corrupt$"):
    atomic.read_folder(str(folder), broken)
  assert calls.count("broken") == 1


def test_a_kept_result_names_the_write_s_own_error_not_a_vanished_folder(tmp_path):
  # A solve / estimate into a fresh --out_dir on a full disk took back the folder it made, and
  # its one line said "its folder ... is no longer a folder ([Errno 28] ...)": the wrong cause.
  path = str(tmp_path / "made" / "out.json")
  full = OSError(errno.ENOSPC, f"No space left on device while writing {path}")
  with pytest.raises(OSError) as e:
    atomic.keep_json_beside(path, {"format": "f", "x": 1}, "f", full, str(full))
  msg = str(e.value)
  kept = glob.glob(str(tmp_path / "out.kept-*.json"))
  assert "no longer a folder" not in msg and "No space left on device" in msg, msg
  assert len(kept) == 1 and msg.endswith(f"the results are kept in {kept[0]}"), msg
  (tmp_path / "gone").write_text("a file")           # a folder replaced by a file still says so
  gone = NotADirectoryError(errno.ENOTDIR, "Not a directory")
  with pytest.raises(OSError, match="its folder .*gone is no longer a folder"):
    atomic.keep_json_beside(str(tmp_path / "gone" / "out.json"), {"format": "f"}, "f", gone,
                            str(gone))


def test_a_name_too_long_for_the_file_system_is_no_file_not_a_raw_os_error(tmp_path):
  # (a probe: run_deployed --output=<256-byte name> and digits_images --out=<300-byte folder>/x
  # printed "[Errno 36] File name too long" before their own checks could name the flag)
  long_name = str(tmp_path / ("a" * 300))
  assert atomic.file_stamp(long_name) is None
  assert atomic.file_stamp(long_name + "/x.json") is None
  atomic.cleanup_stale(os.path.join(long_name, "x"))          # nothing there to clean
  assert atomic.moved_aside_note(os.path.join(long_name, "x")) == ""
  assert os.listdir(tmp_path) == []


def test_output_dir_target_names_the_flag_or_the_path(tmp_path):
  """One check for library and CLIs (`common.check_new_dir` calls it with its flag): a file is
  not a directory, a full folder exists, each message naming `--flag=path` or the path."""
  f = tmp_path / "f"
  f.write_text("x")
  with pytest.raises(NotADirectoryError) as e:
    atomic.check_output_dir_target(str(f), False, None)
  assert str(e.value) == f"{f} is a regular file, not a directory"
  with pytest.raises(NotADirectoryError) as e:
    atomic.check_output_dir_target(str(f), True, lambda p: True, "h", flag="out")
  assert str(e.value) == f"--out={f} is a regular file, not a directory"
  with pytest.raises(atomic.ForeignOutputError, match="it is a regular file that is not"):
    atomic.check_output_dir_target(str(f), True, lambda p: False)        # (library: foreign)
  full = tmp_path / "full"
  full.mkdir()
  (full / "a").write_text("x")
  with pytest.raises(FileExistsError) as e:
    atomic.check_output_dir_target(str(full), False, None, "pass --overwrite", flag="out")
  assert str(e.value) == f"--out={full} already exists (pass --overwrite)"
  atomic.check_output_dir_target(str(full), True, None, flag="out")   # (its writer judges it)
  atomic.check_output_dir_target(str(tmp_path / "new"), False, None, flag="out")


def test_a_name_at_the_limit_beside_its_temporaries_fits_and_one_byte_more_is_named(tmp_path):
  """Mutation audit: `check_name_fits` at its boundary. A name whose hidden temporaries just
  fit is accepted (and published); one byte longer is refused by name, with the exact room."""
  limit = os.pathconf(tmp_path, "PC_NAME_MAX")
  room = limit - atomic._temp_overhead()
  fits = str(tmp_path / ("n" * room))
  atomic.check_name_fits(fits, "out_dir")
  with atomic.staged_dir(fits, overwrite=False) as tmp:
    open(os.path.join(tmp, "a.txt"), "w").write("a")
  assert open(os.path.join(fits, "a.txt")).read() == "a"
  with pytest.raises(ValueError) as e:
    atomic.check_name_fits(str(tmp_path / ("n" * (room + 1))), "out_dir")
  assert str(e.value) == (
      f"--out_dir: the name {'n' * 24}... is {room + 1} bytes; at most {room} fit (vitprune "
      f"writes it through a hidden temporary beside it, {atomic._temp_prefix('NAME', 'commit')}"
      f"..., within the {limit}-byte name limit)")


def test_a_folder_to_create_whose_name_is_one_byte_too_long_is_named(tmp_path):
  """Mutation audit: `check_creatable`'s name check at its boundary: a folder to create of
  NAME_MAX bytes passes; one of NAME_MAX + 1 is refused up front (it failed at the final
  write, after the work), naming the flag and both sizes."""
  limit = os.pathconf(tmp_path, "PC_NAME_MAX")
  atomic.check_creatable(str(tmp_path / ("d" * limit) / "x.json"), "output")
  with pytest.raises(ValueError) as e:
    atomic.check_creatable(str(tmp_path / ("d" * (limit + 1)) / "x.json"), "output")
  assert str(e.value) == (f"--output: the name {'d' * 24}... in it is {limit + 1} bytes; the "
                          f"file system holds at most {limit}")
  assert os.listdir(tmp_path) == []


def test_a_temporary_this_process_is_still_making_is_not_swept(tmp_path):
  """Mutation audit: a `.NAME.new-` of this very process (another thread between making and
  locking it) is not locked yet; a sweep judging it by its lock, as it does this process's
  other temporaries, deleted it under its writer. A `.tmp-` of this process left unlocked is
  its own leftover, swept."""
  tag = atomic._namespace_tag()
  making = tmp_path / f".d.new-{os.getpid()}-{tag}-abc_1234"
  left = tmp_path / f".d.tmp-{os.getpid()}-{tag}-abc_1234"
  making.mkdir()
  (making / "x").write_text("x")
  left.mkdir()
  atomic.cleanup_stale(str(tmp_path / "d"))
  assert os.listdir(tmp_path) == [making.name] and (making / "x").read_text() == "x"


def test_a_waiter_that_locked_a_released_lock_file_takes_the_new_one(tmp_path, monkeypatch):
  """Mutation audit: a writer waiting on `.NAME.lock` while its holder released it (unlinked,
  then closed) locks an unlinked file; it must retry on the file at that name, else a third
  writer locks a new file there and two writers hold "the" lock at once."""
  import threading  # pylint: disable=g-import-not-at-top
  target = tmp_path / "x.json"
  lock_path = tmp_path / ".x.json.lock"
  holder = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
  atomic.fcntl.flock(holder, atomic.fcntl.LOCK_EX)
  waiting, inside, leave = threading.Event(), threading.Event(), threading.Event()
  real_flock = atomic.fcntl.flock

  def flock(fd, op):
    if op == atomic.fcntl.LOCK_EX:
      waiting.set()
    return real_flock(fd, op)

  monkeypatch.setattr(atomic.fcntl, "flock", flock)

  def waiter():
    with atomic.locked(str(target)):
      inside.set()
      leave.wait(20)

  thread = threading.Thread(target=waiter)
  thread.start()
  try:
    assert waiting.wait(20)
    os.unlink(lock_path)                  # the holder's release
    os.close(holder)
    assert inside.wait(20)
    third = os.open(lock_path, os.O_RDWR)         # the lock file is there, and held
    try:
      with pytest.raises(BlockingIOError):
        real_flock(third, atomic.fcntl.LOCK_EX | atomic.fcntl.LOCK_NB)
    finally:
      os.close(third)
  finally:
    leave.set()
    thread.join(20)
  assert os.listdir(tmp_path) == []


def test_a_link_to_an_empty_folder_is_refused_as_a_link_not_replaced(tmp_path):
  """Mutation audit: a symbolic link to an empty folder is not a free output path (`is_free`):
  with overwrite it is refused as foreign up front, the link and its folder left as they were
  (judged free, the publish moved the link aside and back a hundred times, then gave up)."""
  empty = tmp_path / "empty"
  empty.mkdir()
  link = tmp_path / "out"
  link.symlink_to(empty)
  assert not atomic.is_free(str(link))
  with pytest.raises(atomic.ForeignOutputError) as e:
    with atomic.staged_dir(str(link), overwrite=True) as tmp:
      open(os.path.join(tmp, "config.json"), "w").write("{}")
  assert str(e.value) == (f"refusing to replace {link}: it is a symbolic link that is not "
                          f"{atomic.is_vitprune_output.description}; move it away or choose "
                          "another output path")
  assert sorted(os.listdir(tmp_path)) == ["empty", "out"]
  assert os.readlink(link) == str(empty) and os.listdir(empty) == []


def test_a_failed_write_never_takes_back_a_folder_another_writer_wrote_into(tmp_path,
                                                                             monkeypatch):
  """Mutation audit: a write that failed for lack of room takes back the folders it made only
  while they are empty: another writer's file written into them meanwhile is never deleted
  with them (nor the folders holding it)."""
  theirs = tmp_path / "a" / "b" / "theirs.json"

  def full(*a, **k):
    theirs.write_text('{"v": 2}')              # another writer, into the folder just made
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OSError, match="No space left on device while writing"):
    atomic.write_json(str(tmp_path / "a" / "b" / "r.json"), {"v": 1})
  monkeypatch.undo()
  assert os.listdir(tmp_path) == ["a"] and os.listdir(tmp_path / "a") == ["b"]
  assert os.listdir(tmp_path / "a" / "b") == ["theirs.json"]
  assert theirs.read_text() == '{"v": 2}'


def test_an_exclusive_output_taken_after_the_run_began_keeps_what_the_run_made(tmp_path):
  """Mutation audit: `staged_dir(overwrite=False, replaces=None)`, for work done before the call
  (training, compiles) into a path that was free when it began: a path taken since is refused
  at publishing, not up front, so the run's output is kept beside it, whole; the folder there
  is left as it was."""
  out = tmp_path / "out"
  out.mkdir()
  (out / "theirs.txt").write_text("theirs")
  with pytest.raises(FileExistsError) as e:
    with atomic.staged_dir(str(out), overwrite=False, replaces=None) as tmp:
      open(os.path.join(tmp, "mine.txt"), "w").write("mine")
  kept = [n for n in os.listdir(tmp_path) if n != "out"]
  assert len(kept) == 1 and re.fullmatch(r"out\.partial-[0-9a-f]{8}", kept[0])
  assert str(e.value) == (
      f"{out} was created while this run worked: refusing to replace {out}: it is a folder "
      f"that is not {atomic.is_vitprune_output.description}; move it away or choose another "
      f"output path; this run's output is kept in {tmp_path / kept[0]}")
  assert (tmp_path / kept[0] / "mine.txt").read_text() == "mine"
  assert os.listdir(out) == ["theirs.txt"] and (out / "theirs.txt").read_text() == "theirs"


@pytest.mark.parametrize("name, kind", [("est.png", r"\.png file \(image/png\)"),
                                        ("r.CSV", r"\.CSV file \(text/csv\)"),
                                        ("notes.txt", r"\.txt file \(text/plain\)"),
                                        ("r.tar.gz", r"\.tar\.gz file \(application/x-tar "
                                                     r"gzip\)"),
                                        ("r.rtf", r"\.rtf file \(application/rtf\)"),
                                        # (these said '.r.tgz', '.x.gz', '.x.svgz')
                                        ("r.tgz", r"\.tgz file \(application/x-tar gzip\)"),
                                        ("x.gz", r"\.gz file \(gzip\)"),
                                        ("x.svgz", r"\.svgz file \(image/svg\+xml gzip\)")])
def test_a_json_output_named_as_another_format_is_refused(tmp_path, name, kind):
  """An estimate named x.png was written as JSON (an image viewer then refused it)."""
  path = str(tmp_path / name)
  with pytest.raises(ValueError, match=rf"^--out={re.escape(path)} names a {kind}, but the "
                     r"file written is JSON: name it \*\.json$"):
    atomic.check_output_json(path, "vitprune-x", "out")
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize("name", ["r.json", "r.JSON", "results", "r.jsonl", "r.log", "a.b/r"])
def test_a_json_output_named_json_or_without_a_known_suffix_passes(tmp_path, name):
  os.makedirs(tmp_path / "a.b")
  atomic.check_output_json(str(tmp_path / name), "vitprune-x", "out")
  atomic.check_json_name(str(tmp_path / name), None)


def test_describe_tells_a_loop_of_links_from_a_dangling_one(tmp_path):
  """`--images=L` / `--data=L` with L a loop of symbolic links said 'is a dangling symbolic
  link' (a probe): the loop is named as one."""
  os.symlink(tmp_path / "b", tmp_path / "a")
  os.symlink(tmp_path / "a", tmp_path / "b")
  os.symlink(tmp_path / "none", tmp_path / "dangling")
  assert atomic.describe(str(tmp_path / "a")) == "a loop of symbolic links"
  assert atomic.describe(str(tmp_path / "dangling")) == "a dangling symbolic link"


def test_a_json_name_is_read_by_pythons_own_table_not_the_machines(tmp_path, monkeypatch):
  """The media types of the machine (mimetypes.guess_type reads /etc/mime.types) are not
  consulted: a machine that calls every name an image refuses no JSON output; without a flag
  the refusal names the path alone."""
  import mimetypes  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(mimetypes, "guess_type", lambda *args, **kw: ("image/png", None))
  for name in ("r.json", "results"):
    atomic.check_json_name(str(tmp_path / name), "out")
  path = str(tmp_path / "r.png")
  with pytest.raises(ValueError, match=rf"^{re.escape(path)} names a \.png file \(image/png\)"):
    atomic.check_json_name(path, None)
