"""Typed run configuration: built from a TOML file, CLI flags and ``--set key=value``.

Unset fields are ``None`` until :func:`resolve` fills them, in this order of precedence:
what the user set > the method's defaults for the dataset's profile > the dataset's own
``run_defaults`` (if any) > the profile's defaults. The resolved configuration is saved with
the run and hashed into its id.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration the user must fix; the message names the key and the valid choices."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    name: str = "synthface"
    root: Path | None = None  # where the files are; not part of the run id
    target: str | None = None
    protected: list[str] | None = None
    image_size: int | None = None
    options: dict[str, Any] = {}  # dataset-specific, validated by the dataset's Options model
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    cache_dir: Path | None = None  # decoded-image cache; not part of the run id
    #: what the data is, not where it is (label contents, image list and sizes, split; see
    #: Dataset.fingerprint): filled in by the runner, part of the run id
    fingerprint: str | None = None

    @field_validator("max_train_samples", "max_eval_samples")
    @classmethod
    def _positive(cls, v):
        if v is not None and v <= 0:
            raise ValueError("must be positive")
        return v


class BackboneConfig(Strict):
    name: str | None = None
    #: true = published ImageNet weights, false = random init, or a path to a local weights file
    pretrained: bool | str | None = None


class TrainConfig(Strict):
    epochs: int | None = None
    #: instead of epochs, a compute budget that is the same for every method: optimizer steps or
    #: training FLOPs (measured on the method's first update); the run trains the whole epochs that
    #: fit in it (fairbench.cost). A method taking several steps per batch (FineFACE: N + 2) gets
    #: fewer epochs. At most one of the two, and not with epochs.
    budget_steps: int | None = None
    budget_flops: float | None = None
    batch_size: int | None = None
    eval_batch_size: int | None = None
    lr: float | None = None  # heads / new layers
    backbone_lr: float | None = None  # the (pretrained) backbone
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_padding: int | None = None  # random-crop padding in pixels (default: fairbench.pipeline.default_padding)
    #: "paper" (the authors' Resize(460) -> RandomCrop(448, padding 8) / CenterCrop(448), scaled to
    #: image_size) or "frame" (padded random crop of the frame / the whole frame); default: the profile's
    transform: Literal["paper", "frame"] | None = None
    seed: int = 0
    deterministic: bool = False
    amp: bool | None = None  # bf16 autocast on CUDA (default: the profile's; paper: false = fp32); ignored on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N; not part of the run id
    workers: int = 2  # batch-assembly threads; not part of the run id
    #: torch CPU threads (default: see fairbench.compute.default_threads); recorded, not part of the run id
    threads: int | None = None
    #: also save the resumable state every N training steps (batches) within an epoch; 0 = at epoch
    #: ends only. Resuming is exact, so not part of the run id
    checkpoint_every_steps: int = 0
    #: with torchrun: BatchNorm statistics over the global batch instead of each process's shard;
    #: recorded, not part of the run id (nor is the number of processes; environment.json has both)
    sync_batchnorm: bool = False
    #: train only this share of the epochs (rounded up, at least one), then stop with the run
    #: incomplete and resumable: a rung of a halving search (fairbench.suites.halving). Resuming is exact,
    #: and the full run is the same run, so not part of the run id
    stop_after_share: float | None = Field(default=None, gt=0, le=1)
    #: validate (and let the selection rules choose) every N-th epoch and the last one only: per-epoch
    #: validation costs ~12 % of a quickstart job (a validation split a quarter of training's); a
    #: coarser choice of epoch for less of it. Part of the run id when not 1
    validate_every: int = Field(default=1, ge=1)
    #: keep the weights of every other validation rule's epoch (``checkpoint-epoch<N>.pt``) after
    #: training, so that cross-dataset evaluations can follow each rule's choice too (a suite with
    #: [[evaluate]] sets it); not part of the run id
    keep_rule_checkpoints: bool = False

    @field_validator("epochs", "batch_size", "eval_batch_size", "threads", "budget_steps", "budget_flops")
    @classmethod
    def _positive(cls, v):
        if v is not None and v <= 0:
            raise ValueError("must be positive")
        return v

    @field_validator("checkpoint_every_steps")
    @classmethod
    def _not_negative(cls, v):
        if v < 0:
            raise ValueError("must be 0 (epoch ends only) or a positive number of steps")
        return v


class RunConfig(Strict):
    method: str = "erm"
    hparams: dict[str, Any] = {}
    data: DataConfig = DataConfig()
    backbone: BackboneConfig = BackboneConfig()
    train: TrainConfig = TrainConfig()
    #: checkpoint selection rule on validation (fairbench.selection_rules): accuracy | worst_group_accuracy | last
    #: (default: the method's)
    selection: str | None = None


# Fields that say where or how fast, not what: excluded from the run id.
NOT_HASHED = {("data", "root"), ("data", "cache_dir"), ("train", "device"), ("train", "workers"), ("train", "threads"),
              ("train", "checkpoint_every_steps"), ("train", "sync_batchnorm"), ("train", "stop_after_share"),
              ("train", "keep_rule_checkpoints")}

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # Built-in benchmark on a CPU: small network from scratch, small images.
    "cpu-small": {
        "backbone": {"name": "resnet_tiny", "pretrained": False},
        "train": {"epochs": 8, "batch_size": 64, "lr": 0.02, "backbone_lr": 0.02,
                  "transform": "frame", "amp": True},  # bf16 on a GPU, as its recorded results
    },
    # Real face datasets: the FineFACE recipe (ResNet-50 ImageNet V1, 448 px, SGD, 25 epochs,
    # the authors' transforms, fp32 as they trained).
    "paper": {
        "backbone": {"name": "resnet50", "pretrained": True},
        "train": {"epochs": 25, "batch_size": 16, "lr": 0.002, "backbone_lr": 0.0002,
                  "transform": "paper", "amp": False},
    },
}


def _check_selection_rule(name: str) -> None:
    from fairbench.registry import RegistryError
    from fairbench.selection_rules import checkpoint_rules, get_rule

    try:
        rule = get_rule(name)
    except RegistryError:
        raise ConfigError(f"selection: unknown rule {name!r}; valid: {', '.join(checkpoint_rules())}") from None
    if rule.is_oracle:
        raise ConfigError(f"selection: {name!r} reads test labels, so a run cannot select its checkpoint with it; "
                          f"it exists only for upper-bound rows of suite reports. Valid: {', '.join(checkpoint_rules())}")


def parse_value(text: str) -> Any:
    """``--set`` values are TOML literals (3, 0.1, true, "a", [1, 2]); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(pair: str, flag: str = "--set") -> tuple[str, Any]:
    """One ``KEY=VALUE`` pair of ``--set`` (and of every flag that takes such pairs): the dotted
    key and the parsed value."""
    key, sep, text = pair.partition("=")
    if not sep or not key.strip():
        example = " (e.g. --set train.epochs=3)" if flag == "--set" else ""
        raise ConfigError(f"{flag} expects key=value, got {pair!r}{example}")
    return key.strip(), parse_value(text.strip())


def set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is a value, not a section")
    node[keys[-1]] = value


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _valid_keys(ann, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def explain_validation_error(exc: ValidationError, model: type[BaseModel], where: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r} in {where}; valid keys: {', '.join(_valid_keys(model))}")
        else:
            lines.append(f"{where}: {key}: {err['msg']} (got {err.get('input')!r})")
    return ConfigError("\n".join(lines))


def read_toml(path: Path | str, what: str = "config file") -> dict[str, Any]:
    """A TOML file's contents, or a ConfigError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def build_config(file: Path | None = None, overrides: dict[str, Any] | None = None, sets: list[str] = ()) -> RunConfig:
    """File < explicit CLI flags (``overrides``, dotted keys) < ``--set`` pairs."""
    tree: dict[str, Any] = read_toml(file) if file is not None else {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_path(tree, dotted, value)
    for pair in sets:
        set_path(tree, *parse_set(pair))
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise explain_validation_error(exc, RunConfig, "run configuration") from None


def _fill(section: BaseModel, defaults: dict[str, Any]) -> None:
    for key, value in defaults.items():
        if getattr(section, key) is None:
            setattr(section, key, value)


def _check_backbone(name: str | None) -> None:
    """A backbone name that names nothing fails here, before any data is read or decoded."""
    from fairbench.backbones import BackboneError, check_backbone_name

    if name is not None:
        try:
            check_backbone_name(name)
        except BackboneError as exc:
            raise ConfigError(str(exc)) from None


def resolve(config: RunConfig) -> RunConfig:
    """Fill every unset field and validate the method's hyperparameters and dataset options.

    Imports the method and dataset modules (lazily, through the registries)."""
    from fairbench import registry

    cfg = config.model_copy(deep=True)
    try:
        method_cls = registry.methods.get(cfg.method)
        dataset_cls = registry.datasets.get(cfg.data.name)
    except registry.RegistryError as exc:
        raise ConfigError(str(exc)) from None
    profile = dataset_cls.profile
    method_defaults = method_cls.profile_defaults.get(profile, {})
    budget = [k for k in ("budget_steps", "budget_flops") if getattr(cfg.train, k) is not None]
    if len(budget) > 1 or (budget and cfg.train.epochs is not None):
        raise ConfigError(f"set one of train.epochs, train.budget_steps, train.budget_flops, not "
                          f"{' and '.join(k for k in ('epochs', 'budget_steps', 'budget_flops') if getattr(cfg.train, k) is not None)}")
    for section in ("train", "backbone"):
        _fill(getattr(cfg, section), method_defaults.get(section, {}))
        # a dataset may set its own budget and network (the synthface scenarios: to convergence)
        _fill(getattr(cfg, section), getattr(dataset_cls, "run_defaults", {}).get(section, {}))
        _fill(getattr(cfg, section), PROFILES[profile].get(section, {}))
    _fill(cfg.data, {"target": dataset_cls.default_target, "protected": list(dataset_cls.default_protected),
                     "image_size": dataset_cls.default_image_size})
    _check_backbone(cfg.backbone.name)
    if budget:
        cfg.train.epochs = None  # derived from the budget when the run starts (fairbench.cost)
    if cfg.train.eval_batch_size is None:
        cfg.train.eval_batch_size = max(cfg.train.batch_size, 64)
    if cfg.train.crop_padding is None:
        from fairbench.pipeline import default_padding

        cfg.train.crop_padding = default_padding(cfg.data.image_size, cfg.train.transform)
    if cfg.selection is None:
        cfg.selection = method_cls.default_selection
    _check_selection_rule(cfg.selection)
    hp = {**method_defaults.get("hparams", {}), **cfg.hparams}
    try:
        hparams = method_cls.Hparams.model_validate(hp)
    except ValidationError as exc:
        raise explain_validation_error(exc, method_cls.Hparams, f"hyperparameters of {cfg.method!r}") from None
    try:  # defaults that follow the backbone (FineFACE's expert widths), recorded as numbers
        scaled = method_cls.backbone_hparams(hparams, cfg.backbone.name)
    except ValueError as exc:  # an unknown backbone, stages it does not have
        raise ConfigError(f"hyperparameters of {cfg.method!r} on backbone {cfg.backbone.name!r}: {exc}") from None
    cfg.hparams = hparams.model_copy(update=scaled).model_dump(mode="json")
    seed_option = dataset_cls.data_seed_option
    if seed_option is not None and seed_option not in cfg.data.options:
        # a generated dataset draws each run seed's own data; seed 0 draws what it always did
        cfg.data.options = {**cfg.data.options, seed_option: cfg.train.seed}
    try:
        cfg.data.options = dataset_cls.Options.model_validate(cfg.data.options).model_dump(mode="json")
    except ValidationError as exc:
        raise explain_validation_error(exc, dataset_cls.Options, f"options of dataset {cfg.data.name!r}") from None
    return cfg


#: dataset options that locate files (e.g. FairFace's ``images_root``) are not part of the run id either
LOCATION_OPTION_SUFFIXES = ("_root", "_dir", "_path")


def identity_dict(cfg: RunConfig) -> dict[str, Any]:
    data = cfg.model_dump(mode="json")
    for section, key in NOT_HASHED:
        data[section].pop(key, None)
    data["data"]["options"] = {k: v for k, v in data["data"]["options"].items()
                               if not k.endswith(LOCATION_OPTION_SUFFIXES)}
    if data["data"].get("fingerprint") is None:  # records made before fingerprints keep their ids
        data["data"].pop("fingerprint", None)
    if data["train"].get("transform") in (None, "frame"):  # so do records made before train.transform
        data["train"].pop("transform", None)
    for key in ("budget_steps", "budget_flops"):  # and before budgets: no budget, no key
        if data["train"].get(key) is None:
            data["train"].pop(key, None)
    if data["train"].get("validate_every") == 1:  # and before train.validate_every
        data["train"].pop("validate_every", None)
    return data


def run_id(cfg: RunConfig) -> str:
    """``<method>-<dataset>-<hash>``: the hash covers what determines the result, not where it runs."""
    digest = hashlib.sha256(json.dumps(identity_dict(cfg), sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.method}-{cfg.data.name}-{digest}"
