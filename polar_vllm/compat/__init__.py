"""Everything specific to one vLLM version (0.32) lives in this package.

:func:`install` wraps vLLM functions; each wrapper does nothing unless PoLar is on
(``additional_config["polar"]`` present), so vLLM with the plugin installed behaves exactly
as stock, with one deliberate exception (a fix, last in the list):

* ``EngineArgs.create_engine_config``: PoLar architecture override (:mod:`.engine_args`);
* ``InputProcessor.__init__`` / ``process_inputs`` and ``AsyncLLM.add_request``: predictor,
  program checking and cache salt in the front end (:mod:`.input_processor`);
* ``GPUModelRunner._model_forward`` (inherited by the CPU runner): the batch's programs reach
  the model (:mod:`.model_runner`);
* ``LLM.generate``: one batched predictor call for all prompts of an offline batch
  (:mod:`.llm_generate`, which also answers :func:`polar_vllm.polar_program`);
* the OpenAI server's chat handler and app (:mod:`.serving`): the last user message feeds the
  predictor, and the ``/v1/polar/program`` route (alias ``/polar/program``);
* ``MPClient.shutdown`` and the API server's ``serve_http``: the server exits with status 1
  when its engine died (:mod:`.engine_death`; the ``MPClient`` wrapper only records the death);
* ``GPUModelRunner.initialize_kv_cache``: on CPU, a PoLar engine's per-KV-cache-group work of
  each step made cheap (:mod:`.group_step_costs`);
* ``GPUModelRunner._sample`` / ``_bookkeeping_sync``: seeded requests with chunked prefill on
  CPU rewind their generator by state, where stock vLLM raises and its engine dies
  (:mod:`.seeded_sampling`; active with PoLar off too: it changes only steps that would fail).

``vllm serve``'s ``--polar`` / ``--polar-predictor`` flags come from :mod:`.cli_args`, armed
by the startup hook :mod:`.cli_hook` (vLLM parses its command line before it loads plugins).

Two tiers, so that imports point one way (``tests/test_layering.py`` checks it):

* the glue lower layers use, which imports nothing above :mod:`polar_vllm.engine`:
  :mod:`.attention_slots`, :mod:`.attention_metadata` and :mod:`.compiled_layers` (the model side:
  extra-pass KV slots and routed attention, per-backend attention-metadata subsetting, decoder
  layers compiled one by one), :mod:`.batch_jobs` and :mod:`.shutdown` (engines
  the search and the predictor pipeline open and close);
* the hooks above, which install the model classes, the serving front end and the predictor
  into vLLM and so may import them.
"""

from __future__ import annotations

from typing import Any

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
    from vllm.entrypoints.llm import LLM
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.core_client import MPClient
    from vllm.v1.engine.input_processor import InputProcessor
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    from .engine_args import polar_engine_config
    from .engine_death import exit_nonzero_on_engine_death, record_engine_death
    from .group_step_costs import polar_cpu_initialize_kv_cache
    from .input_processor import (
        polar_add_request,
        polar_input_processor_init,
        polar_process_inputs,
    )
    from .kv_cache_groups import install_program_kv_hooks
    from .llm_generate import polar_generate
    from .model_runner import polar_model_forward
    from .seeded_sampling import restore_discarded_generators, skip_offset_rewind
    from .serving import install_serving_hooks

    _wrap(EngineArgs, "create_engine_config", polar_engine_config)
    _wrap(InputProcessor, "__init__", polar_input_processor_init)
    _wrap(InputProcessor, "process_inputs", polar_process_inputs)
    _wrap(AsyncLLM, "add_request", polar_add_request)
    _wrap(GPUModelRunner, "_model_forward", polar_model_forward)
    _wrap(LLM, "generate", polar_generate)
    _wrap(GPUModelRunner, "_sample", restore_discarded_generators)
    _wrap(GPUModelRunner, "_bookkeeping_sync", skip_offset_rewind)
    install_serving_hooks(_wrap)
    _wrap(MPClient, "shutdown", record_engine_death)
    _wrap(_api_server_entry(), "serve_http", exit_nonzero_on_engine_death)
    install_program_kv_hooks(_wrap)
    _wrap(GPUModelRunner, "initialize_kv_cache", polar_cpu_initialize_kv_cache)


def _api_server_entry() -> Any:
    import importlib

    return importlib.import_module("vllm.entrypoints.launchers.api_server.entry")
