"""Progress bars (tqdm) that stay readable when stderr is a log file rather than a terminal."""

import sys

from tqdm import tqdm


class _LinePerRefresh:
  """A log file seen by tqdm: each refresh becomes one plain line instead of a carriage-return
  redraw, so Slurm and nohup logs read line by line."""

  def __init__(self, stream):
    self.stream = stream

  def write(self, text: str) -> int:
    line = text.replace("\r", "").strip()
    if line:
      self.stream.write(line + "\n")
    return len(text)

  def flush(self):
    self.stream.flush()


def progress_bar(iterable=None, **kwargs) -> tqdm:
  """tqdm on stderr; into a file or pipe (not a terminal) one line every 30 s at most."""
  if not sys.stderr.isatty():
    kwargs.update(file=_LinePerRefresh(sys.stderr), mininterval=30, dynamic_ncols=False,
                  ncols=100)
  return tqdm(iterable, **kwargs)
