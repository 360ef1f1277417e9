import pytest
import torch

from training.model import (
    LabelHead,
    TextClassifier,
    embedded_model_path,
    load_encoder,
    mean_pool,
    resolve_base_model,
)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 2.0]]


def test_head_starts_as_scale_times_cosine_to_the_label_embeddings(tiny_model_dir):
    from training.model import TextClassifier, load_encoder

    encoder, _ = load_encoder(str(tiny_model_dir))
    model = TextClassifier(encoder, num_labels=2)
    model.init_head(torch.tensor([[3.0] + [0.0] * 15, [0.0, 0.5] + [0.0] * 14]))
    unit = torch.zeros(1, 16)
    unit[0, 0] = 1.0
    assert model.head(unit)[0].tolist() == pytest.approx([model.head.scale, 0.0], abs=1e-5)


def test_head_rows_are_free_to_grow():
    head = LabelHead(hidden_size=2, num_labels=2, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.5]]))
    assert head(torch.tensor([[1.0, 0.0]]))[0].tolist() == pytest.approx([3.0, 0.0])


def test_embedded_model_is_found_in_site_packages():
    path = embedded_model_path()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert resolve_base_model("") == (str(path), True)


def test_hub_ids_pass_through_unresolved():
    assert resolve_base_model("sentence-transformers/all-MiniLM-L6-v2") == (
        "sentence-transformers/all-MiniLM-L6-v2",
        False,
    )


def test_local_folder_without_config_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_base_model(str(tmp_path))


def test_embeddings_are_unit_length(tiny_model_dir):
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    model = TextClassifier(encoder, num_labels=3)
    batch = tokenizer(["my card is lost", "hello"], padding=True, return_tensors="pt")
    embeddings = model.embed(batch["input_ids"], batch["attention_mask"])
    assert embeddings.norm(dim=-1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert model(batch["input_ids"], batch["attention_mask"]).shape == (2, 3)
