"""Networks of CrossMatch: the LA V-Net, the ACDC U-Net, feature perturbation and import of the authors' weights."""

from __future__ import annotations

from crossmatch_ext.networks.convert import convert_official_state_dict, load_official_checkpoint
from crossmatch_ext.networks.perturbation import EncoderDecoder, FeaturePerturbation, FeaturePerturbedNetwork
from crossmatch_ext.networks.unet import UNet
from crossmatch_ext.networks.vnet import VNet, match_spatial_size

__all__ = [
    "EncoderDecoder",
    "FeaturePerturbation",
    "FeaturePerturbedNetwork",
    "UNet",
    "VNet",
    "convert_official_state_dict",
    "load_official_checkpoint",
    "match_spatial_size",
]
