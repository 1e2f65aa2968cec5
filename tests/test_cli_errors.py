"""Bad input to every CLI, run as a subprocess: exit code, one `error:` line naming the problem
(no traceback, no help text), and not a single file changed in the output location.

Each case fails before any heavy work (a subprocess costs mostly its jax import)."""
import concurrent.futures
import hashlib
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(ROOT, "weights", "vit_digits")
HUGE = "--batch_size=1000000000"

# (cli, args, exit code, message). In args: {file} an existing file, {full} a non-empty
# directory that is not ours, {out} an absent path inside the output location.
CASES = [
    ("profile", ["--min_run_time=inf", "--out_dir={out}"], 1,
     "--min_run_time=inf is not a finite number"),
    ("profile", ["--layer=9", "--out_dir={out}"], 1, "layer 9 is outside [0, 5]"),
    ("profile", ["--method=nosuch", "--out_dir={out}"], 1,
     "unknown token-reduction method 'nosuch'"),
    ("profile", ["--mode=model", "--model=test_tiny_vit", HUGE, "--out_dir={out}"], 1,
     "--batch_size=1000000000 cannot fit in memory"),
    ("profile", ["--out_dir={file}"], 1, "is a file, not a directory"),
    ("profile", ["--out_dir={full}"], 1, "refusing to replace"),
    ("profile", ["--model=test_tiny_vit", "--mode=model", "--tokens=0:3", "--out_dir={out}"], 1,
     "counts [0, 1] are outside [2, 17]"),
    ("profile", ["--bogus"], 2, "Unknown command line flag 'bogus'"),
    ("profile", ["extra"], 2, "unexpected arguments: ['extra']"),
    ("benchmark", ["--data=none", "--min_run_time=nan", "--out_dir={out}"], 1,
     "--min_run_time=nan is not a finite number"),
    ("benchmark", ["--data=none", "--out_dir={file}"], 1, "is a file, not a directory"),
    ("benchmark", ["--data=none", "--batch_size=0", "--out_dir={out}"], 1,
     "--batch_size: 0 must be >= 1"),
    ("estimate", ["--model=test_tiny_vit", HUGE, "--out_dir={out}"], 1,
     "--batch_size=1000000000 cannot fit in memory"),
    ("estimate", ["--out_dir={file}"], 1, "is a file, not a directory"),
    ("estimate", ["--method=pomt", "--layer=9", "--out_dir={out}"], 1, "layer 9 outside [0, 5]"),
    ("solve", ["--profile=p.json", "--estimate=e.json", "--out_dir={file}"], 1,
     "is a file, not a directory"),
    ("solve", ["--profile=p.json", "--estimate=e.json", "--alpha=nan", "--out_dir={out}"], 1,
     "--alpha=nan is not a finite number"),
    ("deploy", [f"--weights={WEIGHTS}", "--out={file}"], 1, "is a file, not a directory"),
    ("deploy", [f"--weights={WEIGHTS}", "--out={full}"], 1, "already exists"),
    ("run_deployed", ["--artifact=a", "--images=i", "--output={full}"], 1,
     "is a directory, not a file"),
    ("run_deployed", ["--artifact=a", "--images=i", "--repeats=1"], 1,
     "--repeats must be >= 3"),
    ("convert", ["--model=test_tiny_vit", "--checkpoint=c.npz", "--img_size=0", "--out={out}"],
     1, "--img_size must be >= 1"),
    ("convert", ["--model=deit_smal_patch16_224", "--checkpoint=c.npz", "--out={out}"], 1,
     "unknown model 'deit_smal_patch16_224'. Did you mean: deit_small_patch16_224"),
    ("train_digits", ["--lr=inf", "--out={out}"], 1, "--lr=inf is not a finite number"),
    ("train_digits", ["--max_steps=0", "--out={out}"], 2, "--max_steps=0: 0 is not a positive integer"),
    ("train_digits", ["--out={full}"], 1, "already exists (pass --overwrite"),
    ("train_digits", ["--out={file}/w"], 1, "is a file, not a directory"),
    ("edge_kit", ["--out={file}"], 1, "is a file, not a directory"),
    ("edge_kit", ["--batch_sizes=0", "--out={out}"], 1, "--batch_sizes: 0 must be >= 1"),
    ("edge_kit", ["--driver=local-turbo", "--out={out}"], 1,
     "IREE driver 'local-turbo' cannot run target iree:host; expected one of local-task, "
     "local-sync"),
    ("prune", ["--batch_size=x"], 2, "flag --batch_size=x"),
]


def _snapshot(root):
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for d in dirnames:
      out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
    for f in filenames:
      p = os.path.join(dirpath, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def _run_case(case_dir, cli, args):
  """Runs one case in `case_dir` (its own output location `loc/`) -> (process or the error that
  stopped it, loc snapshot before the run)."""
  loc = case_dir / "loc"
  loc.mkdir(parents=True)
  (loc / "file").write_text("an existing file\n")
  (loc / "full").mkdir()
  (loc / "full" / "notes.txt").write_text("someone's notes\n")
  subs = {"{file}": str(loc / "file"), "{full}": str(loc / "full"), "{out}": str(loc / "out")}
  argv = []
  for a in args:
    for k, v in subs.items():
      a = a.replace(k, v)
    argv.append(a)
  before = _snapshot(loc)
  try:
    r = subprocess.run([sys.executable, "-m", f"experiments.{cli}", *argv], cwd=str(case_dir),
                       capture_output=True, text=True, timeout=180,
                       env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT))
  except subprocess.SubprocessError as e:      # fails this case only, not all of them
    return e, before
  return r, before


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Every case's subprocess, run concurrently (each costs mostly its imports, one core):
  {case index: (case dir, process, snapshot before)}."""
  dirs = [tmp_path_factory.mktemp(f"case{i}") for i in range(len(CASES))]
  workers = min(8, max(2, len(os.sched_getaffinity(0))))
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    futures = [pool.submit(_run_case, d, cli, args) for d, (cli, args, _, _) in zip(dirs, CASES)]
    return {i: (d, *f.result()) for i, (d, f) in enumerate(zip(dirs, futures))}


@pytest.mark.parametrize("index", range(len(CASES)),
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_gets_one_line_and_changes_nothing(runs, index):
  _, _, code, message = CASES[index]
  case_dir, r, before = runs[index]
  assert isinstance(r, subprocess.CompletedProcess), f"{CASES[index][0]}: {r}"
  assert r.returncode == code, r.stderr[-2000:]
  lines = r.stderr.strip().splitlines()
  assert "Traceback" not in r.stderr and "USAGE" not in r.stderr and "flags:" not in r.stderr
  assert lines and lines[0].startswith("error: ") and message in lines[0], r.stderr[-2000:]
  assert lines[1:] == (["(see --help)"] if code == 2 else []), r.stderr[-2000:]
  assert r.stdout == ""
  assert _snapshot(case_dir / "loc") == before
  assert sorted(os.listdir(case_dir)) == ["loc"]     # nothing created next to it either
