"""Pictures: case overlays, Dice distributions and training curves (matplotlib, no display).

Colours are the same everywhere: edema green, necrosis red, enhancing tumour yellow.
"""

import numpy as np
from matplotlib import animation
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from brats_jax import files
from brats_jax.data.layouts import MODALITIES
from brats_jax.labels import ED, ET, INTERNAL_NAMES, NCR, NET, OTHER, REGIONS, TUMOUR

LABEL_COLOURS = {ED: (0.1, 0.8, 0.2), NCR: (0.9, 0.1, 0.1),
                 ET: (1.0, 0.85, 0.0), OTHER: (0.3, 0.5, 1.0),
                 NET: (0.9, 0.45, 0.1), TUMOUR: (0.0, 0.9, 0.9)}
LAST_LABEL = max(INTERNAL_NAMES)
LABEL_CMAP = ListedColormap([(0, 0, 0, 0)] + [LABEL_COLOURS[v] + (1.0,)
                                         for v in range(1, LAST_LABEL + 1)])


def _legend(*label_volumes):
  """Patches for the tumour labels present (edema, necrosis, enhancing at least)."""
  present = set(np.unique(np.concatenate([np.unique(v) for v in label_volumes])).tolist())
  shown = [v for v in LABEL_COLOURS if v in present or v in (ED, NCR,
                                                                ET)]
  return [Patch(color=LABEL_COLOURS[v], label=INTERNAL_NAMES[v]) for v in shown]


PLANE_AXES = {"axial": 2, "coronal": 1, "sagittal": 0}  # the volume axis a plane cuts
PLANES = tuple(PLANE_AXES)


def plane_slice(volume, plane, index):
  """A 2D view of a [X, Y, Z, ...] volume, rotated so that anterior/superior is up."""
  return np.rot90(np.take(volume, index, axis=PLANE_AXES[plane]))


def tumour_centre(reference, predicted):
  """Voxel through which the planes are drawn: reference centroid, else prediction's."""
  for labels in (reference, predicted):
    if labels is not None and (labels > 0).any():
      return np.round(np.argwhere(labels > 0).mean(0)).astype(int)
  return np.array(predicted.shape) // 2


def contrast_limits(channel):
  values = channel[channel != 0]
  return np.percentile(values, [1, 99]) if values.size else (0, 1)


def case_overlay(images, reference, predicted, path, title="", channels=MODALITIES):
  """PNG: rows = axial/coronal/sagittal planes through the tumour; columns = each channel
  (named by `channels`), then reference and predicted labels over the FLAIR (or the first)
  channel. Labels are internal."""
  centre = tumour_centre(reference, predicted)
  base = list(channels).index("flair") if "flair" in channels else 0
  columns = list(channels) + ["reference", "prediction"]
  limits = [contrast_limits(images[..., c]) for c in range(images.shape[-1])]
  fig, axes = figure(3, len(columns), figsize=(2.2 * len(columns), 7.2),
                           facecolor="black")
  for row, plane in enumerate(PLANES):
    index = centre[PLANE_AXES[plane]]
    for col, name in enumerate(columns):
      ax = axes[row, col]
      channel = col if col < len(channels) else base
      ax.imshow(plane_slice(images[..., channel], plane, index), cmap="gray",
                vmin=limits[channel][0], vmax=limits[channel][1], interpolation="nearest")
      labels = {"reference": reference, "prediction": predicted}.get(name)
      if labels is not None:
        ax.imshow(plane_slice(labels, plane, index), cmap=LABEL_CMAP, vmin=0,
                  vmax=LAST_LABEL, alpha=0.55, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if row == 0:
        ax.set_title(name.upper() if col < len(channels) else name, color="white",
                     fontsize=10)
      if col == 0:
        ax.set_ylabel(f"{plane} {index}", color="white", fontsize=9)
  handles = _legend(reference, predicted)
  fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
             labelcolor="white")
  fig.suptitle(title, color="white")
  fig.tight_layout(rect=(0, 0.04, 1, 0.97))
  save_png(fig, path)


def case_sweep_gif(images, reference, predicted, path, fps=8):
  """Animated GIF sweeping the axial slices that contain tumour: FLAIR, reference, prediction."""
  tumour = np.flatnonzero(((reference > 0) | (predicted > 0)).any(axis=(0, 1)))
  indices = range(tumour[0], tumour[-1] + 1) if tumour.size else range(images.shape[2])
  low, high = contrast_limits(images[..., 0])
  fig, axes = figure(1, 3, figsize=(7.5, 2.9), facecolor="black")
  frames = []
  for index in indices:
    artists = []
    for ax, labels in zip(axes, (None, reference, predicted)):
      artists.append(ax.imshow(plane_slice(images[..., 0], "axial", index), cmap="gray", vmin=low,
                               vmax=high, animated=True))
      if labels is not None:
        artists.append(ax.imshow(plane_slice(labels, "axial", index), cmap=LABEL_CMAP,
                                 vmin=0, vmax=LAST_LABEL, alpha=0.55, animated=True))
    frames.append(artists)
  for ax, name in zip(axes, ("FLAIR", "reference", "prediction")):
    ax.set_title(name, color="white", fontsize=10)
    ax.axis("off")
  movie = animation.ArtistAnimation(fig, frames, interval=1000 // fps)
  files.write_atomic(path, lambda tmp: movie.save(tmp, writer=animation.PillowWriter(fps=fps)))


def dice_distribution(rows, path, title="Dice per region"):
  """Box plot with every case as a dot, one box per region."""
  fig, ax = figure(figsize=(5, 4))
  regions = [r for r in REGIONS if f"{r}_dice" in rows[0]]
  data = [[float(r[f"{region}_dice"]) for r in rows] for region in regions]
  ax.boxplot(data, tick_labels=regions, showmeans=True)
  rng = np.random.default_rng(0)
  for i, values in enumerate(data):
    ax.scatter(1 + i + rng.uniform(-0.08, 0.08, len(values)), values, s=12, alpha=0.6)
  ax.set_ylim(-0.02, 1.02)
  ax.set_ylabel("Dice")
  ax.set_title(f"{title} ({len(rows)} cases)")
  ax.grid(axis="y", alpha=0.3)
  save_png(fig, path)


# The per-region panels of training_curves: (metric key, title).
_CURVE_METRICS = (("dice", "Dice"), ("iou", "IoU"), ("accuracy", "accuracy"),
                  ("precision", "precision"), ("recall", "recall"))


def training_curves(records, path):
  """Training and validation loss; Dice, IoU, accuracy, precision and recall per region
  (faint: training patches; dots: validation cases); samples/s; against step, from
  metrics.jsonl."""
  train = [r for r in records if "train/loss" in r]
  val = [r for r in records if "val/mean_dice" in r]
  fig, axes = figure(2, 4, figsize=(18, 7.2))
  axes = axes.ravel()
  axes[0].plot([r["step"] for r in train], [r["train/loss"] for r in train],
               label="training patches")
  val_loss = [r for r in val if "val/loss" in r]
  if val_loss:
    axes[0].plot([r["step"] for r in val_loss], [r["val/loss"] for r in val_loss], "o-",
                 label="validation cases")
  axes[0].set_title("loss")
  axes[0].legend()
  regions = [g for g in REGIONS if train and f"train/dice_{g}" in train[0]]
  for ax, (name, title) in zip(axes[1:], _CURVE_METRICS):
    for region in regions:
      key = region if name == "dice" else f"{name}_{region}"
      line, = ax.plot([r["step"] for r in val if f"val/{key}" in r],
                      [r[f"val/{key}"] for r in val if f"val/{key}" in r], "o-", label=region)
      ax.plot([r["step"] for r in train if f"train/{name}_{region}" in r],
              [r[f"train/{name}_{region}"] for r in train if f"train/{name}_{region}" in r],
              alpha=0.3, color=line.get_color())
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title} (dots: validation cases; faint: training patches)", fontsize=9)
    ax.legend()
  axes[6].plot([r["step"] for r in train], [r["train/samples_per_second"] for r in train])
  axes[6].set_title("samples / s")
  if train and "train/epoch" in train[-1]:
    axes[7].plot([r["step"] for r in train], [r["train/epoch"] for r in train])
    axes[7].set_title("epoch")
  else:
    axes[7].set_visible(False)
  for ax in axes:
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  save_png(fig, path)


def figure(rows: int = 1, columns: int = 1, figsize=None, facecolor=None, squeeze=True,
           **subplots) -> tuple:
  """(figure, axes) as pyplot.subplots gives them, drawn on an Agg canvas of its own:
  nothing global changes (pyplot's backend, an interactive session's figures)."""
  fig = Figure(figsize=figsize, facecolor=facecolor)
  FigureCanvasAgg(fig)
  return fig, fig.subplots(rows, columns, squeeze=squeeze, **subplots)


def save_png(fig, path):
  files.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight",
                                                   facecolor=fig.get_facecolor(), format="png"))
