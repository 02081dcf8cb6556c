"""Decathlon folders with labels for some cases: the generator, the reader, the dataset-module protocol and the LA /
ACDC converters (generated sources; the real data when ../shared/data is present)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from crossmatch_ext.data import (
    convert_acdc_to_decathlon,
    convert_la_to_decathlon,
    dataset_datalists,
    read_decathlon,
    write_decathlon_dataset,
)
from crossmatch_ext.data.decathlon import detect_layout, make_decathlon_case
from crossmatch_ext.errors import InputFileNotFoundError, InputValueError

SMALL = (16, 16, 8)


def shared_data() -> Path:
    env = os.environ.get("CROSSMATCH_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ------------------------------------------------------------------------------------------------ generator
def test_ct_folder_layout_labels_and_geometry(tmp_path):
    root = write_decathlon_dataset(tmp_path / "ct", "ct", num_labeled=2, num_unlabeled=2, num_validation=1,
                                   num_test=1)
    content = json.loads((root / "dataset.json").read_text())
    assert content["modality"] == {"0": "CT"} and content["labels"]["2"] == "tumour"
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [f"ct_00{i}.nii.gz" for i in range(5)]
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == [f"ct_00{i}.nii.gz" for i in range(3)]
    assert [p.name for p in (root / "imagesTs").iterdir()] == ["ct_005.nii.gz"]
    assert (root / "val.list").read_text() == "ct_002\n"
    unlabeled = [e for e in content["training"] if "label" not in e]
    assert [e["image"] for e in unlabeled] == ["./imagesTr/ct_003.nii.gz", "./imagesTr/ct_004.nii.gz"]
    image = nib.load(str(root / "imagesTr" / "ct_000.nii.gz"))
    assert image.shape == (48, 48, 40) and np.allclose(image.header.get_zooms(), 1.5)
    array = np.asarray(image.dataobj)
    assert array.dtype == np.int16 and array.min() <= -950 and 20 < np.median(array[array > -500]) < 120
    label = np.asarray(nib.load(str(root / "labelsTr" / "ct_000.nii.gz")).dataobj)
    assert set(np.unique(label).tolist()) == {0, 1, 2}


def test_mr_folder_is_anisotropic_with_a_validation_section(tmp_path):
    root = write_decathlon_dataset(tmp_path / "mr", "mr", validation="json", num_test=0)
    content = json.loads((root / "dataset.json").read_text())
    assert not (root / "val.list").exists()
    assert [e["image"] for e in content["validation"]] == ["./imagesTr/mr_003.nii.gz"]
    assert all("mr_003" not in e["image"] for e in content["training"])
    image = nib.load(str(root / "imagesTr" / "mr_000.nii.gz"))
    assert image.shape == (64, 64, 8) and np.allclose(image.header.get_zooms(), (1.25, 1.25, 8.0))
    label = np.asarray(nib.load(str(root / "labelsTr" / "mr_000.nii.gz")).dataobj)
    assert set(np.unique(label).tolist()) == {0, 1, 2}


def test_cases_are_deterministic_and_arguments_checked(tmp_path):
    first = make_decathlon_case("mr", SMALL, seed=(3, 1))
    second = make_decathlon_case("mr", SMALL, seed=(3, 1))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    with pytest.raises(ValueError, match="kind"):
        make_decathlon_case("pet", SMALL)
    with pytest.raises(ValueError, match="validation"):
        write_decathlon_dataset(tmp_path / "x", validation="both")
    with pytest.raises(ValueError, match="spacing"):
        write_decathlon_dataset(tmp_path / "y", spacing=(1.0, -1.0, 1.0))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_non_empty_output_folder_is_refused_and_left_alone(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(InputValueError, match="not empty"):
        write_decathlon_dataset(tmp_path / "out", shape=SMALL)
    assert listing(tmp_path / "out") == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial folder left behind


# --------------------------------------------------------------------------------------------------- reader
@pytest.fixture(scope="module")
def ct_folder(tmp_path_factory) -> Path:
    return write_decathlon_dataset(tmp_path_factory.mktemp("dec") / "ct", "ct", shape=SMALL, num_labeled=3,
                                   num_unlabeled=2, num_validation=1, num_test=1)


def test_read_splits_labeled_unlabeled_validation_and_test(ct_folder):
    dataset = read_decathlon(ct_folder)
    assert [i["case"] for i in dataset.labeled] == ["ct_000", "ct_001", "ct_002"]
    assert [i["case"] for i in dataset.validation] == ["ct_003"]
    assert [i["case"] for i in dataset.unlabeled] == ["ct_004", "ct_005"]
    assert [i["case"] for i in dataset.test] == ["ct_006"]
    assert all("label" not in i for i in dataset.unlabeled + dataset.test)
    assert all(Path(i["image"]).is_absolute() and Path(i["label"]).is_file() for i in dataset.labeled)
    assert dataset.classes == {0: "background", 1: "liver", 2: "tumour"} and dataset.modality == {0: "CT"}
    assert dataset.validation_source == str(ct_folder / "val.list") and dataset.spacing_known
    assert "3 labeled, 2 unlabeled, 1 validation" in dataset.describe()
    # the same lists from the dataset.json file itself
    assert read_decathlon(ct_folder / "dataset.json").datalists() == dataset.datalists()


def test_num_labeled_keeps_the_first_labeled_cases_and_no_val_list_means_no_validation(ct_folder):
    dataset = read_decathlon(ct_folder, num_labeled=1, val_list=None)
    assert [i["case"] for i in dataset.labeled] == ["ct_000"]
    assert [i["case"] for i in dataset.unlabeled] == ["ct_001", "ct_002", "ct_003", "ct_004", "ct_005"]
    assert dataset.validation == [] and dataset.validation_source is None
    assert "every labeled case trains" in dataset.describe()
    with pytest.raises(InputValueError, match="between 1 and 3"):
        read_decathlon(ct_folder, num_labeled=4)


def test_images_not_in_dataset_json_are_unlabeled_and_resource_forks_ignored(tmp_path):
    root = write_decathlon_dataset(tmp_path / "ct", shape=SMALL, num_labeled=2, num_unlabeled=0, num_validation=0,
                                   num_test=0)
    content = json.loads((root / "dataset.json").read_text())
    del content["test"]
    (root / "dataset.json").write_text(json.dumps(content))
    image = nib.load(str(root / "imagesTr" / "ct_000.nii.gz"))
    nib.save(image, str(root / "imagesTr" / "extra_01.nii.gz"))
    (root / "imagesTr" / "._ct_000.nii.gz").write_bytes(b"\0\5\26\7")  # macOS resource fork, as in MSD archives
    (root / "imagesTs").mkdir()
    nib.save(image, str(root / "imagesTs" / "new_01.nii.gz"))
    dataset = read_decathlon(root)
    assert [i["case"] for i in dataset.unlabeled] == ["extra_01"]
    assert [i["case"] for i in dataset.test] == ["new_01"]


def test_linked_images_keep_their_own_case_names(tmp_path):
    root = write_decathlon_dataset(tmp_path / "ct", shape=SMALL, num_labeled=1, num_unlabeled=0, num_validation=0,
                                   num_test=0)
    (root / "imagesTr" / "linked_01.nii.gz").symlink_to(root / "imagesTr" / "ct_000.nii.gz")
    dataset = read_decathlon(root)
    assert [i["case"] for i in dataset.unlabeled] == ["linked_01"]
    assert dataset.unlabeled[0]["image"] == str(root.resolve() / "imagesTr" / "linked_01.nii.gz")


def test_monai_datalist_json_with_unlabeled_items(tmp_path):
    root = write_decathlon_dataset(tmp_path / "mr", "mr", shape=SMALL, num_labeled=2, num_unlabeled=1,
                                   num_validation=1, num_test=0, validation="json")
    content = json.loads((root / "dataset.json").read_text())
    datalist = {"training": content["training"], "validation": content["validation"],
                "testing": [{"image": "./imagesTr/mr_003.nii.gz"}]}
    (root / "datalist.json").write_text(json.dumps(datalist))
    (root / "dataset.json").unlink()
    assert detect_layout(root) == "json"
    dataset = read_decathlon(root)
    assert dataset.layout == "json" and dataset.classes == {} and dataset.modality == {}
    assert [i["case"] for i in dataset.labeled] == ["mr_000", "mr_001"]
    assert [i["case"] for i in dataset.unlabeled] == ["mr_003"]
    assert [i["case"] for i in dataset.validation] == ["mr_002"]
    assert dataset.validation_source == "the 'validation' section of datalist.json"


def _studies_folder(tmp_path: Path, num_final: int) -> Path:
    """A MONAI Label studies folder: the images of a generated folder, final labels for the first ``num_final``."""
    source = write_decathlon_dataset(tmp_path / "source", "mr", shape=SMALL, num_labeled=6, num_unlabeled=2,
                                     num_validation=0, num_test=0)
    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for i, image in enumerate(sorted((source / "imagesTr").glob("*.nii.gz"))):
        shutil.copy(image, studies / image.name)
        if i < num_final:
            shutil.copy(source / "labelsTr" / image.name, studies / "labels" / "final" / image.name)
    return studies


def test_a_monai_label_studies_folder_is_read_as_monai_label_splits_it(tmp_path):
    studies = _studies_folder(tmp_path, num_final=5)
    assert detect_layout(studies) == "studies"
    dataset = read_decathlon(studies)
    assert dataset.layout == "studies" and dataset.classes == {} and dataset.modality == {}
    # the studies with a final label: the first four train, the last (a fifth) validates; the others are unlabeled
    assert [i["case"] for i in dataset.labeled] == ["mr_000", "mr_001", "mr_002", "mr_003"]
    assert [i["case"] for i in dataset.validation] == ["mr_004"]
    assert [i["case"] for i in dataset.unlabeled] == ["mr_005", "mr_006", "mr_007"]
    assert all("label" not in i for i in dataset.unlabeled)
    assert dataset.labeled[0]["label"] == str(studies / "labels" / "final" / "mr_000.nii.gz")
    assert "MONAI Label" in dataset.validation_source
    # num_labeled keeps the first labeled studies, the others become unlabeled; the dataset-module protocol reads it
    lists = dataset_datalists("crossmatch_ext.data.decathlon", studies, 2, layout="studies")
    assert [len(lists[k]) for k in ("labeled", "unlabeled", "validation")] == [2, 5, 1]


def test_a_studies_folder_without_final_labels_says_what_to_do(tmp_path):
    studies = _studies_folder(tmp_path, num_final=0)
    with pytest.raises(InputValueError, match=r"no labeled study in .*studies: save a final label"):
        read_decathlon(studies)


def test_the_module_is_a_dataset_module(ct_folder):
    lists = dataset_datalists("crossmatch_ext.data.decathlon", ct_folder, 0)
    assert [len(lists[k]) for k in ("labeled", "unlabeled", "validation")] == [3, 2, 1]
    lists = dataset_datalists("crossmatch_ext.data.decathlon", ct_folder, 2, layout="msd")
    assert [len(lists[k]) for k in ("labeled", "unlabeled", "validation")] == [2, 3, 1]


def test_structural_problems_are_listed_one_line_each(tmp_path):
    root = write_decathlon_dataset(tmp_path / "ct", shape=SMALL, num_labeled=2, num_unlabeled=1, num_validation=0,
                                   num_test=0)
    (root / "labelsTr" / "ct_000.nii.gz").unlink()
    (root / "imagesTr" / "ct_002.nii.gz").unlink()
    before = listing(root)
    with pytest.raises(InputFileNotFoundError) as error:
        read_decathlon(root)
    lines = str(error.value).splitlines()
    assert lines[0].startswith(f"2 problems in {root / 'dataset.json'}")
    assert "label of case 'ct_000' not found" in lines[1] and "remove the entry's \"label\"" in lines[1]
    assert "image of case 'ct_002' not found" in lines[2] and str(root / "imagesTr" / "ct_002.nii.gz") in lines[2]
    assert listing(root) == before


def test_missing_and_unreadable_json(tmp_path):
    with pytest.raises(InputFileNotFoundError, match="not found"):
        read_decathlon(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileNotFoundError, match=r"no dataset\.json"):
        read_decathlon(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "dataset.json").write_text("{\"training\": [")
    with pytest.raises(InputValueError, match=r"dataset.json is not valid JSON \(line 1"):
        read_decathlon(tmp_path / "bad")


# ----------------------------------------------------------------------------------------------- converters
def _la_h5_source(root: Path) -> Path:
    rng = np.random.default_rng(0)
    ids = ["CASEA", "CASEB", "CASEC", "CASED"]
    for i, case in enumerate(ids):
        (root / case).mkdir(parents=True)
        with h5py.File(root / case / "mri_norm2.h5", "w") as f:
            f.create_dataset("image", data=rng.normal(size=(20, 18, 12)).astype(np.float32) + i)
            f.create_dataset("label", data=(rng.random((20, 18, 12)) > 0.7).astype(np.uint8))
    (root / "train.list").write_text("CASEC\nCASEA\nCASEB\n")
    (root / "val.list").write_text("CASED\n")
    return root


def test_convert_la_keeps_labeled_cases_validation_and_geometry(tmp_path):
    src = _la_h5_source(tmp_path / "la")
    dataset = convert_la_to_decathlon(src, tmp_path / "la_msd", 1)
    dst = tmp_path / "la_msd"
    assert [i["case"] for i in dataset.labeled] == ["CASEC"]  # the first of train.list
    assert [i["case"] for i in dataset.unlabeled] == ["CASEA", "CASEB"]
    assert [i["case"] for i in dataset.validation] == ["CASED"]
    assert sorted(p.name for p in (dst / "labelsTr").iterdir()) == ["CASEC.nii.gz", "CASED.nii.gz"]
    assert (dst / "val.list").read_text() == "CASED\n"
    content = json.loads((dst / "dataset.json").read_text())
    assert content["spacing_known"] is True and content["labels"] == {"0": "background", "1": "left atrium"}
    image = nib.load(str(dst / "imagesTr" / "CASEA.nii.gz"))
    assert np.allclose(image.affine, np.diag([0.625, 0.625, 0.625, 1.0]))
    with h5py.File(src / "CASEA" / "mri_norm2.h5") as f:
        assert np.array_equal(np.asarray(image.dataobj), f["image"][()])
    with h5py.File(src / "CASED" / "mri_norm2.h5") as f:
        label = np.asarray(nib.load(str(dst / "labelsTr" / "CASED.nii.gz")).dataobj)
        assert label.dtype == np.uint8 and np.array_equal(label, f["label"][()])
    with pytest.raises(InputValueError, match="not empty"):
        convert_la_to_decathlon(src, dst, 1)


def _acdc_h5_source(root: Path) -> Path:
    rng = np.random.default_rng(1)
    ids = ["patient001_frame01", "patient001_frame02", "patient002_frame01", "patient002_frame02",
           "patient003_frame01"]
    (root / "volumes").mkdir(parents=True)
    for case in ids:
        with h5py.File(root / "volumes" / f"{case}.h5", "w") as f:
            f.create_dataset("image", data=rng.random((3, 20, 16)))
            f.create_dataset("label", data=rng.integers(0, 4, (3, 20, 16)).astype(np.uint8))
    (root / "train.list").write_text("\n".join(ids[:4]) + "\n")
    (root / "val.list").write_text(ids[4] + "\n")
    return root


def test_convert_acdc_labels_whole_patients_and_marks_the_spacing_unknown(tmp_path):
    src = _acdc_h5_source(tmp_path / "acdc")
    dataset = convert_acdc_to_decathlon(src, tmp_path / "acdc_msd", 1)
    assert [i["case"] for i in dataset.labeled] == ["patient001_frame01", "patient001_frame02"]
    assert [i["case"] for i in dataset.unlabeled] == ["patient002_frame01", "patient002_frame02"]
    assert [i["case"] for i in dataset.validation] == ["patient003_frame01"]
    assert dataset.spacing_known is False
    image = nib.load(dataset.labeled[0]["image"])
    label = nib.load(dataset.labeled[0]["label"])
    with h5py.File(src / "volumes" / "patient001_frame01.h5") as f:  # (slices, H, W) -> (W, H, slices)
        assert image.shape == (16, 20, 3)
        assert np.allclose(np.asarray(image.dataobj), f["image"][()].transpose(2, 1, 0).astype(np.float32))
        assert np.array_equal(np.asarray(label.dataobj), f["label"][()].transpose(2, 1, 0))
    assert np.allclose(image.affine, np.eye(4))
    assert "spacing 1 was written" in json.loads((tmp_path / "acdc_msd" / "dataset.json").read_text())["description"]


def test_convert_acdc_nifti_keeps_the_source_geometry(tmp_path):
    src = tmp_path / "acdc_nifti"
    affine = np.diag([1.4, 1.4, 10.0, 1.0])
    affine[:3, 3] = [-50.0, 20.0, 7.5]
    for patient in ("patient001", "patient002"):
        for frame in ("01", "02"):
            case = f"{patient}_frame{frame}"
            (src / patient).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(np.ones((12, 10, 4), np.float32), affine), str(src / patient / f"{case}.nii.gz"))
            nib.save(nib.Nifti1Image(np.ones((12, 10, 4), np.uint8), affine), str(src / patient / f"{case}_gt.nii.gz"))
    dataset = convert_acdc_to_decathlon(src, tmp_path / "out", 1, val_list=None)
    assert dataset.spacing_known is True and len(dataset.labeled) == 2 and len(dataset.unlabeled) == 2
    for item in dataset.labeled:
        assert np.allclose(nib.load(item["image"]).affine, affine)
        assert np.allclose(nib.load(item["label"]).affine, affine)


@pytest.mark.real_data
def test_convert_real_la_and_acdc_subsets(tmp_path):
    la, acdc = shared_data() / "la", shared_data() / "acdc"
    if not (la / "train.list").is_file() or not (acdc / "train.list").is_file():
        pytest.skip("the shared real data is not present")
    # two training cases and one validation case of each, linked into small source folders
    src_la = tmp_path / "la"
    src_la.mkdir()
    train, val = (la / "train.list").read_text().split()[:2], (la / "val.list").read_text().split()[:1]
    for case in train + val:
        (src_la / case).symlink_to(la / case)
    (src_la / "train.list").write_text("\n".join(train) + "\n")
    (src_la / "val.list").write_text(val[0] + "\n")
    dataset = convert_la_to_decathlon(src_la, tmp_path / "la_msd", 1)
    assert [i["case"] for i in dataset.labeled] == train[:1] and [i["case"] for i in dataset.validation] == val
    image = nib.load(dataset.unlabeled[0]["image"])
    with h5py.File(la / train[1] / "mri_norm2.h5") as f:
        assert np.array_equal(np.asarray(image.dataobj), f["image"][()])
    assert np.allclose(image.header.get_zooms(), 0.625)

    src_acdc = tmp_path / "acdc"
    (src_acdc / "volumes").mkdir(parents=True)
    train = (acdc / "train.list").read_text().split()[:2]  # both frames of the first patient
    val = (acdc / "val.list").read_text().split()[:1]
    for case in train + val:
        (src_acdc / "volumes" / f"{case}.h5").symlink_to(acdc / "volumes" / f"{case}.h5")
    (src_acdc / "train.list").write_text("\n".join(train) + "\n")
    (src_acdc / "val.list").write_text(val[0] + "\n")
    dataset = convert_acdc_to_decathlon(src_acdc, tmp_path / "acdc_msd", 1)
    assert len(dataset.labeled) == 2 and dataset.spacing_known is False
    with h5py.File(acdc / "volumes" / f"{train[0]}.h5") as f:
        stack = f["image"][()]
    assert nib.load(dataset.labeled[0]["image"]).shape == stack.shape[::-1]
