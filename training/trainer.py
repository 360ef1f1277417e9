"""Fine-tune a LoRA adapter and the linear head on labeled samples.

The recipe: (1) embed the training texts once and fit the head alone on those frozen
embeddings (seconds, and already as good as a logistic-regression probe), then (2) train
LoRA on the encoder together with the head, in length-bucketed, class-balanced batches.
Step 1 gives step 2 a head that already points the right way, so LoRA spends its budget
on the encoder instead of on undoing a zero-shot head.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from training import threads
from training.model import TextClassifier
from training.predictor import Predictor, autocast_dtype, model_token_limit


class TrainConfig(BaseModel):
    """Hyper-parameters of one training run; saved in the manifest of the adapter they made."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lora_r: int = Field(8, ge=1, le=256, description="LoRA rank.")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: tuple[str, ...] = Field(
        (),
        description=(
            "Encoder modules LoRA wraps, by name (`query`) or dotted suffix; empty = every"
            " linear layer in the encoder's layers, attention and feed-forward (BERT and"
            " MiniLM: query, key, value, dense; MPNet: q, k, v, o, dense)."
        ),
    )
    lora_layers: int = Field(
        3,
        ge=0,
        description=(
            "LoRA on the top N of the encoder's layers only (0 or more than it has = all):"
            " backward stops below them."
        ),
    )
    epochs: float = Field(
        3.0, gt=0, description="Passes over the training samples in the LoRA phase."
    )
    min_steps: int = Field(
        250,
        ge=0,
        description=(
            "At least this many LoRA steps however few the samples (20 a label learn best"
            " in ~8 epochs, 10,000 samples in 3)."
        ),
    )
    max_steps: int = Field(0, ge=0, description="Stop after this many LoRA steps; 0 = no limit.")
    max_seconds: float = Field(
        1_800.0, ge=0, description="Stop the LoRA phase after this many seconds; 0 = no limit."
    )
    batch_size: int = Field(32, ge=1, le=4_096, description="Samples per optimiser step.")
    learning_rate: float = Field(
        3e-3, gt=0, description="Peak learning rate of the LoRA weights (linear warm-up, decay)."
    )
    head_learning_rate: float = Field(
        2e-3, ge=0, description="Learning rate of the head during the LoRA phase."
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (LoRA weights).")
    warmup_fraction: float = Field(
        0.06, ge=0, lt=1, description="Share of steps spent on the linear warm-up."
    )
    head_fit_steps: int = Field(
        300, ge=0, description="Full-batch steps fitting the head on frozen embeddings before LoRA."
    )
    head_fit_learning_rate: float = Field(0.1, gt=0, description="Learning rate of the head fit.")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="Label smoothing in the LoRA phase."
    )
    margin: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="Margin (x the head's scale, 30) off the true label's logit in the LoRA phase.",
    )
    class_balance: bool = Field(
        True, description="Weight the loss by inverse label frequency so rare labels count."
    )
    max_tokens: int = Field(64, ge=8, le=8_192, description="Tokens kept per training text.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 autocast on CUDA and on CPUs with native bf16."
    )
    seed: int = Field(0, description="Seed for sampling, dropout and initialisation.")


@dataclass
class TrainResult:
    steps: int
    epochs: float
    samples_seen: int
    seconds: float
    head_fit_seconds: float
    final_loss: float
    stopped_by: str  # "epochs", "min_steps", "max_steps" or "max_seconds"


def class_weights(targets: Sequence[int], num_labels: int) -> torch.Tensor:
    """Loss weight per label, inversely proportional to its count (sklearn's "balanced")."""
    counts = torch.bincount(torch.tensor(list(targets)), minlength=num_labels).float()
    weights = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * (counts > 0).sum()), 0)
    return weights


def targets_and_weights(labels: Sequence[str], names: Sequence[str], balance: bool):
    """Label indices into `names`, and `class_weights` if `balance` (else None)."""
    index = {name: i for i, name in enumerate(names)}
    targets = torch.tensor([index[label] for label in labels])
    return targets, class_weights(targets.tolist(), len(names)) if balance else None


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length samples: little padding, still random order.

    Shuffle, cut into pools of 50 batches, sort each pool by length, split it into
    batches, and shuffle the batches (the bucketing of fairseq / HF `group_by_length`).
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def fit_head(
    model: TextClassifier,
    embeddings: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None,
    steps: int,
    learning_rate: float,
) -> None:
    """Train only the head on fixed unit embeddings (full batch, Adam): (n, hidden), (n,)."""
    head = model.head
    params = [head.weight, head.bias]
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    embeddings = embeddings.clone().to(head.weight.device)  # out of inference mode
    targets = targets.to(head.weight.device)
    for _ in range(steps):
        loss = F.cross_entropy(head(embeddings), targets, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def step_floor_sets_length(config: TrainConfig, per_epoch: int) -> bool:
    """Whether `min_steps`, not `epochs`, sets the length of a run of `per_epoch` batches."""
    return math.ceil(per_epoch * config.epochs) < config.min_steps


def planned_steps(config: TrainConfig, per_epoch: int) -> int:
    """LoRA steps for a data set of `per_epoch` batches, within the configured bounds.

    Small data sets need more passes than large ones: 20 examples a label learn best in
    ~8 epochs, 10,000 samples in 3, hence the floor of `min_steps`.
    """
    total = max(math.ceil(per_epoch * config.epochs), config.min_steps)
    return min(total, config.max_steps) if config.max_steps else total


class Trainer:
    """Trains a TextClassifier whose encoder already carries a trainable LoRA adapter."""

    def __init__(self, model: TextClassifier, tokenizer, label_names: Sequence[str], config):
        self.model = model
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.config: TrainConfig = config
        self.device = next(model.parameters()).device
        self.dtype = autocast_dtype(self.device, config.precision)

    def train(self, texts: Sequence[str], labels: Sequence[str]) -> TrainResult:
        """Head fit on frozen embeddings, then LoRA + head within the step/epoch/time budget."""
        config = self.config
        torch.manual_seed(config.seed)
        targets, weights = targets_and_weights(labels, self.label_names, config.class_balance)
        weights = weights.to(self.device) if weights is not None else None
        started = time.perf_counter()
        if config.head_fit_steps:
            embeddings = self._predictor().embeddings(texts)
            fit_head(
                self.model, embeddings, targets, weights, config.head_fit_steps,
                config.head_fit_learning_rate,
            )  # fmt: skip
        head_fit_seconds = time.perf_counter() - started
        result = self._train_lora(texts, targets, weights)
        result.head_fit_seconds = head_fit_seconds
        result.seconds = time.perf_counter() - started
        return result

    def _predictor(self) -> Predictor:
        return Predictor(
            self.model,
            self.tokenizer,
            [],
            device=str(self.device),
            precision=self.config.precision,
            max_tokens=self.config.max_tokens,
        )

    def _optimizer(self, total_steps: int):
        config = self.config
        lora = [p for n, p in self.model.encoder.named_parameters() if p.requires_grad]
        groups = [{"params": lora, "lr": config.learning_rate, "weight_decay": config.weight_decay}]
        head = list(self.model.head.parameters())
        for param in head:
            param.requires_grad_(config.head_learning_rate > 0)
        if config.head_learning_rate > 0:
            groups.append({"params": head, "lr": config.head_learning_rate, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups)
        warmup = max(1, int(total_steps * config.warmup_fraction))

        def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def _train_lora(self, texts, targets: torch.Tensor, weights) -> TrainResult:
        config = self.config
        max_tokens = min(config.max_tokens, model_token_limit(self.model, self.tokenizer))
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=max_tokens, padding=False
        )["input_ids"]
        lengths = [len(ids) for ids in encoded]
        per_epoch = math.ceil(len(encoded) / config.batch_size)
        total = planned_steps(config, per_epoch)
        optimizer, scheduler = self._optimizer(total)
        rng = random.Random(config.seed)
        deadline = time.perf_counter() + config.max_seconds if config.max_seconds else math.inf
        step, seen, loss_value, stopped_by, batches = 0, 0, float("nan"), "epochs", []
        self.model.train()
        while step < total:
            if not batches:
                batches = length_batches(lengths, config.batch_size, rng)
            if time.perf_counter() >= deadline:
                stopped_by = "max_seconds"
                break
            threads.recheck()  # a busy host gets fewer threads, mid-run
            chunk = batches.pop()
            loss_value = self._step(encoded, chunk, targets, weights, optimizer)
            scheduler.step()
            step += 1
            seen += len(chunk)
        else:
            if config.max_steps and total == config.max_steps:
                stopped_by = "max_steps"
            elif total == config.min_steps and step_floor_sets_length(config, per_epoch):
                stopped_by = "min_steps"
        self.model.eval()
        return TrainResult(
            steps=step,
            epochs=seen / max(1, len(encoded)),
            samples_seen=seen,
            seconds=0.0,
            head_fit_seconds=0.0,
            final_loss=loss_value,
            stopped_by=stopped_by,
        )

    def _step(self, encoded, chunk, targets, weights, optimizer) -> float:
        batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in chunk]}, return_tensors="pt")
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        target = targets[chunk].to(self.device)
        with self._autocast():
            logits = self.model(ids, mask).float()
        if self.config.margin:
            scale = self.model.head.scale
            logits = logits - scale * self.config.margin * F.one_hot(target, logits.shape[-1])
        loss = F.cross_entropy(
            logits,
            target,
            weight=weights,
            label_smoothing=self.config.label_smoothing,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)
