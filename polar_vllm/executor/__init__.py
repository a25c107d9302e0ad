"""Program-of-Layers executor core: merge per-request layer programs and run them in one batch.

Plain torch; no vLLM import. See :mod:`.schedule`, :mod:`.plan` and :mod:`.execution`;
:mod:`.reference` is the HF transformers recompute reference the engine is tested against.
"""

from polar_vllm.program import Program, Step, program_steps

from .execution import LayerFn, run_plan
from .plan import BatchPlan, SlotRows, StepPlan, clear_plan_cache, plan_batch
from .schedule import (
    MergedSchedule,
    ScheduleStep,
    SlotGroups,
    clear_merge_cache,
    merge_programs,
    schedule_cost,
    schedule_lower_bound,
)

__all__ = [
    "BatchPlan",
    "LayerFn",
    "MergedSchedule",
    "Program",
    "ScheduleStep",
    "SlotGroups",
    "SlotRows",
    "Step",
    "StepPlan",
    "clear_merge_cache",
    "clear_plan_cache",
    "merge_programs",
    "plan_batch",
    "program_steps",
    "run_plan",
    "schedule_cost",
    "schedule_lower_bound",
]
