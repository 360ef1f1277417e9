"""Which encoder modules get LoRA: the linear layers of the encoder's own layer stack.

Every transformer encoder repeats one layer N times in an `nn.ModuleList`
(`encoder.layer` in BERT, MiniLM, RoBERTa and MPNet, `transformer.layer` in DistilBERT).
Its linear layers are the attention projections and the feed-forward layers, named
differently by each architecture: `query key value dense` (BERT), `q k v o dense`
(MPNet), `q_lin k_lin v_lin out_lin lin1 lin2` (DistilBERT). Reading them off the module
tree gives any encoder LoRA on attention and feed-forward alike, where a fixed list of
BERT names matched only MPNet's feed-forward `dense` and silently skipped its attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from training.settings import SettingsError

TARGETS_VARIABLE = "LIVETUNE_TRAIN__TARGET_MODULES"


@dataclass(frozen=True)
class LayerStack:
    """The encoder's repeated layers and the linear modules inside them."""

    path: str  # the ModuleList's name in the encoder: "encoder.layer"
    count: int
    linears: tuple[str, ...]  # full module names: "encoder.layer.0.attention.self.query"

    @property
    def pattern(self) -> str:
        """peft's `layers_pattern`: the list's own name, which the layer index follows."""
        return self.path.rpartition(".")[2]

    def leaf_names(self) -> tuple[str, ...]:
        """The linear layers' own names, in the order a layer declares them."""
        return tuple(dict.fromkeys(name.rpartition(".")[2] for name in self.linears))


@dataclass(frozen=True)
class LoraTargets:
    """What peft is told to wrap: module names and the layer indices they are taken from."""

    modules: tuple[str, ...]
    layers: tuple[int, ...]
    pattern: str

    def describe(self) -> str:
        return f"{', '.join(self.modules)} in layers {self.layers[0]}-{self.layers[-1]}"


def layer_stack(encoder: nn.Module) -> LayerStack:
    """The `nn.ModuleList` holding the most linear layers: the encoder's layer stack.

    Counting linear layers, not entries, picks the outer list where lists nest (T5's
    `block.N.layer.M`, experts inside layers).
    """
    best = None
    for path, module in encoder.named_modules():
        if not isinstance(module, nn.ModuleList) or not path:
            continue
        linears = tuple(
            f"{path}.{name}" for name, sub in module.named_modules() if isinstance(sub, nn.Linear)
        )
        if best is None or len(linears) > len(best.linears):
            best = LayerStack(path, len(module), linears)
    if best is None or not best.linears:
        raise SettingsError(
            f"the base model {type(encoder).__name__} has no list of layers with linear"
            " modules (nn.ModuleList of nn.Linear) to put LoRA on: set LIVETUNE_BASE_MODEL"
            " to a transformer encoder"
        )
    return best


def matches(module: str, target: str) -> bool:
    """peft's rule for a list of targets: the whole module name or its last dotted parts."""
    return module == target or module.endswith(f".{target}")


def target_modules(stack: LayerStack, configured: Sequence[str]) -> tuple[str, ...]:
    """peft's `target_modules`: the configured names, checked, or (none) every linear's."""
    if not configured:
        return stack.leaf_names()
    missing = [t for t in configured if not any(matches(name, t) for name in stack.linears)]
    if missing:
        raise SettingsError(
            f"{TARGETS_VARIABLE}: no linear layer in the encoder's layers"
            f" ({stack.path}.0-{stack.count - 1}) matches {', '.join(map(repr, missing))};"
            f" theirs are named {', '.join(stack.leaf_names())}. Name some of those, or set"
            " it to [] (the default) to take them all"
        )
    return tuple(configured)


def top_layers(stack: LayerStack, lora_layers: int) -> tuple[int, ...]:
    """The indices of the top `lora_layers` layers; 0, or more than there are, = all.

    Always an explicit list (never peft's None = anywhere), so a target name that also
    names a module outside the stack (a pooler's `dense`) never gets LoRA there.
    """
    first = max(0, stack.count - lora_layers) if lora_layers else 0
    return tuple(range(first, stack.count))


def resolve(encoder: nn.Module, configured: Sequence[str], lora_layers: int) -> LoraTargets:
    """The modules and layers LoRA goes on; a SettingsError when `configured` misses."""
    stack = layer_stack(encoder)
    modules = target_modules(stack, configured)
    return LoraTargets(modules, top_layers(stack, lora_layers), stack.pattern)


def check_base_model(
    base_model: str | None, configured: Sequence[str], lora_layers: int
) -> LoraTargets:
    """Resolve the LoRA targets on the base model's skeleton: a start-up check, no weights.

    The Trainer service and `python -m training run` call this before their first run, so
    a target the base model lacks stops the process with the fix instead of failing runs.
    """
    from training.model import encoder_skeleton

    return resolve(encoder_skeleton(base_model), configured, lora_layers)
