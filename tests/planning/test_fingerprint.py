"""fingerprint: MONAI's DataAnalyzer over a checked Decathlon folder, summarised (tiny generated volumes)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from crossmatch_ext.data import write_decathlon_dataset
from crossmatch_ext.errors import InputValueError
from crossmatch_ext.planning import Fingerprint, check_decathlon_folder, fingerprint


@pytest.fixture(scope="module")
def ct_folder(tmp_path_factory) -> Path:
    return write_decathlon_dataset(tmp_path_factory.mktemp("fp") / "ct", "ct", shape=(24, 24, 20),
                                   num_labeled=2, num_unlabeled=2, num_validation=1, num_test=1)


@pytest.fixture(scope="module")
def ct_fingerprint(ct_folder) -> Fingerprint:
    return fingerprint(ct_folder, device="cpu", workers=0)


def test_ct_fingerprint(ct_fingerprint, ct_folder):
    fp = ct_fingerprint
    assert fp.source == str(ct_folder / "dataset.json") and fp.name == "synthetic_ct"
    assert fp.modality == {0: "CT"} and fp.classes == {0: "background", 1: "liver", 2: "tumour"}
    assert (fp.num_labeled, fp.num_unlabeled, fp.num_validation, fp.num_test) == (2, 2, 1, 1)
    assert fp.validation_source == "val.list" and fp.spacing_known and fp.spatial_dims == 3 and fp.in_channels == 1
    assert fp.spacings == [[1.5, 1.5, 1.5]] * 5 and fp.shapes == [[24, 24, 20]] * 5
    assert fp.median_spacing == [1.5, 1.5, 1.5] and fp.median_shape == [24.0, 24.0, 20.0]
    assert fp.image_intensity["min"] <= -950  # air, in Hounsfield units
    foreground = fp.foreground_intensity
    assert 40 < foreground["mean"] < 130 and 0 < foreground["std"] < 60
    assert foreground["percentile_00_5"] < foreground["mean"] < foreground["percentile_99_5"]
    assert set(fp.class_fractions) == {0, 1, 2} and fp.class_fractions[0] > fp.class_fractions[1] > 0
    assert fp.analyzer.startswith("monai.apps.auto3dseg.DataAnalyzer")


def test_round_trip_and_version(ct_fingerprint):
    data = json.loads(ct_fingerprint.to_json())
    assert Fingerprint.from_dict(data) == ct_fingerprint
    assert '"median' not in ct_fingerprint.to_json()  # medians are derived, not stored
    with pytest.raises(InputValueError, match="version"):
        Fingerprint.from_dict({**data, "version": 0})


def test_stats_files_unlabeled_cases_and_a_checked_summary(ct_folder, tmp_path):
    summary = check_decathlon_folder(ct_folder)
    fp = fingerprint(summary, stats_dir=tmp_path / "stats", device="cpu", workers=0, include_unlabeled=False)
    assert len(fp.spacings) == 3  # labeled + validation only
    assert (tmp_path / "stats" / "datastats.yaml").is_file()
    assert not (tmp_path / "stats" / "datastats_unlabeled.yaml").exists()


def test_a_bad_folder_fails_before_the_analyzer(tmp_path):
    root = write_decathlon_dataset(tmp_path / "ct", shape=(16, 16, 8), num_labeled=1, num_unlabeled=1,
                                   num_validation=0, num_test=0)
    image = root / "imagesTr" / "ct_000.nii.gz"
    array = np.asarray(nib.load(str(image)).dataobj).astype(np.float32)
    array[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(array, nib.load(str(image)).affine), str(image))
    with pytest.raises(InputValueError, match="NaN"):
        fingerprint(root, stats_dir=tmp_path / "stats", device="cpu", workers=0)
    assert not (tmp_path / "stats").exists()
