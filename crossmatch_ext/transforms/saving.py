"""Writing the label maps an inference run produces."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import SaveImaged

__all__ = ["SaveLabelMapd"]


class SaveLabelMapd(SaveImaged):
    """MONAI's ``SaveImaged`` set up for segmentation output: ``<output_dir>/<name>_seg.nii.gz`` as uint8 with the
    input's geometry (no resampling: the prediction is on the input's grid), one folder, the input's sub-folders below
    ``input_dir`` kept, and a log line per file.

    A subclass, so that tools which drop ``SaveImaged`` from a bundle's post-processing (MONAI Label returns the
    label map itself) drop it too.

    Args:
        keys: the label map's key (``"pred"``).
        output_dir: where the files are written.
        input_dir: the folder the inputs were found in (their sub-folders are repeated under ``output_dir``); a file
            or None: no sub-folders.
        kwargs: any other argument of ``SaveImaged`` (e.g. ``output_postfix``, ``output_ext``).
    """

    def __init__(self, keys: KeysCollection, output_dir: str | os.PathLike, input_dir: str | os.PathLike | None = None,
                 **kwargs: Any) -> None:
        data_root_dir = os.fspath(input_dir) if input_dir is not None and os.path.isdir(input_dir) else ""
        settings: dict[str, Any] = {
            "output_postfix": "seg", "output_ext": ".nii.gz", "output_dtype": np.uint8, "resample": False,
            "separate_folder": False, "print_log": True, "data_root_dir": data_root_dir,
        }
        settings.update(kwargs)
        super().__init__(keys=keys, output_dir=os.fspath(output_dir), **settings)
