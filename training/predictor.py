"""The one inference path: tokenize -> forward -> softmax -> top-k.

Serving answers /predict with it and validation scores adapters with it, so both see
exactly the same numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from training.labels import Label
from training.model import LabelHead, TextClassifier

# Below this many rows bf16 autocast on CPU costs more in casts than it saves.
CPU_BF16_MIN_BATCH = 8


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    top: list[tuple[str, float]]


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when there is one; CUDA comes with its index (torch's memory
    calls, such as the trainer's GPU share, refuse a bare `cuda`)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is cuda but torch sees no CUDA GPU (is the CPU build installed?)")
    if device == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(device)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The reduced precision to run the forward in, or None for float32."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def forward_rows(device: torch.device, batch_size: int) -> int:
    """Rows per forward pass: `batch_size`, or 0 = what suits the device.

    On a CPU, bigger forwards are slower per text (bench_predict's sweep on 2 cores:
    229-262 texts/s at 8-32 rows, 191 at 64, 167 at 128), while the service's batches
    grow with the load: 16 rows keeps them at the fast size, and the length sort
    still sees the whole batch. A GPU wants large forwards.
    """
    if batch_size:
        return batch_size
    return 64 if device.type == "cuda" else 16


def model_token_limit(model: TextClassifier, tokenizer) -> int:
    """The longest input the encoder accepts, from its tokenizer or its position table."""
    limits = [getattr(model.encoder.config, "max_position_embeddings", None)]
    if getattr(tokenizer, "model_max_length", 0) < 1_000_000:  # unset = a huge sentinel
        limits.append(tokenizer.model_max_length)
    return min(limit for limit in limits if limit) if any(limits) else 512


class Predictor:
    """Scores texts against the label set with a TextClassifier."""

    def __init__(
        self,
        model: TextClassifier,
        tokenizer,
        labels: Sequence[Label],
        *,
        device: str = "auto",
        precision: str = "auto",
        max_tokens: int = 128,
        batch_size: int = 0,
        top_k: int = 5,
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.max_tokens = min(max_tokens, model_token_limit(model, tokenizer))
        self.batch_size = forward_rows(self.device, batch_size)
        self.requested_top_k = top_k
        self.top_k = min(top_k, len(self.labels))
        self.dtype = autocast_dtype(self.device, precision)

    @torch.inference_mode()
    def probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """Softmax over the labels: (len(texts), num_labels), float32 on the CPU."""
        return self._run(texts, lambda ids, mask: self.model(ids, mask).float().softmax(-1))

    @torch.inference_mode()
    def embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length sentence embeddings: (len(texts), hidden), float32 on the CPU."""
        return self._run(texts, lambda ids, mask: self.model.embed(ids, mask).float())

    @torch.inference_mode()
    def embeddings_and_probabilities(self, texts: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """`embeddings` and `probabilities` from one forward pass."""

        def forward(ids, mask):
            vectors = self.model.embed(ids, mask)
            return torch.cat([vectors.float(), self.model.head(vectors).float().softmax(-1)], -1)

        both = self._run(texts, forward)
        labels = len(self.labels)
        return both[:, :-labels], both[:, -labels:]

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Best label, its probability, and the top-k alternatives for each text."""
        if not texts:
            return []
        scores, indices = self.probabilities(texts).topk(self.top_k, dim=-1)
        predictions = []
        for row_scores, row_indices in zip(scores.tolist(), indices.tolist()):
            top = [(self.labels[i].name, s) for i, s in zip(row_indices, row_scores)]
            predictions.append(Prediction(label=top[0][0], score=top[0][1], top=top))
        return predictions

    @torch.no_grad()
    def set_head(self, labels: Sequence[Label], weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Serve `labels` with these head rows: a label set of another size gets a head of
        its own size. Callers hold off batches meanwhile (ServingModel's lock)."""
        head = self.model.head
        if head.weight.shape != weight.shape:
            head = LabelHead(weight.shape[1], weight.shape[0], scale=head.scale)
            head.to(device=self.model.head.weight.device, dtype=self.model.head.weight.dtype)
        head.weight.copy_(weight.to(head.weight.device, head.weight.dtype))
        head.bias.copy_(bias.to(head.bias.device, head.bias.dtype))
        self.model.head = head.eval()
        self.labels = list(labels)
        self.top_k = min(self.requested_top_k, len(self.labels))

    def init_head_from_labels(self, template: str) -> None:
        """Zero-shot head: embed each label's prompt text with the encoder."""
        prompts = [label.prompt(template) for label in self.labels]
        self.model.init_head(self.embeddings(prompts).to(self.device))

    def _run(self, texts: Sequence[str], forward: Callable) -> torch.Tensor:
        # Sorting by length before padding keeps each sub-batch's padding small.
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_tokens, padding=False
        )["input_ids"]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        outputs: list[torch.Tensor | None] = [None] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self.tokenizer.pad(
                {"input_ids": [encoded[i] for i in chunk]}, return_tensors="pt"
            )
            ids = batch["input_ids"].to(self.device)
            mask = batch["attention_mask"].to(self.device)
            with self._autocast(len(chunk)):
                result = forward(ids, mask).cpu()
            for row, i in enumerate(chunk):
                outputs[i] = result[row]
        return torch.stack(outputs)

    def _autocast(self, rows: int):
        if self.dtype is None or (self.device.type == "cpu" and rows < CPU_BF16_MIN_BATCH):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def zero_shot_predictor(
    base_model: str | None,
    labels: Sequence[Label],
    *,
    template: str,
    **options,
) -> Predictor:
    """A Predictor on a base model whose head starts from the label prompts' embeddings."""
    from training.model import load_encoder

    encoder, tokenizer = load_encoder(base_model)
    predictor = Predictor(TextClassifier(encoder, len(labels)), tokenizer, labels, **options)
    predictor.init_head_from_labels(template)
    return predictor
