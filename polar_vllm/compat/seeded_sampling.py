"""Seeded sampling with chunked prefill on CPU (vLLM 0.32): a fix that also applies to stock
models, deliberately (PoLar on or off).

vLLM samples a token for every request of a step, also for a request whose prefill is still
partial, and then discards that token. To keep a seeded request's random stream as if the
discarded draw never happened, ``GPUModelRunner._bookkeeping_sync`` rewinds the request's
generator with ``gen.set_offset(gen.get_offset() - 4)``: that is the Philox offset of a CUDA
generator, and a CPU generator raises ``RuntimeError: CPU Generator does not use offset``,
which kills the engine. Any client could take a CPU server down with a documented OpenAI
parameter (``seed``), since chunked prefill is on by default.

The fix rewinds CPU generators by state instead of offset:

* :func:`restore_discarded_generators` wraps ``GPUModelRunner._sample`` (the CPU runner
  inherits it): it saves the state of each CPU generator whose request's sample will be
  discarded, samples, and puts the saved state back, so the discarded draw leaves no trace;
* :func:`skip_offset_rewind` wraps ``_bookkeeping_sync``: for the duration of the call it hides
  those generators from the batch's generator table, whose only use there is the offset
  rewind.

Both act only when a CPU generator belongs to a discarded sample, which is exactly the case
in which vLLM would otherwise raise, so every step that works in stock vLLM runs unchanged.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["restore_discarded_generators", "skip_offset_rewind"]


def discarded_cpu_generators(runner: Any) -> dict[int, torch.Generator]:
    """The CPU generators, by batch index, of requests whose sample this step is discarded."""
    generators = runner.input_batch.generators
    if not generators:
        return {}
    num_requests = runner.input_batch.num_reqs
    discarded = np.nonzero(runner.discard_request_mask.np[:num_requests])[0]
    found = {}
    for index in discarded.tolist():
        generator = generators.get(index)
        if generator is not None and generator.device.type == "cpu":
            found[index] = generator
    return found


def restore_discarded_generators(sample: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``_sample`` so a discarded draw leaves the CPU generators it used unchanged."""

    @functools.wraps(sample)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        saved = {
            index: generator.get_state()
            for index, generator in discarded_cpu_generators(self).items()
        }
        try:
            return sample(self, *args, **kwargs)
        finally:
            generators = self.input_batch.generators
            for index, state in saved.items():
                generators[index].set_state(state)

    return wrapper


@contextlib.contextmanager
def _hidden(generators: dict[int, torch.Generator], indices: list[int]) -> Iterator[None]:
    removed = {index: generators.pop(index) for index in indices}
    try:
        yield
    finally:
        generators.update(removed)


def skip_offset_rewind(bookkeeping_sync: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``_bookkeeping_sync`` so it does not rewind CPU generators by offset (the sample
    wrapper already restored their state)."""

    @functools.wraps(bookkeeping_sync)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        indices = list(discarded_cpu_generators(self))
        if not indices:
            return bookkeeping_sync(self, *args, **kwargs)
        with _hidden(self.input_batch.generators, indices):
            return bookkeeping_sync(self, *args, **kwargs)

    return wrapper
