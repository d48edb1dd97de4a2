"""Dataset layouts and label conventions.

Every source layout is turned into one internal form on the way in and back on the way out:
images are channels-last in the order FLAIR, T1, T1ce, T2, and labels use the internal values
below. Regions (WT/TC/ET) are defined on internal labels only, so no other module needs to
know which convention a dataset used.
"""

import dataclasses
import json
import os
import re

import numpy as np

from brats_jax.errors import DataError

# Internal label values.
BACKGROUND, NCR, ED, ET, OTHER = 0, 1, 2, 3, 4
INTERNAL_NAMES = {NCR: "necrosis", ED: "edema", ET: "enhancing", OTHER: "other"}
MODALITIES = ("flair", "t1", "t1ce", "t2")
REGIONS = ("WT", "TC", "ET")
REGION_LABELS = {"WT": (NCR, ED, ET), "TC": (NCR, ET), "ET": (ET,)}


@dataclasses.dataclass(frozen=True)
class LabelConvention:
  """Maps a source convention's label values to internal ones and back."""

  name: str
  to_internal: dict  # source value -> internal value

  @property
  def source_values(self) -> tuple:
    return tuple(sorted(self.to_internal))

  def encode(self, source: np.ndarray, path: str = "") -> np.ndarray:
    """Source labels -> internal uint8 labels; unknown values are a DataError."""
    values = np.unique(source)
    unknown = sorted(set(values.tolist()) - set(self.to_internal))
    if unknown:
      raise DataError(f"{path}: label values {unknown[:5]} are outside the {self.name} "
                      f"convention {list(self.source_values)}")
    lut = np.zeros(int(max(self.to_internal)) + 1, np.uint8)
    for src, internal in self.to_internal.items():
      lut[src] = internal
    return lut[source.astype(np.int64)]

  def decode(self, internal: np.ndarray) -> np.ndarray:
    """Internal labels -> this convention's values (uint8)."""
    lut = np.zeros(OTHER + 1, np.uint8)
    for src, value in self.to_internal.items():
      lut[value] = src
    return lut[internal.astype(np.int64)]


CONVENTIONS = {
    # BraTS 2018-2021 (and 2022 training): 4 is enhancing tumour.
    "brats2021": LabelConvention("brats2021", {0: BACKGROUND, 1: NCR, 2: ED, 4: ET}),
    # BraTS 2023+: 3 is enhancing tumour; 2024 post-treatment adds 4, resection cavity.
    "brats2023": LabelConvention("brats2023", {0: BACKGROUND, 1: NCR, 2: ED, 3: ET, 4: OTHER}),
    # Medical Segmentation Decathlon Task01: 1 edema, 2 non-enhancing tumour, 3 enhancing.
    "msd": LabelConvention("msd", {0: BACKGROUND, 1: ED, 2: NCR, 3: ET}),
}


def regions_from_labels(labels: np.ndarray) -> np.ndarray:
  """Internal labels [...] -> boolean region masks [..., 3] in the order WT, TC, ET."""
  return np.stack([np.isin(labels, REGION_LABELS[r]) for r in REGIONS], axis=-1)


@dataclasses.dataclass(frozen=True)
class RawCase:
  """Where one case's files are. `images` holds one path per modality, or one 4D path."""

  case_id: str
  layout: str
  images: tuple
  label: str | None

  @property
  def convention(self) -> LabelConvention:
    return CONVENTIONS[LAYOUTS[self.layout].convention]

  @property
  def reference_image(self) -> str:
    """The file whose geometry predictions are written in."""
    return self.images[0]


@dataclasses.dataclass(frozen=True)
class Layout:
  name: str
  convention: str
  suffixes: tuple  # file suffix per internal modality, or () for one 4D image

  @property
  def separator(self) -> str:
    return "-" if self.name == "brats2023" else "_"

  def file_name(self, case_id: str, suffix: str) -> str:
    return f"{case_id}{self.separator}{suffix}.nii.gz"


LAYOUTS = {
    "brats2021": Layout("brats2021", "brats2021", ("flair", "t1", "t1ce", "t2")),
    "brats2023": Layout("brats2023", "brats2023", ("t2f", "t1n", "t1c", "t2w")),
    "msd": Layout("msd", "msd", ()),
}
_NIFTI = r"\.nii(\.gz)?$"


def _nifti_paths(root: str):
  """NIfTI-named paths below root, sorted; hidden entries and macOS __MACOSX folders are
  skipped, and a folder that cannot be listed is an error rather than silently missing."""

  def fail(error: OSError):
    raise DataError(f"{error.filename}: cannot list folder ({error.strerror})")

  found = []
  for folder, dirs, files in os.walk(root, onerror=fail, followlinks=True):
    dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__MACOSX"]
    found += [os.path.join(folder, name) for name in files + dirs
              if not name.startswith(".") and re.search(_NIFTI, name, re.IGNORECASE)]
  return sorted(found)


def _find_per_modality(root: str, layout: Layout) -> list:
  """Cases of a per-modality layout, anywhere below root. Files are grouped by (folder, case
  id) whichever modality they are, so a folder that lacks one of a case's files (even the
  first modality) still yields the case; its missing files are reported when it is read."""
  sep = layout.separator
  suffixes = layout.suffixes + ("seg",)
  pattern = re.compile(r"^(.*)" + re.escape(sep) + "(" + "|".join(map(re.escape, suffixes))
                       + ")" + _NIFTI, re.IGNORECASE)
  groups = {}
  for path in _nifti_paths(root):
    match = pattern.match(os.path.basename(path))
    if not match:
      continue
    case_id, suffix = match.group(1), match.group(2).lower()
    if not case_id:
      raise DataError(f"{path}: no case id before '{sep}{suffix}'")
    groups.setdefault((os.path.dirname(path), case_id), {})[suffix] = path
  cases = []
  for (folder, case_id), found in groups.items():
    # A missing modality keeps the path it should have, so reading it says what is missing.
    images = tuple(found.get(s, os.path.join(folder, layout.file_name(case_id, s)))
                   for s in layout.suffixes)
    cases.append(RawCase(case_id, layout.name, images, found.get("seg")))
  return cases


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


def detect_layout(root: str) -> str:
  """Guess the layout of a raw dataset folder from its file names."""
  if not os.path.isdir(root):
    raise DataError(f"{root}: not a directory")
  if os.path.exists(os.path.join(root, "dataset.json")) or os.path.isdir(
      os.path.join(root, "imagesTr")) or os.path.isdir(os.path.join(root, "imagesTs")):
    return "msd"
  for path in _nifti_paths(root):
    name = os.path.basename(path).lower()
    for layout in ("brats2023", "brats2021"):  # any modality's name tells the layout
      spec = LAYOUTS[layout]
      if re.search(re.escape(spec.separator) + "(" + "|".join(spec.suffixes) + ")" + _NIFTI,
                   name):
        return layout
  raise DataError(f"{root}: no BraTS 2018-2021, BraTS 2023+ or Decathlon files found")


def find_cases(root: str, layout: str | None = None) -> list:
  """All cases of a raw dataset folder, sorted by case id."""
  layout = layout or detect_layout(root)
  if layout not in LAYOUTS:
    raise DataError(f"{root}: unknown layout '{layout}' (known: {', '.join(LAYOUTS)})")
  cases = _find_msd(root) if layout == "msd" else _find_per_modality(root, LAYOUTS[layout])
  if not cases:
    raise DataError(f"{root}: no cases of layout {layout} found")
  ids = [c.case_id for c in cases]
  duplicated = sorted({i for i in ids if ids.count(i) > 1})
  if duplicated:
    raise DataError(f"{root}: case id {duplicated[0]} appears more than once")
  return sorted(cases, key=lambda c: c.case_id)


def write_msd_dataset_json(root: str, num_training: int) -> None:
  """The Decathlon's dataset.json, as Task01_BrainTumour ships it (the parts we read)."""
  info = {
      "name": "BRATS", "tensorImageSize": "4D",
      "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
      "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor",
                 "3": "enhancing tumour"},
      "numTraining": num_training,
  }
  with open(os.path.join(root, "dataset.json"), "w") as f:
    json.dump(info, f, indent=2)
