"""The method contract every training method follows (after DomainBed's ``Algorithm``).

A method is an ``nn.Module`` built from a :class:`MethodContext` and its own typed
hyperparameters. The runner calls ``begin_epoch`` once per epoch, ``update(batch)`` once
per batch (the method runs its own forward / backward / optimizer steps) and
``predict(x)`` to evaluate. The loop knows nothing about any particular method.

Group labels reach a method only if it declares ``uses_train_groups = True``: otherwise
``Batch.group`` / ``Batch.attributes`` are ``None`` and ``MethodContext.train_groups`` is
``None``; a method that declares them is refused, once here, a context without them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from fairbench.backbones.base import FeatureBackbone


class NoHparams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hparams(BaseModel):
    """Base for a method's hyperparameters: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass
class Batch:
    x: torch.Tensor  # B x 3 x H x W, augmented and normalised, on the device
    y: torch.Tensor  # B target class indices
    index: torch.Tensor  # B positions in the training split (for per-sample state: JTT, reweighting)
    group: torch.Tensor | None = None  # B intersectional group codes; None when withheld
    attributes: dict[str, torch.Tensor] | None = None  # per protected attribute codes; None when withheld


@dataclass
class TrainConfigView:
    """The training settings a method reads (a subset of the run's TrainConfig)."""

    epochs: int
    batch_size: int
    lr: float
    backbone_lr: float
    momentum: float
    weight_decay: float


@dataclass
class MethodContext:
    num_classes: int
    train: TrainConfigView
    steps_per_epoch: int
    image_size: int
    device: torch.device
    make_backbone: Callable[[], FeatureBackbone]
    train_targets: np.ndarray  # N int64
    # Withheld (None) from methods that train without demographic labels:
    train_groups: np.ndarray | None = None  # N intersectional group codes
    group_names: list[str] | None = None
    train_attributes: dict[str, np.ndarray] | None = None  # per protected attribute codes
    attribute_sizes: dict[str, int] | None = None

    @property
    def num_groups(self) -> int | None:
        return None if self.group_names is None else len(self.group_names)


class TrainerView(Protocol):
    """What a method may ask of the runner between epochs (JTT's first phase uses it)."""

    def predict_train(self) -> np.ndarray:
        """Logits (N x K) of the current model on the un-augmented training split."""
        ...


class Method(nn.Module):
    """Subclass, set the class attributes, implement ``__init__``, ``update`` and ``predict``."""

    summary: ClassVar[str] = ""
    #: reads demographic labels while training ("T+A"); False means target only ("T")
    uses_train_groups: ClassVar[bool] = False
    #: with ``uses_train_groups``, the labels it reads: "groups" (intersectional codes: ``ctx.train_groups``,
    #: ``batch.group``) and / or "attributes" (per-attribute codes: ``ctx.train_attributes``, ``batch.attributes``)
    train_labels: ClassVar[tuple[str, ...]] = ("groups",)
    #: checkpoint selection rule when the run does not set one
    default_selection: ClassVar[str] = "accuracy"
    Hparams: ClassVar[type[BaseModel]] = NoHparams
    #: per dataset profile ("cpu-small", "paper") defaults: {"hparams": {...}, "train": {...}}
    profile_defaults: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}
    #: whether one run may split each batch over processes (torchrun, ``fairbench.distributed``):
    #: True when the ranks' mean update equals one process's on the global batch (per-sample
    #: losses; batch statistics the loss reads summed with ``distributed.global_sum``);
    #: otherwise a sentence saying why not, and such runs are refused. Undeclared: refused.
    data_parallel: ClassVar[bool | str] = False
    #: whether every ``update`` does the same forward / backward work (the cost meter then measures
    #: an epoch's first update, once per input shape and set of trainable parameters); False: the
    #: work depends on the batch (FairMixup's pairs
    #: per group present), and every update is measured
    same_work_every_update: ClassVar[bool] = True

    #: how hyperparameters left unset follow the backbone, in words (``fairbench show method``);
    #: empty when none do (see :meth:`backbone_hparams`)
    backbone_rule: ClassVar[str] = ""

    @classmethod
    def backbone_hparams(cls, hparams: BaseModel, backbone: str) -> dict[str, Any]:
        """Values for the hyperparameters left unset (None) whose defaults follow the backbone
        named ``backbone`` (FineFACE's expert widths). ``config.resolve`` fills them in, so the
        saved configuration and the run id hold the numbers. Default: none."""
        return {}

    def __init__(self, ctx: MethodContext, hparams: BaseModel):
        super().__init__()
        self._check_train_labels(ctx)
        self.ctx = ctx
        self.hparams = hparams
        self.optimizers: list[torch.optim.Optimizer] = []

    @classmethod
    def _check_train_labels(cls, ctx: MethodContext) -> None:
        """A method that declares ``uses_train_groups`` gets the labels it reads (``train_labels``)."""
        if not cls.uses_train_groups:
            return
        no_groups = "groups" in cls.train_labels and ctx.num_groups is None
        no_attributes = "attributes" in cls.train_labels and (ctx.train_attributes is None or ctx.attribute_sizes is None)
        if no_groups or no_attributes:
            kind = "group" if "groups" in cls.train_labels else "attribute"
            name = getattr(cls, "registered_name", cls.__name__)
            raise ValueError(f"{name} needs the training {kind} labels (uses_train_groups)")

    # -- the contract ------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, torch.Tensor | float]:
        """One training step on a batch; returns losses (and optionally ``acc``) for logging."""
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits B x K (eval mode is set by the runner)."""
        raise NotImplementedError

    # -- optional hooks --------------------------------------------------------------------
    def begin_epoch(self, epoch: int, trainer: TrainerView) -> np.ndarray | None:
        """Called before each epoch (0-based). Returns per-sample sampling weights for this
        epoch's draws (with replacement; same number of batches) or None for a plain shuffle.
        The default applies the per-epoch cosine learning-rate schedule.

        A run resumed mid-epoch calls it again for that epoch and then restores the checkpoint
        (``fairbench.runs.checkpoint``): state it sets must live in buffers, optimizers or
        ``get_extra_state``, or be recomputed identically."""
        self.apply_cosine_lr(epoch)
        return None

    def is_selectable_epoch(self, epoch: int) -> bool:
        """Whether this epoch's checkpoint may be selected (multi-phase methods say no early)."""
        return True

    def training_set_passes(self, epochs: int) -> int:
        """Prediction passes over the whole training split that ``begin_epoch`` makes in a run of
        ``epochs`` epochs (JTT's identification). The meter counts them as they happen; a FLOPs
        budget charges them in advance, so that the run never spends more than its budget."""
        return 0

    def attention_maps(self, x: torch.Tensor) -> dict[str, Any] | None:
        """For ``fairbench explain``: {panel name: B x H x W maps in [0, 1]} and optionally
        ``"boxes"``: {panel name: B x 4 (y0, y1, x0, x1)}; None if unsupported."""
        return None

    # -- helpers for subclasses ------------------------------------------------------------
    def classifier_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        backbone_ids = {id(p) for p in backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone_ids]

    def make_sgd(self, backbone: nn.Module, extra: list[nn.Parameter] | None = None) -> torch.optim.SGD:
        """SGD with two learning-rate groups: the backbone at ``backbone_lr``, the rest at ``lr``."""
        t = self.ctx.train
        head = extra if extra is not None else self.classifier_parameters(backbone)
        opt = torch.optim.SGD(
            [
                {"params": list(backbone.parameters()), "lr": t.backbone_lr, "initial_lr": t.backbone_lr},
                {"params": head, "lr": t.lr, "initial_lr": t.lr},
            ],
            momentum=t.momentum,
            weight_decay=t.weight_decay,
        )
        self.optimizers.append(opt)
        return opt

    def apply_cosine_lr(self, epoch: int, start: int = 0, total: int | None = None) -> None:
        """lr = lr0 / 2 * (1 + cos(pi * (epoch - start) / E)), per epoch, as in the FineFACE code.

        ``start`` / ``total`` restart the schedule for a later phase (JTT's second phase)."""
        span = max(1, (self.ctx.train.epochs - start) if total is None else total)
        factor = 0.5 * (1.0 + math.cos(math.pi * (epoch - start) / span))
        for opt in self.optimizers:
            for group in opt.param_groups:
                # the first call records each group's base lr (optimizers not built by make_sgd too)
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor

    def reset_optimizers(self) -> None:
        """Forget every optimizer (before building fresh ones, e.g. when a phase re-initialises the model)."""
        self.optimizers.clear()

    @staticmethod
    def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def optimizer_state(self) -> list[dict]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_optimizer_state(self, states: list[dict]) -> None:
        for opt, state in zip(self.optimizers, states):
            opt.load_state_dict(state)


def needs_label(method: type[Method], selection: str | None = None) -> str:
    """The paper's legend: "T" (target only) or "T+A"; "+V" when selection reads val groups."""
    label = "T+A" if method.uses_train_groups else "T"
    rule = selection or method.default_selection
    from fairbench.selection_rules import get_rule

    if get_rule(rule).reads_val_groups and not method.uses_train_groups:
        label += ", +V"
    return label


def accuracy_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == y).float().mean()
