"""Each backbone owns its input normalisation: the pipeline's mean 0.5 / std 0.5 images are
mapped to the statistics its weights expect (a timm model's pretrained_cfg); the ResNets keep
0.5 / 0.5 (the paper's recipe)."""

from __future__ import annotations

import pytest
import torch

from fairbench import registry
from fairbench.pipeline import to_float


def _images(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (2, 32, 32, 3), generator=g, dtype=torch.uint8)


def test_resnets_keep_the_pipeline_normalisation():
    backbone = registry.backbones.get("resnet_tiny")()
    x = to_float(_images())
    assert backbone.input_mean == (0.5, 0.5, 0.5) and torch.equal(backbone.normalise(x), x)


def test_a_timm_model_sees_its_pretrained_statistics():
    pytest.importorskip("timm")
    backbone = registry.backbones.get("timm")(model_name="resnet10t").eval()
    cfg = backbone.net.pretrained_cfg
    assert backbone.input_mean == tuple(cfg["mean"]) != (0.5, 0.5, 0.5)
    raw = _images()
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    own = (raw.permute(0, 3, 1, 2).float() / 255 - mean) / std  # what timm's own transforms give
    assert torch.allclose(backbone.normalise(to_float(raw)), own, atol=1e-5)
    with torch.no_grad():
        ours = backbone.forward_stages(to_float(raw))[-1]
        direct = backbone.net(own)[-1]
    assert torch.allclose(ours, direct, atol=1e-4)
    # a fixed map, not weights: checkpoints keep the same keys
    assert not any("_in_" in k for k in backbone.state_dict())
