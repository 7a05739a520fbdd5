"""Backbones: staged CNN feature extractors (see ``base.py``), created by name."""

from __future__ import annotations

from pathlib import Path

from fairbench.backbones.base import BackboneError, FeatureBackbone


def create_backbone(name: str, pretrained: bool | str | Path = False) -> FeatureBackbone:
    """``resnet50``, ``resnet_tiny``, ... or ``timm/<model_name>`` for any timm model."""
    from fairbench import registry

    if name.startswith("timm/"):
        return registry.backbones.get("timm")(pretrained=pretrained, model_name=name[len("timm/") :])
    try:
        factory = registry.backbones.get(name)
    except registry.RegistryError as exc:
        raise BackboneError(f"{exc} Any timm model works as `timm/<model_name>`.") from None
    return factory(pretrained=pretrained)


__all__ = ["BackboneError", "FeatureBackbone", "create_backbone"]
