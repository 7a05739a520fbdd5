"""The backbone contract: a CNN split into feature stages, shallow to deep.

FineFACE attaches experts to the last N stages; every other method uses the pooled output
of the last stage. ``forward_stages(x, upto=k)`` runs only stages 0..k, so a shallow
expert's training step need not pay for the deeper stages.

Input normalisation is the backbone's own: the pipeline hands every backbone images
normalised with mean 0.5 / std 0.5 (fairbench.pipeline), and a backbone whose weights expect
other statistics (``input_mean`` / ``input_std``, e.g. a timm model's pretrained_cfg) maps them
to its own first (:meth:`FeatureBackbone.normalise`). The ResNets keep 0.5 / 0.5: that is the
paper's recipe (docs/specs-notes.md, "FineFACE"), with which its ImageNet weights were fine-tuned.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fairbench.pipeline import MEAN, STD


class BackboneError(ValueError):
    """Unknown backbone, bad weights file, or weights that cannot be fetched offline."""


#: the statistics the pipeline normalises every image with, per channel
PIPELINE_MEAN, PIPELINE_STD = (MEAN,) * 3, (STD,) * 3


class FeatureBackbone(nn.Module):
    """Subclasses fill ``self.stages`` (an nn.ModuleList) and ``self.stage_channels``, and call
    :meth:`set_input_normalisation` if their weights expect other statistics than 0.5 / 0.5."""

    stages: nn.ModuleList
    stage_channels: list[int]
    input_mean: tuple[float, ...] = PIPELINE_MEAN
    input_std: tuple[float, ...] = PIPELINE_STD

    def set_input_normalisation(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """Expect inputs normalised with ``mean`` / ``std`` (per channel): the pipeline's are mapped
        to them in :meth:`normalise` (a fixed affine map, not part of the saved weights)."""
        self.input_mean, self.input_std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        pm, ps = torch.tensor(PIPELINE_MEAN), torch.tensor(PIPELINE_STD)
        m, s = torch.tensor(self.input_mean), torch.tensor(self.input_std)
        # x_raw = x * ps + pm; x_own = (x_raw - m) / s = x * (ps / s) + (pm - m) / s
        self.register_buffer("_in_scale", (ps / s).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_in_shift", ((pm - m) / s).view(1, -1, 1, 1), persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Pipeline-normalised images -> the normalisation this backbone's weights expect."""
        if (self.input_mean, self.input_std) == (PIPELINE_MEAN, PIPELINE_STD):
            return x
        return x * self._in_scale.to(x.dtype) + self._in_shift.to(x.dtype)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def feature_dim(self) -> int:
        return self.stage_channels[-1]

    def forward_stages(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Outputs of stages 0..upto (inclusive; default: all), shallow to deep."""
        last = self.num_stages - 1 if upto is None else upto % self.num_stages
        outputs = []
        x = self.normalise(x)
        for stage in self.stages[: last + 1]:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled features of the last stage: B x feature_dim."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.forward_stages(x)[-1], 1), 1)


def load_weights_file(module: nn.Module, path: str | Path, *, strict: bool = False) -> None:
    """Load a local state-dict file (``.pt``/``.pth`` or ``.safetensors``) into ``module``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackboneError(f"pretrained weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise BackboneError(f"{path} holds no state dict (found {type(state).__name__})")
    # Checkpoints of whole classifiers carry heads we do not have: drop what does not fit.
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise BackboneError(
            f"none of the {len(state)} tensors in {path} match this backbone's parameter names; "
            f"expected names like {list(own)[:3]}"
        )
    missing = [k for k in own if k not in usable]
    if strict and missing:
        raise BackboneError(f"{path} lacks {len(missing)} backbone tensors, e.g. {missing[:3]}")
    module.load_state_dict(usable, strict=False)
