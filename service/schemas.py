"""Request and response bodies of the REST API."""

from __future__ import annotations

from typing import Annotated, Literal

from bentoml.validators import ContentType
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from training.store import RunState


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty or only whitespace")
    return text


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000: refused on every backend, so the API is one.
    if "\x00" in value:
        raise ValueError("contains a NUL character (U+0000), which cannot be stored")
    return value


def short_text(min_length: int, max_length: int):
    """A string field of a request: its length bounds, and storable."""
    return Annotated[
        str,
        StringConstraints(min_length=min_length, max_length=max_length),
        AfterValidator(_no_nul),
    ]


def text_type(max_chars: int):
    """One input text: non-blank, storable, at most `max_chars` characters."""
    return Annotated[short_text(1, max_chars), AfterValidator(_not_blank)]


def texts_type(max_texts: int, max_chars: int):
    """The `texts` field of /predict: 1..max_texts texts."""
    return Annotated[
        list[text_type(max_chars)],
        Field(min_length=1, max_length=max_texts, description="Texts to classify."),
    ]


class LabelScore(BaseModel):
    label: str
    score: float


class PredictionOut(BaseModel):
    """What /predict answers for one text."""

    label: str = Field(description="The most probable label.")
    score: float = Field(description="Its probability.")
    top: list[LabelScore] = Field(description="The top-k labels, most probable first.")
    prediction_id: str = Field(description="Send it back with a correction to /feedback.")
    adapter: str = Field(description='Adapter version that produced it ("base" before any).')


# The /predict answer, with its media type stated: BentoML otherwise works out a list
# answer's media type from its JSON schema, built afresh for every response (pydantic
# schema generation: about half of the event loop's time per request under load).
Predictions = Annotated[list[PredictionOut], ContentType("application/json")]


def feedback_types(max_samples: int, max_chars: int):
    """(SampleIn model, the `samples` field type of /feedback) for the configured limits."""
    Text = text_type(max_chars)

    class SampleIn(BaseModel):
        """One correction: the right `label` for a `text` or for a served `prediction_id`."""

        model_config = ConfigDict(extra="forbid")

        text: Text | None = Field(None, description="The text, or give prediction_id instead.")
        prediction_id: short_text(1, 64) | None = Field(
            None, description="The id /predict returned; the text is looked up."
        )
        label: short_text(1, 128) = Field(description="The correct label.")
        source: short_text(0, 128) | None = Field(
            None, description="Who corrected (agent, tool, import...)."
        )
        id: short_text(1, 128) | None = Field(
            None,
            description="Client idempotency key: a replay with the same id is not stored twice.",
        )

        @model_validator(mode="after")
        def _text_or_prediction_id(self):
            if (self.text is None) == (self.prediction_id is None):
                raise ValueError("give exactly one of text or prediction_id")
            return self

    samples = Annotated[
        list[SampleIn],
        Field(min_length=1, max_length=max_samples, description="Corrections, stored all or none."),
    ]
    return SampleIn, samples


class FeedbackOut(BaseModel):
    """What /feedback answers: every sample is stored (or was already)."""

    ids: list[int] = Field(
        description="Stored id per sample, in order; a duplicate gets its earlier id."
    )
    stored: int = Field(description="Samples newly stored.")
    duplicates: int = Field(
        description="Samples already stored (replayed id or same text and label)."
    )


class TrainAccepted(BaseModel):
    """What /train answers (202): a run starts now."""

    accepted: Literal[True] = Field(description="A training run was started.")


class Activated(BaseModel):
    """What /adapters/activate answers: the version CURRENT now names."""

    active: str = Field(description='The active version ("base" = no adapter).')


class WorkerState(BaseModel):
    """One serving worker of any replica, from its heartbeat (service/swap.py `SwapState`)."""

    host: str = Field(description="The host (pod) it runs on.")
    pid: int
    last_seen: float = Field(description="When its last heartbeat arrived (Unix time).")
    stale: bool = Field(description="No heartbeat lately: it died, or cannot reach the store.")
    adapter: str = Field(description="The version this worker serves.")
    since: float = Field(description="When it started serving it (Unix time).")
    swaps: int
    failed_swaps: int = Field(description="Versions it refused to load; it kept serving.")
    last_error: str | None = Field(description="Why the last refused version failed.")
    last_swap_s: float | None = Field(description="How long the last swap took.")
    poll_failures: int = Field(description="Polls of CURRENT that could not reach the registry.")
    last_poll_error: str | None = Field(description="Why the last failed poll failed.")
    # A heartbeat from a worker of an older release lacks these two: defaults, not a 500.
    label_set_version: int = Field(0, description="The label-set version it serves.")
    labels: int = Field(0, description="How many labels it predicts.")


class TrainingRunOut(BaseModel):
    """One training run (training/store `TrainingRun`)."""

    id: int
    trigger: str = Field(description='"samples", "interval" or "manual".')
    state: RunState
    reason: str | None = Field(description="Why it was rejected or failed.")
    started_at: float
    finished_at: float | None
    parent: str | None = Field(description="The adapter in service when it started.")
    candidate: str | None = Field(description="The version it produced, if it got that far.")
    data_cursor: int = Field(description="Highest sample id it could see.")
    train_samples: int
    validation_samples: int
    report: dict = Field(description="Gate evidence, training steps and timings, warm start.")


class StatusOut(BaseModel):
    """What GET /status answers."""

    base_model: str
    labels: list[str] = Field(description="The active labels the worker that answered predicts.")
    label_set_version: int = Field(description="The version of that label set.")
    ready: bool = Field(description="Whether the worker that answered has its model loaded.")
    active_adapter: str | None = Field(
        description='The version CURRENT names ("base" = none); null while the registry'
        " cannot be read (see registry_error)."
    )
    registry_error: str | None = Field(
        description="Why the registry could not be read just now (the workers serve on)."
    )
    workers: list[WorkerState] = Field(
        description="The serving workers of every replica, from their heartbeats."
    )
    pending_samples: int = Field(description="Corrections the last finished run did not see.")
    samples: int = Field(description="Corrections stored.")
    last_training_run: TrainingRunOut | None


class AdapterOut(BaseModel):
    """One adapter version in GET /adapters, with the evidence it was promoted on."""

    version: str
    active: bool
    parent: str | None = Field(description="The version it was trained on top of.")
    created_at: float | None
    metrics: dict = Field(description="Validation accuracy, its parent's, sample counts.")
    train_samples: int | None
    validation_samples: int | None
    data_cursor: int | None = Field(description="Highest sample id it was trained on.")
    device: str | None
    base_model: str | None
    gate: dict | None = Field(
        None,
        description=(
            "The evidence it was promoted on: the paired counts, p_worse, the lower bound"
            " of its accuracy minus its parent's, and the design (cross-validation folds or"
            " a holdout)."
        ),
    )
    seen: dict | None = Field(
        None, description="Which corrections it learned from: data cursor and held-out percent."
    )


class ChangedLabel(BaseModel):
    """A label as a change to it answers."""

    name: str
    description: str = Field(description='The text its zero-shot row embeds ("": the name).')
    state: Literal["active", "retired"]
    added_at: float = Field(description="When it was added (Unix time).")
    retired_at: float | None


class LabelOut(ChangedLabel):
    """One label of the set, as GET /labels lists it."""

    corrections: int = Field(description="Active corrections stored with this label.")
    trained: bool = Field(
        description="Whether the adapter this worker serves learned from corrections of it"
        " (false: it is predicted zero-shot)."
    )


class LabelsOut(BaseModel):
    """GET /labels: the whole set, retired labels included, in head order."""

    version: int = Field(description="The label-set version; every change adds one.")
    labels: list[LabelOut]


class LabelChanged(BaseModel):
    """What a label change answers: the label as it is now, and the set's new version."""

    version: int
    label: ChangedLabel


class LabelIn(BaseModel):
    """POST /labels."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="1-128 printable characters, no outer spaces.")
    description: str = Field("", description="A short sentence a matching text resembles.")


class DescriptionIn(BaseModel):
    """PATCH /labels/{name}."""

    model_config = ConfigDict(extra="forbid")
    description: str
