"""All configuration, read once from `LIVETUNE_*` environment variables and validated at start."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from training.labels import DEFAULT_TEMPLATE, Label, load_labels, parse_labels
from training.model import resolve_base_model
from training.trainer import TrainConfig

ENV_PREFIX = "LIVETUNE_"
TOKEN_SCOPES = ("predict", "feedback", "admin")
# RFC 6750 token characters (so it fits a header, and no comma or space), 16 or more.
PLAIN_TOKEN = re.compile(r"\A[A-Za-z0-9._~+/-]{16,}=*\Z")
HASHED_TOKEN = re.compile(r"\Asha256:([0-9a-fA-F]{64})\Z")


def worker_threads(workers: int, threads: int = 0) -> int:
    """Torch threads for each API worker: `threads`, or 0 = the cores shared out evenly."""
    return threads or max(1, (os.cpu_count() or 1) // workers)


class SettingsError(RuntimeError):
    """A setting is missing or wrong; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True
    )

    base_model: str = Field(
        "", description="Local model folder or hub id; empty = the embedded all-MiniLM-L6-v2."
    )
    labels: Annotated[list[Label] | None, NoDecode] = Field(
        None,
        description='Label set inline: "a,b,c", a JSON list, or a JSON {name: description} map.',
    )
    labels_file: Path | None = Field(
        None, description="Label set file: JSON, or text with one `name[: description]` a line."
    )
    label_template: str = Field(
        DEFAULT_TEMPLATE,
        description="Text embedded to seed the head for labels without a description.",
    )
    data_dir: Path = Field(Path("livetune-data"), description="Where feedback and adapters live.")
    validation_percent: float = Field(
        20.0, ge=0, le=90, description="Share of feedback texts held out for validation (by hash)."
    )
    max_feedback_samples: int = Field(1_000, ge=1, le=100_000, description="Samples per /feedback.")
    log_predictions: bool = Field(
        True, description="Remember served predictions so feedback can cite a prediction_id."
    )
    prediction_retention_count: int = Field(
        1_000_000, ge=1, description="Predictions remembered for feedback by prediction_id."
    )
    prediction_retention_hours: float = Field(
        168.0, gt=0, description="How long a prediction_id stays valid for feedback."
    )
    max_texts_per_request: int = Field(64, ge=1, le=10_000, description="Texts per /predict call.")
    max_text_chars: int = Field(2_000, ge=1, le=1_000_000, description="Characters per text.")
    max_tokens: int = Field(128, ge=8, le=8_192, description="Tokens kept per text (truncation).")
    max_body_bytes: int = Field(1 << 20, ge=1_024, description="Largest request body (413 above).")
    top_k: int = Field(5, ge=1, le=100, description="Alternatives returned in `top`.")
    max_batch_size: int = Field(128, ge=1, le=4_096, description="Texts per adaptive batch.")
    max_latency_ms: int = Field(
        10_000, ge=10, description="Batching queue deadline; requests waiting longer get 503."
    )
    inference_batch_size: int = Field(
        0, ge=0, le=4_096, description="Rows per forward pass; 0 = 16 on CPU, 64 on CUDA."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the model runs.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 where supported (CPU batches >= 8, CUDA), else fp32."
    )
    workers: int = Field(1, ge=1, le=64, description="BentoML worker processes for the API.")
    access_log: bool = Field(True, description="BentoML's per-request access log line.")
    threads: int = Field(
        0, ge=0, le=256, description="Torch threads per worker; 0 = cores/workers."
    )
    # Bearer tokens: comma-separated, each a plain token or `sha256:<hex>` of one. None
    # anywhere = the API is open; any one set = every scope needs a token.
    tokens_predict: SecretStr = Field(SecretStr(""), description="Tokens that may call /predict.")
    tokens_feedback: SecretStr = Field(SecretStr(""), description="Tokens that may call /feedback.")
    tokens_admin: SecretStr = Field(
        SecretStr(""), description="Tokens for the operator endpoints; they pass every scope."
    )
    metrics_auth: bool = Field(False, description="/metrics needs a token (any scope).")

    trainer: bool = Field(True, description="Run the Trainer service inside `bentoml serve`.")
    train_min_new_samples: int = Field(
        50, ge=1, description="New corrections since the last run that start a training run."
    )
    train_max_interval_s: float = Field(
        3_600.0, gt=0, description="Train anyway once a pending correction has waited this long."
    )
    train_poll_s: float = Field(
        5.0, gt=0, le=3_600, description="How often the trainer looks for new corrections."
    )
    train_failure_backoff_s: float = Field(
        300.0, ge=0, description="Pause after a failed run before the next automatic one."
    )
    train_device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where training runs.")
    train_threads: int = Field(
        0, ge=0, le=256, description="Torch threads for training on CPU; 0 = all cores."
    )
    train_nice: int = Field(
        19, ge=0, le=19, description="CPU niceness of the trainer: 19 = serving always first."
    )
    train_gpu_memory_fraction: float = Field(
        0.5, gt=0, le=1, description="Share of GPU memory the trainer may use."
    )
    gpu_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="GPU share BentoML gives each service on a GPU host (API and Trainer).",
    )
    promotion_margin: float = Field(
        0.0, ge=-1, le=1, description="Candidate must beat current validation accuracy by this."
    )
    min_validation_samples: int = Field(
        20, ge=0, description="Validation samples needed before any promotion."
    )
    online_accuracy_window: int = Field(
        500, ge=1, le=1_000_000, description="Recent corrections behind the online-accuracy metric."
    )
    keep_adapters: int = Field(20, ge=1, description="Adapter versions kept (plus the active one).")
    train: TrainConfig = Field(
        default_factory=TrainConfig,
        description="Hyper-parameters, one variable each: LIVETUNE_TRAIN__EPOCHS=5 and so on.",
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _parse_inline_labels(cls, value: Any) -> Any:
        if value is None or isinstance(value, list) and value and isinstance(value[0], Label):
            return value
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            value = json.loads(value) if value[0] in "[{" else value.split(",")
        return parse_labels(value)

    @field_validator("label_template")
    @classmethod
    def _template_has_name(cls, value: str) -> str:
        if "{name}" not in value:
            raise ValueError("must contain {name}")
        return value

    @field_validator("base_model")
    @classmethod
    def _base_model_exists(cls, value: str) -> str:
        try:
            resolve_base_model(value)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("tokens_predict", "tokens_feedback", "tokens_admin")
    @classmethod
    def _tokens_well_formed(cls, value: SecretStr) -> SecretStr:
        token_digests(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _metrics_auth_needs_tokens(self) -> Settings:
        if self.metrics_auth and not any(self.token_digests().values()):
            raise ValueError(
                f"{ENV_PREFIX}METRICS_AUTH=true needs tokens: set {ENV_PREFIX}TOKENS_PREDICT, "
                f"{ENV_PREFIX}TOKENS_FEEDBACK or {ENV_PREFIX}TOKENS_ADMIN"
            )
        return self

    def token_digests(self) -> dict[str, frozenset[str]]:
        """SHA-256 hex digests of the configured bearer tokens, by scope."""
        return {
            scope: token_digests(getattr(self, f"tokens_{scope}").get_secret_value())
            for scope in TOKEN_SCOPES
        }

    @model_validator(mode="after")
    def _one_label_source(self) -> Settings:
        if self.labels is not None and self.labels_file is not None:
            raise ValueError(
                f"set only one of {ENV_PREFIX}LABELS (inline) or {ENV_PREFIX}LABELS_FILE"
            )
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"{ENV_PREFIX}DEVICE=cuda but torch sees no CUDA GPU")
        return self

    def label_set(self) -> list[Label]:
        """The labels, from the inline setting or the file."""
        if self.labels is None and self.labels_file is None:
            raise SettingsError(
                f"no label set: set {ENV_PREFIX}LABELS (inline) or {ENV_PREFIX}LABELS_FILE"
            )
        if self.labels is not None:
            return list(self.labels)
        try:
            return load_labels(self.labels_file)
        except (ValueError, OSError) as exc:
            raise SettingsError(f"{ENV_PREFIX}LABELS_FILE: {exc}") from None


def load_settings(*, require_labels: bool = True, **overrides: Any) -> Settings:
    """Settings from the environment (and overrides); a SettingsError names each bad variable."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    if require_labels:
        settings.label_set()
    return settings


def token_digests(value: str) -> frozenset[str]:
    """SHA-256 hex digest of each comma-separated entry: a plain token or `sha256:<hex>` of one.

    A bad entry is named by its position, never echoed: it may be a secret.
    """
    digests = set()
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    for position, entry in enumerate(entries, 1):
        if hashed := HASHED_TOKEN.match(entry):
            digests.add(hashed.group(1).lower())
        elif PLAIN_TOKEN.match(entry):
            digests.add(hashlib.sha256(entry.encode()).hexdigest())
        else:
            raise ValueError(
                f"entry {position} is neither a token (16+ characters of A-Z a-z 0-9 . _ ~ + / -,"
                " e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                " nor sha256:<64 hex digits>"
            )
    return frozenset(digests)


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        field = "__".join(str(part) for part in error["loc"][:2])
        variable = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
        lines.append(f"{variable}: {error['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
