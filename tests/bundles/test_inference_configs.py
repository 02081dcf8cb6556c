"""What MONAI Label takes from each bundle's inference config: a fast default inferer and uint8 label maps."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose, SaveImaged

from crossmatch_ext.inferers import StridedSlidingWindowInferer

from bundle_helpers import REPO_ROOT


def _parser(bundle: str, *files: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(REPO_ROOT / "bundles" / bundle / "configs" / f) for f in files])
    parser.update({"bundle_root": str(REPO_ROOT / "bundles" / bundle)})
    return parser


def test_la_inference_defaults_to_monai_overlapping_windows_and_evaluation_to_the_paper_protocol():
    inferer = _parser("crossmatch_la", "inference.yaml").get_parsed_content("inferer")
    inferer = getattr(inferer, "inferer", inferer)  # inside a ResampledInferer (identity at downsample 1)
    assert type(inferer) is SlidingWindowInferer
    assert inferer.overlap == 0.25 and inferer.mode == "gaussian" and inferer.sw_batch_size == 4
    evaluation = _parser("crossmatch_la", "train.yaml", "evaluate.yaml").get_parsed_content("validate::inferer")
    evaluation = getattr(evaluation, "inferer", evaluation)  # inside a ResampledInferer (identity at downsample 1)
    assert isinstance(evaluation, StridedSlidingWindowInferer) and evaluation.strides == (18, 18, 4)


@pytest.mark.parametrize(("bundle", "classes"), [("crossmatch_la", 2), ("crossmatch_acdc", 4)])
def test_postprocessing_without_the_writer_gives_uint8_labels(bundle, classes, tmp_path):
    # MONAI Label drops SaveImaged from the postprocessing and writes what the rest returns
    path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((12, 10, 6), dtype=np.float32), np.eye(4)), path)
    parser = _parser(bundle, "inference.yaml")
    data = parser.get_parsed_content("preprocessing")({"image": str(path)})
    post = parser.get_parsed_content("postprocessing")
    kept = Compose([t for t in post.transforms if not isinstance(t, SaveImaged)])
    data["pred"] = MetaTensor(torch.randn(classes, 12, 10, 6), meta=data["image"].meta)
    out = kept(data)["pred"]
    assert out.dtype == torch.uint8
    assert tuple(out.shape) == (1, 12, 10, 6)
    assert set(out.unique().tolist()) <= set(range(classes))
