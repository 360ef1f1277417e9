"""Schemathesis fuzzes the OpenAPI document the running server publishes: no 500s, and
every answer (status, content type, headers, body) as the document says.

Bounded: a few dozen generated requests per operation, about 500 in all (~20 s here).
The server runs with tokens, fuzzed with the admin token, so requests reach the handlers;
schemathesis's `ignored_auth` check also sends them without it and expects 401.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.server import running_server
from tests.conftest import LIMITS
from tests.factories import TOY_LABELS

pytestmark = pytest.mark.integration
ST = str(Path(sys.executable).parent / "st")
ADMIN_TOKEN = "fuzz-admin-token-r8Vd2LqM"
MAX_EXAMPLES = 50  # per operation and phase
# Every check but `positive_data_acceptance`, which expects any schema-valid request to
# succeed: ours legitimately refuse some by state the schema cannot express (an unknown
# label or prediction_id, an unknown adapter version, the trainer being off).
# `negative_data_rejection` gets 413 added: a body over LIVETUNE_MAX_BODY_BYTES is
# rejected before it is parsed, and that is a correct rejection of invalid data.
CONFIG = """
[checks]
negative_data_rejection.expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    """Small limits, so the fuzzer also crosses them. The Trainer is off: POST /train
    reaches its handler (which answers 409) instead of starting real training runs that
    would compete with the fuzzer for the CPU."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    with running_server(
        tmp_path,
        LIVETUNE_BASE_MODEL=str(tiny_model_dir),
        LIVETUNE_LABELS=",".join(TOY_LABELS),
        LIVETUNE_TRAINER="false",
        LIVETUNE_ACCESS_LOG="false",
        LIVETUNE_TOKENS_PREDICT="fuzz-predict-token-Z3kP9sWq",
        LIVETUNE_TOKENS_ADMIN=ADMIN_TOKEN,
        **LIMITS,
    ) as server:
        yield server.base, tmp_path, server.log


def test_fuzzed_api_answers_as_documented_and_never_500(server):
    base, tmp_path, log = server
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        ST,
        "--config-file",
        str(config),
        "run",
        f"{base}/docs.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--header",
        f"Authorization: Bearer {ADMIN_TOKEN}",
        "--request-timeout",
        "30",
        "--no-color",
    ]
    # cwd: schemathesis keeps a cache folder where it runs.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    # Every operation the document lists was fuzzed (BentoML's APIs and the mounted routes).
    paths = httpx.get(f"{base}/docs.json", timeout=30).json()["paths"].values()
    assert re.search(rf"Tested:\s+{sum(len(item) for item in paths)}\b", report), report[-3000:]
    # ~500 requests, many refused or failing validation, all with the token: none logged it.
    assert ADMIN_TOKEN not in log.read_text(errors="replace")
