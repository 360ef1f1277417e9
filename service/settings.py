"""The HTTP service's configuration: tokens, request limits, batching and BentoML's knobs."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from training.settings import ENV_PREFIX, CoreSettings

TOKEN_SCOPES = ("predict", "feedback", "admin")
# RFC 6750 token characters (so it fits a header, and no comma or space), 16 or more.
PLAIN_TOKEN = re.compile(r"\A[A-Za-z0-9._~+/-]{16,}=*\Z")
HASHED_TOKEN = re.compile(r"\Asha256:([0-9a-fA-F]{64})\Z")


def worker_threads(workers: int, threads: int = 0) -> int:
    """Torch threads for each API worker: `threads`, or 0 = the cores shared out evenly."""
    return threads or max(1, (os.cpu_count() or 1) // workers)


class ServiceSettings(CoreSettings):
    """What `bentoml serve` reads on top of the core settings."""

    max_feedback_samples: int = Field(
        1_000, ge=1, le=100_000, description="Samples per /feedback call."
    )
    log_predictions: bool = Field(
        True, description="Remember served predictions so feedback can cite a prediction_id."
    )
    max_texts_per_request: int = Field(64, ge=1, le=10_000, description="Texts per /predict call.")
    max_body_bytes: int = Field(
        1 << 20, ge=1_024, description="Largest request body in bytes; larger is 413."
    )
    top_k: int = Field(5, ge=1, le=100, description="Alternatives returned in `top`.")
    max_batch_size: int = Field(
        128, ge=1, le=4_096, description="Most texts in one batch of concurrent requests."
    )
    max_queue_delay_ms: float = Field(
        2.0,
        ge=0,
        le=1_000,
        description=(
            "Longest a request waits for company while the model is busy (service/batching.py);"
            " one that finds it idle is dispatched at once."
        ),
    )
    max_queued_texts: int = Field(
        4_096, ge=1, description="Texts a worker queues at most; more at once is 503."
    )
    inference_batch_size: int = Field(
        0,
        ge=0,
        le=4_096,
        description="Rows per forward pass; 0 = 16 on CPU (faster per text there), 64 on CUDA.",
    )
    merge_adapter: bool = Field(
        True,
        description=(
            "Merge the served LoRA adapter into a copy of the weights it targets at each swap"
            " (service/merged.py): no LoRA matmuls per forward; false runs LoRA per forward."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the model runs; cuda without a GPU is refused at start."
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "BentoML worker processes for the API: one per core has the highest CPU"
            " throughput, one the lowest latency at light load."
        ),
    )
    access_log: bool = Field(
        True,
        description=(
            "BentoML's per-request access log line (about 6% of a worker's CPU at peak"
            " one-text load)."
        ),
    )
    tracing: bool = Field(
        False,
        description=(
            "OpenTelemetry spans for every request (configure BentoML's tracing exporter);"
            " off, no span is made: about 10-20% of a worker's CPU at peak one-text load."
        ),
    )
    threads: int = Field(
        0, ge=0, le=256, description="Torch threads per worker; 0 = cores/workers."
    )
    # Bearer tokens: comma-separated, each a plain token or `sha256:<hex>` of one. None
    # anywhere = the API is open; any one set = every scope needs a token.
    tokens_predict: SecretStr = Field(
        SecretStr(""),
        description="Bearer tokens for POST /predict: comma-separated, plain or `sha256:<hex>`.",
    )
    tokens_feedback: SecretStr = Field(
        SecretStr(""), description="Bearer tokens for POST /feedback (same format)."
    )
    tokens_admin: SecretStr = Field(
        SecretStr(""),
        description=(
            "Bearer tokens for the operator endpoints; they pass every scope."
            " No token in any of the three lists = the API is open."
        ),
    )
    metrics_auth: bool = Field(
        False, description="true: /metrics needs a valid token of any scope; false: it is open."
    )
    trainer: bool = Field(True, description="Run the Trainer service inside `bentoml serve`.")
    gpu_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description=(
            "GPU share BentoML gives each of the API and Trainer services on a GPU host,"
            " so both land on GPU 0 of a one-GPU machine."
        ),
    )
    online_accuracy_window: int = Field(
        500,
        ge=1,
        le=1_000_000,
        description="Recent corrections behind the livetune_online_accuracy metric.",
    )
    review_strategy: Literal["margin", "entropy", "diverse", "coverage"] = Field(
        "coverage",
        description="How GET /review ranks: smallest margin between the two most probable"
        " labels first, highest entropy first, margin taken in turns across the predicted"
        " labels, or typical texts spread out in embedding space, times 1 - margin once an"
        " adapter serves (coverage: a call embeds LIVETUNE_REVIEW_RESCORE candidates at"
        " random; docs/benchmarks.md#active-learning compares them).",
    )
    review_random_share: float = Field(
        0.0, ge=0, le=1, description="Share of each GET /review batch picked at random."
    )
    review_lease_s: float = Field(
        300.0,
        ge=1,
        le=86_400,
        description="Seconds an item handed out by GET /review is"
        " held for its reviewer before the queue may hand it to another.",
    )
    review_pool: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Newest remembered predictions a GET /review call ranks.",
    )
    review_rescore: int = Field(
        256,
        ge=0,
        le=100_000,
        description="Most candidates a GET /review call re-scores with the adapter in service"
        " (the bounded work that keeps a queue ranked under an older adapter from going stale).",
    )

    @field_validator("tokens_predict", "tokens_feedback", "tokens_admin")
    @classmethod
    def _tokens_well_formed(cls, value: SecretStr) -> SecretStr:
        token_digests(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _metrics_auth_needs_tokens(self) -> ServiceSettings:
        if self.metrics_auth and not any(self.token_digests().values()):
            raise ValueError(
                f"{ENV_PREFIX}METRICS_AUTH=true needs tokens: set {ENV_PREFIX}TOKENS_PREDICT, "
                f"{ENV_PREFIX}TOKENS_FEEDBACK or {ENV_PREFIX}TOKENS_ADMIN"
            )
        return self

    @model_validator(mode="after")
    def _coverage_needs_a_sample(self) -> ServiceSettings:
        if self.review_strategy == "coverage" and self.review_rescore < 1:
            raise ValueError(
                f"{ENV_PREFIX}REVIEW_STRATEGY=coverage ranks the candidates a call embeds:"
                f" set {ENV_PREFIX}REVIEW_RESCORE to 1 or more (256 by default)"
            )
        return self

    @model_validator(mode="after")
    def _cuda_needs_a_gpu(self) -> ServiceSettings:
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"{ENV_PREFIX}DEVICE=cuda but torch sees no CUDA GPU")
        return self

    def token_digests(self) -> dict[str, frozenset[str]]:
        """SHA-256 hex digests of the configured bearer tokens, by scope."""
        return {
            scope: token_digests(getattr(self, f"tokens_{scope}").get_secret_value())
            for scope in TOKEN_SCOPES
        }


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
