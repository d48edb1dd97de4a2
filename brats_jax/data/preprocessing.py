"""What prepare and predict do to a raw case (raw_cases.py reads it) before the model sees it,
and how a prediction is put back into the case's geometry.

The options `describe` records:
  crop           brain: to the bounding box of voxels nonzero in any channel (default);
                 centre: a box of crop_shape centred on the volume (padded where larger)
  normalisation  zscore: per channel over brain voxels, background stays 0 (default);
                 minmax: per channel to [0, 1]; divide: by divide_by (e.g. 255 for 8-bit
                 data); none
  smooth_sigma   Gaussian smoothing per channel (voxels; 0: none)
  sharpen        Laplacian sharpening x - sharpen * laplace(x) (0: none)
  resize_shape   resampled to this shape after cropping (linear; labels nearest)
The store's manifest records what was applied, and every checkpoint's inference contract
carries it, so prediction applies exactly the preprocessing the model was trained with (and
`to_original_geometry` puts predictions back into the input's geometry), or refuses one it
does not know.
"""

import numpy as np
from scipy import ndimage

from brats_jax.data.layouts import MODALITIES
from brats_jax.errors import DataError

CROPS = ("brain", "centre")
NORMALISATIONS = ("zscore", "minmax", "divide", "none")
# Names earlier stores recorded for the defaults.
_LEGACY = {"nonzero_bounding_box": "brain", "zscore_nonzero": "zscore"}


def describe(channels=MODALITIES, crop: str = "brain", crop_shape=None,
             normalisation: str = "zscore", divide_by: float = 255.0,
             smooth_sigma: float = 0.0, sharpen: float = 0.0, resize_shape=None) -> dict:
  """The record of a preprocessing (what prepare writes into the manifest)."""
  return {"crop": crop, "crop_shape": list(crop_shape) if crop_shape else None,
          "normalisation": normalisation, "divide_by": float(divide_by),
          "smooth_sigma": float(smooth_sigma), "sharpen": float(sharpen),
          "resize_shape": list(resize_shape) if resize_shape else None,
          "channels": list(channels)}


def resolve(recorded: dict, where: str) -> dict:
  """A recorded preprocessing with every option (older records: their defaults), or a
  DataError if this version cannot apply it."""
  full = describe(recorded.get("channels", MODALITIES))
  full.update({k: _LEGACY.get(v, v) if isinstance(v, str) else v
               for k, v in recorded.items()})
  if full["crop"] not in CROPS or full["normalisation"] not in NORMALISATIONS:
    raise DataError(f"{where}: preprocessing crop={full['crop']!r}, normalisation="
                    f"{full['normalisation']!r} is not one this version applies (crop: "
                    f"{', '.join(CROPS)}; normalisation: {', '.join(NORMALISATIONS)})")
  if full["crop"] == "centre" and not full["crop_shape"]:
    raise DataError(f"{where}: preprocessing crop=centre needs a crop_shape")
  return full


def check_supported(recorded: dict, where: str) -> None:
  """Refuses a recorded preprocessing this version cannot apply."""
  resolve(recorded, where)


def preparation(recorded: dict) -> dict:
  """A recorded preprocessing without its channel list: two stores (or a store and a model)
  agree on how cases were prepared when these are equal, whichever channels they hold."""
  return {k: v for k, v in recorded.items() if k != "channels"}


def brain_box(images: np.ndarray, labels, path: str):
  """Bounding box [(lo, hi)] of nonzero voxels in any channel (and of any labelled voxel)."""
  mask = np.any(images != 0, axis=-1)
  if labels is not None:
    mask |= labels > 0
  if not mask.any():
    raise DataError(f"{path}: image is empty (no nonzero voxel)")
  box = []
  for axis in range(3):
    other = tuple(a for a in range(3) if a != axis)
    nonzero = np.flatnonzero(mask.any(axis=other))
    box.append((int(nonzero[0]), int(nonzero[-1]) + 1))
  return box


def centre_box(shape, crop_shape) -> list:
  """[(lo, hi)] of a crop_shape box centred on a volume of `shape` (may reach outside)."""
  return [((s - c) // 2, (s - c) // 2 + c) for s, c in zip(shape, crop_shape)]


def _box_overlap(box, shape) -> tuple:
  """(slices of a volume of `shape`, the same voxels' slices in the box) where a box
  [(lo, hi)] per axis, which may reach outside the volume, overlaps it."""
  in_volume = tuple(slice(max(lo, 0), min(hi, n)) for (lo, hi), n in zip(box, shape))
  in_box = tuple(slice(max(lo, 0) - lo, min(hi, n) - lo) for (lo, hi), n in zip(box, shape))
  return in_volume, in_box


def _crop(volume: np.ndarray, box) -> np.ndarray:
  """The box of a volume; parts of the box outside the volume are zero."""
  out = np.zeros(tuple(hi - lo for lo, hi in box) + volume.shape[3:], volume.dtype)
  in_volume, in_box = _box_overlap(box, volume.shape)
  out[in_box] = volume[in_volume]
  return out


def normalise(images: np.ndarray, how: str = "zscore", divide_by: float = 255.0):
  """Per channel: z-score over brain voxels (nonzero in any channel; background stays 0),
  min-max to [0, 1], division by a constant, or nothing."""
  if how == "none":
    return images
  if how == "divide":
    return images / np.float32(divide_by)
  out = np.zeros_like(images)
  if how == "minmax":
    for c in range(images.shape[-1]):
      lo, hi = images[..., c].min(), images[..., c].max()
      out[..., c] = (images[..., c] - lo) / (hi - lo if hi > lo else 1.0)
    return out
  brain = np.any(images != 0, axis=-1)
  for c in range(images.shape[-1]):
    values = images[..., c][brain]
    std = values.std()
    out[..., c][brain] = (values - values.mean()) / (std if std > 1e-8 else 1.0)
  return out


def _filter(images: np.ndarray, sigma: float, sharpen: float) -> np.ndarray:
  """Gaussian smoothing, then Laplacian sharpening, per channel (unet3d_softmax_brats2020.py's
  filters)."""
  out = images.copy()
  for c in range(images.shape[-1]):
    if sigma:
      out[..., c] = ndimage.gaussian_filter(out[..., c], sigma)
    if sharpen:
      out[..., c] = out[..., c] - sharpen * ndimage.laplace(out[..., c])
  return out


def _zoom(volume: np.ndarray, shape, order: int) -> np.ndarray:
  factors = [t / s for t, s in zip(shape, volume.shape[:3])] + [1] * (volume.ndim - 3)
  out = ndimage.zoom(volume, factors, order=order, mode="nearest")
  return out[tuple(slice(0, t) for t in shape)]


def preprocess(images: np.ndarray, labels, path: str, options: dict | None = None):
  """(model-ready images, labels or None, geometry) of a raw case; `geometry` is what
  `restore` needs to put a prediction back: the crop box and the shape before resizing."""
  options = resolve(options or {}, path)
  if options["crop"] == "brain":
    box = brain_box(images, labels, path)
  else:
    box = centre_box(images.shape[:3], options["crop_shape"])
  image = _crop(images, box)
  labels = None if labels is None else _crop(labels, box)
  image = normalise(image, options["normalisation"], options["divide_by"])
  if options["smooth_sigma"] or options["sharpen"]:
    image = _filter(image, options["smooth_sigma"], options["sharpen"])
  geometry = {"box": [list(b) for b in box], "cropped_shape": list(image.shape[:3])}
  if options["resize_shape"]:
    image = _zoom(image, options["resize_shape"], 1)
    labels = None if labels is None else _zoom(labels, options["resize_shape"], 0)
  return image.astype(np.float32), labels, geometry


def probabilities_to_original_geometry(probabilities: np.ndarray, geometry: dict,
                                      original_shape, outside) -> np.ndarray:
  """Model-space probabilities [X, Y, Z, K] -> the input's geometry: resizing undone by
  linear interpolation, the crop undone with `outside` (one value per output: what the
  model says of background) beyond it."""
  cropped_shape = tuple(geometry["cropped_shape"])
  if probabilities.shape[:3] != cropped_shape:
    probabilities = np.clip(_zoom(probabilities, cropped_shape, 1), 0, 1)
  out = np.broadcast_to(np.asarray(outside, probabilities.dtype),
                        tuple(original_shape) + probabilities.shape[3:]).copy()
  in_volume, in_box = _box_overlap(geometry["box"], original_shape)
  out[in_volume] = probabilities[in_box]
  return out


def to_original_geometry(labels: np.ndarray, geometry: dict, original_shape) -> np.ndarray:
  """Model-space labels -> labels in the input's geometry (resize undone by nearest
  neighbour, crop undone; voxels outside the crop are background)."""
  cropped_shape = tuple(geometry["cropped_shape"])
  if labels.shape != cropped_shape:
    labels = _zoom(labels, cropped_shape, 0)
  out = np.zeros(tuple(original_shape), labels.dtype)
  in_volume, in_box = _box_overlap(geometry["box"], original_shape)
  out[in_volume] = labels[in_box]
  return out
