"""torchvision ResNets (18/34/50) as staged backbones, and a narrow ResNet for CPU runs.

Stages: [stem + layer1, layer2, layer3, layer4], so the last three are the paper's
expert inputs (ResNet-50: 512 / 1024 / 2048 channels).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from fairbench.backbones.base import BackboneError, FeatureBackbone, load_weights_file
from fairbench.registry import register_backbone

_TV_WEIGHTS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights"}


class TorchvisionResNet(FeatureBackbone):
    def __init__(self, arch: str, pretrained: bool | str | Path = False):
        super().__init__()
        import torchvision.models as tvm

        net = getattr(tvm, arch)(weights=None)
        if pretrained is True:
            weights = getattr(tvm, _TV_WEIGHTS[arch]).IMAGENET1K_V1  # the V1 weights the paper used
            try:
                net.load_state_dict(weights.get_state_dict(progress=False))
            except Exception as exc:  # offline, proxy, hub down ...
                raise BackboneError(
                    f"could not fetch ImageNet weights for {arch} ({type(exc).__name__}: {exc}). "
                    f"Offline? Download {weights.url} elsewhere and pass it with "
                    "`--set backbone.pretrained=/path/to/file.pth`, or train from scratch with "
                    "`--set backbone.pretrained=false`."
                ) from exc
        elif pretrained:
            load_weights_file(net, pretrained)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1),
                net.layer2,
                net.layer3,
                net.layer4,
            ]
        )
        expansion = 4 if arch == "resnet50" else 1
        self.stage_channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]


def _make_resnet(arch: str):
    def factory(pretrained: bool | str | Path = False) -> FeatureBackbone:
        return TorchvisionResNet(arch, pretrained)

    factory.__doc__ = f"torchvision {arch} (ImageNet V1 weights with pretrained=true, or a local file)"
    factory.__name__ = arch
    factory.__qualname__ = arch
    return factory


resnet18 = register_backbone("resnet18")(_make_resnet("resnet18"))
resnet34 = register_backbone("resnet34")(_make_resnet("resnet34"))
resnet50 = register_backbone("resnet50")(_make_resnet("resnet50"))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class NarrowResNet(FeatureBackbone):
    """ResNet with one BasicBlock per stage and channels 16-32-64-128: fast enough for CPU runs."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), pretrained: bool | str | Path = False):
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages = [nn.Sequential(stem, _BasicBlock(widths[0], widths[0], 1))]
        for cin, cout in zip(widths[:-1], widths[1:]):
            stages.append(_BasicBlock(cin, cout, 2))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = list(widths)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if pretrained is True:
            raise BackboneError("resnet_tiny has no published pretrained weights; pass a local file or false")
        if pretrained:
            load_weights_file(self, pretrained)


@register_backbone("resnet_tiny")
def resnet_tiny(pretrained: bool | str | Path = False) -> FeatureBackbone:
    """Narrow ResNet (16-32-64-128 channels, 1 block per stage) for CPU runs on the built-in benchmark"""
    return NarrowResNet(pretrained=pretrained)
