"""Adversarial debiasing (Zhang et al. 2018): the projection update on hand-written gradients,
the gradient-reversal layer, the adversary's input, the wiring of one update, a tiny run."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from fairbench.backbones.resnet import resnet_tiny
from fairbench.methods.adversarial import (
    Adversarial,
    AdversarialHparams,
    LogitAdversary,
    grad_reverse,
    projected_gradients,
)
from tests.kit import SMALL_DATA, check_bf16_update, check_run_outputs, tiny_batch, tiny_context


def test_projection_removes_the_adversary_direction():
    g = torch.tensor([1.0, 1.0])
    h = torch.tensor([1.0, 0.0])  # unit vector already: proj_h(g) = (1, 0)
    (out,) = projected_gradients([g], [h], alpha=0.0)
    assert torch.allclose(out, torch.tensor([0.0, 1.0]))
    (out,) = projected_gradients([g], [h], alpha=0.5)  # ... minus 0.5 * h
    assert torch.allclose(out, torch.tensor([-0.5, 1.0]))


def test_projection_normalises_the_adversary_gradient():
    g = torch.tensor([3.0, 4.0])
    h = torch.tensor([0.0, 2.0])  # |h| = 2, u = (0, 1), g.u = 4
    (out,) = projected_gradients([g], [h], alpha=1.0)
    assert torch.allclose(out, torch.tensor([3.0, 4.0 - 4.0 - 2.0]))


def test_projection_is_per_parameter_tensor():
    # tensor 1: g = (1, 1), h = (1, 0) -> (0, 1); tensor 2: g = 2, h = -3 -> u = -1, g.u = -2,
    # g - (g.u) u = 2 - 2 = 0. A projection on the concatenation would give (1.5, 1, 0.5).
    g = [torch.tensor([1.0, 1.0]), torch.tensor([[2.0]])]
    h = [torch.tensor([1.0, 0.0]), torch.tensor([[-3.0]])]
    out = projected_gradients(g, h, alpha=0.0)
    assert torch.allclose(out[0], torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[1], torch.tensor([[0.0]]))
    out = projected_gradients(g, h, alpha=0.5)
    assert torch.allclose(out[1], torch.tensor([[1.5]]))  # 0 - 0.5 * (-3)


def test_projection_leaves_tensors_the_adversary_does_not_reach():
    g = torch.tensor([1.0, -2.0])
    out = projected_gradients([g, g], [None, torch.zeros(2)], alpha=0.3)
    assert torch.equal(out[0], g)
    assert torch.equal(out[1], g)  # zero adversary gradient: nothing to remove, no NaN


def test_gradient_reversal_layer():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = grad_reverse(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.tensor([4.0, 8.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-1.0, -2.0]))


def test_adversary_input_is_the_prediction_and_optionally_the_label():
    adv = LogitAdversary(num_classes=2, num_groups=6, condition_on_target=True)
    with torch.no_grad():
        adv.c.zero_()  # sharpness 1 + |c| = 1
        adv.body.weight.copy_(torch.eye(6))
        adv.body.bias.zero_()
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = (0.25, 0.75)
    out = adv(logits, torch.tensor([1]))
    # [s, s (x) onehot(y)] = [0.25, 0.75, s0*[y=0], s0*[y=1], s1*[y=0], s1*[y=1]]
    assert torch.allclose(out, torch.tensor([[0.25, 0.75, 0.0, 0.25, 0.0, 0.75]]))
    parity = LogitAdversary(num_classes=2, num_groups=3, condition_on_target=False)
    assert parity.body.in_features == 2


def _grads(method: Adversarial, batch, loss_name: str):
    """Gradients of L_cls or L_adv w.r.t. the classifier's parameters, at the current weights."""
    logits = method.net(batch.x)
    if loss_name == "cls":
        loss = F.cross_entropy(logits, batch.y)
    else:
        loss = F.cross_entropy(method.adversary(logits, batch.y), batch.group)
    params = list(method.net.parameters())
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("condition_on_target", [False, True])
def test_projection_update_is_orthogonal_to_the_adversary_gradient(condition_on_target):
    torch.manual_seed(0)
    ctx = tiny_context(num_groups=3)
    method = Adversarial(ctx, AdversarialHparams(alpha=0.0, condition_on_target=condition_on_target))
    batch = tiny_batch(ctx)
    before = copy.deepcopy(method)
    h = _grads(before, batch, "adv")
    adv_before = [p.detach().clone() for p in method.adversary.parameters()]
    method.update(batch)
    for p, hp in zip(method.net.parameters(), h):
        assert p.grad is not None
        assert abs(float((p.grad * hp).sum())) <= 1e-5 * float(p.grad.norm() * hp.norm()) + 1e-9
    # the adversary took its own step
    assert any(not torch.equal(a, b) for a, b in zip(adv_before, method.adversary.parameters()))


def test_gradient_reversal_update_subtracts_alpha_times_the_adversary_gradient():
    torch.manual_seed(0)
    ctx = tiny_context(num_groups=3)
    method = Adversarial(ctx, AdversarialHparams(mode="gradient_reversal", alpha=0.7))
    batch = tiny_batch(ctx)
    before = copy.deepcopy(method)
    g, h = _grads(before, batch, "cls"), _grads(before, batch, "adv")
    method.update(batch)
    for p, gp, hp in zip(method.net.parameters(), g, h):
        assert torch.allclose(p.grad, gp - 0.7 * hp, atol=1e-6)


def test_adversarial_declares_group_use():
    assert Adversarial.uses_train_groups is True
    with pytest.raises(ValueError):
        Adversarial(tiny_context(with_groups=False), AdversarialHparams())


@pytest.mark.parametrize("mode", ["projection", "gradient_reversal"])
def test_update_under_bf16_autocast(mode):
    torch.manual_seed(0)
    ctx = tiny_context()
    ctx.make_backbone = resnet_tiny  # with batch norm
    check_bf16_update(Adversarial(ctx, AdversarialHparams(mode=mode)), tiny_batch(ctx, b=16))


def test_adversarial_trains_one_epoch(run_tiny):
    check_run_outputs(run_tiny("adversarial", sets=SMALL_DATA))
