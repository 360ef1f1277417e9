"""The Trainer: a BentoML service in its own process that runs the training loop.

It shares nothing with the API workers but the backends: corrections come in through the
store, adapters go out through the registry's CURRENT pointer.
"""

from __future__ import annotations

import logging
import os
import threading

import bentoml

from service.logs import use_bentoml_logging
from service.metrics import record_trainer_started, record_training_run
from service.settings import ServiceSettings
from training.job_settings import JobSettings
from training.loop import TrainingLoop, job_from_settings, yield_cpu
from training.lora_targets import check_base_model
from training.settings import load_settings

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
log = logging.getLogger("livetune.trainer")
# The decorator needs the GPU share at import; everything else is read in __init__.
gpu_fraction = load_settings(ServiceSettings, require_labels=False).gpu_fraction


def gpu_resources(fraction: float) -> dict:
    """A GPU share on GPU hosts, so API and Trainer both land on GPU 0 of a 1-GPU machine."""
    import torch

    return {"gpu": fraction} if torch.cuda.is_available() else {}


@bentoml.service(
    name="livetune-trainer",
    workers=1,
    resources=gpu_resources(gpu_fraction),
    traffic={"timeout": 60},
)
class Trainer:
    """Fine-tunes, validates and publishes adapters from the stored corrections."""

    def __init__(self) -> None:
        use_bentoml_logging()
        settings = load_settings(JobSettings)
        train = settings.train
        targets = check_base_model(settings.base_model, train.target_modules, train.lora_layers)
        log.info("LoRA targets: %s", targets.describe())
        yield_cpu(settings.train_nice)  # this process only trains
        record_trainer_started()
        self.loop = TrainingLoop(
            job_from_settings(settings), settings.train_poll_s, on_run=record_training_run
        )
        threading.Thread(target=self.loop.run_forever, name="livetune-train", daemon=True).start()

    @bentoml.api
    def train(self) -> dict:
        """Start a run now (or right after the one in progress); says whether one was running."""
        started = self.loop.request()
        return {"accepted": True, "already_running": not started}
