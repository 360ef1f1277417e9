"""Shared test material: the toy task, settings that train the tiny model, real adapters."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import adapters
from benchmarks.harness.server import ROOT, own_env
from training.predictor import Predictor
from training.registry import LocalRegistry
from training.trainer import TrainConfig

TOY_LABELS = ["lost_card", "exchange_rate", "refund_request"]
TEXTS = ["i lost my card", "exchange rate euro", "refund my money please", "hello world"]

KEYWORDS = {
    "lost_card": ["lost", "stolen", "card"],
    "exchange_rate": ["exchange", "rate", "euro", "dollar"],
    "refund_request": ["refund", "back", "money"],
}
FILLER = ["hello", "world", "i", "my", "the", "a", "is", "want", "to", "know", "please", "how"]
# A real training run on the tiny model that reliably learns the toy task: as a config
# for in-process jobs, and as the LIVETUNE_TRAIN__* variables of a server or the CLI.
TINY_TRAIN = TrainConfig(
    epochs=25,
    batch_size=16,
    learning_rate=2e-2,
    head_learning_rate=1e-2,
    head_fit_steps=60,
    max_tokens=16,
    margin=0.1,
)
TINY_TRAINING = {
    **{
        f"LIVETUNE_TRAIN__{name.upper()}": str(getattr(TINY_TRAIN, name))
        for name in TINY_TRAIN.model_fields_set
    },
    # Tests wait on these runs: full priority, so a busy machine cannot starve them.
    "LIVETUNE_TRAIN_NICE": "0",
}


def toy_samples(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """Distinct texts whose label is given away by one keyword among filler words."""
    rng, seen, samples = random.Random(seed), set(), []
    while len(samples) < count:
        label = rng.choice(TOY_LABELS)
        words = rng.sample(FILLER, 4) + [rng.choice(KEYWORDS[label])]
        rng.shuffle(words)
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            samples.append((text, label))
    return samples


def tiny_training_env(model_dir) -> dict[str, str]:
    """LIVETUNE_* settings for the tiny model, the toy labels and TINY_TRAINING."""
    return {
        "LIVETUNE_BASE_MODEL": str(model_dir),
        "LIVETUNE_LABELS": ",".join(TOY_LABELS),
        "LIVETUNE_LABEL_TEMPLATE": "{name}",
        "LIVETUNE_VALIDATION_PERCENT": "30",
        "LIVETUNE_MIN_VALIDATION_SAMPLES": "10",
        **TINY_TRAINING,
    }


def write_toy_csv(path: Path, count: int = 240) -> Path:
    """A CSV of toy samples for `python -m training import`."""
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in toy_samples(count)))
    return path


def zero_shot(model_dir, labels: Sequence[str] = TOY_LABELS) -> Predictor:
    """The harness's zero-shot predictor, on the toy labels unless told otherwise."""
    return adapters.zero_shot(model_dir, labels)


def serving_model(predictor: Predictor, registry, base_id: str, merge: bool = True):
    """A service.swap.ServingModel on `predictor`, before it reaches the store's label set."""
    from service.swap import ServingModel
    from training.adapters import fingerprint
    from training.store.labels import LabelSet

    base = fingerprint(predictor.model.encoder)
    return ServingModel(
        predictor, LabelSet(0), registry, base, base_id, template="{name}", merge=merge
    )


def publish_adapter(
    registry: LocalRegistry,
    model_dir,
    seed: int,
    labels: Sequence[str] = TOY_LABELS,
    config: TrainConfig | None = None,
) -> str:
    """The harness's random (but real) adapter, on the toy labels unless told otherwise."""
    return adapters.publish_adapter(registry, model_dir, seed, labels, config)


def tiny_server(tmp_path: Path, model_dir, **env: str):
    """`running_server` on the tiny model and the toy labels, the Trainer off."""
    from benchmarks.harness.server import running_server

    return running_server(
        tmp_path,
        LIVETUNE_BASE_MODEL=str(model_dir),
        LIVETUNE_LABELS=",".join(TOY_LABELS),
        LIVETUNE_TRAINER="false",
        **env,
    )


def training_cli(env: dict[str, str], *args: str, timeout: float = 600):
    """`python -m training ARGS` as an operator runs it, configured by `env` alone."""
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        env=own_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_job_settings(data_dir: Path, model_dir: Path, labels: Sequence[str] = (), **overrides):
    """JobSettings for an in-process TrainingJob on the tiny model (toy labels by default)."""
    from training.job_settings import JobSettings
    from training.labels import Label

    return JobSettings(
        data_dir=data_dir,
        base_model=str(model_dir),
        labels=[Label(name) for name in labels or TOY_LABELS],
        label_template="{name}",
        train=TINY_TRAIN,
        train_device="cpu",
        **overrides,
    )
