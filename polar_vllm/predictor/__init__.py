"""The PoLar predictor: question text -> ranked layer programs, chosen before the LLM runs.

* :mod:`.predictor_config` / :mod:`.storage`: the predictor directory (``config.yaml`` +
  ``model.safetensors``), loading with checks, saving, random initialisation;
* :mod:`.encoder` / :mod:`.network`: frozen text encoder and the trainable head;
* :mod:`.labels` / :mod:`.training`: search labels -> targets -> trained head;
* :mod:`.decoding` / :mod:`.predict`: logits -> ranked programs, batched;
* :mod:`.static_skip`, :mod:`.evaluation`, :mod:`.eval_run`: baselines and evaluation;
* :mod:`.overhead`: per-request predictor time;
* :mod:`.shipped`: predictors shipped in the package, by model name.
"""

from polar_vllm.predictor.decoding import DecodeOptions, ScoredProgram, decode
from polar_vllm.predictor.errors import PredictorError
from polar_vllm.predictor.predict import predict_programs, predict_scored
from polar_vllm.predictor.predictor_config import FORMAT_VERSION, PredictorConfig
from polar_vllm.predictor.shipped import resolve_predictor_dir, shipped_predictors
from polar_vllm.predictor.storage import (
    Predictor,
    init_random_predictor,
    load_predictor,
    save_predictor,
)

__all__ = [
    "FORMAT_VERSION",
    "DecodeOptions",
    "Predictor",
    "PredictorConfig",
    "PredictorError",
    "ScoredProgram",
    "decode",
    "init_random_predictor",
    "load_predictor",
    "predict_programs",
    "predict_scored",
    "resolve_predictor_dir",
    "save_predictor",
    "shipped_predictors",
]
