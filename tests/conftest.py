"""Shared fixtures: a tiny random BERT and tokenizer built on the fly (no downloads)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch
from starlette.testclient import TestClient

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models train ~100x slower when two threads fight over a busy 2-core machine.
torch.set_num_threads(1)

from tests.factories import TOY_LABELS  # noqa: E402

TOY_WORDS = [
    "card",
    "lost",
    "stolen",
    "exchange",
    "rate",
    "refund",
    "money",
    "hello",
    "world",
    "i",
    "my",
    "the",
    "a",
    "is",
    "want",
    "to",
    "know",
    "about",
    "request",
    "euro",
    "dollar",
    "how",
    "much",
    "back",
    "please",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """Save a 2-layer, 16-wide random BERT and a word-level tokenizer to `folder`."""
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(seed)
    vocab = {word: i for i, word in enumerate(SPECIAL + TOY_WORDS)}
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    BertTokenizer(vocab=vocab).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


LIMITS = {
    "LIVETUNE_MAX_TEXTS_PER_REQUEST": "4",
    "LIVETUNE_MAX_TEXT_CHARS": "50",
    "LIVETUNE_MAX_BODY_BYTES": "2048",
    "LIVETUNE_TOP_K": "2",
    "LIVETUNE_MAX_FEEDBACK_SAMPLES": "5",
}


def service_client(monkeypatch, tmp_path, base_model: str, **env: str) -> TestClient:
    """A TestClient on the service module configured by `env`.

    The service reads its settings when first imported, so this must be the first import
    of service.service in the process (and so one such app per process: BentoML registers
    its Prometheus metrics globally anyway).
    """
    for key in [key for key in os.environ if key.startswith("LIVETUNE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("LIVETUNE_BASE_MODEL", base_model)
    monkeypatch.setenv("LIVETUNE_LABELS", ",".join(TOY_LABELS))
    monkeypatch.setenv("LIVETUNE_DATA_DIR", str(tmp_path / "data"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert "service.service" not in sys.modules, "service.service was imported before its env"
    from service.service import Livetune

    return TestClient(Livetune.to_asgi(), raise_server_exceptions=False)


def wait_ready(client: TestClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "service never became ready"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def client(tiny_model_dir, tmp_path_factory):
    """The one in-process app of the test session (tiny model, toy labels, small limits)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        tmp_path = tmp_path_factory.mktemp("service")
        with service_client(monkeypatch, tmp_path, str(tiny_model_dir), **LIMITS) as client:
            wait_ready(client)
            client.data_dir = tmp_path / "data"
            yield client


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 server on a free loopback port, shared by the session's object-store tests."""
    from tests.s3 import MotoServer

    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster for the session (tests/pg.py), stopped at its end;
    skipped where PostgreSQL is not installed, failed in CI."""
    from tests import pg

    with pg.cluster() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a fresh, empty database (a schema of the test's own) on the cluster."""
    return postgres_server.fresh_url()


@pytest.fixture(scope="session")
def pgbouncer_server(postgres_server):
    """PgBouncer in transaction mode in front of the session's cluster (tests/pgbouncer.py);
    skipped where PgBouncer is not installed, failed in CI."""
    from tests import pgbouncer

    with pgbouncer.bouncer(postgres_server, "transaction") as server:
        yield server


@pytest.fixture
def pooled_url(pgbouncer_server) -> str:
    """The URL of an empty database reached through PgBouncer in transaction mode."""
    return pgbouncer_server.fresh_url()
