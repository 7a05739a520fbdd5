"""Any timm model by name (``timm/<model_name>``), through timm's ``features_only`` API."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fairbench.backbones.base import BackboneError, FeatureBackbone, load_weights_file
from fairbench.registry import register_backbone

TIMM_PREFIX = "timm/"


def check_model_name(model_name: str) -> None:
    """A BackboneError unless timm knows ``model_name``."""
    import timm

    if not timm.list_models(model_name) and not timm.is_model(model_name):
        raise BackboneError(
            f"timm has no model {model_name!r}; list them with `python -c \"import timm; print(timm.list_models('res*'))\"`"
        )


class TimmBackbone(FeatureBackbone):
    def __init__(self, model_name: str, pretrained: bool | str | Path = False, num_stages: int = 4):
        super().__init__()
        import timm

        check_model_name(model_name)
        try:
            net = timm.create_model(model_name, pretrained=pretrained is True, features_only=True)
        except Exception as exc:
            if pretrained is True:
                raise BackboneError(
                    f"could not fetch pretrained weights for timm/{model_name} ({type(exc).__name__}: {exc}). "
                    "Offline? Save the weights elsewhere and pass `--set backbone.pretrained=/path/to/file`, "
                    "or use `--set backbone.pretrained=false`."
                ) from exc
            raise
        if pretrained and pretrained is not True:
            load_weights_file(net, pretrained)
        # features_only models return every reduction level; keep the deepest num_stages.
        self.net = net
        cfg = getattr(net, "pretrained_cfg", None) or {}
        if cfg.get("mean") and cfg.get("std"):  # the statistics its weights were trained with
            self.set_input_normalisation(cfg["mean"], cfg["std"])
        channels = list(net.feature_info.channels())
        self.keep = min(num_stages, len(channels))
        self.stage_channels = channels[-self.keep :]
        self.stages = nn.ModuleList()  # unused: timm runs its own stages

    @property
    def num_stages(self) -> int:
        return self.keep

    def forward_stages(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        # timm's FeatureListNet runs the whole network; truncation is not exposed, so run it all.
        feats = self.net(self.normalise(x))[-self.keep :]
        last = self.keep - 1 if upto is None else upto % self.keep
        return feats[: last + 1]


@register_backbone("timm")
def timm_backbone(pretrained: bool | str | Path = False, model_name: str = "resnet10t") -> FeatureBackbone:
    """any timm model: name it `timm/<model_name>` (e.g. timm/resnet10t, timm/convnext_tiny)"""
    return TimmBackbone(model_name, pretrained)
