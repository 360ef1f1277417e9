"""Logging inside `bentoml serve`: our loggers through BentoML's handlers, and client
errors logged as such."""

from __future__ import annotations

import logging

# BentoML logs every request that raised, invalid input included, here.
BENTOML_REQUEST_ERRORS = "bentoml._internal.server.http_app"


def use_bentoml_logging() -> None:
    """Send our `training` and `livetune` loggers to BentoML's handlers, at INFO, and log
    invalid requests as the client errors they are."""
    handlers = logging.getLogger("bentoml").handlers
    for name in ("training", "livetune"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if not logger.handlers:
            logger.handlers = list(handlers)
            logger.propagate = False
    request_errors = logging.getLogger(BENTOML_REQUEST_ERRORS)
    if not any(isinstance(f, ClientErrorsAsWarnings) for f in request_errors.filters):
        request_errors.addFilter(ClientErrorsAsWarnings())


class ClientErrorsAsWarnings(logging.Filter):
    """BentoML logs a request body that fails validation (answered 400) as an ERROR with
    a traceback, so every bad request looks like a server fault and a fuzz run buries
    real errors; it becomes one WARNING line naming the fields (never their values)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValidationError):
            fields = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5]
            )
            record.msg = f"{record.msg} answered 400: %s"
            record.args = (*record.args, fields)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True
