"""Backbones: staged CNN feature extractors (see ``base.py``), created by name."""

from __future__ import annotations

import functools
from pathlib import Path

from fairbench.backbones.base import BackboneError, FeatureBackbone


def _factory(name: str):
    from fairbench import registry

    try:
        return registry.backbones.get(name)
    except registry.RegistryError as exc:
        raise BackboneError(f"{exc} Any timm model works as `timm/<model_name>`.") from None


def check_backbone_name(name: str) -> None:
    """A BackboneError unless ``name`` names a backbone; builds nothing (a configuration check)."""
    if name.startswith("timm/"):
        from fairbench.backbones.timm_models import check_model_name

        check_model_name(name[len("timm/") :])
    else:
        _factory(name)


def create_backbone(name: str, pretrained: bool | str | Path = False) -> FeatureBackbone:
    """``resnet50``, ``resnet_tiny``, ... or ``timm/<model_name>`` for any timm model."""
    from fairbench import registry

    if name.startswith("timm/"):
        return registry.backbones.get("timm")(pretrained=pretrained, model_name=name[len("timm/") :])
    return _factory(name)(pretrained=pretrained)


@functools.lru_cache(maxsize=None)
def stage_channels(name: str) -> tuple[int, ...]:
    """Channels of each feature stage of backbone ``name``, shallow to deep, without weights or
    arithmetic: the network is built on the ``meta`` device (shapes only), once per process."""
    import torch

    with torch.device("meta"):
        return tuple(create_backbone(name, False).stage_channels)


__all__ = ["BackboneError", "FeatureBackbone", "check_backbone_name", "create_backbone", "stage_channels"]
