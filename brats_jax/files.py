"""Writing files so that a reader never sees half of one: a temporary name, then a rename."""

import json
import os


def write_atomic(path: str, write) -> None:
  """write(temporary path) in path's folder, then renamed to path: a reader never sees a
  half-written file, and a failed write leaves nothing behind."""
  folder, name = os.path.split(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = os.path.join(folder, f".partial-{os.getpid()}-{name}")
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)

  write_atomic(path, write)


def write_json(path: str, value, indent: int | None = 1) -> None:
  write_text(path, json.dumps(value, indent=indent))
