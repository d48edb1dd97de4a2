"""Synthetic BraTS-like MRI: brain anatomy, tumours, four contrasts, any supported layout
(brats-jax-synth runs this).

Each case is a skull-stripped head: white matter, a cortical grey-matter shell, ventricles and
sulcal CSF, with a tumour made of edema around a core of necrosis and an enhancing rim (some
cases are non-enhancing). Each of FLAIR/T1/T1ce/T2 gives each tissue the contrast it has in
real scans; partial-volume blur, bias field and Rician noise are added, and volumes are stored
as int16 with a non-identity affine. Case i depends only on (seed, i).

With lookalikes, each case also holds what makes real scans hard and is not tumour: white-
matter hyperintensities (small FLAIR/T2-bright blobs, edema's contrast), enhancing choroid
plexus in the ventricles and enhancing vessels (T1ce-bright, the enhancing rim's contrast).
A model that has not learnt the tumour's context marks them: islands of false positives far
from the lesion, which is what post-processing and ensembles are for.
"""

import concurrent.futures
import os
import shutil

import numpy as np
from scipy import ndimage

from brats_jax.data import layouts
from brats_jax.imageio import metaimage, nifti, tiff
from brats_jax.labels import CONVENTIONS, ED, ET, NCR, NET, regions_from_labels
from brats_jax.progress import progress_bar

# Mean intensity of each tissue in (FLAIR, T1, T1ce, T2), relative units.
_CSF, _GM, _WM = 1, 2, 3
_TISSUE_CONTRAST = {
    _CSF: (0.15, 0.25, 0.25, 1.00),
    _GM: (0.60, 0.60, 0.62, 0.70),
    _WM: (0.45, 0.85, 0.85, 0.45),
}
_TUMOUR_CONTRAST = {
    ED: (0.95, 0.50, 0.52, 0.85),
    NCR: (0.55, 0.30, 0.32, 0.95),
    ET: (0.75, 0.55, 1.30, 0.70),
}


def _smooth_field(rng, shape, coarse=6):
  """A smooth random field in about [-1, 1]: coarse Gaussian noise, upsampled."""
  low = rng.standard_normal((coarse,) * 3)
  field = ndimage.zoom(low, [s / coarse for s in shape], order=1, mode="nearest")
  field = field[:shape[0], :shape[1], :shape[2]]
  return np.pad(field, [(0, s - f) for s, f in zip(shape, field.shape)], mode="edge")


# Lookalikes: contrast in (FLAIR, T1, T1ce, T2) of white-matter hyperintensities (edema-like)
# and of enhancing choroid plexus and vessels (like the enhancing rim in T1ce alone).
_HYPERINTENSITY_CONTRAST = (0.88, 0.55, 0.57, 0.80)
_ENHANCING_VESSEL_CONTRAST = (0.50, 0.55, 1.25, 0.60)


def _lookalikes(u, brain, tissue, tumour_distance, rng):
  """Masks (hyperintensities, enhancing) of non-tumour lookalikes, away from the tumour:
  4-9 white-matter blobs of 3-7% of the head's width, a choroid plexus in each lateral
  ventricle and 2-4 enhancing vessel segments."""
  away = brain & (tumour_distance > 1.0)
  hyper = np.zeros(brain.shape, bool)
  white = np.argwhere((tissue == _WM) & away)
  for _ in range(rng.integers(4, 10)):
    centre = u[tuple(white[rng.integers(len(white))])]
    radii = rng.uniform(0.03, 0.07) * rng.uniform(0.7, 1.4, 3)
    hyper |= np.linalg.norm((u - centre) / radii, axis=-1) < 1
  enhancing = np.zeros(brain.shape, bool)
  for side in (-1, 1):  # choroid plexus: a small blob in the floor of each lateral ventricle
    centre = np.array([0.13 * side, rng.uniform(-0.1, 0.15), 0.04])
    enhancing |= np.linalg.norm((u - centre) / np.array([0.05, 0.1, 0.05]), axis=-1) < 1
  for _ in range(rng.integers(2, 5)):  # vessel segments: thin straight tubes
    start = rng.uniform(-0.6, 0.6, 3)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    along = np.clip(((u - start) @ direction), 0, rng.uniform(0.2, 0.5))
    nearest = start + along[..., None] * direction
    enhancing |= np.linalg.norm(u - nearest, axis=-1) < rng.uniform(0.025, 0.045)
  return hyper & away & ~enhancing, enhancing & away


def make_case(shape, rng, p_non_enhancing=0.1, lookalikes_rng=None):
  """Returns images [X, Y, Z, 4] (float32, FLAIR/T1/T1ce/T2) and internal labels [X, Y, Z].
  With lookalikes_rng, lookalikes are drawn from it (the rest of the case is unchanged)."""
  grids = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
  u = np.stack(grids, -1)
  brain_radii = np.array([0.78, 0.9, 0.82]) * rng.uniform(0.92, 1.05, 3)
  r = np.linalg.norm(u / brain_radii, axis=-1) + 0.05 * _smooth_field(rng, shape)
  brain = r < 1.0
  tissue = np.where(r < 0.78 + 0.07 * _smooth_field(rng, shape, 10), _WM, _GM)
  tissue[(r > 0.96) & brain] = _CSF  # sulcal CSF under the (stripped) skull
  for side in (-1, 1):  # lateral ventricles
    centre = np.array([0.13 * side, 0.02, 0.08])
    ventricle = np.linalg.norm((u - centre) / np.array([0.08, 0.3, 0.12]), axis=-1) < 1
    tissue[ventricle] = _CSF
  tissue[~brain] = 0

  # Tumour: a lumpy ball of edema around an enhancing rim around necrosis.
  hemisphere = rng.choice([-1, 1])
  centre = np.array([hemisphere * rng.uniform(0.2, 0.45), rng.uniform(-0.4, 0.4),
                     rng.uniform(-0.3, 0.4)])
  edema_radius = rng.uniform(0.22, 0.4)
  core_radius = edema_radius * rng.uniform(0.45, 0.7)
  necrosis_radius = core_radius * rng.uniform(0.3, 0.65)
  d = np.linalg.norm((u - centre) / rng.uniform(0.8, 1.2, 3), axis=-1)
  d_edema = d * (1 + 0.3 * _smooth_field(rng, shape, 8))
  d_core = d * (1 + 0.2 * _smooth_field(rng, shape, 8))
  labels = np.zeros(shape, np.uint8)
  labels[(d_edema < edema_radius) & brain] = ED
  if rng.uniform() < p_non_enhancing:
    labels[(d_core < core_radius) & brain] = NCR
  else:
    labels[(d_core < core_radius) & brain] = ET
    labels[(d_core < necrosis_radius) & brain] = NCR

  images = np.zeros(shape + (4,), np.float32)
  for value, contrast in list(_TISSUE_CONTRAST.items()):
    images[tissue == value] = contrast
  if lookalikes_rng is not None:
    tumour_distance = d_edema / (edema_radius * 1.3)  # > 1: clear of the tumour's edema
    hyper, enhancing = _lookalikes(u, brain, tissue, tumour_distance, lookalikes_rng)
    images[hyper] = _HYPERINTENSITY_CONTRAST
    images[enhancing] = _ENHANCING_VESSEL_CONTRAST
  for value, contrast in _TUMOUR_CONTRAST.items():
    images[labels == value] = contrast
  for c in range(4):
    channel = images[..., c] * (1 + 0.04 * _smooth_field(rng, shape, 16))  # tissue texture
    channel = ndimage.gaussian_filter(channel, 0.7)  # partial volume
    channel *= np.exp(0.15 * _smooth_field(rng, shape, 4))  # bias field
    sigma = 0.025
    noisy = np.hypot(channel + sigma * rng.standard_normal(shape),
                     sigma * rng.standard_normal(shape))  # Rician magnitude noise
    images[..., c] = np.where(brain, noisy * rng.uniform(400, 1200), 0)
  return images, labels


def make_affine(rng, spacing):
  """A BraTS-like (LPS-flipped) affine with a random origin."""
  affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
  affine[:3, 3] = rng.uniform(-60, 60, 3)
  return affine


def case_id(layout: str, index: int) -> str:
  return {"brats2021": f"BraTS2021_{index:05d}", "brats2023": f"BraTS-GLI-{index:05d}-000",
          "msd": f"BRATS_{index + 1:03d}", "brats2015": f"brats_2013_pat{index + 1:04d}_1",
          "brats2015_repacked": f"brats_2013_pat{index + 1:04d}_1",
          "lgg": f"TCGA_SY_{index + 1:04d}_20261130"}[layout]


def _with_non_enhancing(labels):
  """BraTS 2015 tells non-enhancing tumour (3) from necrosis (1): the upper half of each
  tumour's non-enhancing core (by voxel count, ordered by height) becomes non-enhancing."""
  core = np.argwhere(labels == NCR)
  if len(core) > 1:
    upper = core[np.argsort(core[:, 2], kind="stable")[len(core) // 2:]]
    labels = labels.copy()
    labels[tuple(upper.T)] = NET
  return labels


def _write_brats2015(root, cid, index, images, seg, affine, repacked):
  spacing = np.abs(np.diag(affine)[:3])
  files = {}
  for c, suffix in enumerate(layouts.LAYOUTS["brats2015"].suffixes):
    files[suffix] = images[..., c]
  files["OT"] = seg
  for k, (suffix, data) in enumerate(files.items()):
    if repacked:
      path = os.path.join(root, suffix, f"{cid}.mha")
    else:
      grade = "HGG" if index % 2 == 0 else "LGG"
      kind = "VSD.Brain_3more.XX.O.OT" if suffix == "OT" else f"VSD.Brain.XX.O.MR_{suffix}"
      name = f"{kind}.{50000 + 10 * index + k}"
      path = os.path.join(root, grade, cid, name, name + ".mha")
    metaimage.save_mha(path, data, spacing, affine[:3, 3])


def _write_lgg(root, cid, images, labels):
  """Kaggle LGG: RGB uint8 slices (pre-contrast, FLAIR, post-contrast) and 0/255 masks."""
  channels = [layouts.MODALITIES.index(c) for c in layouts.LAYOUTS["lgg"].channels]
  rgb = images[..., channels].astype(np.float64)
  rgb = np.round(255 * rgb / max(rgb.max(), 1)).astype(np.uint8)
  mask = (regions_from_labels(labels)[..., 0] * 255).astype(np.uint8)
  tiff.save_lgg_case(os.path.join(root, cid), cid, rgb, mask)


def write_case(root, layout, index, shape, seed, spacing=(1.0, 1.0, 1.0), p_non_enhancing=0.1,
               lookalikes=False):
  """Writes case `index` of the synthetic dataset; returns its case id."""
  rng = np.random.default_rng([seed, index])
  lookalikes_rng = np.random.default_rng([seed, index, 1]) if lookalikes else None
  images, labels = make_case(tuple(shape), rng, p_non_enhancing, lookalikes_rng)
  images = np.round(images).astype(np.int16)
  affine = make_affine(rng, spacing)
  if layout.startswith("brats2015"):
    labels = _with_non_enhancing(labels)
  seg = CONVENTIONS[layouts.LAYOUTS[layout].convention].decode(labels)
  cid = case_id(layout, index)
  if layout.startswith("brats2015"):
    _write_brats2015(root, cid, index, images, seg, affine, layout == "brats2015_repacked")
    return cid
  if layout == "lgg":
    _write_lgg(root, cid, images, labels)
    return cid
  if layout == "msd":
    nifti.save_nifti(os.path.join(root, "imagesTr", cid + ".nii.gz"), images, affine)
    nifti.save_nifti(os.path.join(root, "labelsTr", cid + ".nii.gz"), seg, affine)
    return cid
  spec = layouts.LAYOUTS[layout]
  folder = os.path.join(root, cid)
  for c, suffix in enumerate(spec.suffixes):
    nifti.save_nifti(os.path.join(folder, spec.file_name(cid, suffix)), images[..., c], affine)
  nifti.save_nifti(os.path.join(folder, spec.file_name(cid, "seg")), seg, affine)
  return cid


def write_dataset(output, layout, num_cases, shape, seed=0, spacing=(1.0, 1.0, 1.0),
                  p_non_enhancing=0.1, num_workers=2, progress=False, lookalikes=False):
  """Writes a whole dataset under `output`, atomically (it appears only when complete)."""
  if layout not in layouts.LAYOUTS:
    raise ValueError(f"unknown layout {layout!r}; known: {', '.join(layouts.LAYOUTS)}")
  tmp = output.rstrip("/") + ".incomplete"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    jobs = [pool.submit(write_case, tmp, layout, i, shape, seed, spacing, p_non_enhancing,
                        lookalikes) for i in range(num_cases)]
    for job in progress_bar(concurrent.futures.as_completed(jobs), total=num_cases,
                            disable=not progress, desc="synth", unit="case"):
      job.result()
  if layout == "msd":
    layouts.write_msd_dataset_json(tmp, num_cases)
  if layout == "lgg":  # what the Kaggle download also holds, which readers must ignore
    with open(os.path.join(tmp, "data.csv"), "w") as f:
      f.write("Patient,RNASeqCluster\n" + "".join(f"{case_id(layout, i)},1\n"
                                                   for i in range(num_cases)))
    with open(os.path.join(tmp, "README.md"), "w") as f:
      f.write("synthetic Kaggle LGG layout (brats-jax-synth)\n")
  shutil.rmtree(output, ignore_errors=True)
  os.replace(tmp, output)
