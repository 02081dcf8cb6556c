"""Active learning scores, ranking, cache and command line on generated data with a randomly initialised V-Net."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossmatch_ext.active_learning import (
    compute_study_scores,
    list_images,
    main,
    rank_studies,
    score_studies,
    study_id,
)
from crossmatch_ext.networks import VNet

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "crossmatch_la"
OVERRIDES = {"patch_size": [32, 32, 16]}


def _softmax(logits: list[float], shape: tuple[int, ...] = (4, 4, 4)) -> torch.Tensor:
    return torch.tensor(logits).softmax(0).view(-1, 1, 1, 1).expand(len(logits), *shape).clone()


def test_agreeing_decodes_score_zero_disagreement_and_disagreeing_ones_more():
    same = _softmax([0.0, 2.0])
    assert compute_study_scores(same, same, same)[0] == pytest.approx(0.0)
    disagreement, entropy, voxels = compute_study_scores(same, _softmax([2.0, 0.0]), _softmax([0.0, 0.5]))
    assert disagreement > 0.2 and 0 < entropy < 1 and voxels == 64


def test_a_study_without_predicted_foreground_scores_zero():
    background = _softmax([3.0, 0.0])
    assert compute_study_scores(background, background, background) == (0.0, 0.0, 0)


def test_scores_are_restricted_to_the_predicted_foreground():
    clean = _softmax([0.0, 2.0])
    clean[:, 0] = torch.tensor([1.0, 0.0]).view(2, 1, 1)  # first x-slab: confident background
    weak = clean.clone()
    weak[:, 0] = torch.tensor([0.6, 0.4]).view(2, 1, 1)  # disagreement on background only: ignored
    assert compute_study_scores(clean, weak, clean)[0] == pytest.approx(0.0)
    assert compute_study_scores(clean, weak, clean)[2] == 48


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("al")
    subprocess.run([sys.executable, "-m", "crossmatch_ext.data.synthetic", "la", "--out", str(root / "data"),
                    "--num-train", "3", "--num-val", "1", "--num-labeled", "1", "--shape", "32", "32", "16",
                    "--seed", "3"], check=True, capture_output=True, timeout=300)
    torch.manual_seed(0)
    model = root / "model.pt"
    torch.save(VNet(in_channels=1, out_channels=2, n_filters=16, normalization="batch").state_dict(), model)
    return {"images": root / "data" / "nifti" / "imagesTr", "model": model, "root": root}


def test_ranking_is_deterministic_and_cached_per_model(studies):
    images = sorted(str(p) for p in studies["images"].glob("*.nii.gz"))
    cache = studies["root"] / "cache.json"
    first, info = score_studies(BUNDLE, studies["model"], images, cache_path=cache, overrides=OVERRIDES)
    assert info["misses"] == len(images) and cache.is_file()
    cache.unlink()
    again, _ = score_studies(BUNDLE, studies["model"], images, cache_path=cache, overrides=OVERRIDES)
    assert [s.disagreement for s in again] == [s.disagreement for s in first]  # seeded dropout masks
    assert [s.id for s in rank_studies(again)] == [s.id for s in rank_studies(first)]
    _, info = score_studies(BUNDLE, studies["model"], images, cache_path=cache, overrides=OVERRIDES)
    assert info == {"path": str(cache), "hits": len(images), "misses": 0}
    # new weights: the cache is discarded
    torch.manual_seed(1)
    torch.save(VNet(in_channels=1, out_channels=2, n_filters=16, normalization="batch").state_dict(), studies["model"])
    _, info = score_studies(BUNDLE, studies["model"], images, cache_path=cache, overrides=OVERRIDES)
    assert info["misses"] == len(images)


def test_command_line_prints_the_ranking_as_json(studies, capsys):
    rc = main(["rank", "--bundle", str(BUNDLE), "--model", str(studies["model"]), "--images", str(studies["images"]),
               "--strategy", "entropy", "--override", "patch_size=[32,32,16]"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strategy"] == "entropy" and out["next"] == out["ranking"][0]["id"]
    assert [r["rank"] for r in out["ranking"]] == list(range(1, len(out["ranking"]) + 1))
    scores = [r["score"] for r in out["ranking"]]
    assert scores == sorted(scores, reverse=True)
    assert set(out["ranking"][0]) == {"rank", "score", "image", "id", "disagreement", "entropy", "foreground_voxels"}


def test_command_line_names_a_bad_image(studies, tmp_path, capsys):
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    rc = main(["rank", "--bundle", str(BUNDLE), "--model", str(studies["model"]), "--images", str(tmp_path),
               "--cache", os.fspath(tmp_path / "c.json"), "--override", "patch_size=[32,32,16]"])
    assert rc == 2
    assert "broken.nii.gz" in capsys.readouterr().err


def test_studies_in_per_case_folders_are_named_by_their_folder(studies, tmp_path, capsys):
    """The LA layout ``<CASE>/mri_norm2.h5``: every study is its case id, not the shared file name."""
    data = studies["root"] / "data"
    cases = {line.strip() for name in ("train.list", "val.list") for line in (data / name).read_text().splitlines()
             if line.strip()}
    lines: list[str] = []
    scores, _ = score_studies(BUNDLE, studies["model"], list_images(data), cache_path=tmp_path / "c.json",
                              overrides=OVERRIDES, progress=lines.append)
    assert {s.id for s in scores} == cases and len(scores) == len(cases)
    assert all(line.split("] ")[1].split(":")[0] in cases for line in lines)
    assert study_id("data/patient001_frame01.h5") == "patient001_frame01"
    rc = main(["rank", "--bundle", str(BUNDLE), "--model", str(studies["model"]), "--images", str(data),
               "--cache", os.fspath(tmp_path / "c.json"), "--override", "patch_size=[32,32,16]"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["next"] in cases
