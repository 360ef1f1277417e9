from pathlib import Path

import pytest

from service.settings import ServiceSettings
from training.job_settings import JobSettings
from training.settings import CoreSettings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("LIVETUNE_"):
            monkeypatch.delenv(key)


def test_inline_labels_comma_or_json(monkeypatch):
    monkeypatch.setenv("LIVETUNE_LABELS", "a, b ,c")
    assert [label.name for label in load_settings().label_set()] == ["a", "b", "c"]
    monkeypatch.setenv("LIVETUNE_LABELS", '{"a": "about a", "b": ""}')
    assert load_settings().label_set()[0].description == "about a"


def test_labels_file(monkeypatch, tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("x: first\ny\n")
    monkeypatch.setenv("LIVETUNE_LABELS_FILE", str(path))
    assert [label.name for label in load_settings().label_set()] == ["x", "y"]


@pytest.mark.parametrize(
    ("kind", "env", "variable"),
    [
        (CoreSettings, {}, "LIVETUNE_LABELS"),
        (CoreSettings, {"LIVETUNE_LABELS": "a,b", "LIVETUNE_LABELS_FILE": "/x"}, "LIVETUNE_LABELS"),
        (CoreSettings, {"LIVETUNE_LABELS": "a"}, "LIVETUNE_LABELS"),
        (CoreSettings, {"LIVETUNE_LABELS_FILE": "/no/such/file"}, "LIVETUNE_LABELS_FILE"),
        (CoreSettings, {"LIVETUNE_LABELS": "a,b", "LIVETUNE_MAX_TOKENS": "many"}, "MAX_TOKENS"),
        (CoreSettings, {"LIVETUNE_LABELS": "a,b", "LIVETUNE_MAX_TOKENS": "0"}, "MAX_TOKENS"),
        (ServiceSettings, {"LIVETUNE_LABELS": "a,b", "LIVETUNE_DEVICE": "tpu"}, "LIVETUNE_DEVICE"),
        (CoreSettings, {"LIVETUNE_LABELS": "a,b", "LIVETUNE_PRECISION": "int3"}, "PRECISION"),
        (
            CoreSettings,
            {"LIVETUNE_LABELS": "a,b", "LIVETUNE_LABEL_TEMPLATE": "no slot"},
            "LIVETUNE_LABEL_TEMPLATE",
        ),
        (CoreSettings, {"LIVETUNE_LABELS": "a,b", "LIVETUNE_BASE_MODEL": "/tmp"}, "BASE_MODEL"),
        (ServiceSettings, {"LIVETUNE_LABELS": "a,b", "LIVETUNE_MAX_BODY_BYTES": "10"}, "BODY"),
        (ServiceSettings, {"LIVETUNE_LABELS": "a,b", "LIVETUNE_WORKERS": "0"}, "LIVETUNE_WORKERS"),
        (JobSettings, {"LIVETUNE_LABELS": "a,b", "LIVETUNE_TRAIN_NICE": "40"}, "TRAIN_NICE"),
        (JobSettings, {"LIVETUNE_LABELS": "a", "LIVETUNE_TRAIN_NICE": "1"}, "LIVETUNE_LABELS"),
    ],
)
def test_bad_setting_names_the_variable(monkeypatch, kind, env, variable):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings(kind)


@pytest.mark.parametrize("kind", [CoreSettings, JobSettings])
def test_the_trainer_and_the_cli_ignore_the_http_settings(monkeypatch, kind):
    monkeypatch.setenv("LIVETUNE_LABELS", "a,b")
    monkeypatch.setenv("LIVETUNE_WORKERS", "0")  # invalid, but not theirs to read
    monkeypatch.setenv("LIVETUNE_TOKENS_ADMIN", "short")
    assert "workers" not in kind.model_fields
    assert load_settings(kind).label_set()[0].name == "a"


def test_cuda_without_gpu_is_refused(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("LIVETUNE_LABELS", "a,b")
    monkeypatch.setenv("LIVETUNE_DEVICE", "cuda")
    with pytest.raises(SettingsError, match="LIVETUNE_DEVICE=cuda"):
        load_settings(ServiceSettings)


def test_coverage_ranking_needs_candidates_to_embed(monkeypatch):
    monkeypatch.setenv("LIVETUNE_LABELS", "a,b")
    monkeypatch.setenv("LIVETUNE_REVIEW_RESCORE", "0")
    # coverage is the default ranking, and it ranks only what a call embeds
    with pytest.raises(SettingsError, match="LIVETUNE_REVIEW_RESCORE to 1 or more"):
        load_settings(ServiceSettings)
    # margin can rank on the scores stored at serving time, so no re-scoring is allowed
    monkeypatch.setenv("LIVETUNE_REVIEW_STRATEGY", "margin")
    settings = load_settings(ServiceSettings)
    assert (settings.review_strategy, settings.review_rescore) == ("margin", 0)


def test_local_base_model_folder_is_accepted(monkeypatch, tiny_model_dir):
    monkeypatch.setenv("LIVETUNE_LABELS", "a,b")
    monkeypatch.setenv("LIVETUNE_BASE_MODEL", str(tiny_model_dir))
    assert load_settings().base_model == str(tiny_model_dir)


def test_configuration_page_is_current():
    """docs/configuration.md is generated from the fields' descriptions; `make docs` rewrites it."""
    from service import config_reference

    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == config_reference.render(), "docs/configuration.md is stale: run `make docs`"


def test_configuration_page_names_every_setting():
    from training.settings import ENV_PREFIX
    from training.trainer import TrainConfig

    page = (ROOT / "docs" / "configuration.md").read_text()
    fields = {**ServiceSettings.model_fields, **JobSettings.model_fields}
    names = [f"{ENV_PREFIX}{f.upper()}" for f in fields if f != "train"]
    names += [f"{ENV_PREFIX}TRAIN__{f.upper()}" for f in TrainConfig.model_fields]
    assert [name for name in names if f"| `{name}` |" not in page] == []


def test_training_hyper_parameters_come_from_nested_variables(monkeypatch):
    monkeypatch.setenv("LIVETUNE_TRAIN__EPOCHS", "7")
    monkeypatch.setenv("LIVETUNE_TRAIN__TARGET_MODULES", '["query", "value"]')
    settings = load_settings(JobSettings, require_labels=False)
    assert settings.train.epochs == 7
    assert settings.train.target_modules == ("query", "value")
    monkeypatch.setenv("LIVETUNE_TRAIN__EPOCHS", "-1")
    with pytest.raises(SettingsError, match="LIVETUNE_TRAIN__EPOCHS"):
        load_settings(JobSettings, require_labels=False)
