"""FineFACE: network shapes, the N + 2 training steps (order, inputs, truncated forwards),
fusion modes, group-blindness end to end, and the GPU benchmark script's CPU smoke mode.

What FineFACE must do: docs/specs-notes.md, "FineFACE"; the batched CAM / crop code has its own oracle
tests in ``test_fineface_attention.py`` and is used here as a trusted building block.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fairbench.backbones import create_backbone
from fairbench.methods.base import Batch, MethodContext, TrainConfigView
from fairbench.methods.fineface import FUSIONS, FineFACE, FineFACEHparams, FineFACENet
from fairbench.methods.fineface_attention import (
    attention_boxes,
    crop_and_resize,
    expert_cams,
    normalised_map,
    overall_map,
)
from tests.conftest import requires_cuda

REPO = Path(__file__).resolve().parents[2]


def context(backbone: str = "resnet_tiny", image_size: int = 32, num_classes: int = 2, lr: float = 0.05,
            device: str = "cpu") -> MethodContext:
    return MethodContext(
        num_classes=num_classes,
        train=TrainConfigView(epochs=2, batch_size=8, lr=lr, backbone_lr=lr, momentum=0.9, weight_decay=5e-4),
        steps_per_epoch=1,
        image_size=image_size,
        device=torch.device(device),
        make_backbone=lambda: create_backbone(backbone, False),
        train_targets=np.zeros(8, dtype=np.int64),
    )


SMALL = {"expert_width": 8, "expert_out": 16}


def method(**hparams) -> FineFACE:
    torch.manual_seed(0)
    return FineFACE(context(), FineFACEHparams(**{**SMALL, **hparams}))


def batch(b: int = 8, size: int = 32, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    # smooth images, so that crops of different boxes differ clearly
    x = torch.nn.functional.interpolate(torch.randn(b, 3, size // 4, size // 4, generator=g), size=(size, size),
                                        mode="bilinear", align_corners=True)
    return Batch(x=x, y=torch.arange(b) % 2, index=torch.arange(b))


# -- network --------------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", ["resnet_tiny", "resnet18"])
@pytest.mark.parametrize("num_experts", [2, 3])
@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_network_shapes_any_backbone(backbone, num_experts, pooling):
    bb = create_backbone(backbone, False)
    net = FineFACENet(bb, list(range(4 - num_experts, 4)), num_classes=3, width=8, out_channels=16, pooling=pooling)
    for size in (32, 48):  # adaptive pooling: any input size
        x = torch.randn(2, 3, size, size)
        stage_sizes = [f.shape[-1] for f in bb.forward_stages(x)]
        out = net(x)
        assert len(out.expert_logits) == num_experts and out.concat_logits.shape == (2, 3)
        assert all(lg.shape == (2, 3) for lg in out.expert_logits)
        for fmap, s in zip(out.feature_maps, net.stages):
            assert fmap.shape == (2, 16, stage_sizes[s], stage_sizes[s]) and not fmap.requires_grad
    # expert inputs come from the backbone's stage_channels
    for block, s in zip(net.blocks, net.stages):
        assert block[0].in_channels == bb.stage_channels[s]
    assert net.concat_head[1].in_features == 16 * num_experts


def test_layers_are_the_codes():
    net = method(expert_width=512, expert_out=1024).net
    block, head = net.blocks[0], net.heads[0]
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert block[0].kernel_size == (1, 1) and block[0].bias is None and block[0].out_channels == 512
    assert block[3].kernel_size == (3, 3) and block[3].padding == (1, 1) and block[3].bias is None
    assert block[3].out_channels == 1024
    assert all(bn.eps == 1e-5 and bn.momentum == 0.01 for bn in (block[1], block[4]))
    assert [type(m) for m in head] == [nn.BatchNorm1d, nn.Linear, nn.BatchNorm1d, nn.ELU, nn.Linear]
    assert (head.fc1.in_features, head.fc1.out_features, head.fc2.in_features) == (1024, 512, 512)
    assert net.concat_head.fc1.in_features == 3 * 1024
    assert type(method(activation="elu").net.blocks[0][2]) is nn.ELU


def test_stages_and_num_experts():
    assert method(stages=[0, 2]).net.stages == [0, 2]
    assert method(stages=[-2, -1]).net.stages == [2, 3]
    assert method(num_experts=2).net.stages == [2, 3]
    with pytest.raises(ValueError, match="num_experts is 3"):
        FineFACEHparams(stages=[1, 2], num_experts=3)
    with pytest.raises(ValueError, match="only 4 stages"):
        method(num_experts=5)
    with pytest.raises(ValueError, match="shallow to deep"):
        method(stages=[2, 1])


def test_unknown_hparam_lists_valid_keys():
    from fairbench.config import ConfigError
    from tests.conftest import tiny_config

    with pytest.raises(ConfigError, match="num_experts"):
        tiny_config("fineface", hparams={"experts": 3})


# -- the N + 2 training steps ---------------------------------------------------------------------

class Recorder:
    """Spies on one FineFACE: forward calls (input, arguments), backbone stages and expert
    blocks run, and for every optimizer step the heads that received gradients."""

    def __init__(self, m: FineFACE, monkeypatch):
        self.m = m
        self.forwards: list[dict] = []
        self.steps: list[dict] = []
        self.stage_calls: list[int] = []
        self.cam_weights: list[tuple[torch.Tensor, torch.Tensor]] = []  # (W1, W2) per CAM
        self.weights_after_first_step: list[tuple[torch.Tensor, torch.Tensor]] = []
        net = m.net
        original_forward = net.forward

        def forward(x, upto_expert=None, only_last=False):
            out = original_forward(x, upto_expert=upto_expert, only_last=only_last)
            self.forwards.append({"x": x.detach().clone(), "upto": upto_expert, "only_last": only_last, "out": out})
            return out

        monkeypatch.setattr(net, "forward", forward)
        for i, stage in enumerate(net.backbone.stages):
            stage.register_forward_hook(lambda mod, inp, out, i=i: self.stage_calls.append(i))
        for i, block in enumerate(net.blocks):
            block.register_forward_hook(lambda mod, inp, out, i=i: self.stage_calls.append(f"e{i + 1}"))
        original_step = m.optimizer.step

        def step(*args, **kwargs):
            grads = {f"e{i + 1}": net.heads[i].fc2.weight.grad is not None for i in range(net.num_experts)}
            grads["concat"] = net.concat_head.fc2.weight.grad is not None
            self.steps.append({"grads": grads, "stages": list(self.stage_calls)})
            self.stage_calls.clear()
            result = original_step(*args, **kwargs)
            if len(self.steps) == 1:
                self.weights_after_first_step = [(h.fc1.weight.detach().clone(), h.fc2.weight.detach().clone())
                                                 for h in net.heads]
            return result

        monkeypatch.setattr(m.optimizer, "step", step)
        import fairbench.methods.fineface as module

        def cams_spy(fmap, w1, w2, logits):
            self.cam_weights.append((w1.detach().clone(), w2.detach().clone()))
            return expert_cams(fmap, w1, w2, logits)

        monkeypatch.setattr(module, "expert_cams", cams_spy)


def expected_crops(m: FineFACE, x: torch.Tensor, first: dict, weights: list[torch.Tensor]):
    """A_1..A_N and A_oval from the step-1 forward with the given head weights (after the step)."""
    size = x.shape[-2:]
    maps = [normalised_map(expert_cams(f, w1, w2, lg), size)
            for f, (w1, w2), lg in zip(first["out"].feature_maps, weights, first["out"].expert_logits)]
    hp = m.hparams
    crops = [crop_and_resize(x, attention_boxes(mp, hp.threshold, hp.pad_ratio, hp.box_rule), method=hp.crop)
             for mp in maps]
    oval = crop_and_resize(x, attention_boxes(overall_map(maps), hp.threshold, hp.pad_ratio, hp.box_rule),
                           method=hp.crop)
    return crops, oval


def test_candidate_pools_are_the_codes():
    m = method()
    # 0-based expert indices, None = raw x: e2 draws from {A3, A1, x}, e1 from {A3, A2, x}
    assert m.candidates(1) == [2, 0, None]
    assert m.candidates(0) == [2, 1, None]
    assert method(num_experts=4).candidates(1) == [3, 2, 0, None]


@pytest.mark.parametrize("choice", [0, 1, 2])
def test_training_iteration_steps_in_order_with_the_right_inputs(monkeypatch, choice):
    m = method(threshold=0.8)  # small boxes: the candidate crops differ clearly
    m.train()
    rec = Recorder(m, monkeypatch)
    draws = []

    def draw(count, device):
        draws.append(count)
        return torch.tensor([choice], device=device)

    monkeypatch.setattr(m, "draw", draw)
    b = batch()
    logs = m.update(b)
    x = b.x

    # N + 2 = 5 optimizer steps, deepest expert first, then e2, e1, all on A_oval, concat on x
    heads_with_grad = [sorted(k for k, v in s["grads"].items() if v) for s in rec.steps]
    assert heads_with_grad == [["e3"], ["e2"], ["e1"], ["concat", "e1", "e2", "e3"], ["concat"]]
    assert draws == [3, 3]
    fw = rec.forwards
    assert len(fw) == 5
    assert torch.equal(fw[0]["x"], x) and fw[0]["upto"] is None
    assert torch.equal(fw[4]["x"], x) and fw[4]["upto"] is None

    # the crops come from the step-1 forward with the head weights as after step 1
    assert len(rec.cam_weights) == 3
    for used, after in zip(rec.cam_weights, rec.weights_after_first_step):
        assert all(torch.equal(u, a) for u, a in zip(used, after))
    crops, oval = expected_crops(m, x, fw[0], rec.weights_after_first_step)
    a1, a2, a3 = crops
    pools = {"e2": [a3, a1, x], "e1": [a3, a2, x]}
    for u, v in [(a1, a2), (a1, a3), (a2, a3), (a1, x), (a2, x), (a3, x)]:
        assert (u - v).abs().max() > 1e-3  # a meaningful test: the candidates differ
    # the default runs the whole network in the shallow experts' steps, as the code does
    assert fw[1]["upto"] is None and torch.allclose(fw[1]["x"], pools["e2"][choice], atol=1e-5)
    assert fw[2]["upto"] is None and torch.allclose(fw[2]["x"], pools["e1"][choice], atol=1e-5)
    assert torch.allclose(fw[3]["x"], oval, atol=1e-5) and fw[3]["upto"] is None

    assert set(logs) == {"loss_e3", "loss_e2", "loss_e1", "loss_oval", "loss_concat", "loss", "acc"}
    assert all(torch.isfinite(v) for v in logs.values())
    # training accuracy: the concat head on the raw batch (last pass)
    assert float(logs["acc"]) == pytest.approx(float((fw[4]["out"].concat_logits.argmax(1) == b.y).float().mean()))


def test_the_random_draw_covers_the_pool():
    m = method()
    seen = {int(m.draw(3, torch.device("cpu"))) for _ in range(200)}
    assert seen == {0, 1, 2}


@pytest.mark.parametrize("full", [False, True])
def test_shallow_expert_steps_run_the_backbone_only_up_to_their_stage(monkeypatch, full):
    m = method(full_forward_for_shallow_experts=full)
    m.train()
    rec = Recorder(m, monkeypatch)
    m.update(batch())
    everything = [0, 1, 2, 3, "e1", "e2", "e3"]
    run = [sorted(s["stages"], key=str) for s in rec.steps]
    assert run[0] == run[3] == run[4] == sorted(everything, key=str)
    if full:
        assert run[1] == run[2] == sorted(everything, key=str)
    else:  # e2 reads stage 2 (layer3), e1 stage 1 (layer2): nothing deeper, no other expert
        assert run[1] == sorted([0, 1, 2, "e2"], key=str)
        assert run[2] == sorted([0, 1, "e1"], key=str)
    # the same gradients reach the trained expert either way: only BN statistics differ
    assert [s["grads"] for s in rec.steps][1] == {"e1": False, "e2": True, "e3": False, "concat": False}


def test_truncated_and_full_forward_give_the_same_expert_logits():
    m = method()
    m.eval()
    x = batch().x
    with torch.no_grad():
        full = m.net(x)
        for i in range(3):
            part = m.net(x, upto_expert=i, only_last=True)
            assert torch.allclose(part.expert_logits[0], full.expert_logits[i], atol=1e-5)


def test_batch_of_one_is_refused():
    m = method()
    m.train()
    with pytest.raises(ValueError, match="at least 2 samples"):
        m.update(batch(b=1))


# -- inference --------------------------------------------------------------------------------------

def test_fusion_modes(monkeypatch):
    m = method()
    m.train()
    m.update(batch())
    m.eval()
    x = batch(seed=1).x
    with torch.no_grad():
        raw = m.net(x)
        maps = [normalised_map(c, x.shape[-2:]) for c in m.net.cams(raw)]
        att = m.net(crop_and_resize(x, attention_boxes(overall_map(maps))))
        e = lambda o: sum(o.expert_logits)  # noqa: E731
        want = {
            "all": e(raw) + raw.concat_logits + e(att) + att.concat_logits,
            "raw": e(raw) + raw.concat_logits,
            "attention": e(att) + att.concat_logits,
            "experts": e(raw) + e(att),
            "concat": raw.concat_logits + att.concat_logits,
            "concat_raw": raw.concat_logits,
        }
        assert set(want) == set(FUSIONS)
        for fusion, expected in want.items():
            calls = []
            original = m.net.forward
            monkeypatch.setattr(m.net, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
            got = m.fused_logits(x, fusion)
            monkeypatch.undo()
            assert torch.allclose(got, expected, atol=1e-4), fusion
            assert len(calls) == (1 if fusion in ("raw", "concat_raw") else 2), fusion
        assert torch.allclose(m.predict(x), want["all"], atol=1e-4)  # the default
        m.hparams.fusion = "concat"
        assert torch.allclose(m.predict(x), want["concat"], atol=1e-4)


def test_predict_and_attention_maps_without_host_sync(monkeypatch):
    m = method()
    m.train()
    b = batch()
    m.update(b)  # warm-up, outside the spy
    m.eval()

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation")

    for name in ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    monkeypatch.setattr(torch, "nonzero", forbidden)
    with torch.inference_mode():
        logits = m.predict(b.x)
        maps = m.attention_maps(b.x)
    monkeypatch.undo()
    assert logits.shape == (8, 2)
    names = [k for k in maps if k != "boxes"]
    assert names == ["expert 1 (layer2)", "expert 2 (layer3)", "expert 3 (layer4)", "overall"]
    for name in names:
        assert maps[name].shape == (8, 32, 32)
        assert float(maps[name].min()) >= 0 and float(maps[name].max()) <= 1
        assert maps["boxes"][name].shape == (8, 4)


def test_update_without_host_sync_in_the_method(monkeypatch):
    """The crops, the random draw and the input choice stay on the device: no ``.item()`` etc.
    (SGD itself is not spied on: only tensor-to-host conversions are forbidden.)"""
    m = method()
    m.train()
    b = batch()

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation")

    for name in ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    logs = m.update(b)
    monkeypatch.undo()
    assert torch.isfinite(logs["loss"])


# -- end to end ------------------------------------------------------------------------------------

def test_group_labels_never_reach_fineface(tmp_path, monkeypatch):
    from fairbench.runs.record import RunRecord
    from fairbench.training.run import execute
    from tests.conftest import tiny_config

    seen = []
    original = FineFACE.update

    def spy(self, b):
        seen.append((b.group, b.attributes, self.ctx.train_groups, self.ctx.group_names, self.ctx.train_attributes))
        return original(self, b)

    monkeypatch.setattr(FineFACE, "update", spy)
    cfg = tiny_config("fineface", hparams=SMALL, **{"data.options": {"n_train": 64, "n_val": 32, "n_test": 32}})
    path = execute(cfg, tmp_path)
    assert len(seen) == 2 and all(item == (None, None, None, None, None) for item in seen)
    record = RunRecord(path)
    assert record.status["state"] == "done"
    assert np.isfinite(record.metrics()["test"]["accuracy"])


def test_listed_as_target_only():
    from fairbench import registry
    from fairbench.methods.base import needs_label

    assert registry.methods.get("fineface") is FineFACE
    assert needs_label(FineFACE) == "T"


# -- GPU benchmark script: CPU smoke mode -------------------------------------------------------------

def _gpu_script():
    """benchmarks/gpu_throughput.py as a module (in process: a subprocess would re-import torch)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_throughput", REPO / "benchmarks" / "gpu_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_script_smoke_mode_on_cpu(tmp_path, capsys):
    out = tmp_path / "bench.json"
    script = _gpu_script()
    # the smoke mode, with a narrow backbone and narrow experts to keep the test fast
    # (the script's defaults are ResNet-50 and the code's 512 / 1024 experts)
    assert script.main(["--device", "cpu", "--steps", "1", "--image-size", "64", "--batch-size", "2",
                        "--backbone", "resnet_tiny", "--warmup", "0", "--json", str(out),
                        "--fineface-hparams", json.dumps(SMALL)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert {(r["method"], r["mode"]) for r in rows} == {(a, b) for a in ("erm", "fineface") for b in ("train", "eval")}
    assert all(r["images_per_s"] > 0 and r["flops_per_step"] > 0 and r["precision"] == "fp32" for r in rows)
    by = {(r["method"], r["mode"]): r["flops_per_step"] for r in rows}
    assert by[("fineface", "train")] > 3 * by[("erm", "train")]  # five passes and the experts
    assert "images/s" in capsys.readouterr().out


def test_gpu_benchmark_script_arguments():
    script = _gpu_script()
    args = script.parse_args(["--device", "cpu"])
    assert args.precision == ["fp32"] and args.warmup == 1 and args.channels_last and args.image_size == 448
    args = script.parse_args(["--precision", "bf16", "--no-channels-last", "--fineface-hparams",
                              '{"full_forward_for_shallow_experts": true}'])
    assert args.precision == ["bf16"] and not args.channels_last
    assert args.fineface_hparams == {"full_forward_for_shallow_experts": True}
    for bad in (["--methods", "jtt"], ["--precision", "fp16"], ["--batch-size", "1"]):
        with pytest.raises(SystemExit):
            script.parse_args(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without CUDA")
def test_gpu_benchmark_script_says_when_cuda_is_absent(capsys):
    assert _gpu_script().main([]) == 2
    err = capsys.readouterr().err
    assert "CUDA" in err and "--device cpu" in err


# -- CUDA -----------------------------------------------------------------------------------------------

@pytest.mark.cuda
@requires_cuda
def test_training_iteration_under_bf16_autocast_on_cuda():
    torch.manual_seed(0)
    m = FineFACE(context(device="cuda"), FineFACEHparams(**SMALL)).cuda()
    m.train()
    b = batch()
    b = Batch(x=b.x.cuda().contiguous(memory_format=torch.channels_last), y=b.y.cuda(), index=b.index.cuda())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logs = m.update(b)
    assert all(torch.isfinite(v) for v in logs.values())
    m.eval()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        logits = m.predict(b.x)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
