"""Dataset layouts: where each layout keeps a case's files, which channels it has, which label
convention (labels.py) it uses and what predictions are written as. discovery.py finds a
layout's cases.
"""

import dataclasses
import os
import re

from brats_jax import files
from brats_jax.errors import DataError
from brats_jax.labels import CONVENTIONS, LabelConvention

MODALITIES = ("flair", "t1", "t1ce", "t2")


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
  suffixes: tuple  # the file (or folder) name part of each channel; () for one 4D image
  channels: tuple  # the channels' names, in the order the model sees them
  file_format: str  # nifti | mha | tiff (what predictions are written as)

  @property
  def separator(self) -> str:
    return "-" if self.name == "brats2023" else "_"

  def file_name(self, case_id: str, suffix: str) -> str:
    return f"{case_id}{self.separator}{suffix}.nii.gz"


LAYOUTS = {
    "brats2021": Layout("brats2021", "brats2021", ("flair", "t1", "t1ce", "t2"), MODALITIES,
                        "nifti"),
    "brats2023": Layout("brats2023", "brats2023", ("t2f", "t1n", "t1c", "t2w"), MODALITIES,
                        "nifti"),
    "msd": Layout("msd", "msd", (), MODALITIES, "nifti"),
    # <root>/{HGG,LGG}/<patient>/VSD.Brain.XX.O.MR_<Flair|T1|T1c|T2>.<id>/<same>.mha, labels in
    # VSD.Brain_<n>more.XX.O.OT.<id>/...mha
    "brats2015": Layout("brats2015", "brats2015", ("Flair", "T1", "T1c", "T2"), MODALITIES,
                        "mha"),
    # <root>/{Flair,T1,T1c,T2,<OT|GT|...>}/<patient>.mha: one folder per channel
    "brats2015_repacked": Layout("brats2015_repacked", "brats2015", ("Flair", "T1", "T1c", "T2"),
                                 MODALITIES, "mha"),
    # kaggle_3m/<patient>/<patient>_<n>.tif (RGB: pre-contrast, FLAIR, post-contrast) and
    # <patient>_<n>_mask.tif (0/255)
    "lgg": Layout("lgg", "lgg", (), ("t1", "flair", "t1ce"), "tiff"),
}


def write_msd_dataset_json(root: str, num_training: int) -> None:
  """The Decathlon's dataset.json, as Task01_BrainTumour ships it (the parts we read)."""
  info = {
      "name": "BRATS", "tensorImageSize": "4D",
      "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
      "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor",
                 "3": "enhancing tumour"},
      "numTraining": num_training,
  }
  files.write_json(os.path.join(root, "dataset.json"), info, indent=2)


# <patient>_<n>.tif and <patient>_<n>_mask.tif
LGG_SLICE = re.compile(r"^(.+)_(\d+)(_mask)?\.tiff?$", re.IGNORECASE)


def lgg_slices(folder: str) -> tuple:
  """([image slice paths], [mask paths or None]) of a patient folder, ordered by slice
  number; anything else in the folder is ignored."""
  patient = os.path.basename(folder.rstrip("/"))
  images: dict[int, str] = {}
  masks: dict[int, str] = {}
  try:
    names = os.listdir(folder)
  except OSError as e:
    raise DataError(f"{folder}: cannot list folder ({e.strerror})") from None
  for name in names:
    match = LGG_SLICE.match(name)
    if match and match.group(1) == patient and not name.startswith("."):
      (masks if match.group(3) else images)[int(match.group(2))] = os.path.join(folder, name)
  if not images:
    raise DataError(f"{folder}: no {patient}_<n>.tif slices")
  order = sorted(images)
  missing = [n for n in order if masks and n not in masks]
  if missing:
    raise DataError(f"{os.path.join(folder, f'{patient}_{missing[0]}_mask.tif')}: missing "
                    "mask file")
  return [images[n] for n in order], ([masks[n] for n in order] if masks else None)
