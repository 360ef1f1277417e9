"""Turning /feedback requests into stored samples: every bad item is found before any is stored."""

from __future__ import annotations

import time
from collections.abc import Sequence

from training.store import FeedbackStore, NewSample
from training.store.labels import LabelSet

MAX_LISTED_LABELS = 200
# Another worker may have served a prediction a moment ago and not yet written it.
LATE_PREDICTION_WAIT_S = 0.25


def resolve_samples(
    samples: Sequence, label_set: LabelSet, store: FeedbackStore
) -> tuple[list[NewSample], list[dict]]:
    """(samples ready to store, errors by index); store nothing when errors is not empty.
    A label must be active in `label_set`: a retired one is refused as such."""
    label_names = label_set.names()
    valid = set(label_names)
    by_id = find_predictions(store, [s.prediction_id for s in samples if s.prediction_id])
    by_text = store.latest_prediction_for_text([s.text for s in samples if s.text])
    resolved, errors = [], []
    for index, sample in enumerate(samples):
        if sample.label not in valid:
            retired = label_set.get(sample.label) is not None
            errors.append(
                (_retired if retired else _unknown_label)(index, sample.label, label_names)
            )
        prediction = by_id.get(sample.prediction_id) if sample.prediction_id else None
        if sample.prediction_id and prediction is None:
            errors.append(
                {
                    "loc": ["samples", index, "prediction_id"],
                    "msg": f"unknown or expired prediction_id {sample.prediction_id!r}",
                    "type": "unknown_prediction_id",
                }
            )
            continue
        prediction = prediction or by_text.get(sample.text)
        resolved.append(
            NewSample(
                text=prediction.text if sample.prediction_id else sample.text,
                label=sample.label,
                source=sample.source,
                client_id=sample.id,
                prediction_id=prediction.id if prediction else None,
                predicted_label=prediction.label if prediction else None,
                adapter=prediction.adapter if prediction else None,
            )
        )
    return resolved, errors


def find_predictions(store: FeedbackStore, ids: list[str]) -> dict:
    found = store.get_predictions(ids)
    missing = [i for i in ids if i not in found]
    if missing:
        time.sleep(LATE_PREDICTION_WAIT_S)
        found.update(store.get_predictions(missing))
    return found


def _retired(index: int, label: str, label_names: Sequence[str]) -> dict:
    return {
        "loc": ["samples", index, "label"],
        "msg": f"label {label!r} is retired: it is no longer predicted nor accepted in"
        " corrections (its stored corrections are kept)",
        "type": "retired_label",
        "valid_labels": list(label_names),
    }


def _unknown_label(index: int, label: str, label_names: Sequence[str]) -> dict:
    listed = ", ".join(label_names[:MAX_LISTED_LABELS])
    return {
        "loc": ["samples", index, "label"],
        "msg": f"unknown label {label!r}; valid labels: {listed}",
        "type": "unknown_label",
        "valid_labels": list(label_names),
    }
