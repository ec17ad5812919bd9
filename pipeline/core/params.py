"""Typed access to ``params.yaml``: one pydantic model per section, validated on load."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.core.defaults import (  # noqa: F401  (re-exported: the params' vocabulary)
    DEFAULT_MAX_PIXELS,
    PARAMS_FILE,
    PROJECT_ROOT,
    Convention,
)
from pipeline.core.errors import CoconetError
from pipeline.core.placement import Device, Precision, parse_memory


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrackingParams(_Section):
    uri: str = "sqlite:///mlflow.db"
    artifact_root: str = "mlartifacts"
    experiment: str = "coconet"


class DownloadParams(_Section):
    datasets: list[str] = ["tno40", "tno_masked", "roadscene", "m3fd"]
    published: list[str] = ["coconet_authors"]
    mirror: str = ""
    workers: int = Field(8, ge=1)
    retries: int = Field(3, ge=0)
    vgg19: Literal["imagenet", "none"] = "imagenet"
    sam: Literal["vit_b", "vit_l", "vit_h", "none"] = "vit_b"
    official: Literal["latest", "none"] = "latest"


class ModelParams(_Section):
    vgg_weights: str = "imagenet"
    output_mean: float | None = Field(None, ge=0, le=1)
    output_sd: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _both_or_neither(self) -> ModelParams:
        if (self.output_mean is None) != (self.output_sd is None):
            raise ValueError("model.output_mean and model.output_sd go together (or both null)")
        return self


class MasksParams(_Section):
    method: Literal["sam", "ir_saliency"] = "sam"
    device: Device = Device.auto
    sam_model: Literal["vit_b", "vit_l", "vit_h"] = "vit_b"
    hot_percentile: float = Field(99.0, gt=0, lt=100)
    max_prompts: int = Field(8, ge=1)
    min_region_frac: float = Field(0.0005, ge=0, lt=1)
    min_contrast: float = Field(0.15, ge=0)
    max_area_frac: float = Field(0.25, gt=0, le=1)
    saliency_sigma: float = Field(1.5, gt=0)
    saliency_surround: float = Field(0.3, ge=0)
    saliency_k: float = 3.5
    saliency_k_low: float = 2.0
    preview_pairs: int = Field(8, ge=1)


class PatchesParams(_Section):
    patch_size: int = Field(64, ge=8)
    stride: int = Field(32, ge=1)
    max_per_pair: int | None = Field(300, ge=1)
    min_std: float = Field(4.0, ge=0)
    seed: int = 0
    hflip_p: float = Field(0.5, ge=0, le=1)
    vflip_p: float = Field(0.0, ge=0, le=1)
    rotate90_p: float = Field(0.0, ge=0, le=1)


class TrainParams(_Section):
    seed: int = 0
    batch_size: int = Field(30, ge=1)
    lr: float = Field(1e-4, gt=0)
    phase1_epochs: int = Field(30, ge=0)
    phase2_epochs: int = Field(2, ge=0)
    contrast_weight: float = Field(1.0, ge=0)
    max_steps_per_epoch: int | None = Field(None, ge=1)
    ssim_weight: float = 20.0
    c1: float = Field(0.5, gt=0)
    c2: float = Field(0.75, gt=0)
    ssim_window: int = Field(11, ge=3)
    ssim_sigma: float = Field(1.5, gt=0)
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    device: Device = Device.auto
    precision: Precision = Precision.auto
    init_from: str | None = None
    contrastive_mode: Literal["batch", "per_sample"] = "batch"
    mse_range: Literal["network", "unit"] = "network"
    ssim_padding: Literal["zeros", "reflect"] = "zeros"
    ssim_reduction: Literal["batch", "sample"] = "batch"
    gradient_padding: Literal["zeros", "replicate"] = "zeros"
    detail_weight: float = Field(0.0, ge=0)
    detail_gain: float = Field(1.0, gt=0)
    # exponential moving average of the weights over the steps of both phases (the model file
    # and the registered model hold it); None: the last step's weights, as the paper
    ema_decay: float | None = Field(None, gt=0, lt=1)


class EvaluateParams(_Section):
    convention: Convention = Convention.matlab
    max_pairs: int | None = Field(None, ge=1)
    max_pairs_per_set: dict[str, int] = {}  # test set -> cap, over max_pairs (quick schedule)
    gallery_pairs: int = Field(8, ge=0)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    device: Device = Device.auto
    precision: Precision = Precision.auto
    max_memory: str | None = None
    references: Literal["auto"] | list[Literal["official"]] = "auto"

    @field_validator("max_memory")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_memory(value)  # a PlacementError (a ValueError) names the bad size
        return value


class RegisterParams(_Section):
    model_name: str = "coconet"
    test_set: str = "tno40"
    promote_metrics: list[str] = Field(["VIF", "Qabf", "SSIM"], min_length=1)
    min_wins: int = Field(2, ge=1)


class Params(_Section):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    tracking: TrackingParams = TrackingParams()
    download: DownloadParams = DownloadParams()
    model: ModelParams = ModelParams()
    masks: MasksParams = MasksParams()
    patches: PatchesParams = PatchesParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    register_: RegisterParams = Field(RegisterParams(), alias="register")

    def digest(self) -> str:
        """sha256 of the canonical JSON form: the params hash recorded with every model."""
        text = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


class ParamsError(CoconetError, ValueError):
    """params.yaml is missing, unreadable or invalid."""


SECTIONS = tuple(field.alias or name for name, field in Params.model_fields.items())


def load_params(path: str | Path = PARAMS_FILE, require: Iterable[str] = ()) -> Params:
    """Read and validate ``params.yaml``; errors name the file and the offending keys.

    ``require`` names sections the file must hold (a stage's own): a missing one is an error
    rather than a silent run with the defaults (the paper's full schedule, for ``train``).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ParamsError(f"{path}: cannot read params: {exc}") from exc
    for section in require:
        if not isinstance(raw, dict) or section not in raw:
            raise ParamsError(
                f"{path}: no '{section}' section (the {section} stage reads its settings from "
                "it; copy it from the committed params.yaml)"
            )
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(f"{path}: invalid params:\n{exc}") from exc
