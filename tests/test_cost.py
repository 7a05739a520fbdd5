"""Training cost: optimizer steps, images, measured FLOPs, wall time, peak memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fairbench import registry
from fairbench.backbones.base import FeatureBackbone
from fairbench.cost import CostMeter, TrainingCost, format_flops
from fairbench.methods.base import Batch, MethodContext, TrainConfigView


class TwoStageBackbone(FeatureBackbone):
    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
                                     nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())])
        self.stage_channels = [4, 8]


def _context(n: int = 16) -> MethodContext:
    return MethodContext(num_classes=2, train=TrainConfigView(2, 4, 0.1, 0.1, 0.9, 0.0), steps_per_epoch=4,
                         image_size=8, device=torch.device("cpu"), make_backbone=TwoStageBackbone,
                         train_targets=np.arange(n) % 2)


def _batch(b: int = 4) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(x=torch.randn(b, 3, 8, 8, generator=g), y=torch.arange(b) % 2, index=torch.arange(b))


def test_erm_counts_one_step_and_one_pass_per_update():
    erm = registry.methods.get("erm")
    method = erm(_context(), erm.Hparams())
    with CostMeter(method, torch.device("cpu")) as meter:
        for epoch in range(2):
            meter.begin_epoch()
            for _ in range(3):
                meter.update(lambda: method.update(_batch()))
        with torch.no_grad():
            method.predict(_batch().x)  # an evaluation pass: forwarded, not backwarded
    cost = meter.cost
    assert cost.updates == 6 and cost.optimizer_steps == 6
    assert cost.images_forwarded == 6 * 4 + 4 and cost.images_backwarded == 6 * 4
    assert len(cost.flops_per_update) == 2 and cost.train_flops == pytest.approx(6 * cost.flops_per_update[0])
    assert cost.train_seconds > 0 and cost.peak_memory_bytes > 0


def test_passes_between_epochs_are_measured_in_full_and_updates_of_varying_work_each():
    erm = registry.methods.get("erm")
    method = erm(_context(), erm.Hparams())
    with FlopCounterMode(display=False) as pass_counter, torch.no_grad():
        method.predict(_batch(8).x)
    with CostMeter(method, torch.device("cpu")) as meter, torch.no_grad():
        meter.between_epochs(lambda: method.predict(_batch(8).x))  # JTT's identification pass
    assert meter.cost.train_flops == meter.cost.between_epoch_flops == pass_counter.get_total_flops() > 0
    # work that depends on the batch (batches of 4, then 2): every update measured, not the first x 2
    method.same_work_every_update = False
    with CostMeter(method, torch.device("cpu")) as meter:
        meter.begin_epoch()
        for b in (4, 2):
            meter.update(lambda: method.update(_batch(b)))
    assert meter.cost.train_flops == pytest.approx(1.5 * meter.cost.flops_per_update[0])


def test_measured_flops_are_the_flop_counters_forward_and_backward():
    erm = registry.methods.get("erm")
    method = erm(_context(), erm.Hparams())
    batch = _batch()
    reference = erm(_context(), erm.Hparams())
    reference.load_state_dict(method.state_dict())
    with FlopCounterMode(display=False) as counter:
        reference.update(batch)
    with CostMeter(method, torch.device("cpu")) as meter:
        meter.update(lambda: method.update(batch))
    assert meter.cost.train_flops == counter.get_total_flops() > 0
    # forward + backward of the convolutions and the head: about 3x the forward alone
    with FlopCounterMode(display=False) as fwd:
        reference.predict(batch.x)
    assert 2.5 * fwd.get_total_flops() <= meter.cost.train_flops <= 3.5 * fwd.get_total_flops()


def test_a_method_with_two_optimizers_counts_both_steps():
    adversarial = registry.methods.get("adversarial")
    ctx = _context()
    ctx.train_groups = np.arange(16) % 2
    ctx.group_names = ["a", "b"]
    ctx.train_attributes = {"g": np.arange(16) % 2}
    ctx.attribute_sizes = {"g": 2}
    method = adversarial(ctx, adversarial.Hparams())
    batch = _batch()
    batch.group = torch.arange(4) % 2
    batch.attributes = {"g": torch.arange(4) % 2}
    with CostMeter(method, torch.device("cpu")) as meter:
        meter.update(lambda: method.update(batch))
    assert meter.cost.optimizer_steps == 2  # classifier and adversary


def test_hooks_are_removed_when_the_meter_closes():
    erm = registry.methods.get("erm")
    method = erm(_context(), erm.Hparams())
    with CostMeter(method, torch.device("cpu")) as meter:
        meter.update(lambda: method.update(_batch()))
    method.update(_batch())  # outside the meter: not counted
    assert meter.cost.optimizer_steps == 1 and meter.cost.images_forwarded == 4


def test_cost_round_trips_through_json_and_resumes():
    cost = TrainingCost(updates=3, optimizer_steps=15, train_flops=1.5e9, flops_per_update=[5e8])
    again = TrainingCost.from_json(cost.to_json())
    assert again == cost
    assert TrainingCost.from_json(None) == TrainingCost()
    assert format_flops(1.5e9) == "1.5 GFLOP" and format_flops(2.0e15) == "2 PFLOP"


def test_a_run_records_its_cost_and_fineface_pays_for_its_extra_steps(run_tiny):
    erm_path = run_tiny("erm", epochs=2)
    ff_path = run_tiny("fineface", epochs=2)
    erm_cost = json.loads((erm_path / "metrics.json").read_text())["cost"]
    ff_cost = json.loads((ff_path / "metrics.json").read_text())["cost"]
    n_batches = 256 // 32  # tiny_config: 256 training images, batch 32
    assert erm_cost["updates"] == ff_cost["updates"] == 2 * n_batches
    assert erm_cost["optimizer_steps"] == 2 * n_batches
    experts = json.loads((ff_path / "config.json").read_text())["hparams"]["num_experts"]
    assert ff_cost["optimizer_steps"] == (experts + 2) * 2 * n_batches
    assert ff_cost["train_flops"] > 2 * erm_cost["train_flops"] > 0
    assert erm_cost["images_backwarded"] == 2 * 256 and erm_cost["processes"] == 1
    history = json.loads((erm_path / "history.json").read_text())
    assert [h["cost"]["optimizer_steps"] for h in history] == [n_batches, 2 * n_batches]


def test_a_backbone_built_in_begin_epoch_is_counted(run_tiny):
    """JTT's second phase trains a fresh backbone, built in its begin_epoch: its images count too."""
    cost = json.loads((run_tiny("jtt", epochs=2, hparams={"identification_epochs": 1}) / "metrics.json").read_text())["cost"]
    assert cost["updates"] == 2 * (256 // 32) and cost["images_backwarded"] == 2 * 256


def test_cost_continues_over_a_resume(tmp_path, monkeypatch):
    from fairbench.training.run import execute
    from tests.conftest import crash_then_resume, tiny_config

    straight = json.loads((execute(tiny_config("erm", epochs=2), tmp_path / "a") / "metrics.json").read_text())["cost"]
    resumed_run = crash_then_resume(tiny_config("erm", epochs=2), tmp_path / "b", monkeypatch)
    resumed = json.loads((resumed_run / "metrics.json").read_text())["cost"]
    for key in ("updates", "optimizer_steps", "images_backwarded", "train_flops"):
        assert resumed[key] == straight[key], key


def test_an_epoch_doing_the_same_work_reuses_the_count_and_new_work_is_measured_again(monkeypatch):
    erm = registry.methods.get("erm")
    method = erm(_context(), erm.Hparams())
    counted = []  # one entry per update run under the FLOP counter
    original = FlopCounterMode.__enter__
    monkeypatch.setattr(FlopCounterMode, "__enter__", lambda self: (counted.append(1), original(self))[1])

    def epoch(meter, b):
        before = len(counted)
        meter.begin_epoch()
        batch = _batch(b)
        meter.update(lambda: method.update(batch), batch.x)
        return len(counted) - before

    with CostMeter(method, torch.device("cpu")) as meter:
        # first update on 4 images: counted; 4 again: reused; 2 (a new shape): counted
        assert [epoch(meter, b) for b in (4, 4, 2)] == [1, 0, 1]
        first, again, smaller = meter.cost.flops_per_update
        assert again == first and 0 < smaller < first
        # new trainable parameters (as JTT's second phase builds a new network): counted again
        method.net = type(method.net)(method.ctx.make_backbone(), 2)
        method.optimizer = method.make_sgd(method.net.backbone)
        assert epoch(meter, 4) == 1
    assert meter.cost.flops_per_update[3] == pytest.approx(first)
    assert meter.cost.train_flops == pytest.approx(3 * first + smaller)
