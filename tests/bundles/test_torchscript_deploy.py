"""Deployment with PyTorch alone: each bundle's exported ``model.ts`` in a fresh process that imports only torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from bundle_helpers import REPO_ROOT, run_bundle_cli

SCRIPT = REPO_ROOT / "scripts" / "torchscript_infer.py"

# Runs the deployment script in this (fresh) interpreter, then reports which packages it had imported.
RUNNER = """
import json, runpy, sys
sys.argv = [{script!r}] + {args!r}
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""


def _blob_volume(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grid))
    return (100.0 * (radius < 0.6) + rng.normal(0, 10, size=shape)).astype(np.float32)


def _export_and_reference(bundle: str, image: Path, tmp_path: Path, overrides: dict) -> tuple[Path, Path, torch.Tensor]:
    """Random weights -> models/model.pt -> ckpt_export model.ts; the bundle's own preprocessing + inferer output."""
    bundle_dir = REPO_ROOT / "bundles" / bundle
    configs = bundle_dir / "configs"
    parser = ConfigParser()
    parser.read_config(str(configs / "inference.yaml"))
    parser.read_meta(str(configs / "metadata.json"))
    parser.update({"bundle_root": str(bundle_dir), "device": "$torch.device('cpu')", "amp": False, **overrides})
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    for module in network.modules():  # non-trivial normalisation statistics, so eval mode matters
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    checkpoint = tmp_path / "models" / "model.pt"
    checkpoint.parent.mkdir()
    torch.save(network.state_dict(), checkpoint)

    model_ts = tmp_path / "model.ts"
    run_bundle_cli("ckpt_export", "network_def", "--filepath", str(model_ts), "--ckpt_file", str(checkpoint),
                   "--meta_file", str(configs / "metadata.json"), "--config_file", str(configs / "inference.yaml"),
                   "--bundle_root", str(bundle_dir))
    assert model_ts.is_file()

    data = parser.get_parsed_content("preprocessing")({"image": str(image)})
    volume = data["image"].as_tensor().float()
    network.eval()
    with torch.no_grad():
        reference = parser.get_parsed_content("inferer")(volume[None], network)[0]
    reference = reference.as_tensor() if hasattr(reference, "as_tensor") else reference
    volume_file = tmp_path / "volume.pt"
    torch.save(volume.clone(), volume_file)
    return model_ts, volume_file, reference.float()


def _run_torch_only(args: list[str]) -> set[str]:
    code = RUNNER.format(script=str(SCRIPT), args=args)
    result = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("bundle", "shape", "overrides", "protocol"),
    [
        # LA: the paper's protocol, one axis smaller than the window (zero padding), several windows per axis
        (
            "crossmatch_la", (40, 28, 24),
            {"eval_protocol": "paper", "patch_size": [32, 32, 16], "eval_strides": [16, 16, 8]},
            ["sliding", "--roi", "32", "32", "16", "--strides", "16", "16", "8"],
        ),
        # ACDC: the bundle's default slice protocol (nearest resize to 256x256 and back)
        ("crossmatch_acdc", (70, 54, 5), {}, ["slices", "--roi", "256", "256", "--mode", "nearest"]),
    ],
)
def test_exported_model_matches_bundle_inference_with_torch_alone(bundle, shape, overrides, protocol, tmp_path):
    image = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(_blob_volume(shape, seed=1), np.diag([0.8, 0.8, 1.5, 1.0])), image)
    model_ts, volume_file, reference = _export_and_reference(bundle, image, tmp_path, overrides)
    output = tmp_path / "pred.pt"

    assert float(reference.std()) > 1e-2  # scores that vary, so a wrong window or resize would show
    modules = _run_torch_only(["--model", str(model_ts), "--input", str(volume_file), "--output", str(output),
                               *protocol])

    assert "torch" in modules
    assert not {"monai", "crossmatch_ext", "nibabel", "ignite"} & modules
    pred = torch.load(output, weights_only=True)
    assert pred["scores"].shape == reference.shape == (reference.shape[0], *shape)
    torch.testing.assert_close(pred["scores"], reference, atol=1e-4, rtol=0)
    assert pred["labels"].dtype == torch.uint8
    assert torch.equal(pred["labels"], reference.argmax(0).to(torch.uint8))
