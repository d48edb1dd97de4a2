"""The label vocabulary: internal label values, the WT/TC/ET regions, and the conventions that
map each dataset's label values to internal ones and back.

Every source convention is turned into internal values on the way in and back on the way
out. Regions are defined on internal labels only, so no other module needs to know which
convention a dataset used.
"""

import dataclasses

import numpy as np

from brats_jax.errors import DataError

# Internal label values. NET is BraTS 2015's non-enhancing tumour (later challenges merged it
# into NCR); TUMOUR is an abnormality without sub-labels (binary masks such as Kaggle LGG's).
BACKGROUND, NCR, ED, ET, OTHER, NET, TUMOUR = 0, 1, 2, 3, 4, 5, 6
INTERNAL_NAMES = {NCR: "necrosis", ED: "edema", ET: "enhancing", OTHER: "other",
                  NET: "non-enhancing", TUMOUR: "tumour"}
REGIONS = ("WT", "TC", "ET")
REGION_LABELS = {"WT": (NCR, ED, ET, NET, TUMOUR), "TC": (NCR, ET, NET), "ET": (ET,)}
# The tumour labels as separate classes (BraTS 2015's non-enhancing tumour counts as necrosis):
# the labels task's outputs, softmax's classes 1-3 and the per-label metrics.
LABEL_GROUPS = {"NCR": (NCR, NET), "ED": (ED,), "ET": (ET,)}
# An internal label a convention has no value for is written as the first of these it has.
_WRITTEN_AS = {NET: (NCR, TUMOUR), TUMOUR: (ED, NCR), NCR: (TUMOUR,), ED: (TUMOUR,),
               ET: (TUMOUR,), OTHER: ()}


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

  @property
  def binary(self) -> bool:
    """Only background and an unspecified tumour (no regions but the whole tumour)."""
    return set(self.to_internal.values()) <= {BACKGROUND, TUMOUR}

  def decode(self, internal: np.ndarray) -> np.ndarray:
    """Internal labels -> this convention's values (uint8). A label the convention lacks is
    written as its nearest one (_WRITTEN_AS): a binary model's tumour as edema in BraTS
    conventions (so it scores as the whole tumour), any tumour label as a binary mask's
    tumour value."""
    values = {internal: src for src, internal in self.to_internal.items()}
    lut = np.zeros(max(INTERNAL_NAMES) + 1, np.uint8)
    for label in INTERNAL_NAMES:
      for candidate in (label,) + _WRITTEN_AS[label]:
        if candidate in values:
          lut[label] = values[candidate]
          break
    return lut[internal.astype(np.int64)]


CONVENTIONS = {
    # BraTS 2018-2021 (and 2022 training): 4 is enhancing tumour.
    "brats2021": LabelConvention("brats2021", {0: BACKGROUND, 1: NCR, 2: ED, 4: ET}),
    # BraTS 2023+: 3 is enhancing tumour; 2024 post-treatment adds 4, resection cavity.
    "brats2023": LabelConvention("brats2023", {0: BACKGROUND, 1: NCR, 2: ED, 3: ET, 4: OTHER}),
    # Medical Segmentation Decathlon Task01: 1 edema, 2 non-enhancing tumour, 3 enhancing.
    "msd": LabelConvention("msd", {0: BACKGROUND, 1: ED, 2: NCR, 3: ET}),
    # BraTS 2015: 1 necrosis, 2 edema, 3 non-enhancing tumour, 4 enhancing tumour.
    "brats2015": LabelConvention("brats2015", {0: BACKGROUND, 1: NCR, 2: ED, 3: NET, 4: ET}),
    # Kaggle LGG (Buda et al.): FLAIR abnormality masks, 0 or 255.
    "lgg": LabelConvention("lgg", {0: BACKGROUND, 255: TUMOUR}),
}


def regions_from_labels(labels: np.ndarray) -> np.ndarray:
  """Internal labels [...] -> boolean region masks [..., 3] in the order WT, TC, ET."""
  return np.stack([np.isin(labels, REGION_LABELS[r]) for r in REGIONS], axis=-1)
