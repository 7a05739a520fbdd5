"""FineFACE with the paper profile's defaults against a per-sample reference written from the
description of the method (docs/specs-notes.md, "FineFACE": the class activation map, the attention
crop and one training iteration), not from either implementation.

The reference does everything one sample at a time with Python numbers, as the spec words it:
the CAM ``W2[k] @ W1 @ F``, the upsampled min-max normalised map, the mask's first and last
row / column, the box ``max(int(first - 0.1 H), 0)`` / ``min(int(last + 0.1 H), H)``, the slice
and ``F.interpolate(align_corners=True)``. The batched code must give the same boxes exactly,
the same crops bit for bit (CPU, float32, planes above 64 x 64 px; see
``fineface_attention.crop_and_resize``), and one whole training iteration (five SGD steps)
must leave the same losses, parameters, momentum buffers and BatchNorm statistics, bit for bit.

ATen's CPU interpolate associates its multiply-adds one way when it splits the work over
threads and another way on a single thread; the bit-for-bit tests run on 2 threads (the
suite's other tests on 1) and a tolerance test covers the single-threaded kernel.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fairbench.backbones import create_backbone
from fairbench.methods.base import Batch, MethodContext, TrainConfigView
from fairbench.methods.fineface import FineFACE, FineFACEHparams
from fairbench.methods.fineface_attention import attention_boxes, crop_and_resize, normalised_map, overall_map

THRESHOLD, PAD = 0.5, 0.1

# -- the reference, one sample at a time ------------------------------------------------------------


def spec_map(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """One h x w CAM: upsample (bilinear, align_corners=True), then (m - min) / (max - min + 1e-6)."""
    m = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=True)[0, 0]
    return (m - m.min()) / (m.max() - m.min() + 1e-6)


def spec_box(m: torch.Tensor, threshold: float = THRESHOLD) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of one normalised map, end exclusive, as the spec writes it."""
    h, w = m.shape
    mask = m >= threshold
    rows = torch.nonzero(mask.any(dim=1)).flatten().tolist()  # the rows with a mask pixel
    cols = torch.nonzero(mask.any(dim=0)).flatten().tolist()
    if not rows:  # an empty mask (constant or NaN map): the authors' code fails; ours takes the image
        return 0, h, 0, w
    y0, y1 = max(int(rows[0] - PAD * h), 0), min(int(rows[-1] + PAD * h), h)
    x0, x1 = max(int(cols[0] - PAD * w), 0), min(int(cols[-1] + PAD * w), w)
    return y0, max(y1, y0 + 1), x0, max(x1, x0 + 1)


def spec_crop(image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Slice one C x H x W image to the box and resize it back (bilinear, align_corners=True)."""
    y0, y1, x0, x1 = box
    return F.interpolate(image[None, :, y0:y1, x0:x1], size=tuple(image.shape[1:]), mode="bilinear",
                         align_corners=True)[0]


def spec_cams(net, out) -> list[list[torch.Tensor]]:
    """Per expert, per sample: W2[k] @ W1 @ F with k this expert's predicted class, current weights."""
    cams = []
    for fmap, head, logits in zip(out.feature_maps, net.heads, out.expert_logits):
        w1, w2 = head.fc1.weight.detach(), head.fc2.weight.detach()
        per_sample = []
        for b in range(fmap.shape[0]):
            k = int(logits[b].argmax())
            c, h, w = fmap[b].shape
            per_sample.append((w2[k] @ w1 @ fmap[b].reshape(c, h * w)).reshape(h, w))
        cams.append(per_sample)
    return cams


def spec_crops(net, out, x, threshold):
    """The crops A_1..A_N and A_oval of the batch x, and their boxes."""
    size = tuple(x.shape[-2:])
    maps = [[spec_map(c, size) for c in per_sample] for per_sample in spec_cams(net, out)]
    crops, boxes = [], []
    for per_sample in maps:
        bx = [spec_box(m, threshold) for m in per_sample]
        boxes.append(bx)
        crops.append(torch.stack([spec_crop(x[b], bx[b]) for b in range(len(x))]))
    oval_boxes = []
    for b in range(len(x)):
        total = maps[0][b]
        for per_expert in maps[1:]:
            total = total + per_expert[b]
        oval_boxes.append(spec_box((total - total.min()) / (total.max() - total.min() + 1e-6), threshold))
    oval = torch.stack([spec_crop(x[b], oval_boxes[b]) for b in range(len(x))])
    return crops, oval, boxes, oval_boxes


def spec_step(opt, loss):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def spec_iteration(net, opt, x, y, choices, threshold=THRESHOLD):
    """The spec's five steps for N = 3 experts; ``choices`` = the draws of e2 and e1 (0-based)."""
    ce = F.cross_entropy
    losses = {}
    out = net(x)  # 1. deepest expert on the raw batch
    losses["loss_e3"] = ce(out.expert_logits[2], y)
    spec_step(opt, losses["loss_e3"])
    with torch.no_grad():  # 2. crops from that forward, head weights as after the step
        (a1, a2, a3), oval, _, _ = spec_crops(net, out, x, threshold)
    pools = {1: [a3, a1, x], 0: [a3, a2, x]}  # e2 draws from {A3, A1, x}, e1 from {A3, A2, x}
    for i, choice in zip((1, 0), choices):  # 3. e2, then e1, on the whole network
        losses[f"loss_e{i + 1}"] = ce(net(pools[i][choice]).expert_logits[i], y)
        spec_step(opt, losses[f"loss_e{i + 1}"])
    out = net(oval)  # 4. everything on A_oval
    losses["loss_oval"] = ce(out.expert_logits[0], y) + ce(out.expert_logits[1], y) + ce(out.expert_logits[2], y) \
        + 2 * ce(out.concat_logits, y)
    spec_step(opt, losses["loss_oval"])
    out = net(x)  # 5. the concat head on the raw batch
    losses["loss_concat"] = 2 * ce(out.concat_logits, y)
    spec_step(opt, losses["loss_concat"])
    return {k: v.detach() for k, v in losses.items()}


# -- helpers -----------------------------------------------------------------------------------------

LR, BACKBONE_LR = 0.05, 0.01


def paper_defaults_method(size: int, **hparams) -> FineFACE:
    """FineFACE with the hyperparameters' defaults (= the paper profile's), small experts."""
    torch.manual_seed(0)
    ctx = MethodContext(
        num_classes=2,
        train=TrainConfigView(epochs=2, batch_size=8, lr=LR, backbone_lr=BACKBONE_LR, momentum=0.9, weight_decay=5e-4),
        steps_per_epoch=1, image_size=size, device=torch.device("cpu"),
        make_backbone=lambda: create_backbone("resnet_tiny", False), train_targets=np.zeros(8, dtype=np.int64),
    )
    return FineFACE(ctx, FineFACEHparams(expert_width=8, expert_out=16, **hparams))


def smooth_batch(b: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(b, 3, size // 8, size // 8, generator=g), size=(size, size), mode="bilinear",
                         align_corners=True).clamp(-1, 1)


def peaked_cams(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    """CAMs with one or two sharp peaks anywhere (corners and edges included) on a weak background."""
    g = torch.Generator().manual_seed(seed)
    cams = torch.rand(b, h, w, generator=g) * 0.1
    for i in range(b):
        for _ in range(1 + i % 2):
            r, c = int(torch.randint(0, h, (1,), generator=g)), int(torch.randint(0, w, (1,), generator=g))
            cams[i, r, c] = 5.0
    cams[0, 0, 0] = cams[1, h - 1, w - 1] = 9.0  # peaks in the corners
    return cams


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


# -- boxes and crops -----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [224, 448])
@pytest.mark.parametrize("cam_size", [7, 14, 28])
def test_boxes_equal_the_spec_on_peaked_cams(size, cam_size):
    cams = peaked_cams(6, cam_size, cam_size, seed=size + cam_size)
    maps = normalised_map(cams, (size, size))
    got = attention_boxes(maps)  # the default rule is the authors' code = the spec
    want = [spec_box(spec_map(c, (size, size))) for c in cams]
    assert got.tolist() == [list(b) for b in want]
    # and on the overall map of three experts
    maps3 = [normalised_map(peaked_cams(6, s, s, seed=s), (size, size)) for s in (28, 14, 7)]
    per_sample = [[spec_map(c, (size, size)) for c in peaked_cams(6, s, s, seed=s)] for s in (28, 14, 7)]
    want_oval = []
    for b in range(6):
        total = per_sample[0][b] + per_sample[1][b] + per_sample[2][b]
        want_oval.append(list(spec_box((total - total.min()) / (total.max() - total.min() + 1e-6))))
    assert attention_boxes(overall_map(maps3)).tolist() == want_oval


@pytest.mark.parametrize("size", [224, 448])
def test_boxes_equal_the_spec_on_degenerate_cams(size):
    h = w = 7
    cams = torch.stack([
        torch.zeros(h, w),  # constant: the normalised map is 0 everywhere, the mask is empty
        torch.full((h, w), 3.0),
        torch.full((h, w), float("nan")),
        torch.ones(h, w).index_put_((torch.tensor([3]), torch.tensor([3])), torch.tensor(2.0)),  # one hot pixel
        torch.arange(h * w, dtype=torch.float32).reshape(h, w),  # a ramp: the mask is half the image
        torch.eye(h),  # the diagonal
    ])
    maps = normalised_map(cams, (size, size))
    want = [list(spec_box(spec_map(c, (size, size)))) for c in cams]
    assert attention_boxes(maps).tolist() == want
    assert want[0] == want[1] == want[2] == [0, size, 0, size]


@pytest.mark.parametrize("size", [224, 448])
@pytest.mark.parametrize("channels_last", [False, True])
def test_exact_crops_equal_slice_and_interpolate_bit_for_bit(size, channels_last, two_threads):
    g = torch.Generator().manual_seed(size)
    x = torch.rand(6, 3, size, size, generator=g) * 2 - 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    identity = torch.tensor([[0, size, 0, size]] * 6)
    assert torch.equal(crop_and_resize(x, identity), x)  # the whole image: the input itself
    y0 = torch.randint(0, size - 2, (6,), generator=g)
    x0 = torch.randint(0, size - 2, (6,), generator=g)
    boxes = torch.stack([y0, y0 + 1 + torch.randint(1, size, (6,), generator=g) % (size - y0),
                         x0, x0 + 1 + torch.randint(1, size, (6,), generator=g) % (size - x0)], 1)
    boxes[1] = torch.tensor([0, size, 5, size - 9])  # full height: rows copied, columns resampled
    want = torch.stack([spec_crop(x[b], tuple(boxes[b].tolist())) for b in range(6)])
    assert torch.equal(crop_and_resize(x, boxes), want)


def test_exact_crops_on_one_thread_agree_to_float_rounding():
    torch.set_num_threads(1)  # conftest's setting: ATen's single-threaded loop
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 224, 224, generator=g) * 2 - 1
    boxes = torch.tensor([[10, 200, 30, 170], [0, 224, 0, 224], [50, 60, 70, 90], [0, 224, 100, 101]])
    got = crop_and_resize(x, boxes)
    want = torch.stack([spec_crop(x[b], tuple(boxes[b].tolist())) for b in range(4)])
    torch.testing.assert_close(got, want, rtol=0, atol=4 * torch.finfo(torch.float32).eps)
    assert torch.equal(got[1], x[1])  # the whole image stays exact


@pytest.mark.parametrize("size", [224, 448])
def test_grid_sample_crops_are_only_approximate(size):
    # on a ramp (pixel value = column), the error is the sampling position's error in pixels
    ramp = torch.arange(size, dtype=torch.float32).expand(2, 3, size, size).contiguous()
    identity = torch.tensor([[0, size, 0, size]] * 2)
    err = (crop_and_resize(ramp, identity, method="grid_sample") - ramp).abs().max().item()
    # not an identity, but within a few float32 ulp of the image coordinate
    assert 0 < err <= 4 * torch.finfo(torch.float32).eps * size
    assert torch.equal(crop_and_resize(ramp, identity, method="exact"), ramp)


# -- one training iteration ---------------------------------------------------------------------------

# the draws cover every crop A_1..A_3 and the raw x; threshold 0.5 is the paper's, but an untrained
# network's CAMs are broad and at 0.5 most boxes are the whole image, so 0.8 makes real crops
@pytest.mark.parametrize("threshold,choices", [(0.8, (0, 1)), (0.8, (1, 2)), (0.5, (0, 1))])
def test_one_iteration_equals_the_spec_bit_for_bit(monkeypatch, threshold, choices, two_threads):
    """Five losses, every parameter, SGD momentum buffer and BatchNorm statistic after one
    iteration, from the same initial network; the random draws of e2 and e1 are fixed."""
    torch.use_deterministic_algorithms(True)
    try:
        size = 72  # planes above 64 x 64 px: the exact crop is bit-identical to interpolate there
        m = paper_defaults_method(size, threshold=threshold)
        hp = m.hparams
        assert (hp.box_rule, hp.crop, hp.full_forward_for_shallow_experts) == ("authors", "exact", True)
        m.train()
        net = copy.deepcopy(m.net)
        opt = torch.optim.SGD([{"params": list(net.backbone.parameters()), "lr": BACKBONE_LR},
                               {"params": [p for n, p in net.named_parameters() if not n.startswith("backbone.")],
                                "lr": LR}], momentum=0.9, weight_decay=5e-4)
        x, y = smooth_batch(8, size), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
        draws = iter(choices)
        monkeypatch.setattr(m, "draw", lambda count, device: torch.tensor([next(draws)], device=device))
        inputs: dict[str, list[torch.Tensor]] = {"batched": [], "spec": []}
        for key, module in (("batched", m.net), ("spec", net)):
            module.register_forward_pre_hook(lambda mod, args, key=key: inputs[key].append(args[0].detach().clone()))

        logs = m.update(Batch(x=x.clone(), y=y, index=torch.arange(8)))
        want = spec_iteration(net, opt, x.clone(), y, choices, threshold=threshold)

        # the five forwards saw the same inputs: x, the two drawn crops (or x), A_oval, x
        assert len(inputs["batched"]) == len(inputs["spec"]) == 5
        for step, (a, b) in enumerate(zip(inputs["batched"], inputs["spec"])):
            assert torch.equal(a, b), f"input of step {step + 1}"
        if threshold > 0.5:
            assert not torch.equal(inputs["spec"][3], x)  # A_oval is a real crop
            assert any(not torch.equal(inputs["spec"][s], x) for s in (1, 2))  # so is a drawn A_m

        for k, v in want.items():
            assert torch.equal(logs[k], v), f"{k}: {logs[k].item()!r} != {v.item()!r}"
        for (name, p), (_, q) in zip(m.net.named_parameters(), net.named_parameters()):
            assert torch.equal(p, q), f"parameter {name}"
        buffers = dict(net.named_buffers())
        assert any("running_mean" in n for n in buffers)
        for name, buf in m.net.named_buffers():  # BatchNorm running statistics and batch counts
            assert torch.equal(buf, buffers[name]), f"buffer {name}"
        momentum = {id(p): opt.state[p].get("momentum_buffer") for p in net.parameters() if p in opt.state}
        theirs = [m.optimizer.state[p].get("momentum_buffer") if p in m.optimizer.state else None
                  for p in m.net.parameters()]
        ours = [momentum.get(id(q)) for q in net.parameters()]
        assert [t is None for t in theirs] == [o is None for o in ours]
        assert all(t is None or torch.equal(t, o) for t, o in zip(theirs, ours))
    finally:
        torch.use_deterministic_algorithms(False)
