"""Data: the HDF5 reader, dataset modules (LA, ACDC, or a bundle's own) with their data lists, slice datasets and
synthetic datasets."""

from __future__ import annotations

from typing import Any

from .datalists import (
    ACDC_LAYOUTS,
    LA_LAYOUTS,
    acdc_datalists,
    case_id_from_path,
    detect_acdc_layout,
    detect_la_layout,
    la_datalists,
    patient_id,
    read_id_list,
)
from .datasets import dataset_datalists, load_dataset_module, raw_label_map, resolve_layout
from .decathlon import (
    DecathlonDataset,
    convert_acdc_to_decathlon,
    convert_la_to_decathlon,
    make_decathlon_case,
    read_decathlon,
    write_decathlon_dataset,
)
from .folders import INFERENCE_PATTERNS, image_folder_datalist
from .loading import (
    LA_RAW_LABEL_MAP,
    LAYOUTS,
    CheckChannelCountd,
    MapLabelValuesStrictd,
    intensity_transforms,
    load_transforms,
)
from .readers import H5Reader, hide_reader_fallback_notices, list_h5_datasets
from .slices import HDF5_SUFFIXES, ReorderHDF5Stackd, VolumeSliceDataset, is_hdf5_source
from .studies import STUDY_SUFFIXES, is_studies_folder, monailabel_studies, studies_datalists
from .validation import validate_datalists, validate_item

_SYNTHETIC = ("make_acdc_case", "make_la_case", "write_acdc_dataset", "write_la_dataset")


def __getattr__(name: str) -> Any:  # the generator is imported on first use, so `python -m ...synthetic` runs cleanly
    if name in _SYNTHETIC:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ACDC_LAYOUTS",
    "CheckChannelCountd",
    "HDF5_SUFFIXES",
    "INFERENCE_PATTERNS",
    "LAYOUTS",
    "LA_LAYOUTS",
    "LA_RAW_LABEL_MAP",
    "MapLabelValuesStrictd",
    "STUDY_SUFFIXES",
    "H5Reader",
    "ReorderHDF5Stackd",
    "VolumeSliceDataset",
    "acdc_datalists",
    "case_id_from_path",
    "dataset_datalists",
    "detect_acdc_layout",
    "detect_la_layout",
    "hide_reader_fallback_notices",
    "image_folder_datalist",
    "intensity_transforms",
    "is_hdf5_source",
    "is_studies_folder",
    "la_datalists",
    "list_h5_datasets",
    "load_dataset_module",
    "load_transforms",
    "make_acdc_case",
    "make_la_case",
    "monailabel_studies",
    "patient_id",
    "raw_label_map",
    "read_id_list",
    "resolve_layout",
    "validate_datalists",
    "validate_item",
    "studies_datalists",
    "write_acdc_dataset",
    "write_la_dataset",
    "DecathlonDataset",
    "convert_acdc_to_decathlon",
    "convert_la_to_decathlon",
    "make_decathlon_case",
    "read_decathlon",
    "write_decathlon_dataset",
]
