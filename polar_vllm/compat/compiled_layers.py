"""Decoder layers compiled one by one, for PoLar's compiled path (vLLM 0.32, torch.compile).

Stock vLLM compiles a whole forward once (on CPU: ``DYNAMO_TRACE_ONCE`` with Inductor, guards
dropped). A PoLar forward's sequence of layer calls changes with every batch, so PoLar compiles
each decoder layer instead, as vLLM configures its own compile (backend and Inductor options):

* the layer's attention is routed (:func:`~.attention_slots.route_attention`): one opaque op in
  the compiled code, so norms, projections, rotary embedding and MLP compile around it;
* the token dimension is dynamic, so a sub-batch of any row count runs the same compiled code;
* guards are dropped, as vLLM drops them: nothing a layer's code reads may change after the
  first trace, and nothing does (slots and sub-batches live behind the routed attention);
* every layer gets a code object of its own. Dynamo keeps compiled code per code object, and
  a layer's compiled code holds that layer's constants (on CPU, the handles of its prepacked
  oneDNN weights): layers sharing one code object with guards dropped would all run the
  first layer's weights.

Each layer therefore compiles exactly once, on its first call with at least two rows (the
warm-up forward); :attr:`CompiledLayers.compilations` counts the compilations so that a test
can check that no batch ever causes another.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["CompiledLayers", "compiled_path_refusal", "runs_compiled"]


def runs_compiled(vllm_config: Any) -> bool:
    """Whether vLLM would compile this model: not ``enforce_eager``, a compilation mode set."""
    from vllm.config import CompilationMode

    mode = vllm_config.compilation_config.mode
    return not vllm_config.model_config.enforce_eager and mode not in (None, CompilationMode.NONE)


def compiled_path_refusal(vllm_config: Any) -> str | None:
    """Why PoLar cannot run this compiled configuration, or ``None`` when it can.

    PoLar's compiled layers are checked on CPU. On a GPU, vLLM's default adds CUDA graphs,
    whose PoLar design (docs/architecture.md) is proven only on the torch-only executor core:
    a GPU engine must ask for eager mode rather than get it silently."""
    if not runs_compiled(vllm_config):
        return None
    device = vllm_config.device_config.device_type
    if device != "cpu":
        return (
            f"PoLar's compiled path runs on CPU only; on {device} start the engine with "
            "enforce_eager=True (vllm serve --enforce-eager)"
        )
    return None


def _run_layer(
    layer: nn.Module, positions: torch.Tensor, hidden_states: torch.Tensor, residual: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return layer(positions, hidden_states, residual)


class _Backend:
    """vLLM's compile backend for this engine, counting the graphs it compiles."""

    def __init__(self, vllm_config: Any) -> None:
        config = vllm_config.compilation_config
        self.name = config.backend or "inductor"
        self.inductor_options = dict(config.inductor_compile_config)
        self.compilations = 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        self.compilations += 1
        if self.name == "eager":  # vLLM's CPU CI setting: Dynamo without Inductor
            return graph.forward
        if self.name != "inductor":
            raise NotImplementedError(f"PoLar compiles with Inductor, not {self.name!r}")
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(graph, example_inputs, config_patches=self.inductor_options)


class CompiledLayers:
    """The compiled call of each decoder layer, in layer order (``calls[l]``)."""

    def __init__(self, layers: Sequence[nn.Module], vllm_config: Any) -> None:
        from vllm.env_override import _apply_constrain_to_fx_strides_patch

        _apply_constrain_to_fx_strides_patch()  # as vLLM does before it compiles
        self._backend = _Backend(vllm_config)
        self._layers = list(layers)
        self._compiled = [self._compile(index) for index in range(len(self._layers))]
        self._traced = [False] * len(self._layers)

    @property
    def compilations(self) -> int:
        """Graphs compiled so far: one per layer once warmed up, and never more."""
        return self._backend.compilations

    def _compile(self, index: int) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        # A function with a code object of its own (see the module doc).
        name = f"polar_layer_{index}"
        code = _run_layer.__code__.replace(co_name=name, co_qualname=name)
        function = types.FunctionType(code, _run_layer.__globals__, name)
        return torch.compile(
            function,
            fullgraph=True,
            dynamic=False,
            backend=self._backend,
            options={"guard_filter_fn": torch.compiler.skip_all_guards_unsafe},
        )

    def call(
        self,
        index: int,
        positions: torch.Tensor,
        hidden_states: torch.Tensor,
        residual: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run layer ``index`` on these rows (``residual`` must be a tensor: the compiled code
        has no first-layer path)."""
        layer = self._layers[index]
        if not self._traced[index]:
            if hidden_states.shape[0] < 2:
                # Dynamo would specialize a dimension of size 1: trace on a larger call.
                return layer(positions, hidden_states, residual)
            for tensor in (positions, hidden_states, residual):
                torch._dynamo.mark_dynamic(tensor, 0)
            self._traced[index] = True
        return self._compiled[index](layer, positions, hidden_states, residual)
