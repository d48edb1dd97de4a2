"""Finding the cases of a raw dataset folder, for every layout (layouts.LAYOUTS).

Files are grouped into cases by what their names and folders say; a case that lacks one of
its files keeps the path the file should have, so reading it reports exactly what is missing
instead of the case disappearing. Hidden entries, macOS `__MACOSX` folders and files of no
layout (README, data.csv, notes) are ignored; a folder that cannot be listed is an error.
"""

import collections
import os
import re

from brats_jax.data.layouts import LAYOUTS, LGG_SLICE, Layout, RawCase
from brats_jax.errors import DataError

_NIFTI = r"\.nii(\.gz)?$"
_MHA = r"\.mh[ad]$"
# BraTS 2015: VSD.Brain.XX.O.MR_T1c.54514.mha (channel) and VSD.Brain_3more.XX.O.OT.54517.mha
_BRATS2015_CHANNEL = re.compile(r"^VSD\.Brain\.XX\.O\.MR_(Flair|T1c|T1|T2)\.\d+" + _MHA,
                                re.IGNORECASE)
_BRATS2015_LABEL = re.compile(r"^VSD\.Brain_\d*more\.XX\.O\.OT\.\d+" + _MHA, re.IGNORECASE)
_REPACKED_LABEL_FOLDERS = {"ot", "gt", "groundtruth", "ground_truth", "ground truth", "label",
                           "labels", "seg", "segmentation", "mask", "masks"}


def walk_files(root: str, pattern: str) -> list:
  """Paths below root whose names match `pattern` (a regex, case-insensitive), sorted.
  Linked folders are followed (a subset of a dataset is often a folder of links), each real
  folder once: a link back up the tree is no endless walk."""

  def fail(error: OSError):
    raise DataError(f"{error.filename}: cannot list folder ({error.strerror})")

  found, seen = [], set()
  for folder, dirs, files in os.walk(root, onerror=fail, followlinks=True):
    status = os.stat(folder)
    seen.add((status.st_dev, status.st_ino))
    kept = []
    for d in dirs:
      if d.startswith(".") or d == "__MACOSX":
        continue
      try:
        status = os.stat(os.path.join(folder, d))
      except OSError:  # a dangling link: no folder to walk
        continue
      if (status.st_dev, status.st_ino) not in seen:
        kept.append(d)
    dirs[:] = kept
    found += [os.path.join(folder, name) for name in files + dirs
              if not name.startswith(".") and re.search(pattern, name, re.IGNORECASE)]
  return sorted(found)


def _per_modality_name(layout: Layout, suffixes: tuple):
  """<case><sep><suffix>.nii(.gz) for one of `suffixes`: groups (case id, suffix)."""
  return re.compile(r"^(.*)" + re.escape(layout.separator) + "("
                    + "|".join(map(re.escape, suffixes)) + ")" + _NIFTI, re.IGNORECASE)


def _find_per_modality(root: str, layout: Layout) -> list:
  """brats2021/brats2023: <case><sep><suffix>.nii(.gz) anywhere below root, grouped by
  (folder, case id) whichever modality the files are."""
  sep = layout.separator
  pattern = _per_modality_name(layout, layout.suffixes + ("seg",))
  groups: dict[tuple, dict[str, str]] = collections.defaultdict(dict)
  for path in walk_files(root, _NIFTI):
    match = pattern.match(os.path.basename(path))
    if not match:
      continue
    case_id, suffix = match.group(1), match.group(2).lower()
    if not case_id:
      raise DataError(f"{path}: no case id before '{sep}{suffix}'")
    groups[(os.path.dirname(path), case_id)][suffix] = path
  return [RawCase(case_id, layout.name,
                  tuple(found.get(s, os.path.join(folder, layout.file_name(case_id, s)))
                        for s in layout.suffixes), found.get("seg"))
          for (folder, case_id), found in groups.items()]


def _find_msd(root: str) -> list:
  images_dir = os.path.join(root, "imagesTr")
  if not os.path.isdir(images_dir):
    images_dir = os.path.join(root, "imagesTs")
  cases = []
  try:
    names = sorted(os.listdir(images_dir))
  except OSError as e:
    raise DataError(f"{images_dir}: cannot list folder ({e.strerror})") from None
  for path in names:
    if path.startswith(".") or not re.search(_NIFTI, path):
      continue
    case_id = re.sub(_NIFTI, "", path)
    label = os.path.join(root, "labelsTr", path)
    cases.append(RawCase(case_id, "msd", (os.path.join(images_dir, path),),
                         label if os.path.exists(label) else None))
  return cases


def _find_brats2015(root: str) -> list:
  """The original tree: a patient folder holds one folder per channel and one for labels,
  each with one .mha of the same name. The case id is the patient folder's name."""
  layout = LAYOUTS["brats2015"]
  groups: dict[str, dict[str, str]] = collections.defaultdict(dict)
  for path in walk_files(root, _MHA):
    name = os.path.basename(path)
    channel = _BRATS2015_CHANNEL.match(name)
    if channel or _BRATS2015_LABEL.match(name):
      patient = os.path.dirname(os.path.dirname(path))
      key = next(s for s in layout.suffixes if s.lower() == channel.group(1).lower()) \
          if channel else "label"
      groups[patient][key] = path
  return [RawCase(os.path.basename(patient), layout.name,
                  tuple(found.get(s, os.path.join(patient, f"VSD.Brain.XX.O.MR_{s}.<id>",
                                                  f"VSD.Brain.XX.O.MR_{s}.<id>.mha"))
                        for s in layout.suffixes), found.get("label"))
          for patient, found in groups.items()]


def _repacked_folders(root: str) -> dict:
  """{channel suffix or "label": folder} of a re-packed BraTS 2015 root, or {}."""
  try:
    entries = [e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e))]
  except OSError:
    return {}
  folders = {}
  for suffix in LAYOUTS["brats2015_repacked"].suffixes:
    match = [e for e in entries if e.lower() == suffix.lower()]
    if match:
      folders[suffix] = os.path.join(root, match[0])
  labels = [e for e in entries if e.lower() in _REPACKED_LABEL_FOLDERS]
  if labels:
    folders["label"] = os.path.join(root, labels[0])
  return folders if len(folders) >= 2 else {}


def _find_brats2015_repacked(root: str) -> list:
  """One folder per channel (and one for labels); a patient's files share their name."""
  layout = LAYOUTS["brats2015_repacked"]
  folders = _repacked_folders(root)
  stems: dict[str, dict[str, str]] = collections.defaultdict(dict)
  for key, folder in folders.items():
    for path in walk_files(folder, _MHA + "|" + _NIFTI):
      stem = re.sub(_MHA + "|" + _NIFTI, "", os.path.basename(path), flags=re.IGNORECASE)
      stems[stem][key] = path
  return [RawCase(stem, layout.name,
                  tuple(found.get(s, os.path.join(folders.get(s, os.path.join(root, s)),
                                                  stem + ".mha"))
                        for s in layout.suffixes), found.get("label"))
          for stem, found in stems.items()]


def _find_lgg(root: str) -> list:
  """Kaggle LGG: a folder per patient of <patient>_<n>.tif slices and their _mask.tif; the
  case's `images` is the patient folder, its `label` too when any mask is there."""
  patients: dict[str, list[bool]] = collections.defaultdict(lambda: [False, False])
  for path in walk_files(root, r"\.tiff?$"):
    match = LGG_SLICE.match(os.path.basename(path))
    folder = os.path.dirname(path)
    if match and match.group(1) == os.path.basename(folder):
      patients[folder][1 if match.group(3) else 0] = True
  return [RawCase(os.path.basename(folder), "lgg", (folder,), folder if has_mask else None)
          for folder, (_, has_mask) in patients.items()]


_FINDERS = {"brats2021": lambda root: _find_per_modality(root, LAYOUTS["brats2021"]),
            "brats2023": lambda root: _find_per_modality(root, LAYOUTS["brats2023"]),
            "msd": _find_msd, "brats2015": _find_brats2015,
            "brats2015_repacked": _find_brats2015_repacked, "lgg": _find_lgg}


def detect_layout(root: str) -> str:
  """Guess the layout of a raw dataset folder from its file and folder names."""
  if not os.path.isdir(root):
    raise DataError(f"{root}: not a directory")
  if os.path.exists(os.path.join(root, "dataset.json")) or os.path.isdir(
      os.path.join(root, "imagesTr")) or os.path.isdir(os.path.join(root, "imagesTs")):
    return "msd"
  if _repacked_folders(root):
    return "brats2015_repacked"
  for path in walk_files(root, _MHA + "|" + _NIFTI + r"|\.tiff?$"):
    name = os.path.basename(path)
    if _BRATS2015_CHANNEL.match(name) or _BRATS2015_LABEL.match(name):
      return "brats2015"
    match = LGG_SLICE.match(name)
    if match and match.group(1) == os.path.basename(os.path.dirname(path)):
      return "lgg"
    for layout in ("brats2023", "brats2021"):  # any modality's name tells the layout
      if _per_modality_name(LAYOUTS[layout], LAYOUTS[layout].suffixes).match(name):
        return layout
  raise DataError(f"{root}: no BraTS 2015/2018-2021/2023+, Decathlon or Kaggle LGG files "
                  "found")


def find_cases(root: str, layout: str | None = None) -> list:
  """All cases of a raw dataset folder, sorted by case id."""
  layout = layout or detect_layout(root)
  if layout not in LAYOUTS:
    raise DataError(f"{root}: unknown layout '{layout}' (known: {', '.join(LAYOUTS)})")
  cases = _FINDERS[layout](root)
  if not cases:
    raise DataError(f"{root}: no cases of layout {layout} found")
  ids = [c.case_id for c in cases]
  duplicated = sorted({i for i in ids if ids.count(i) > 1})
  if duplicated:
    raise DataError(f"{root}: case id {duplicated[0]} appears more than once")
  return sorted(cases, key=lambda c: c.case_id)
