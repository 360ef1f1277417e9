"""Core configuration every deployable shares, read once from `LIVETUNE_*` variables.

The trainer adds its own fields (training/job_settings.py) and the HTTP service its own
(service/settings.py); each class ignores the others' variables, so one environment
configures them all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from training.labels import DEFAULT_TEMPLATE, Label, load_labels, parse_labels
from training.model import resolve_base_model

ENV_PREFIX = "LIVETUNE_"
SettingsT = TypeVar("SettingsT", bound="CoreSettings")


class SettingsError(RuntimeError):
    """A setting is missing or wrong; the message names the environment variable."""


class CoreSettings(BaseSettings):
    """The model, the label set and where the data lives: what serving and training share."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True
    )

    base_model: str = Field(
        "",
        description=(
            "Local model folder or hub id; empty = the embedded all-MiniLM-L6-v2."
            " A local folder never touches the network."
        ),
    )
    labels: Annotated[list[Label] | None, NoDecode] = Field(
        None,
        description='Label set inline: `a,b,c`, a JSON list or a `{"name": "description"}` map.',
    )
    labels_file: Path | None = Field(
        None,
        description=(
            "Label set file: JSON, or text with one `name[: description]` a line."
            " Set this or `LIVETUNE_LABELS`, not both."
        ),
    )
    label_template: str = Field(
        DEFAULT_TEMPLATE,
        description="Text embedded to seed the head for a label without a description.",
    )
    data_dir: Path = Field(
        Path("livetune-data"), description="Where feedback (SQLite) and adapters live."
    )
    validation_percent: float = Field(
        5.0,
        ge=0,
        le=90,
        description=(
            "Percent of feedback texts always held out for the gate (by hash), never trained"
            " on; while data is scarce the gate holds out more (about 2.5 x sqrt(n), at most half)."
        ),
    )
    max_text_chars: int = Field(
        2_000, ge=1, le=1_000_000, description="Characters per text (API and import)."
    )
    max_tokens: int = Field(
        128, ge=8, le=8_192, description="Tokens kept per text, the rest cut (capped by the model)."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description=(
            "Inference precision (serving, the gate): auto = bf16 on CUDA (fp16 without bf16)"
            " and, for batches of 8+, on CPUs with native bf16; else fp32."
        ),
    )
    prediction_retention_count: int = Field(
        1_000_000, ge=1, description="Most predictions remembered for feedback by prediction_id."
    )
    prediction_retention_hours: float = Field(
        168.0, gt=0, description="How long a prediction_id stays valid for feedback."
    )
    store_url: SecretStr = Field(
        SecretStr(""),
        description="Where corrections, predictions, runs and heartbeats live: empty = SQLite"
        " files in the data directory; `postgresql://user:password@host:5432/db` = PostgreSQL"
        " (never printed).",
    )
    store_prepare: bool = Field(
        False,
        description="Let psycopg prepare repeated statements on the PostgreSQL server: only"
        " for a direct connection or a pooler in session mode; false (no prepared statements)"
        " works behind any pooler, PgBouncer in transaction mode included. A"
        " `prepare_threshold=N|none` parameter in the store URL overrides it.",
    )
    run_lease_s: float = Field(
        60.0,
        ge=1,
        description="PostgreSQL store: a training run's claim lasts this long unless its"
        " trainer renews it (every third of it); a trainer that dies frees the claim after it.",
    )
    adapters_url: str = Field(
        "",
        description="Where adapters and CURRENT live: empty = the data directory;"
        " `s3://bucket/prefix` = an S3-compatible object store (AWS credential chain).",
    )
    s3_endpoint_url: str = Field(
        "", description="S3 endpoint for MinIO, Ceph, R2 and the like; empty = AWS S3."
    )
    worker_stale_s: float = Field(
        10.0,
        gt=0,
        description="A serving worker whose heartbeat is older is shown as stale in /status,"
        " and its adapter may be pruned.",
    )
    keep_adapters: int = Field(
        20, ge=1, description="Adapter versions kept (plus the active one); older ones are pruned."
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

    @field_validator("store_url")
    @classmethod
    def _known_store(cls, value: SecretStr) -> SecretStr:
        scheme = value.get_secret_value().partition("://")[0]
        if value.get_secret_value() and scheme not in ("postgresql", "postgres"):
            raise ValueError("must be empty (SQLite) or a postgresql:// URL")
        return value

    @field_validator("adapters_url")
    @classmethod
    def _known_registry(cls, value: str) -> str:
        if value and not (value.startswith("s3://") and value[5:].strip("/")):
            raise ValueError("must be empty (the data directory) or s3://bucket[/prefix]")
        return value

    @model_validator(mode="after")
    def _one_label_source(self) -> CoreSettings:
        if self.labels is not None and self.labels_file is not None:
            raise ValueError(
                f"set only one of {ENV_PREFIX}LABELS (inline) or {ENV_PREFIX}LABELS_FILE"
            )
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

    @property
    def adapters_dir(self) -> Path:
        """The local registry, or the local cache of an object store's versions."""
        return self.data_dir / ("adapter-cache" if self.adapters_url else "adapters")


def load_settings(
    cls: type[SettingsT] = CoreSettings, *, require_labels: bool = True, **overrides: Any
) -> SettingsT:
    """`cls` from the environment (and overrides); a SettingsError names each bad variable."""
    try:
        settings = cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None
    if require_labels:
        settings.label_set()
    return settings


def describe(exc: ValidationError) -> str:
    """One line per invalid field, naming its environment variable."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        field = "__".join(str(part) for part in error["loc"][:2])
        variable = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
        lines.append(f"{variable}: {error['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
