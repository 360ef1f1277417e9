"""The trainer's configuration: the core settings plus when and how to train."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from training.settings import CoreSettings
from training.trainer import TrainConfig


class JobSettings(CoreSettings):
    """What a training run and the loop around it read; built once, by the trainer."""

    train: TrainConfig = Field(
        default_factory=TrainConfig,
        description="Hyper-parameters, one variable each: LIVETUNE_TRAIN__EPOCHS=5 and so on.",
    )
    train_min_new_samples: int = Field(
        50,
        ge=1,
        description=(
            "New corrections since the last run that start a training run (once the data"
            " has grown past the early runs: see train_first_samples)."
        ),
    )
    train_first_samples: int = Field(
        10,
        ge=1,
        description=(
            "Corrections that start the first run; until train_min_new_samples is reached,"
            " each later run starts once the data has doubled (10, 20, 40, 80, then every 50)."
            " Set both this and train_min_new_samples high for runs on demand only."
        ),
    )
    train_max_interval_s: float = Field(
        3_600.0, gt=0, description="Train anyway once a pending correction has waited this long."
    )
    train_poll_s: float = Field(
        5.0, gt=0, le=3_600, description="How often the trainer looks for new corrections."
    )
    trainer_metrics_port: int = Field(
        0,
        ge=0,
        le=65_535,
        description="`python -m training run` (the loop) serves its run metrics on GET"
        " /metrics at this port; 0 = off. `bentoml serve`'s Trainer needs none: the API's"
        " /metrics has them.",
    )
    train_failure_backoff_s: float = Field(
        300.0, ge=0, description="Pause after a failed run before the next automatic one."
    )
    train_device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where training runs.")
    train_threads: int = Field(
        0,
        ge=0,
        le=256,
        description=(
            "Most torch threads for training on CPU; 0 = no cap. Within it a run uses the"
            " cores other processes leave free, looked at again every few seconds."
        ),
    )
    train_nice: int = Field(
        19,
        ge=0,
        le=19,
        description="CPU niceness of the trainer: 19 = serving first, training takes what is left.",
    )
    train_gpu_memory_fraction: float = Field(
        0.5, gt=0, le=1, description="Share of GPU memory the trainer may use."
    )
    promotion_margin: float = Field(
        0.0,
        ge=-1,
        le=1,
        description=(
            "If not 0, a candidate must also reach the current accuracy plus this (a"
            " fraction: 0.01 = one point; below 0 a tolerance) on the point estimate,"
            " instead of the data rule; the paired test and the non-inferiority bound"
            " still apply."
        ),
    )
    gate_alpha: float = Field(
        0.25,
        gt=0,
        lt=1,
        description=(
            "The gate's paired test rejects a candidate as worse when an equally good one"
            " would lose this badly less often than this (exact McNemar p-value)."
        ),
    )
    gate_noninferiority_margin: float = Field(
        0.02,
        ge=0,
        le=1,
        description=(
            "A candidate is promoted only if the lower confidence bound of its accuracy"
            " minus current's, on texts neither learned from, is at least minus this"
            " (0.02 = 2 points; 1 = off)."
        ),
    )
    gate_confidence: float = Field(
        0.95,
        ge=0.5,
        lt=1,
        description="One-sided confidence level of that lower bound.",
    )
    gate_folds: int = Field(
        5,
        ge=0,
        le=20,
        description=(
            "While corrections are few, the gate cross-validates the run's recipe over"
            " this many folds of every correction instead of judging one small holdout"
            " (k more trainings per run); below 2 = never."
        ),
    )
    gate_cv_below: int = Field(
        100,
        ge=0,
        description=(
            "Cross-validate while the holdout would give the gate fewer texts than this"
            " (texts the adapter in service never learned from)."
        ),
    )
    gate_cv_max_samples: int = Field(
        1_000,
        ge=0,
        description="Never cross-validate a run on more corrections than this (its cost).",
    )
    min_validation_samples: int = Field(
        8,
        ge=0,
        description="Scored samples needed to promote (with fewer, no training).",
    )
    train_warm_start: Literal["auto", "always", "never"] = Field(
        "auto",
        description=(
            "Whether a run continues the adapter in service (its LoRA and head) or trains a"
            " fresh one from the base model: auto = continue while the step floor"
            " (`LIVETUNE_TRAIN__MIN_STEPS`) rather than the epochs sets the run's length, i.e."
            " while corrections are few; fresh once there are enough for the epochs."
        ),
    )
    self_training_threshold: float = Field(
        0.95,
        ge=0,
        le=1,
        description=(
            "Self-training: served texts nobody corrected join a run's training samples with"
            " the label a model trained on the run's corrections gives them, where its"
            " probability is at least this (never texts held out for the gate). 0 = off."
        ),
    )
    self_training_rounds: int = Field(
        1,
        ge=1,
        le=5,
        description=(
            "Self-training rounds: each round's student labels the uncorrected texts again"
            " and teaches a fresh student. Each round is one more training of the run."
        ),
    )
    self_training_pool: int = Field(
        5_000,
        ge=0,
        description="Newest uncorrected served texts a run looks at for self-training.",
    )
