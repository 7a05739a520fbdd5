"""Multi-task (Das et al. 2018): loss composition on hand-computed cross-entropies, one head
per protected attribute, prediction from the target head only, and a tiny run."""

from __future__ import annotations

import math

import pytest
import torch

from fairbench.backbones.resnet import resnet_tiny
from fairbench.methods.multitask import Multitask, MultitaskHparams, multitask_loss
from tests.kit import SMALL_DATA, check_bf16_update, check_run_outputs, tiny_batch, tiny_context

LN2 = math.log(2.0)


def zero_logits():
    """All-zero logits: every cross-entropy is ln K (K = number of classes of the head)."""
    b = 5
    target = torch.zeros(b, 2)
    attributes = {"tone": torch.zeros(b, 4), "hair": torch.zeros(b, 2)}
    labels = {"tone": torch.tensor([0, 1, 2, 3, 0]), "hair": torch.tensor([0, 1, 0, 1, 0])}
    return target, torch.tensor([0, 1, 1, 0, 1]), attributes, labels


def test_fixed_weights_compose_the_loss():
    target, y, attributes, labels = zero_logits()
    total, parts = multitask_loss(target, y, attributes, labels, {"tone": 0.5, "hair": 2.0})
    assert math.isclose(float(parts["target"]), LN2, rel_tol=1e-6)
    assert math.isclose(float(parts["tone"]), math.log(4.0), rel_tol=1e-6)
    assert math.isclose(float(parts["hair"]), LN2, rel_tol=1e-6)
    # ln 2 + 0.5 ln 4 + 2 ln 2 = 4 ln 2
    assert math.isclose(float(total), 4 * LN2, rel_tol=1e-6)
    total0, _ = multitask_loss(target, y, attributes, labels, {"tone": 0.0, "hair": 0.0})
    assert math.isclose(float(total0), LN2, rel_tol=1e-6)  # zero weights: the target's CE alone


def test_uncertainty_weights_compose_the_loss():
    target, y, attributes, labels = zero_logits()
    s = torch.tensor([0.0, LN2, -LN2])  # target, tone, hair
    total, _ = multitask_loss(target, y, attributes, labels, {"tone": 9.0, "hair": 9.0}, log_vars=s)
    # sum exp(-s_t) CE_t + s_t / 2 = ln 2 + (ln 4 / 2 + ln 2 / 2) + (2 ln 2 - ln 2 / 2); fixed weights unused
    expected = LN2 + (math.log(4.0) / 2 + LN2 / 2) + (2 * LN2 - LN2 / 2)
    assert math.isclose(float(total), expected, rel_tol=1e-6)


def test_heads_per_protected_attribute_and_target_only_prediction():
    torch.manual_seed(0)
    ctx = tiny_context(num_classes=2)
    method = Multitask(ctx, MultitaskHparams(attribute_weights={"tone": 0.5}))
    assert {a: h.out_features for a, h in method.attribute_heads.items()} == {"tone": 3, "hair": 2}
    assert method.weights == {"tone": 0.5, "hair": 1.0}
    batch = tiny_batch(ctx)
    assert method.predict(batch.x).shape == (len(batch.x), 2)
    logs = method.update(batch)
    expected = float(logs["ce_target"]) + 0.5 * float(logs["ce_tone"]) + 1.0 * float(logs["ce_hair"])
    assert math.isclose(float(logs["loss"]), expected, rel_tol=1e-5)
    assert all(h.weight.grad is not None for h in method.attribute_heads.values())


def test_uncertainty_weighting_trains_its_log_variances():
    torch.manual_seed(0)
    ctx = tiny_context()
    method = Multitask(ctx, MultitaskHparams(weighting="uncertainty"))
    before = method.log_vars.detach().clone()
    method.update(tiny_batch(ctx))
    assert method.log_vars.shape == (3,) and not torch.equal(before, method.log_vars.detach())


def test_unknown_attribute_weight_is_an_error():
    with pytest.raises(ValueError, match="gender"):
        Multitask(tiny_context(), MultitaskHparams(attribute_weights={"gender": 1.0}))


def test_update_under_bf16_autocast():
    torch.manual_seed(0)
    ctx = tiny_context()
    ctx.make_backbone = resnet_tiny  # with batch norm
    check_bf16_update(Multitask(ctx, MultitaskHparams(weighting="uncertainty")), tiny_batch(ctx, b=16))


def test_multitask_trains_one_epoch(run_tiny):
    path = run_tiny("multitask", sets=SMALL_DATA)
    check_run_outputs(path)
