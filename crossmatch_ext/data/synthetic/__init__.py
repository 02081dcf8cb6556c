"""Synthetic cardiac MRI datasets in the layouts of the LA and ACDC semi-supervised benchmarks.

Two generators produce MRI-like cases with exact ground truth, deterministically from a seed:

- :func:`make_la_case`: a 3D LGE-MRI-like crop around a left atrium, ``(x, y, z)`` with the slice axis last,
  z-score normalised (``float32``) with a binary label (``uint8`` 0/1). The atrium is an irregular bright chamber
  with one to three pulmonary vein stubs and a thin, unlabeled wall, surrounded by textured tissue, dark air-like
  regions and bright unlabeled distractors (an aorta-like tube, neighbouring blood pools, small vessels), under a
  smooth multiplicative bias field and Rician noise.
- :func:`make_acdc_case`: a cine-MRI-like short-axis stack ``(slices, height, width)`` scaled to ``[0, 1]``
  (``float32``) with labels ``uint8`` 0 background, 1 right ventricle, 2 myocardium, 3 left ventricle. The left
  ventricle (bright disc with papillary muscles) is enclosed by the dark myocardial ring, the right ventricle is a
  bright crescent against the septum; all shrink from base to apex, with an open ring and an unlabeled atrium at
  the base. Body, fat, lungs, liver, aorta and small vessels make the background, with bias field and noise.

The writers lay the cases out exactly like the files the semi-supervised segmentation community distributes
(UA-MT / SSL4MIS / CrossMatch), optionally with NIfTI copies and MONAI datalists, or the raw challenge layouts:

- :func:`write_la_dataset`: ``<out>/<CASE_ID>/mri_norm2.h5`` (``image``, ``label``), ``train.list``,
  ``val.list``, ``train_<N>_label.list``; ``<out>/nifti/{imagesTr,labelsTr}/<CASE_ID>.nii.gz`` and
  ``<out>/nifti/datalist.json``; ``<out>/raw/<CASE_ID>/{lgemri,laendo}.nrrd`` and the same lists in ``<out>/raw``.
- :func:`write_acdc_dataset`: ``<out>/volumes/patientNNN_frame0{1,2}.h5``, ``train.list``, ``val.list``,
  ``train_<N>_label.list``; ``<out>/raw/patientNNN/patientNNN_frameMM[_gt].nii.gz``, ``Info.cfg`` and
  ``<out>/raw/datalist.json``.

Run ``python -m crossmatch_ext.data.synthetic --help`` for the command line. Modules: :mod:`.fields` (random
fields, shapes and noise), :mod:`.common` (argument checks and writers), :mod:`.la` and :mod:`.acdc` (the two
generators and their layouts), :mod:`.cli` (the command line).
"""

from __future__ import annotations

from .acdc import ACDC_SLICE_SPACING_MM, make_acdc_case, make_acdc_patient, write_acdc_dataset
from .cli import main
from .la import LA_SPACING_MM, make_la_case, write_la_dataset

__all__ = [
    "LA_SPACING_MM",
    "ACDC_SLICE_SPACING_MM",
    "make_la_case",
    "make_acdc_case",
    "make_acdc_patient",
    "write_la_dataset",
    "write_acdc_dataset",
    "main",
]
