"""The label changes the set refuses, each with its HTTP status and error kind."""

from __future__ import annotations


class LabelError(ValueError):
    """A label change the set refuses; `field` names what in the request is wrong."""

    status = 400
    kind = "invalid_label"

    def __init__(self, message: str, field: str = "name"):
        super().__init__(message)
        self.field = field


class LabelExists(LabelError):
    status, kind = 409, "label_exists"


class UnknownLabel(LabelError):
    status, kind = 404, "unknown_label"


class LabelRetired(LabelError):
    status, kind = 409, "label_retired"


class TooFewLabels(LabelError):
    status, kind = 409, "too_few_labels"
