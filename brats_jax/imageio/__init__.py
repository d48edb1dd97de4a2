"""Medical image files, read with one clear DataError per broken file, written atomically.

  nifti.py      NIfTI (nibabel): BraTS 2018+, the Decathlon
  metaimage.py  MetaImage .mha (SimpleITK): BraTS 2015
  tiff.py       folders of TIFF slices (tifffile): Kaggle LGG
  checks.py     what every reader checks first (the file, the declared size)
"""
