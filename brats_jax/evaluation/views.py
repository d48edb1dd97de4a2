"""The views seed users draw of a case: a grid of chosen slices (image, reference,
prediction), every slice of a slice-wise dataset with its false positives marked, and a
rotating maximum-intensity projection of reference against prediction (brats-jax-evaluate
--slices, --per_slice, --rotating). Labels are internal; colours are plots.py's."""

import numpy as np
from matplotlib import animation
from scipy import ndimage

from brats_jax import files
from brats_jax.evaluation.plots import (
  LABEL_CMAP,
  LAST_LABEL,
  contrast_limits,
  figure,
  plane_slice,
  save_png,
)
from brats_jax.labels import ED, ET, NCR, NET, OTHER, TUMOUR


def parse_slices(text: str, depth: int) -> list:
  """"70:75" (Python's range: 70-74) or "70,72,80" -> axial slice indices inside depth."""
  if ":" in text:
    start, stop = (int(v) for v in text.split(":"))
    indices = list(range(start, stop))
  else:
    indices = [int(v) for v in text.split(",") if v]
  inside = [i for i in indices if 0 <= i < depth]
  if not inside:
    raise ValueError(f"--slices={text}: no slice inside the case's {depth} axial slices")
  return inside


def slice_grid(images, reference, predicted, path, slices, title="", channel=0):
  """PNG: one row per chosen axial slice: the image, the reference and the prediction."""
  low, high = contrast_limits(images[..., channel])
  fig, axes = figure(len(slices), 3, figsize=(7.5, 2.5 * len(slices)),
                           facecolor="black", squeeze=False)
  for row, index in enumerate(slices):
    for col, labels in enumerate((None, reference, predicted)):
      ax = axes[row, col]
      ax.imshow(plane_slice(images[..., channel], "axial", index), cmap="gray", vmin=low,
                vmax=high, interpolation="nearest")
      if labels is not None:
        ax.imshow(plane_slice(labels, "axial", index), cmap=LABEL_CMAP, vmin=0,
                  vmax=LAST_LABEL, alpha=0.55, interpolation="nearest")
      ax.set_title(f"slice {index}: " + ("image", "reference", "prediction")[col],
                   color="white", fontsize=9)
      ax.axis("off")
  fig.suptitle(title, color="white")
  fig.tight_layout()
  save_png(fig, path)


def per_slice_view(images, reference, predicted, path, title="", max_slices=24, channel=0):
  """PNG: evenly spaced axial slices, tumour-free ones included, each the image with the
  reference outlined (white) and the prediction filled; a slice with a predicted tumour
  where the reference has none is framed red and titled "false positive"."""
  depth = images.shape[2]
  indices = np.unique(np.linspace(0, depth - 1, min(depth, max_slices)).round().astype(int))
  columns = 6
  rows = -(-len(indices) // columns)
  low, high = contrast_limits(images[..., channel])
  fig, axes = figure(rows, columns, figsize=(2.2 * columns, 2.3 * rows),
                           facecolor="black", squeeze=False)
  false_positives = 0
  for ax, index in zip(axes.ravel(), indices):
    ref, pred = reference[..., index] > 0, predicted[..., index] > 0
    ax.imshow(np.rot90(images[..., index, channel]), cmap="gray", vmin=low, vmax=high)
    ax.imshow(np.rot90(np.where(pred, predicted[..., index], 0)), cmap=LABEL_CMAP, vmin=0,
              vmax=LAST_LABEL, alpha=0.5, interpolation="nearest")
    if ref.any():
      ax.contour(np.rot90(ref.astype(float)), levels=[0.5], colors="white", linewidths=0.8)
    state = "tumour" if ref.any() else "no tumour"
    if pred.any() and not ref.any():
      state, false_positives = "false positive", false_positives + 1
      for spine in ax.spines.values():
        spine.set_edgecolor("red")
        spine.set_linewidth(3)
    ax.set_title(f"{index}: {state}", color="red" if state == "false positive" else "white",
                 fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
  for ax in axes.ravel()[len(indices):]:
    ax.set_visible(False)
  fig.suptitle(f"{title}  (white outline: reference; fill: prediction; {false_positives} "
               "false-positive slices shown)", color="white", fontsize=10)
  fig.tight_layout()
  save_png(fig, path)
  return false_positives


# Which label shows where several lie behind one another in a projection: the inner ones.
_IN_FRONT = (ED, OTHER, TUMOUR, NCR, NET, ET)


def label_projection(labels: np.ndarray, axis: int) -> np.ndarray:
  rank = np.zeros(LAST_LABEL + 1, np.uint8)
  rank[list(_IN_FRONT)] = np.arange(1, len(_IN_FRONT) + 1)
  label_of_rank = np.array((0,) + _IN_FRONT, np.uint8)
  return label_of_rank[rank[labels].max(axis=axis)]


def rotating_projection_gif(reference, predicted, path, frames=24, fps=8, step=2):
  """Animated GIF: the reference and the predicted tumour labels turning about the vertical
  (superior) axis, each frame a maximum-intensity projection of the label colours (labels
  taken every `step` voxels, which keeps the rotation quick)."""
  views = [labels[::step, ::step, ::step] for labels in (reference, predicted)]
  fig, axes = figure(1, 2, figsize=(6.5, 3.4), facecolor="black")
  artists = []
  for angle in np.linspace(0, 360, frames, endpoint=False):
    frame = []
    for ax, labels in zip(axes, views):
      turned = ndimage.rotate(labels, angle, axes=(0, 1), order=0, reshape=False)
      projection = np.rot90(label_projection(turned, axis=1))
      frame.append(ax.imshow(projection, cmap=LABEL_CMAP, vmin=0, vmax=LAST_LABEL,
                             interpolation="nearest", animated=True))
    artists.append(frame)
  for ax, name in zip(axes, ("reference", "prediction")):
    ax.set_title(name, color="white", fontsize=10)
    ax.axis("off")
  movie = animation.ArtistAnimation(fig, artists, interval=1000 // fps)
  files.write_atomic(path, lambda tmp: movie.save(tmp, writer=animation.PillowWriter(fps=fps)))
