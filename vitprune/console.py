"""What every vitprune command line sets up for its process (the experiments CLIs and the board
CLI `vitprune.edge` alike; no jax here): standard streams that print a path's undecodable bytes
escaped (`\\udcff`) instead of failing after the work is done, and warnings on one line."""
from __future__ import annotations

import sys
import warnings


def one_line_warning(message, category, filename, lineno, line=None) -> str:
  """`warning: <Category>: <message>` on one line (Python prints the library's file, line and
  source line too: PIL's DecompressionBombWarning took two)."""
  del filename, lineno, line
  return f"warning: {category.__name__}: {' '.join(str(message).split())}\n"


def setup_process() -> None:
  """Configures this process's stdout/stderr and warning format (call once, in `main`)."""
  for stream in (sys.stdout, sys.stderr):
    if hasattr(stream, "reconfigure"):
      stream.reconfigure(errors="backslashreplace")
  warnings.formatwarning = one_line_warning
