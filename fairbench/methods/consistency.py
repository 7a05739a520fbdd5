"""Consistency regularisation (Krishnan & Rattani, 2023): the prediction on an image and on a
semantics-preserving augmentation of it should agree. Needs only the target label ("T").

Loss: cross-entropy plus ``alpha`` times a symmetric KL or Jensen-Shannon divergence between the
two views' softmaxes. The paper's augmentations are unpublished: ``x'`` is a photometric jitter
and a small translation made on the device (the deviation, and the formulas:
docs/methods.md#consistency).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from fairbench.methods.base import Batch, Hparams, Method, MethodContext, accuracy_of
from fairbench.methods.erm import ERM, ClassifierNet
from fairbench.pipeline import MEAN, STD
from fairbench.registry import register_method
from fairbench.search_spaces import LogUniform, searched


def divergence(logits_p: torch.Tensor, logits_q: torch.Tensor, kind: str = "js") -> torch.Tensor:
    """Batch mean of the symmetric KL (``"sym_kl"``) or Jensen-Shannon (``"js"``) divergence
    between the softmax distributions of two logit tensors (float32, nats)."""
    log_p = torch.log_softmax(logits_p.float(), dim=1)
    log_q = torch.log_softmax(logits_q.float(), dim=1)
    p, q = log_p.exp(), log_q.exp()
    if kind == "sym_kl":
        d = 0.5 * ((p * (log_p - log_q)).sum(1) + (q * (log_q - log_p)).sum(1))
    elif kind == "js":
        log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - torch.log(torch.tensor(2.0, device=log_p.device))
        d = 0.5 * ((p * (log_p - log_m)).sum(1) + (q * (log_q - log_m)).sum(1))
    else:
        raise ValueError(f"unknown divergence {kind!r}; use 'sym_kl' or 'js'")
    return d.mean()


def photometric_translate(x: torch.Tensor, brightness: float, contrast: float, saturation: float,
                          translate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample brightness / contrast / saturation jitter and translation of a normalised
    B x 3 x H x W batch (pixel = x * STD + MEAN in [0, 1]); returns a normalised batch."""
    b = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        u = torch.rand(b, 1, 1, 1, generator=generator, device="cpu" if generator is not None else x.device)
        return (lo + (hi - lo) * u).to(device=x.device, dtype=torch.float32)

    img = x.float() * STD + MEAN
    img = img + uniform(-brightness, brightness)
    mean = img.mean(dim=(1, 2, 3), keepdim=True)
    img = (img - mean) * uniform(1 - contrast, 1 + contrast) + mean
    grey = (0.299 * img[:, 0:1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:3])
    img = (img - grey) * uniform(1 - saturation, 1 + saturation) + grey
    img = img.clamp(0, 1)
    if translate > 0:
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=torch.float32)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, :, 2] = torch.cat([uniform(-2 * translate, 2 * translate).view(b, 1),
                                    uniform(-2 * translate, 2 * translate).view(b, 1)], 1)  # grid units span 2
        grid = F.affine_grid(theta, list(img.shape), align_corners=False)
        img = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return ((img - MEAN) / STD).to(x.dtype)


class ConsistencyHparams(Hparams):
    alpha: float = Field(
        1.0, ge=0.0, description="weight of the consistency term (our default; the paper's value is unpublished)",
        json_schema_extra=searched(LogUniform(0.1, 10.0)),
    )
    divergence: Literal["js", "sym_kl"] = Field(
        "js", description="Jensen-Shannon or symmetric KL between the two predictions"
    )
    brightness: float = Field(
        0.2, ge=0.0, description="additive brightness jitter, uniform in [-b, b] on [0, 1] pixels"
    )
    contrast: float = Field(0.2, ge=0.0, le=1.0, description="contrast factor uniform in [1 - c, 1 + c]")
    saturation: float = Field(0.2, ge=0.0, le=1.0, description="saturation factor uniform in [1 - s, 1 + s]")
    translate: float = Field(
        0.0625, ge=0.0, le=0.5, description="largest shift, as a fraction of the image size, per axis"
    )


@register_method("consistency")
class Consistency(Method):
    summary = ("Consistency regularisation (Krishnan & Rattani, 2023): CE + alpha * divergence between predictions on an "
               "image and an augmentation of it (the paper's augmentations are unpublished: colour jitter + shift here)")
    uses_train_groups = False
    Hparams = ConsistencyHparams
    data_parallel = ("its photometric jitter draws per-sample numbers from the global random generator, which every "
                     "process shares (so the shards would be jittered alike, unlike one process's batch)")
    attention_maps = ERM.attention_maps

    def __init__(self, ctx: MethodContext, hparams: ConsistencyHparams):
        super().__init__(ctx, hparams)
        self.net = ClassifierNet(ctx.make_backbone(), ctx.num_classes)
        self.optimizer = self.make_sgd(self.net.backbone)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            return photometric_translate(x, hp.brightness, hp.contrast, hp.saturation, hp.translate)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        n = len(batch.x)
        logits = self.net(torch.cat([batch.x, self.augment(batch.x)]))
        clean, aug = logits[:n], logits[n:]
        ce = F.cross_entropy(clean.float(), batch.y)
        div = divergence(clean, aug, self.hparams.divergence)
        loss = ce + self.hparams.alpha * div
        self.step(self.optimizer, loss)
        return {"loss": loss.detach(), "ce": ce.detach(), "divergence": div.detach(),
                "acc": accuracy_of(clean.detach(), batch.y)}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
