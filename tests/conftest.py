"""Shared fixtures: a tiny random BERT and tokenizer built on the fly (no downloads)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOY_LABELS = ["lost_card", "exchange_rate", "refund_request"]
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
