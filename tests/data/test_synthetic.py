"""Tests of the synthetic LA / ACDC generators, their file layouts and the command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from crossmatch_ext.data.synthetic import (
    ACDC_SLICE_SPACING_MM,
    LA_SPACING_MM,
    main,
    make_acdc_case,
    make_acdc_patient,
    make_la_case,
    write_acdc_dataset,
    write_la_dataset,
)

# importing itk (SWIG bindings) emits DeprecationWarnings that say nothing about this package
pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute:DeprecationWarning")

LA_SHAPE = (40, 36, 28)
ACDC_SIZE = (64, 72)
CASE_ID = re.compile(r"^[A-Z0-9]{20}$")
VOLUME_ID = re.compile(r"^patient\d{3}_frame0[12]$")


def _shared_data() -> Path:
    env = os.environ.get("CROSSMATCH_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _read_h5(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


# ------------------------------------------------------------------------------------------------ single cases


def test_la_case_is_deterministic_per_seed() -> None:
    image_a, label_a = make_la_case(3, LA_SHAPE)
    image_b, label_b = make_la_case(np.random.default_rng(3), LA_SHAPE)
    assert image_a.tobytes() == image_b.tobytes()
    assert label_a.tobytes() == label_b.tobytes()
    image_c, label_c = make_la_case(4, LA_SHAPE)
    assert not np.array_equal(image_a, image_c)
    assert not np.array_equal(label_a, label_c)


def test_la_case_matches_the_benchmark_conventions() -> None:
    image, label = make_la_case(0, (48, 44, 32))
    assert image.shape == label.shape == (48, 44, 32)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert set(np.unique(label)) == {0, 1}
    foreground = float(label.mean())
    assert 0.03 < foreground < 0.2, foreground
    # z-scored over a larger scan, then cropped: the crop's own mean is not 0
    assert abs(float(image.mean())) > 0.2
    assert 0.4 < float(image.std()) < 3.0
    # the atrium is bright on average, yet some unlabeled voxels (distractors) are as bright as its median
    inside, outside = image[label == 1], image[label == 0]
    assert inside.mean() > outside.mean() + 0.5
    assert (outside > np.median(inside)).mean() > 0.003
    # one connected chamber
    assert ndimage.label(label)[1] == 1


def test_la_intensities_are_those_of_real_crops() -> None:
    """Medians over cases in the range of the 40 real LA crops (atrium 1.7 z, contrast 1.2, 25 % negative voxels;
    per case: atrium 0.3-3.7 z, contrast 0.5-1.9, 14-46 % negative): an atrium twice as bright in z units, as the
    generator once made, fails here."""
    stats = []
    for seed in range(6):
        image, label = make_la_case(seed, (48, 44, 32))
        inside, outside = image[label == 1], image[label == 0]
        stats.append((inside.mean(), (inside.mean() - outside.mean()) / outside.std(), (image < 0).mean()))
    atrium, contrast, negative = np.median(np.array(stats), axis=0)
    assert 1.0 < atrium < 2.5, atrium
    assert 0.6 < contrast < 1.9, contrast
    assert 0.1 < negative < 0.35, negative


def test_la_case_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        make_la_case(0, (40, 40))
    with pytest.raises(ValueError, match="shape"):
        make_la_case(0, (40, 8, 40))
    with pytest.raises(TypeError, match="rng_or_seed"):
        make_la_case("seed", LA_SHAPE)  # type: ignore[arg-type]


def test_acdc_case_is_deterministic_per_seed() -> None:
    image_a, label_a = make_acdc_case(5, 8, ACDC_SIZE)
    image_b, label_b = make_acdc_case(5, 8, ACDC_SIZE)
    assert image_a.tobytes() == image_b.tobytes() and label_a.tobytes() == label_b.tobytes()
    image_c, _ = make_acdc_case(6, 8, ACDC_SIZE)
    assert not np.array_equal(image_a, image_c)


def test_acdc_case_classes_nesting_and_contrast() -> None:
    (image, label), (_image_es, label_es) = make_acdc_patient(1, 10, (96, 96))
    assert image.shape == label.shape == (10, 96, 96)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0
    assert set(np.unique(label)) == {0, 1, 2, 3}
    # blood pools are bright, the myocardium dark
    assert image[label == 3].mean() > image[label == 2].mean() + 0.1
    assert image[label == 1].mean() > image[label == 2].mean() + 0.1
    # end-systole: same patient, smaller cavity
    assert (label_es == 3).sum() < (label == 3).sum()
    closed = 0
    for lv, myo, rv in zip(label == 3, label == 2, label == 1):
        if not lv.any():
            continue
        ring = ndimage.binary_dilation(lv, iterations=1) & ~lv
        # the myocardium encloses the left ventricle (an open ring is allowed at the base only)
        closed += bool(np.all(myo[ring]))
        # the right ventricle never touches the left ventricle's cavity
        assert not np.any(rv[ring])
    lv_slices = int((label == 3).any(axis=(1, 2)).sum())
    assert closed >= lv_slices - 1
    # structures shrink from base to apex
    lv_area = (label == 3).sum(axis=(1, 2))
    assert lv_area[:3].mean() > lv_area[-3:].mean()


def test_acdc_classes_present_in_most_volumes() -> None:
    present = [set(np.unique(make_acdc_case(seed, 8, (64, 64))[1])) == {0, 1, 2, 3} for seed in range(6)]
    assert sum(present) >= 5


def test_acdc_case_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_slices"):
        make_acdc_case(0, 2, ACDC_SIZE)
    with pytest.raises(ValueError, match="size"):
        make_acdc_case(0, 6, (16, 64))
    with pytest.raises(ValueError, match="phase"):
        make_acdc_case(0, 6, ACDC_SIZE, phase="mid")


# ------------------------------------------------------------------------------------------------ LA layout


@pytest.fixture(scope="module")
def la_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("la")
    return write_la_dataset(
        out, num_train=4, num_val=2, num_labeled=(1, 2), seed=7, shape=(LA_SHAPE, (44, 40, 30)), nifti=True, nrrd=True
    )


def test_la_layout_lists_and_h5(la_dir: Path) -> None:
    train, val = _lines(la_dir / "train.list"), _lines(la_dir / "val.list")
    assert len(train) == 4 and len(val) == 2 and not set(train) & set(val)
    assert train == sorted(train) and val == sorted(val)
    assert all(CASE_ID.match(c) for c in train + val)
    for n in (1, 2):
        assert _lines(la_dir / f"train_{n}_label.list") == train[:n]
    assert (la_dir / "train.list").read_text().endswith("\n")
    shapes = set()
    for case in train + val:
        data = _read_h5(la_dir / case / "mri_norm2.h5")
        assert set(data) == {"image", "label"}
        assert data["image"].dtype == np.float32 and data["label"].dtype == np.uint8
        assert data["image"].shape == data["label"].shape
        assert all(lo <= s <= hi for s, lo, hi in zip(data["image"].shape, LA_SHAPE, (44, 40, 30)))
        shapes.add(data["image"].shape)
        assert set(np.unique(data["label"])) == {0, 1}
    assert len(shapes) > 1  # a size range gives differently sized cases


def test_la_nifti_copies_and_datalist(la_dir: Path) -> None:
    from monai.data import load_decathlon_datalist

    train = _lines(la_dir / "train.list")
    case = train[0]
    h5 = _read_h5(la_dir / case / "mri_norm2.h5")
    image = nib.load(str(la_dir / "nifti" / "imagesTr" / f"{case}.nii.gz"))
    label = nib.load(str(la_dir / "nifti" / "labelsTr" / f"{case}.nii.gz"))
    np.testing.assert_allclose(image.header.get_zooms(), (LA_SPACING_MM,) * 3)
    assert np.allclose(image.affine[:3, :3], np.diag([LA_SPACING_MM] * 3))  # RAS, isotropic
    assert np.any(image.affine[:3, 3] != 0)
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), h5["image"])
    np.testing.assert_array_equal(np.asanyarray(label.dataobj), h5["label"])
    assert np.asanyarray(label.dataobj).dtype == np.uint8

    datalist_path = la_dir / "nifti" / "datalist.json"
    raw = json.loads(datalist_path.read_text())
    assert raw["training"][0] == {"image": f"imagesTr/{case}.nii.gz", "label": f"labelsTr/{case}.nii.gz"}
    training = load_decathlon_datalist(datalist_path, is_segmentation=True, data_list_key="training")
    validation = load_decathlon_datalist(datalist_path, is_segmentation=True, data_list_key="validation")
    assert [("label" in item) for item in training] == [True, True, False, False]  # datalist.json: largest N
    assert len(validation) == 2 and all(Path(item["label"]).is_file() for item in validation)
    assert all(Path(item["image"]).is_file() for item in training)
    one = json.loads((la_dir / "nifti" / "datalist_1_label.json").read_text())
    assert [("label" in item) for item in one["training"]] == [True, False, False, False]


def test_la_raw_nrrd_layout(la_dir: Path) -> None:
    import itk

    train = _lines(la_dir / "train.list")
    assert _lines(la_dir / "raw" / "train.list") == train
    assert _lines(la_dir / "raw" / "train_2_label.list") == train[:2]
    case = train[1]
    h5 = _read_h5(la_dir / case / "mri_norm2.h5")
    scan = itk.imread(str(la_dir / "raw" / case / "lgemri.nrrd"))
    endo = itk.imread(str(la_dir / "raw" / case / "laendo.nrrd"))
    np.testing.assert_allclose(tuple(endo.GetSpacing()), (LA_SPACING_MM,) * 3)
    endo_zyx = itk.array_from_image(endo)
    assert endo_zyx.dtype == np.uint8 and set(np.unique(endo_zyx)) == {0, 255}
    np.testing.assert_array_equal(endo_zyx.transpose(2, 1, 0), h5["label"] * 255)
    scan_xyz = itk.array_from_image(scan).transpose(2, 1, 0).astype(np.float64)
    assert scan_xyz.shape == h5["image"].shape and scan_xyz.max() > 100  # unnormalised scanner range
    # the HDF5 image is an affine z-score of the raw scan
    slope, intercept = np.polyfit(scan_xyz.ravel(), h5["image"].astype(np.float64).ravel(), 1)
    np.testing.assert_allclose(slope * scan_xyz + intercept, h5["image"], atol=1e-4)


def test_la_writer_is_deterministic(tmp_path: Path, la_dir: Path) -> None:
    again = write_la_dataset(
        tmp_path / "again", num_train=4, num_val=2, num_labeled=(1, 2), seed=7,
        shape=(LA_SHAPE, (44, 40, 30)), nifti=False,
    )
    assert _lines(again / "train.list") == _lines(la_dir / "train.list")
    for case in _lines(again / "val.list"):
        a, b = _read_h5(again / case / "mri_norm2.h5"), _read_h5(la_dir / case / "mri_norm2.h5")
        assert a["image"].tobytes() == b["image"].tobytes() and a["label"].tobytes() == b["label"].tobytes()
    other = write_la_dataset(tmp_path / "other", num_train=2, num_val=1, num_labeled=1, seed=8, shape=LA_SHAPE,
                             nifti=False)
    assert not set(_lines(other / "train.list")) & set(_lines(la_dir / "train.list"))


def test_la_writer_rejects_bad_counts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_labeled"):
        write_la_dataset(tmp_path, num_train=2, num_val=1, num_labeled=(4,), shape=LA_SHAPE)
    with pytest.raises(ValueError, match="num_val"):
        write_la_dataset(tmp_path, num_train=2, num_val=-1, num_labeled=1, shape=LA_SHAPE)


# ------------------------------------------------------------------------------------------------ ACDC layout


@pytest.fixture(scope="module")
def acdc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("acdc")
    return write_acdc_dataset(
        out, num_train_patients=4, num_val_patients=2, labeled_patients=(1, 3), seed=3, size=ACDC_SIZE,
        num_slices=(6, 9), nifti=True,
    )


def test_acdc_layout_lists_and_h5(acdc_dir: Path) -> None:
    train, val = _lines(acdc_dir / "train.list"), _lines(acdc_dir / "val.list")
    assert len(train) == 8 and len(val) == 4 and not set(train) & set(val)
    assert all(VOLUME_ID.match(v) for v in train + val)
    patients = list(dict.fromkeys(v.split("_")[0] for v in train))
    assert train == [f"{p}_frame{f:02d}" for p in patients for f in (1, 2)]
    for n in (1, 3):
        labeled = _lines(acdc_dir / f"train_{n}_label.list")
        assert labeled == sorted(f"{p}_frame{f:02d}" for p in patients[:n] for f in (1, 2))
    assert sorted(p.stem for p in (acdc_dir / "volumes").glob("*.h5")) == sorted(train + val)
    for volume in train + val:
        data = _read_h5(acdc_dir / "volumes" / f"{volume}.h5")
        assert set(data) == {"image", "label"}
        image, label = data["image"], data["label"]
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.shape == label.shape and image.shape[1:] == ACDC_SIZE and 6 <= image.shape[0] <= 9
        assert float(image.min()) == 0.0 and float(image.max()) == 1.0
        assert set(np.unique(label)) <= {0, 1, 2, 3}
    for patient in patients:  # both frames of a patient share the stack geometry
        assert (
            _read_h5(acdc_dir / "volumes" / f"{patient}_frame01.h5")["image"].shape
            == _read_h5(acdc_dir / "volumes" / f"{patient}_frame02.h5")["image"].shape
        )


def test_acdc_raw_nifti_layout_and_datalist(acdc_dir: Path) -> None:
    from monai.data import load_decathlon_datalist

    volume = _lines(acdc_dir / "train.list")[1]  # second frame of the first patient
    patient = volume.split("_")[0]
    info = dict(line.split(": ") for line in (acdc_dir / "raw" / patient / "Info.cfg").read_text().splitlines())
    es = int(info["ES"])
    assert int(info["ED"]) == 1 and es > 2
    image = nib.load(str(acdc_dir / "raw" / patient / f"{patient}_frame{es:02d}.nii.gz"))
    gt = nib.load(str(acdc_dir / "raw" / patient / f"{patient}_frame{es:02d}_gt.nii.gz"))
    h5 = _read_h5(acdc_dir / "volumes" / f"{volume}.h5")
    zooms = image.header.get_zooms()
    assert zooms[0] == pytest.approx(zooms[1]) and zooms[2] == pytest.approx(ACDC_SLICE_SPACING_MM)
    assert np.any(image.affine[:3, 3] != 0)
    raw = np.asanyarray(image.dataobj)
    assert raw.shape == (ACDC_SIZE[1], ACDC_SIZE[0], h5["image"].shape[0])  # (x, y, z): slice axis last
    assert raw.dtype == np.int16 and raw.max() > 100
    np.testing.assert_array_equal(np.asanyarray(gt.dataobj).transpose(2, 1, 0), h5["label"])
    scaled = (raw.astype(np.float64) - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose(scaled.transpose(2, 1, 0), h5["image"], atol=1e-6)

    assert _lines(acdc_dir / "raw" / "train.list")[1] == f"{patient}_frame{es:02d}"
    datalist = acdc_dir / "raw" / "datalist.json"
    training = load_decathlon_datalist(datalist, is_segmentation=True, data_list_key="training")
    validation = load_decathlon_datalist(datalist, is_segmentation=True, data_list_key="validation")
    assert len(training) == 8 and len(validation) == 4
    assert [("label" in item) for item in training] == [True] * 6 + [False] * 2  # 3 labeled patients
    assert all(Path(item["image"]).is_file() and Path(item["label"]).is_file() for item in validation)
    one = json.loads((acdc_dir / "raw" / "datalist_1_label.json").read_text())
    assert [("label" in item) for item in one["training"]] == [True] * 2 + [False] * 6


def test_acdc_writer_is_deterministic(tmp_path: Path, acdc_dir: Path) -> None:
    again = write_acdc_dataset(
        tmp_path / "again", num_train_patients=4, num_val_patients=2, labeled_patients=(1, 3), seed=3,
        size=ACDC_SIZE, num_slices=(6, 9), nifti=False,
    )
    assert _lines(again / "train.list") == _lines(acdc_dir / "train.list")
    volume = _lines(again / "val.list")[0]
    a, b = _read_h5(again / "volumes" / f"{volume}.h5"), _read_h5(acdc_dir / "volumes" / f"{volume}.h5")
    assert a["image"].tobytes() == b["image"].tobytes() and a["label"].tobytes() == b["label"].tobytes()
    assert not (again / "raw").exists()


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.real_data
def test_layouts_match_the_real_files(la_dir: Path, acdc_dir: Path) -> None:
    shared = _shared_data()
    la_real, acdc_real = shared / "la", shared / "acdc"
    if not (la_real / "train.list").is_file() or not (acdc_real / "train.list").is_file():
        pytest.skip(f"real data not found in {shared}")
    real_case = _lines(la_real / "train.list")[0]
    assert CASE_ID.match(real_case)
    with h5py.File(la_real / real_case / "mri_norm2.h5", "r") as real, h5py.File(
        la_dir / _lines(la_dir / "train.list")[0] / "mri_norm2.h5", "r"
    ) as ours:
        assert set(real) == set(ours)
        for key in real:
            assert real[key].dtype == ours[key].dtype and real[key].ndim == ours[key].ndim
        # the slice axis is the last and the shortest one in both
        assert int(np.argmin(real["image"].shape)) == int(np.argmin(ours["image"].shape)) == 2
    assert (la_real / "train_4_label.list").read_text().splitlines() == _lines(la_real / "train.list")[:4]

    real_volume = _lines(acdc_real / "train.list")[0]
    assert VOLUME_ID.match(real_volume)
    with h5py.File(acdc_real / "volumes" / f"{real_volume}.h5", "r") as real, h5py.File(
        acdc_dir / "volumes" / f"{_lines(acdc_dir / 'train.list')[0]}.h5", "r"
    ) as ours:
        assert set(real) == set(ours)
        assert real["label"].dtype == ours["label"].dtype
        assert real["image"].dtype.kind == ours["image"].dtype.kind == "f"
        assert real["image"].ndim == ours["image"].ndim == 3
        assert int(np.argmin(real["image"].shape)) == int(np.argmin(ours["image"].shape)) == 0
    real_patients = list(dict.fromkeys(v.split("_")[0] for v in _lines(acdc_real / "train.list")))
    assert _lines(acdc_real / "train_3_label.list") == sorted(
        f"{p}_frame{f:02d}" for p in real_patients[:3] for f in (1, 2)
    )


# ------------------------------------------------------------------------------------------------ command line


def test_cli_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["la", "--help"], ["acdc", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    assert "--num-slices" in capsys.readouterr().out


def test_cli_bad_argument_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["la", "--out", str(tmp_path), "--num-train", "2", "--num-labeled", "3", "--shape", "20", "20", "16"])
    assert exit_info.value.code == 2
    assert "num_labeled" in capsys.readouterr().err


def test_cli_module_writes_files(tmp_path: Path) -> None:
    out = tmp_path / "acdc"
    result = subprocess.run(
        [sys.executable, "-m", "crossmatch_ext.data.synthetic", "acdc", "--out", str(out), "--num-train", "2",
         "--num-val", "1", "--num-labeled", "1", "--shape", "48", "48", "--num-slices", "6", "7", "--no-nifti"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    assert len(list((out / "volumes").glob("*.h5"))) == 6
    assert len(_lines(out / "train_1_label.list")) == 2
    assert not (out / "raw").exists()
