"""PoLar settings: the ``additional_config["polar"]`` dictionary, parsed and checked.

Keys (all optional):

* ``predictor``: path to a predictor directory, or the name of a shipped predictor; requests
  without their own program get the program it predicts (without one they run the full
  program).
* ``operating_point``: with a candidate predictor, the name of the operating point it runs at
  (how it trades accuracy for executed layers; e.g. ``"accuracy"`` or ``"efficiency"`` for the
  shipped Qwen2.5-Coder predictor; default: the one its ``config.yaml`` names). Refused
  without a predictor; an unknown name stops the engine at start, naming the known ones.
* ``max_passes``: how many times a program may run one layer (default 2). Each extra pass of a
  layer owns its own KV-cache slot.
* ``loop_layers``: the layers that may run more than once: ``"all"`` (default), ``"none"``, or
  a program-style list such as ``"0-9,20"`` or ``[0, 1, 2]``. Only these layers get extra KV
  slots, which bounds the KV memory PoLar adds.
* ``default_program``: the program of a request that carries none and gets no prediction
  (default ``"full"``).
* ``scheduling``: ``"fcfs"`` (default, vLLM's order) or ``"program_aware"`` (admit waiting
  requests grouped by program; see :mod:`polar_vllm.engine.batching`).
* ``max_delay_s``: with ``"program_aware"``, the longest a waiting request may be passed over
  by later arrivals, in seconds (default 30). Longer bounds let deeper queues be grouped into
  batches that share more layers, at the cost of the wait of requests whose programs fit badly.
* ``admission_window_s``: with ``"program_aware"``, the longest an idle engine (no request
  running) holds arriving requests so that its first batch is chosen from the whole burst, in
  seconds (default 0.5; ``0`` admits at once). It admits as soon as requests stop arriving
  (:data:`polar_vllm.engine.batching.BURST_QUIET_S`), so a lone request waits 10 ms at most.
* ``kv_group_layers``: how many consecutive layers of one pass share a KV-cache group
  (default 1). A request gets KV blocks only in the groups its program enters, so a program
  that skips a whole group, or does not loop, holds no KV memory there; larger groups mean
  fewer block tables to keep per step but coarser savings (a group is skipped only when all
  its layers are). It must divide the model depth, and ``loop_layers`` must consist of whole
  groups (windows ``[j*k, (j+1)*k)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from polar_vllm.engine.config_loading import check_keys, check_mapping, field_names
from polar_vllm.program import Program, ProgramError, full_program, parse_program

__all__ = [
    "POLAR_CONFIG_KEY",
    "PROGRAM_ARG",
    "QUESTION_ARG",
    "SCHEDULING_POLICIES",
    "PolarConfig",
    "PolarConfigError",
    "polar_settings",
]

POLAR_CONFIG_KEY = "polar"
"""The key of ``additional_config`` that turns PoLar on."""

PROGRAM_ARG = "polar_program"
"""The ``SamplingParams.extra_args`` key that carries a request's program."""

QUESTION_ARG = "polar_question"
"""The ``SamplingParams.extra_args`` key that carries the text the predictor reads for a
request, when it is not the prompt (e.g. the question inside a chat-templated prompt)."""

SCHEDULING_POLICIES = ("fcfs", "program_aware")
DEFAULT_MAX_DELAY_S = 30.0
"""How long, by default, program-aware admission may pass a waiting request over."""
DEFAULT_ADMISSION_WINDOW_S = 0.5
"""How long, by default, an idle program-aware engine may hold a burst's first requests."""
DEFAULT_KV_GROUP_LAYERS = 1
"""Layers per KV-cache group by default: every (layer, pass) slot is allocated on its own."""


class PolarConfigError(ValueError):
    """An invalid ``additional_config["polar"]`` setting."""


@dataclass(frozen=True)
class PolarConfig:
    """PoLar settings resolved against a model of ``depth`` decoder layers.

    Attributes:
        depth: decoder layers of the served model.
        max_passes: most passes a program may make through one layer.
        loop_layers: layers that own extra-pass KV slots (may run more than once).
        default_program: program of requests that carry none and get no prediction.
        predictor: predictor directory, or ``None``.
        scheduling: admission order of waiting requests (:data:`SCHEDULING_POLICIES`).
        max_delay_s: longest time program-aware admission passes a waiting request over.
        admission_window_s: longest time an idle program-aware engine gathers a burst.
        kv_group_layers: consecutive layers of one pass that share a KV-cache group.
        operating_point: the candidate predictor's operating point by name (``None``: its
            default).
    """

    depth: int
    max_passes: int = 2
    loop_layers: frozenset[int] = frozenset()
    default_program: Program = ()
    predictor: str | None = None
    scheduling: str = "fcfs"
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    admission_window_s: float = DEFAULT_ADMISSION_WINDOW_S
    kv_group_layers: int = DEFAULT_KV_GROUP_LAYERS
    operating_point: str | None = None

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any] | None, depth: int) -> PolarConfig:
        """Parse ``additional_config["polar"]`` (``None`` or ``{}`` gives the defaults)."""
        settings = dict(settings or {})
        check_keys(settings, _SETTING_KEYS, _WHERE, PolarConfigError)
        max_passes = settings.get("max_passes", 2)
        if not isinstance(max_passes, int) or isinstance(max_passes, bool) or max_passes < 1:
            raise PolarConfigError(f"polar max_passes must be an integer >= 1, got {max_passes!r}")
        loop_layers = _parse_loop_layers(settings.get("loop_layers", "all"), depth)
        if max_passes == 1:
            loop_layers = frozenset()
        try:
            default_program = parse_program(
                settings.get("default_program", "full"), depth, max_passes
            )
        except ProgramError as error:
            raise PolarConfigError(f"polar default_program: {error}") from error
        predictor = settings.get("predictor")
        if predictor is not None and not isinstance(predictor, str):
            raise PolarConfigError(f"polar predictor must be a path, got {predictor!r}")
        scheduling = settings.get("scheduling", "fcfs")
        if scheduling not in SCHEDULING_POLICIES:
            raise PolarConfigError(
                f"polar scheduling must be one of {SCHEDULING_POLICIES}, got {scheduling!r}"
            )
        max_delay_s = _parse_seconds(settings, "max_delay_s", scheduling, DEFAULT_MAX_DELAY_S)
        admission_window_s = _parse_seconds(
            settings, "admission_window_s", scheduling, DEFAULT_ADMISSION_WINDOW_S, zero_ok=True
        )
        kv_group_layers = _parse_kv_group_layers(settings, depth, loop_layers)
        operating_point = settings.get("operating_point")
        if operating_point is not None:
            if not isinstance(operating_point, str) or not operating_point:
                raise PolarConfigError(
                    f"polar operating_point must be a name, got {operating_point!r}"
                )
            if predictor is None:
                raise PolarConfigError(
                    "polar operating_point applies to a predictor's choices: set predictor too"
                )
        config = cls(
            depth,
            max_passes,
            loop_layers,
            default_program,
            predictor,
            scheduling,
            max_delay_s,
            admission_window_s,
            kv_group_layers,
            operating_point,
        )
        config.check_program(default_program)
        return config

    def slot_passes(self, layer: int) -> int:
        """How many KV slots (passes) ``layer`` owns."""
        return self.max_passes if layer in self.loop_layers else 1

    def check_program(self, program: Program) -> None:
        """Raise :class:`~polar_vllm.program.ProgramError` if ``program`` runs a layer more
        often than its KV slots allow (``program`` is already valid for depth/max_passes)."""
        seen: dict[int, int] = {}
        for position, layer in enumerate(program, start=1):
            seen[layer] = seen.get(layer, 0) + 1
            if seen[layer] > self.slot_passes(layer):
                allowed = "once" if self.slot_passes(layer) == 1 else f"{self.max_passes} times"
                raise ProgramError(
                    f"polar program item {position} runs layer {layer} again, but layer "
                    f"{layer} may run only {allowed} on this server (loop_layers setting; "
                    f"depth {self.depth})"
                )

    @property
    def full(self) -> Program:
        """The full program of this model."""
        return full_program(self.depth)


_SETTING_KEYS = field_names(PolarConfig) - {"depth"}
"""The keys of ``additional_config["polar"]``: every setting but the model's depth."""
_WHERE = f"additional_config[{POLAR_CONFIG_KEY!r}]"


def _parse_seconds(
    settings: Mapping[str, Any], key: str, scheduling: str, default: float, zero_ok: bool = False
) -> float:
    """A program-aware admission setting in seconds: ``default`` if absent, else a number > 0
    (>= 0 with ``zero_ok``), refused under any other scheduling policy."""
    if key not in settings:
        return default
    value = settings[key]
    if scheduling != "program_aware":
        raise PolarConfigError(
            f"polar {key} only applies to scheduling='program_aware' (scheduling is {scheduling!r})"
        )
    bound = ">= 0" if zero_ok else "> 0"
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if not valid or not (value >= 0 if zero_ok else value > 0):
        raise PolarConfigError(f"polar {key} must be a number of seconds {bound}, got {value!r}")
    return float(value)


def _parse_kv_group_layers(
    settings: Mapping[str, Any], depth: int, loop_layers: frozenset[int]
) -> int:
    """``kv_group_layers``: a divisor of ``depth`` whose windows ``loop_layers`` fills whole."""
    size = settings.get("kv_group_layers", DEFAULT_KV_GROUP_LAYERS)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= depth:
        raise PolarConfigError(
            f"polar kv_group_layers must be an integer in 1..{depth} (the model depth), "
            f"got {size!r}"
        )
    if depth % size:
        divisors = [k for k in range(1, depth + 1) if depth % k == 0]
        raise PolarConfigError(
            f"polar kv_group_layers={size} does not divide the model depth {depth}, so its "
            f"KV-cache groups could not all be the same size; choose one of {divisors}"
        )
    for start in range(0, depth, size):
        window = set(range(start, start + size))
        if window & loop_layers and not window <= loop_layers:
            raise PolarConfigError(
                f"polar loop_layers covers only part of the KV-cache group of layers "
                f"{start}-{start + size - 1} (kv_group_layers={size}): loop whole groups, "
                f"or set kv_group_layers to a size whose groups loop_layers fills"
            )
    return size


def _parse_loop_layers(value: str | Sequence[int], depth: int) -> frozenset[int]:
    if isinstance(value, str) and value.strip().lower() == "all":
        return frozenset(range(depth))
    if isinstance(value, str) and value.strip().lower() == "none":
        return frozenset()
    try:
        layers = parse_program(value, depth, max_passes=1)
    except ProgramError as error:
        raise PolarConfigError(f"polar loop_layers: {error}") from error
    return frozenset(layers)


def polar_settings(additional_config: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``additional_config["polar"]`` if PoLar is on (the key is present), else ``None``."""
    if not additional_config or POLAR_CONFIG_KEY not in additional_config:
        return None
    settings = additional_config[POLAR_CONFIG_KEY]
    if settings is None or settings is True:
        return {}
    return check_mapping(settings, _WHERE, PolarConfigError, "a dict of settings")
