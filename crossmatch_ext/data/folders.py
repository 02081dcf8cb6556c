"""Datalists of new images for inference."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["INFERENCE_PATTERNS", "image_folder_datalist"]

#: File patterns searched by default: NIfTI, NRRD, and the community HDF5 files.
INFERENCE_PATTERNS = ("*.nii.gz", "*.nii", "*.nrrd", "*.mha", "*.h5", "*/mri_norm2.h5")


def image_folder_datalist(folder: str | Path, patterns: str | Sequence[str] | None = None) -> list[dict[str, str]]:
    """``[{"image": path}]`` for every image of ``folder`` matching ``patterns`` (sorted, no duplicates).

    Args:
        folder: a folder of images, or a single image file.
        patterns: glob pattern(s) relative to ``folder`` (default :data:`INFERENCE_PATTERNS`). Segmentations
            written by a previous inference run (``*_seg.*``) and challenge label files (``*_gt.*``,
            ``laendo.nrrd``) are skipped.

    Returns:
        The datalist.

    Raises:
        FileNotFoundError: when ``folder`` does not exist or holds no matching image.
    """
    root = Path(folder)
    if root.is_file():
        return [{"image": str(root)}]
    if not root.is_dir():
        raise FileNotFoundError(f"inference input folder does not exist: {root}")
    globs = [patterns] if isinstance(patterns, str) else list(patterns or INFERENCE_PATTERNS)
    found: dict[str, None] = {}
    for pattern in globs:
        for path in sorted(root.glob(pattern)):
            name = path.name
            if name.endswith(("_seg.nii.gz", "_seg.nii", "_gt.nii.gz", "_gt.nii")) or name == "laendo.nrrd":
                continue
            found[str(path)] = None
    if not found:
        raise FileNotFoundError(f"no image matching {globs} in {root}")
    return [{"image": path} for path in found]
