"""vitprune.progress: a bar on a terminal, plain lines every so often in a log."""
import io
import re

import pytest
from tqdm import tqdm

from vitprune import progress


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_lines_come_at_most_once_per_interval_and_not_once_done():
  out, clock = io.StringIO(), FakeClock()
  with progress.LineProgress(4, "vit_digits b1 model", stream=out, interval=30.0,
                             clock=clock) as bar:
    clock.now += 29.9
    bar.update()                       # 1/4 before the interval: nothing
    assert out.getvalue() == ""
    clock.now += 0.1
    bar.update()                       # 2/4 at 30 s
    clock.now += 10.0
    bar.update()                       # 3/4, 10 s after the last line: nothing
    bar.total += 2                     # (a runner adds the refinement's steps)
    bar.refresh()                      # (and redraws a bar: no line)
    clock.now += 31.0
    bar.update(2)                      # 5/6 at 71 s
    clock.now += 60.0
    bar.update()                       # 6/6: done, the caller reports the result
  assert out.getvalue() == ("vit_digits b1 model: 2/4 steps, 30 s\n"
                            "vit_digits b1 model: 5/6 steps, 71 s\n")
  assert bar.n == 6


def test_one_step_in_all_is_counted_in_the_singular():
  out, clock = io.StringIO(), FakeClock()
  bar = progress.LineProgress(1, "b", unit="point", stream=out, interval=0.0, clock=clock)
  bar.update(0)
  assert out.getvalue() == "b: 0/1 point, 0 s\n"


class Tty(io.StringIO):
  def isatty(self):
    return True


class NoIsatty:
  def write(self, text):
    pass


def test_a_terminal_gets_a_bar_a_log_gets_lines_and_disabled_gets_neither():
  bar = progress.bar(10, "d", stream=Tty())
  assert isinstance(bar, tqdm) and not bar.disable
  bar.close()
  assert isinstance(progress.bar(10, "d", stream=io.StringIO()), progress.LineProgress)
  assert isinstance(progress.bar(10, "d", stream=NoIsatty()), progress.LineProgress)
  closed = io.StringIO()
  closed.close()                     # (isatty raises ValueError on a closed stream)
  assert isinstance(progress.bar(10, "d", stream=closed), progress.LineProgress)
  off = progress.bar(10, "d", enabled=False, stream=Tty())
  assert isinstance(off, tqdm) and off.disable


def test_the_default_interval_is_read_when_the_bar_is_made(monkeypatch):
  monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
  out = io.StringIO()
  bar = progress.bar(3, "d", stream=out)
  bar.update()
  assert out.getvalue().startswith("d: 1/3 steps, ")


def test_a_profile_logged_to_a_file_says_how_far_it_is(tmp_path, monkeypatch, capsys):
  """Where stderr is not a terminal (pytest's capture), the runner's progress comes as lines."""
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  from vitprune.profile import runner  # pylint: disable=g-import-not-at-top
  from vitprune.profile.protocol import TimingConfig  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
  cfg = get_config("test_tiny_vit")
  spec = runner.ProfileSpec(cfg=cfg, mode="model", tokens=(17, 9), batch_sizes=(1,),
                            timing=TimingConfig(min_run_time=0.001, max_retries=0))
  runner.run_profile(spec, log=lambda *a: None)
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.startswith("test_tiny_vit b1 model: ")]
  assert lines and all(re.fullmatch(r"test_tiny_vit b1 model: \d+/\d+ steps, \d+ s", l)
                       for l in lines), err
  assert "\r" not in err                # (no bar redraws)


class FlushCounting(io.StringIO):
  def __init__(self):
    super().__init__()
    self.flushes = 0

  def flush(self):
    self.flushes += 1
    super().flush()


def test_bar_passes_its_unit_interval_and_stream_on():
  out = FlushCounting()
  bar = progress.bar(3, "d", unit="point", stream=out, interval=0.0)
  bar.update()
  assert out.getvalue().startswith("d: 1/3 points, ")
  assert out.flushes >= 1                 # (a log file's line is not left in a buffer)
  quiet = io.StringIO()
  slow = progress.bar(3, "d", stream=quiet, interval=1e9)
  slow.update()
  assert quiet.getvalue() == ""
  tty = Tty()
  shown = progress.bar(3, "d", unit="point", stream=tty)
  shown.update()
  shown.close()
  assert "point" in tty.getvalue()        # (the bar drawn on the stream given, in its unit)


if __name__ == "__main__":
  pytest.main([__file__])
