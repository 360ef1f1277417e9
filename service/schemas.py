"""Request and response bodies of the REST API."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, StringConstraints


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty or only whitespace")
    return text


def text_type(max_chars: int):
    """One input text: non-blank, at most `max_chars` characters."""
    return Annotated[
        str, StringConstraints(min_length=1, max_length=max_chars), AfterValidator(_not_blank)
    ]


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
