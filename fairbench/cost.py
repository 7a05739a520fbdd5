"""What a run's training cost: optimizer steps, images forwarded and backwarded, training FLOPs,
wall time and peak memory, so that methods can be compared at equal budgets.

FLOPs are measured with ``FlopCounterMode`` on the first update of an epoch whose work is new to
the run (a new input shape or new trainable parameters, as JTT's second phase builds; the counter
slows the update it watches, so the others reuse its count), on every update for a method whose
work depends on the batch, plus a method's own passes between epochs in full; steps are counted by
a global optimizer step hook, images at the input of every backbone the method owns.
Validation and test predictions are evaluation, not training, and are not counted.
Details: docs/fair-comparison.md#how-a-runs-cost-is-measured-fairbenchcostpy
"""

from __future__ import annotations

import resource
import sys
import time
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fairbench.backbones.base import FeatureBackbone


@dataclass
class TrainingCost:
    updates: int = 0  # calls of Method.update (batches)
    optimizer_steps: int = 0  # optimizer.step() calls, every optimizer
    images_forwarded: int = 0  # through a backbone, training and the method's own between-epoch passes
    images_backwarded: int = 0  # forwarded with autograd on
    train_flops: float = 0.0  # forward + backward, measured per epoch, passes between epochs included
    between_epoch_flops: float = 0.0  # of which in Method.begin_epoch (JTT's identification pass)
    train_seconds: float = 0.0  # wall time inside Method.update and Method.begin_epoch
    peak_memory_bytes: int = 0  # CUDA: peak allocated; CPU: the process's peak resident set
    peak_memory_kind: str = ""
    flops_per_update: list[float] = field(default_factory=list)  # one per epoch (of its first update)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["flops_method"] = ("first update of each epoch x updates (measured once per input shape and set of "
                               "trainable parameters; every update if the method's work depends on the batch), "
                               "plus every pass between epochs in full (torch.utils.flop_counter)")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "TrainingCost":
        if not data:
            return cls()
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _process_peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


class CostMeter:
    """Counts a method's training cost while active (``with meter:``); resumable from a record.

    Use ``meter.update(batch_fn)`` around each ``Method.update`` call and ``meter.begin_epoch()``
    before each epoch (after ``Method.begin_epoch``)."""

    def __init__(self, method: nn.Module, device: torch.device, start: TrainingCost | None = None):
        self.method, self.device = method, device
        self.cost = start or TrainingCost()
        self._handles: list[Any] = []
        self._hooked: weakref.WeakSet = weakref.WeakSet()
        self._measure_next = True
        self._epoch_flops = 0.0
        self._measure_every_update = not getattr(method, "same_work_every_update", True)
        self._measured: dict[tuple, float] = {}  # work key -> FLOPs of one update (see update)
        # seconds and count of updates run under the FLOP counter and of the others (counting_seconds)
        self._timed = {True: [0.0, 0], False: [0.0, 0]}

    # -- activation ------------------------------------------------------------------------
    def __enter__(self) -> "CostMeter":
        self._handles.append(register_optimizer_step_post_hook(self._on_step))
        self._hook_backbones()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._hooked = weakref.WeakSet()
        self._record_peak_memory()

    def _hook_backbones(self) -> None:
        """Count the images of every backbone, including ones a method builds mid-run (in
        ``Method.begin_epoch``: JTT's second phase), hooked at the next :meth:`begin_epoch`."""
        for module in self.method.modules():
            if isinstance(module, FeatureBackbone) and len(module.stages) and module not in self._hooked:
                self._hooked.add(module)
                # the first stage sees every image, whichever entry (forward, forward_stages) is used
                self._handles.append(module.stages[0].register_forward_pre_hook(self._on_backbone_input))

    def _on_step(self, optimizer, args, kwargs) -> None:
        self.cost.optimizer_steps += 1

    def _on_backbone_input(self, module, inputs) -> None:
        x = inputs[0] if inputs else None
        if isinstance(x, torch.Tensor) and x.dim() >= 1:
            n = int(x.shape[0])
            self.cost.images_forwarded += n
            if torch.is_grad_enabled():
                self.cost.images_backwarded += n

    def _record_peak_memory(self) -> None:
        if self.device.type == "cuda":
            peak, kind = int(torch.cuda.max_memory_allocated(self.device)), "cuda max_memory_allocated"
        else:
            peak, kind = _process_peak_rss_bytes(), "process peak resident set (ru_maxrss)"
        self.cost.peak_memory_bytes = max(self.cost.peak_memory_bytes, peak)
        self.cost.peak_memory_kind = kind

    # -- per epoch / per update --------------------------------------------------------------
    def begin_epoch(self) -> None:
        """Call after ``Method.begin_epoch``: backbones it built are counted from here on."""
        self._hook_backbones()
        self._measure_next = True

    def resume_epoch(self, saved: TrainingCost) -> None:
        """Continue from a checkpoint written inside an epoch: its cost so far, and the FLOPs of
        the epoch's update (measured before the checkpoint) without measuring again."""
        self.cost = saved
        if saved.flops_per_update:
            self._epoch_flops = saved.flops_per_update[-1]
            self._measure_next = False

    def between_epochs(self, run_begin_epoch):
        """Run one ``Method.begin_epoch`` (a zero-argument callable) and count its passes in full."""
        start = time.perf_counter()
        counter = FlopCounterMode(display=False)
        with counter:
            out = run_begin_epoch()
        flops = float(counter.get_total_flops())
        self.cost.train_flops += flops
        self.cost.between_epoch_flops += flops
        self.cost.train_seconds += time.perf_counter() - start
        return out

    def _work_key(self, inputs: torch.Tensor | None) -> tuple | None:
        """What one update's FLOPs depend on for a method doing the same work every update: the
        input shape and the trainable parameters (identity and shape). None: unknown, measure."""
        if inputs is None:
            return None
        params = tuple((id(p), tuple(p.shape)) for p in self.method.parameters() if p.requires_grad)
        return tuple(inputs.shape), params

    def update(self, run_update, inputs: torch.Tensor | None = None):
        """Run one ``Method.update`` (a zero-argument callable) and account for it. ``inputs``
        (the batch's images) lets an epoch's first update reuse the FLOPs measured on an earlier
        epoch's first update of the same work (:meth:`_work_key`) instead of counting again."""
        start = time.perf_counter()
        key = self._work_key(inputs) if self._measure_next and not self._measure_every_update else None
        if key is not None and key in self._measured:
            self._epoch_flops = self._measured[key]
            self.cost.flops_per_update.append(self._epoch_flops)
            self._measure_next = False
        measured = self._measure_next or self._measure_every_update
        if measured:
            counter = FlopCounterMode(display=False)
            with counter:
                out = run_update()
            flops = float(counter.get_total_flops())
            if self._measure_next:  # the epoch's first update, the one recorded
                self._epoch_flops = flops
                self.cost.flops_per_update.append(flops)
                self._measure_next = False
                if key is not None:
                    self._measured[key] = flops
        else:
            out = run_update()
            flops = self._epoch_flops
        took = time.perf_counter() - start
        self.cost.train_seconds += took
        self._timed[measured][0] += took
        self._timed[measured][1] += 1
        self.cost.updates += 1
        self.cost.train_flops += flops
        return out

    def counting_seconds(self) -> float:
        """Wall time the FLOP counter added to the updates it measured (an estimate: their time less
        as many updates at the mean time of the unmeasured ones; 0 when every update is measured)."""
        (measured_s, measured_n), (plain_s, plain_n) = self._timed[True], self._timed[False]
        if not plain_n:
            return 0.0
        return max(0.0, measured_s - measured_n * plain_s / plain_n)


def format_flops(flops: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


# -- budgets: the same compute for every method --------------------------------------------------
BUDGET_UNITS = {"budget_steps": "optimizer steps", "budget_flops": "training FLOPs"}
BUDGET_FIELDS = {"budget_steps": "optimizer_steps", "budget_flops": "train_flops"}  # what each budget counts


class BudgetError(ValueError):
    """A budget a method cannot meet; the message names the key and the fix."""


def probe_update(method: nn.Module, device: torch.device, make_batch) -> TrainingCost:
    """The cost of one ``update`` of ``method``, which this uses up: pass a throwaway copy, and
    save and restore the random generators around the call (``fairbench.training.budget.apply_budget`` does both)."""
    with CostMeter(method, device) as meter:
        meter.update(lambda: method.update(make_batch()))
    return meter.cost


def probe_prediction_pass(method: nn.Module, x: torch.Tensor, n_images: int) -> float:
    """FLOPs of one prediction pass over ``n_images`` images, measured on the batch ``x`` (the
    evaluation transform's size) with ``method`` in eval mode and no autograd, as ``predict_train``."""
    was_training = method.training
    method.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        method.predict(x)
    method.train(was_training)
    return float(counter.get_total_flops()) * n_images / x.shape[0]


def epochs_for_budget(key: str, amount: float, per_update: TrainingCost, updates_per_epoch: int,
                      method: str, trains_nothing: bool = False, pass_flops: float = 0.0,
                      passes: Callable[[int], int] = lambda epochs: 0) -> tuple[int, float]:
    """Whole epochs that fit in the budget (never more than it), and the cost of one epoch.

    A FLOPs budget also pays for ``passes(epochs)`` prediction passes over the training split of
    ``pass_flops`` each (JTT's identification: ``Method.training_set_passes``); a steps budget
    does not (they take no optimizer step). A method with no trainable parameter (the constant
    control) spends nothing: one epoch, so that it sits in a budgeted suite beside the methods it
    is a floor for."""
    per_epoch = updates_per_epoch * getattr(per_update, BUDGET_FIELDS[key])
    if per_epoch <= 0 and trains_nothing:
        return 1, 0.0
    if per_epoch <= 0:
        raise BudgetError(f"train.{key}: one epoch of {method} costs no {BUDGET_UNITS[key]} as measured; "
                          "use train.epochs for this method")
    epochs = int(amount // per_epoch)
    if key == "budget_flops":
        while epochs >= 1 and epochs * per_epoch + passes(epochs) * pass_flops > amount:
            epochs -= 1
    if epochs < 1:
        shown = f"{per_epoch:g}" if key == "budget_steps" else format_flops(per_epoch)
        raise BudgetError(f"train.{key}={amount:g} is less than one epoch of {method} ({shown} {BUDGET_UNITS[key]} "
                          f"per epoch: {updates_per_epoch} batches); raise train.{key} to at least {per_epoch:g}")
    return epochs, per_epoch
