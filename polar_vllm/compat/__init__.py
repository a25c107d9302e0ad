"""Everything specific to one vLLM version (0.32) lives in this package.

:func:`install` wraps three vLLM functions; each wrapper does nothing unless PoLar is on
(``additional_config["polar"]`` present), so vLLM with the plugin installed behaves exactly
as stock:

* ``EngineArgs.create_engine_config``: PoLar architecture override, eager mode
  (:mod:`.engine_args`);
* ``InputProcessor.process_inputs``: program checking and cache salt in the front end
  (:mod:`.input_processor`);
* ``GPUModelRunner._model_forward`` (inherited by the CPU runner): the batch's programs reach
  the model (:mod:`.model_runner`).

:mod:`.attention_slots` and :mod:`.attention_metadata` hold the model-side glue: extra-pass KV
slots and per-backend attention-metadata subsetting.
"""

from __future__ import annotations

__all__ = ["install"]

_INSTALLED_MARK = "__polar_wrapped__"


def _wrap(owner: type, name: str, wrapper_factory) -> None:
    original = getattr(owner, name)
    if getattr(original, _INSTALLED_MARK, False):
        return
    wrapped = wrapper_factory(original)
    setattr(wrapped, _INSTALLED_MARK, True)
    setattr(owner, name, wrapped)


def install() -> None:
    """Install the PoLar hooks into vLLM (idempotent)."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.engine.input_processor import InputProcessor
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    from .engine_args import polar_engine_config
    from .input_processor import polar_process_inputs
    from .model_runner import polar_model_forward

    _wrap(EngineArgs, "create_engine_config", polar_engine_config)
    _wrap(InputProcessor, "process_inputs", polar_process_inputs)
    _wrap(GPUModelRunner, "_model_forward", polar_model_forward)
