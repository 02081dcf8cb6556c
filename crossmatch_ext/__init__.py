"""CrossMatch semi-supervised segmentation for MONAI: networks, losses, engines, transforms, data and metrics."""

from __future__ import annotations

__version__ = "0.2.0"
