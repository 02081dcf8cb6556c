"""LA / ACDC data lists for the HDF5, challenge (NRRD / NIfTI) and datalist-JSON layouts."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from crossmatch_ext.data import (
    acdc_datalists,
    case_id_from_path,
    detect_acdc_layout,
    detect_la_layout,
    la_datalists,
    patient_id,
    read_id_list,
)

LA_IDS = [f"CASE{i:02d}" for i in range(7)]


def shared_data() -> Path:
    env = os.environ.get("CROSSMATCH_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def write_list(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


def write_h5(path: Path, shape: tuple[int, ...] = (4, 4, 3)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=np.zeros(shape, np.float32))
        f.create_dataset("label", data=np.zeros(shape, np.uint8))


def write_nifti(path: Path, shape: tuple[int, ...] = (4, 4, 2)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))


def la_h5_dir(root: Path, with_lists: bool = True) -> Path:
    for case in LA_IDS:
        write_h5(root / case / "mri_norm2.h5")
    if with_lists:
        write_list(root / "train.list", LA_IDS[:5])
        write_list(root / "val.list", LA_IDS[5:6])
        write_list(root / "test.list", LA_IDS[6:])
        write_list(root / "train_2_label.list", LA_IDS[:2])
        # the community's overlapping "unlabeled" list must be ignored
        write_list(root / "train_2_unlabel.list", LA_IDS[1:3])
    return root


def la_nrrd_dir(root: Path) -> Path:
    for case in LA_IDS:
        (root / case).mkdir(parents=True)
        (root / case / "lgemri.nrrd").write_bytes(b"")  # existence is all the data lists check
        (root / case / "laendo.nrrd").write_bytes(b"")
    return root


def ids(items: list[dict]) -> list[str]:
    return [item["case"] for item in items]


def test_la_h5_prefix_and_true_complement(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = la_h5_dir(tmp_path)
    assert detect_la_layout(root) == "h5"
    with caplog.at_level(logging.INFO, logger="crossmatch_ext.data.datalists"):
        lists = la_datalists(root, num_labeled=2)
    assert ids(lists["labeled"]) == LA_IDS[:2]
    assert ids(lists["unlabeled"]) == LA_IDS[2:5]  # every other train.list case, no overlap with labeled
    assert ids(lists["validation"]) == LA_IDS[5:6]
    first = lists["labeled"][0]
    assert first == {
        "image": str(root / "CASE00" / "mri_norm2.h5"),
        "label": str(root / "CASE00" / "mri_norm2.h5"),
        "case": "CASE00",
    }
    assert set(lists["unlabeled"][0]) == {"image", "case"}
    assert set(lists["validation"][0]) == {"image", "label", "case"}
    assert "2 labeled, 3 unlabeled, 1 validation" in caplog.text

    test_split = la_datalists(root, num_labeled=5, layout="h5", val_list="test.list")
    assert ids(test_split["validation"]) == ["CASE06"] and test_split["unlabeled"] == []


def test_la_nrrd_layout_with_and_without_lists(tmp_path: Path) -> None:
    root = la_nrrd_dir(tmp_path)
    assert detect_la_layout(root) == "nrrd"
    no_lists = la_datalists(root, num_labeled=3, val_list=None)
    assert ids(no_lists["labeled"]) == LA_IDS[:3] and ids(no_lists["unlabeled"]) == LA_IDS[3:]
    assert no_lists["validation"] == []
    assert no_lists["labeled"][0]["image"].endswith("CASE00/lgemri.nrrd")
    assert no_lists["labeled"][0]["label"].endswith("CASE00/laendo.nrrd")

    write_list(root / "val.list", ["CASE01"])
    held_out = la_datalists(root, num_labeled=1)  # no train.list: all case folders minus the validation cases
    assert ids(held_out["labeled"]) == ["CASE00"]
    assert ids(held_out["unlabeled"]) == ["CASE02", "CASE03", "CASE04", "CASE05", "CASE06"]
    assert ids(held_out["validation"]) == ["CASE01"]

    write_list(root / "train.list", ["CASE06", "CASE05", "CASE04"])
    listed = la_datalists(root, num_labeled=1, layout="nrrd")
    assert ids(listed["labeled"]) == ["CASE06"] and ids(listed["unlabeled"]) == ["CASE05", "CASE04"]


def test_la_errors(tmp_path: Path) -> None:
    root = la_h5_dir(tmp_path / "la")
    with pytest.raises(ValueError, match=r"between 1 and 5 \(the cases in .*train\.list\), got 6"):
        la_datalists(root, num_labeled=6)
    with pytest.raises(ValueError, match="got 0"):
        la_datalists(root, num_labeled=0)
    with pytest.raises(FileNotFoundError, match=r"validation list not found: .*nope\.list"):
        la_datalists(root, num_labeled=2, val_list="nope.list")
    with pytest.raises(ValueError, match="layout must be one of"):
        la_datalists(root, num_labeled=2, layout="nii")
    with pytest.raises(FileNotFoundError, match="dataset_dir not found"):
        la_datalists(tmp_path / "absent", num_labeled=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"dataset_dir is empty: .*empty. Set --dataset_dir"):
        la_datalists(tmp_path / "empty", num_labeled=2)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no LA data layout found"):
        la_datalists(tmp_path / "empty", num_labeled=2)

    (root / "CASE03" / "mri_norm2.h5").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"'CASE03' not found: .*CASE03/mri_norm2\.h5 \(the case is listed in .*train\.list\)"
    ):
        la_datalists(root, num_labeled=2)
    (root / "CASE05" / "mri_norm2.h5").unlink()
    write_list(root / "train.list", LA_IDS[:3])
    with pytest.raises(FileNotFoundError, match=r"CASE05.*the case is listed in .*val\.list"):
        la_datalists(root, num_labeled=2)


def write_datalist(root: Path, data: dict) -> Path:
    path = root / "datalist.json"
    path.write_text(json.dumps(data))
    return path


def test_la_json_layout(tmp_path: Path) -> None:
    root = tmp_path / "nifti"
    for case in ("A", "B", "C", "D", "V"):
        write_nifti(root / "imagesTr" / f"{case}.nii.gz")
        write_nifti(root / "labelsTr" / f"{case}.nii.gz")
    write_nifti(root / "imagesTr" / "U.nii.gz")
    training = [{"image": f"imagesTr/{c}.nii.gz", "label": f"labelsTr/{c}.nii.gz"} for c in ("A", "B", "C")]
    training.insert(1, {"image": "imagesTr/U.nii.gz"})
    training.append({"image": "imagesTr/D.nii.gz", "label": "labelsTr/D.nii.gz", "case": "custom-D"})
    path = write_datalist(
        root, {"training": training, "validation": [{"image": "imagesTr/V.nii.gz", "label": "labelsTr/V.nii.gz"}]}
    )

    assert detect_la_layout(root) == "json" and detect_la_layout(path) == "json"
    for source in (root, path):
        lists = la_datalists(source, num_labeled=2)
        assert ids(lists["labeled"]) == ["A", "B"]
        assert ids(lists["unlabeled"]) == ["U", "C", "custom-D"]  # extra labeled items become unlabeled
        assert all("label" not in item for item in lists["unlabeled"])
        assert ids(lists["validation"]) == ["V"]
        assert lists["labeled"][0]["image"] == str(root / "imagesTr" / "A.nii.gz")  # resolved against the JSON
        assert lists["labeled"][0]["label"] == str(root / "labelsTr" / "A.nii.gz")

    with pytest.raises(ValueError, match=r"between 1 and 4 \(the cases in the 'training' items with a label"):
        la_datalists(root, num_labeled=5)
    write_datalist(root, {"training": training})  # no validation section
    assert la_datalists(root, num_labeled=1)["validation"] == []
    write_datalist(root, {"training": [*training, {"image": "imagesTr/missing.nii.gz"}]})
    with pytest.raises(FileNotFoundError, match=r"missing\.nii\.gz \(the case is listed in .*datalist\.json\)"):
        la_datalists(root, num_labeled=1)


def acdc_h5_dir(root: Path, folder: str = "volumes") -> tuple[Path, list[str]]:
    patients = ["patient099", "patient038", "patient050", "patient010", "patient002"]
    volumes = [f"{p}_frame{f:02d}" for p in patients for f in (1, 12)]
    for volume in volumes:
        write_h5(root / folder / f"{volume}.h5", (3, 6, 5))
    write_list(root / "train.list", volumes[:8])
    write_list(root / "val.list", volumes[8:])
    return root, volumes


def test_acdc_h5_patients_in_train_list_order(tmp_path: Path) -> None:
    root, volumes = acdc_h5_dir(tmp_path)
    assert detect_acdc_layout(root) == "h5"
    lists = acdc_datalists(root, num_labeled_patients=2)
    assert ids(lists["labeled"]) == volumes[:4]  # both frames of patient099 and patient038
    assert ids(lists["unlabeled"]) == volumes[4:8]
    assert ids(lists["validation"]) == volumes[8:]
    assert lists["labeled"][0]["image"] == str(root / "volumes" / "patient099_frame01.h5")
    assert lists["labeled"][0]["label"] == lists["labeled"][0]["image"]
    with pytest.raises(ValueError, match=r"labeled patients must be between 1 and 4 .*got 5"):
        acdc_datalists(root, num_labeled_patients=5)


def test_acdc_community_data_folder_ignores_slices(tmp_path: Path) -> None:
    root, volumes = acdc_h5_dir(tmp_path, folder="data")
    write_h5(root / "data" / "slices" / "patient099_frame01_slice_1.h5", (6, 5))
    lists = acdc_datalists(root, num_labeled_patients=1)
    assert ids(lists["labeled"]) == volumes[:2]
    assert lists["labeled"][0]["image"] == str(root / "data" / "patient099_frame01.h5")


def acdc_nifti_dir(root: Path) -> Path:
    for number in (3, 1, 2):
        patient = f"patient{number:03d}"
        for frame in (1, 10):
            write_nifti(root / patient / f"{patient}_frame{frame:02d}.nii.gz")
            write_nifti(root / patient / f"{patient}_frame{frame:02d}_gt.nii.gz")
        write_nifti(root / patient / f"{patient}_4d.nii.gz", (4, 4, 2, 3))
    return root


def test_acdc_nifti_layout(tmp_path: Path) -> None:
    root = acdc_nifti_dir(tmp_path)
    assert detect_acdc_layout(root) == "nifti"
    lists = acdc_datalists(root, num_labeled_patients=1, val_list=None)
    assert ids(lists["labeled"]) == ["patient001_frame01", "patient001_frame10"]  # patients sorted
    assert ids(lists["unlabeled"]) == [f"patient00{p}_frame{f}" for p in (2, 3) for f in ("01", "10")]
    assert lists["labeled"][0]["label"] == str(root / "patient001" / "patient001_frame01_gt.nii.gz")
    assert not any("_4d" in item["image"] or "_gt" in item["image"] for v in lists.values() for item in v)

    write_list(root / "val.list", ["patient003_frame01", "patient003_frame10"])
    write_list(root / "train.list", ["patient002_frame10", "patient002_frame01", "patient001_frame01"])
    listed = acdc_datalists(root, num_labeled_patients=1)
    assert ids(listed["labeled"]) == ["patient002_frame10", "patient002_frame01"]
    assert ids(listed["unlabeled"]) == ["patient001_frame01"]
    assert ids(listed["validation"]) == ["patient003_frame01", "patient003_frame10"]

    (root / "patient003" / "patient003_frame10_gt.nii.gz").unlink()
    missing = r"patient003_frame10_gt\.nii\.gz \(the case is listed in .*val\.list\)"
    with pytest.raises(FileNotFoundError, match=missing):
        acdc_datalists(root, num_labeled_patients=1)


def test_acdc_json_groups_by_patient(tmp_path: Path) -> None:
    training = []
    for patient in ("patient005", "patient001", "patient007"):
        for frame in ("01", "09"):
            name = f"{patient}_frame{frame}"
            write_nifti(tmp_path / "img" / f"{name}.nii.gz")
            write_nifti(tmp_path / "lbl" / f"{name}.nii.gz")
            training.append({"image": f"img/{name}.nii.gz", "label": f"lbl/{name}.nii.gz"})
    path = write_datalist(tmp_path, {"training": training, "validation": training[-1:]})
    lists = acdc_datalists(path, num_labeled_patients=2)
    assert ids(lists["labeled"]) == [f"patient00{p}_frame{f}" for p in (5, 1) for f in ("01", "09")]
    assert ids(lists["unlabeled"]) == ["patient007_frame01", "patient007_frame09"]
    assert ids(lists["validation"]) == ["patient007_frame09"]
    with pytest.raises(ValueError, match="between 1 and 3"):
        acdc_datalists(path, num_labeled_patients=4)


def test_helpers(tmp_path: Path) -> None:
    listing = tmp_path / "x.list"
    listing.write_text("# comment\nCASE1\n\n  CASE2  \ndata/patient001_frame01.h5\nCASE1\n")
    assert read_id_list(listing) == ["CASE1", "CASE2", "patient001_frame01"]
    with pytest.raises(FileNotFoundError, match="split list not found"):
        read_id_list(tmp_path / "none.list")
    assert patient_id("patient012_frame01") == "patient012" and patient_id("CASE") == "CASE"
    assert case_id_from_path("/d/ABC/mri_norm2.h5") == "ABC"
    assert case_id_from_path("/d/ABC/lgemri.nrrd") == "ABC"
    assert case_id_from_path("/d/volumes/patient001_frame01.nii.gz") == "patient001_frame01"


@pytest.mark.real_data
def test_real_lists_reproduce_the_community_label_lists() -> None:
    root = shared_data()
    if not (root / "la" / "train.list").is_file() or not (root / "acdc" / "train.list").is_file():
        pytest.skip(f"real data not found at {root}")
    la_train = read_id_list(root / "la" / "train.list")
    for n in (4, 8, 16):
        lists = la_datalists(root / "la", num_labeled=n)
        assert ids(lists["labeled"]) == read_id_list(root / "la" / f"train_{n}_label.list")
        assert sorted(ids(lists["labeled"]) + ids(lists["unlabeled"])) == sorted(la_train)
        assert len(lists["validation"]) == 10
    acdc_train = read_id_list(root / "acdc" / "train.list")
    for n in (1, 3, 7):
        lists = acdc_datalists(root / "acdc", num_labeled_patients=n)
        assert sorted(ids(lists["labeled"])) == sorted(read_id_list(root / "acdc" / f"train_{n}_label.list"))
        assert sorted(ids(lists["labeled"]) + ids(lists["unlabeled"])) == sorted(acdc_train)
        assert len(lists["validation"]) == 20


def test_la_nifti_layout_reads_the_datalist_of_nifti_images(tmp_path: Path) -> None:
    root = tmp_path / "data"
    nifti = root / "nifti"
    for case in ("A", "B", "C"):
        write_nifti(nifti / "imagesTr" / f"{case}.nii.gz")
        write_nifti(nifti / "labelsTr" / f"{case}.nii.gz")
    datalist = {
        "training": [{"image": f"imagesTr/{c}.nii.gz", "label": f"labelsTr/{c}.nii.gz"} for c in ("A", "B")],
        "validation": [{"image": "imagesTr/C.nii.gz", "label": "labelsTr/C.nii.gz"}],
    }
    (nifti / "datalist.json").write_text(json.dumps(datalist))
    for folder in (root, nifti, nifti / "datalist.json"):  # the generator's output folder, its nifti/, the JSON
        lists = la_datalists(folder, 1, layout="nifti")
        assert [i["case"] for i in lists["labeled"]] == ["A"]
        assert [i["case"] for i in lists["unlabeled"]] == ["B"] and "label" not in lists["unlabeled"][0]
        assert [i["case"] for i in lists["validation"]] == ["C"]
    with pytest.raises(FileNotFoundError, match=r"nifti[/\\]datalist\.json"):
        la_datalists(tmp_path / "data" / "nifti" / "imagesTr", 1, layout="nifti")
