"""What a published adapter's manifest records: its lineage, data, evidence and recipe."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence


def adapter_manifest(
    warm, names: Sequence[str], parent: str, report: dict, train_labels: Sequence[str],
    seen, hyperparameters: dict,
) -> dict:  # fmt: skip
    """The manifest of the adapter `warm` (a training.warm_start.WarmModel) trained on
    corrections labelled `train_labels`, with the run's `report`; `seen` (a
    training.evidence.Seen) says which corrections it learned from, so a later gate
    never scores it on them."""
    return {
        "parent": parent,
        "base_model": warm.base_info,
        "labels": list(names),
        "metrics": {
            "validation_accuracy": report["gate"]["candidate_accuracy"],
            "parent_validation_accuracy": report["gate"]["current_accuracy"],
            "validation_samples": report["gate"]["validation_samples"],
            "train_samples": len(train_labels),
            "pseudo_labeled": report["self_training"]["pseudo_labeled"],
            # Which labels it learned from: GET /labels says `trained` by these.
            "label_counts": dict(Counter(train_labels)),
        },
        "gate": report["gate"],  # the paired test's evidence (invariant 4)
        "data_cursor": report["data_cursor"],
        "seen": seen.as_dict(),
        "hyperparameters": hyperparameters,
        "device": report["device"],
        "train": report["train"],
        "created_at": time.time(),
    }
