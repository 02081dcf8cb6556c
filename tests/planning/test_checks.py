"""check_decathlon_folder: every bad input is reported before any training, one line each, naming the file and what
to do, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from crossmatch_ext.data import write_decathlon_dataset
from crossmatch_ext.errors import InputFileNotFoundError, InputValueError
from crossmatch_ext.planning import FolderSummary, check_decathlon_folder

SHAPE = (16, 16, 8)


def listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_decathlon_dataset(tmp_path / "ct", "ct", shape=SHAPE, num_labeled=2, num_unlabeled=1,
                                   num_validation=1, num_test=0)


def save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    reference = nib.load(str(path))
    nib.save(nib.Nifti1Image(array, reference.affine if affine is None else affine), str(path))


def check_fails(root: Path, error: type[Exception], *fragments: str) -> list[str]:
    """Run the check, expect one problem line holding every fragment, and that nothing changed on disk."""
    before = listing(root)
    with pytest.raises(error) as raised:
        check_decathlon_folder(root)
    lines = str(raised.value).splitlines()
    assert "(nothing was written)" in lines[0]
    assert len(lines) == 2, lines
    for fragment in fragments:
        assert fragment in lines[1], (fragment, lines[1])
    assert listing(root) == before
    return lines


def test_a_good_folder_passes(folder):
    summary = check_decathlon_folder(folder)
    assert isinstance(summary, FolderSummary)
    assert (summary.spatial_dims, summary.in_channels, summary.cases_read) == (3, 1, 4)
    assert summary.label_values == (0, 1, 2)
    assert "data check passed" in str(summary) and "2 labeled, 1 unlabeled, 1 validation" in str(summary)


def test_image_and_label_of_different_shapes(folder):
    label = folder / "labelsTr" / "ct_001.nii.gz"
    save(label, np.zeros((16, 16, 7), np.uint8))
    check_fails(folder, InputValueError, str(label), "shape [16, 16, 7]", "[16, 16, 8]", "resample the label")


def test_image_and_label_of_different_geometry(folder):
    label = folder / "labelsTr" / "ct_000.nii.gz"
    affine = nib.load(str(label)).affine.copy()
    affine[0, 3] += 3.0  # same shape, shifted origin
    save(label, np.asarray(nib.load(str(label)).dataobj), affine)
    check_fails(folder, InputValueError, str(label), "different geometry", "resample the label onto the image")


def test_label_values_outside_the_classes(folder):
    label = folder / "labelsTr" / "ct_000.nii.gz"
    array = np.asarray(nib.load(str(label)).dataobj).copy()
    array[0, 0, 0] = 7
    save(label, array)
    check_fails(folder, InputValueError, str(label), "values [7]", "labels [0, 1, 2]", "add the classes")


def test_non_integer_label_values(folder):
    label = folder / "labelsTr" / "ct_001.nii.gz"
    save(label, np.full(SHAPE, 0.5, np.float32))
    check_fails(folder, InputValueError, str(label), "non-integer values [0.5]")


def test_dataset_json_naming_a_missing_file(folder):
    (folder / "imagesTr" / "ct_003.nii.gz").unlink()
    check_fails(folder, InputFileNotFoundError, "image of case 'ct_003' not found",
                str(folder / "imagesTr" / "ct_003.nii.gz"), "add the file, or remove the entry")


def test_no_labeled_case(folder):
    content = json.loads((folder / "dataset.json").read_text())
    for entry in content["training"]:
        entry.pop("label", None)
    (folder / "dataset.json").write_text(json.dumps(content))
    (folder / "val.list").unlink()
    check_fails(folder, InputValueError, "no labeled case", str(folder / "dataset.json"), "add labels")


def test_a_validation_case_without_a_label(folder):
    (folder / "val.list").write_text("ct_003\n")  # the unlabeled case
    check_fails(folder, InputValueError, "validation case 'ct_003'", str(folder / "val.list"), "has no label")


def test_a_validation_section_item_without_a_label(tmp_path):
    root = write_decathlon_dataset(tmp_path / "mr", "mr", shape=SHAPE, num_labeled=1, num_unlabeled=1,
                                   num_validation=1, num_test=0, validation="json")
    content = json.loads((root / "dataset.json").read_text())
    del content["validation"][0]["label"]
    (root / "dataset.json").write_text(json.dumps(content))
    check_fails(root, InputValueError, "validation case 'mr_001' has no label", "'validation'")


def test_a_validation_list_naming_an_unknown_case(folder):
    (folder / "val.list").write_text("ct_002\nct_099\n")
    check_fails(folder, InputFileNotFoundError, "validation case 'ct_099'", "is not a training case")


def test_an_image_with_nan(folder):
    image = folder / "imagesTr" / "ct_003.nii.gz"  # an unlabeled case: checked too
    array = np.asarray(nib.load(str(image)).dataobj).astype(np.float32)
    array[1, 2, 3] = np.nan
    save(image, array)
    check_fails(folder, InputValueError, str(image), "1 NaN or infinite voxel(s)", "replace them")


def test_an_unreadable_image(folder):
    image = folder / "imagesTr" / "ct_000.nii.gz"
    image.write_bytes(b"not an image")
    check_fails(folder, InputValueError, "cannot read the image of case 'ct_000'", str(image))


def test_images_of_different_dimensionality(folder):
    image = folder / "imagesTr" / "ct_003.nii.gz"
    save(image, np.zeros((16, 16), np.int16), np.eye(4))
    check_fails(folder, InputValueError, "do not all have the same number of axes", "1 2D (e.g. ct_003.nii.gz)")


def test_every_problem_is_listed_one_line_each(folder):
    save(folder / "labelsTr" / "ct_000.nii.gz", np.zeros((16, 16, 7), np.uint8))
    array = np.full(SHAPE, 3, np.uint8)
    save(folder / "labelsTr" / "ct_001.nii.gz", array)
    with pytest.raises(InputValueError) as raised:
        check_decathlon_folder(folder)
    lines = str(raised.value).splitlines()
    assert lines[0].startswith("2 problems in ")
    assert "ct_000.nii.gz has shape" in lines[1] and "values [3]" in lines[2]
