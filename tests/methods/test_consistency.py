"""Consistency regularisation (Krishnan & Rattani 2023): the divergence (hand values, symmetric,
zero on identical predictions), the augmentation, group blindness during a run, a tiny run."""

from __future__ import annotations

import math

import pytest
import torch

from fairbench.backbones.resnet import resnet_tiny
from fairbench.methods.consistency import Consistency, ConsistencyHparams, divergence, photometric_translate
from tests.kit import SMALL_DATA, check_bf16_update, check_run_outputs, tiny_batch, tiny_context

P = torch.log(torch.tensor([[0.5, 0.5]]))  # logits of p = (0.5, 0.5)
Q = torch.log(torch.tensor([[0.9, 0.1]]))  # logits of q = (0.9, 0.1)


def test_symmetric_kl_by_hand():
    kl_pq = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl_qp = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert math.isclose(float(divergence(P, Q, "sym_kl")), (kl_pq + kl_qp) / 2, rel_tol=1e-5)


def test_jensen_shannon_by_hand():
    m = (0.7, 0.3)
    kl_pm = 0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
    kl_qm = 0.9 * math.log(0.9 / m[0]) + 0.1 * math.log(0.1 / m[1])
    assert math.isclose(float(divergence(P, Q, "js")), (kl_pm + kl_qm) / 2, rel_tol=1e-5)


@pytest.mark.parametrize("kind", ["sym_kl", "js"])
def test_divergence_is_symmetric_and_zero_on_identical_predictions(kind):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 3, generator=g), torch.randn(16, 3, generator=g)
    assert torch.allclose(divergence(a, b, kind), divergence(b, a, kind), atol=1e-7)
    assert float(divergence(a, b, kind)) > 0
    assert abs(float(divergence(a, a, kind))) < 1e-7
    assert abs(float(divergence(a, a + 5.0, kind))) < 1e-6  # softmax is shift-invariant


def test_augmentation_changes_the_image_and_is_the_identity_at_zero_strength():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1  # normalised images in [-1, 1]
    out = photometric_translate(x, 0.2, 0.2, 0.2, 0.0625, generator=g)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.allclose(out, x)
    assert float(out.min()) >= -1 - 1e-6 and float(out.max()) <= 1 + 1e-6
    assert torch.allclose(photometric_translate(x, 0.0, 0.0, 0.0, 0.0, generator=g), x, atol=1e-6)


def test_one_update_adds_alpha_times_the_divergence():
    torch.manual_seed(0)
    ctx = tiny_context(with_groups=False)
    method = Consistency(ctx, ConsistencyHparams(alpha=2.0, divergence="sym_kl"))
    logs = method.update(tiny_batch(ctx, with_groups=False))
    assert math.isclose(float(logs["loss"]), float(logs["ce"]) + 2.0 * float(logs["divergence"]), rel_tol=1e-5)


def test_update_under_bf16_autocast():
    torch.manual_seed(0)
    ctx = tiny_context(with_groups=False)
    ctx.make_backbone = resnet_tiny  # with batch norm
    check_bf16_update(Consistency(ctx, ConsistencyHparams()), tiny_batch(ctx, b=16, with_groups=False))


def test_consistency_never_sees_group_labels(run_tiny, monkeypatch):
    assert Consistency.uses_train_groups is False
    seen = []
    original = Consistency.update

    def spy(self, batch):
        seen.append((batch.group, batch.attributes, self.ctx.train_groups, self.ctx.train_attributes))
        return original(self, batch)

    monkeypatch.setattr(Consistency, "update", spy)
    path = run_tiny("consistency", sets=SMALL_DATA)
    assert seen and all(item == (None, None, None, None) for item in seen)
    check_run_outputs(path)
