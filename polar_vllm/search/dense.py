"""Dense labels: a fixed candidate set of programs, every one evaluated on every question.

The candidates are the full program, every program one search move away from it (skip or
repeat one block of ``1..max_block`` layers, :meth:`ActionSpace.children`) and any extra
programs the config names (such as long skips that trade accuracy for layers), so a dense label
file answers "which of these programs answer this question right" for every question alike.
That makes it the source for scoring static programs (the best single program over many
questions) and for training a predictor that ranks a fixed candidate set.

Evaluations go through the same resumable :class:`~polar_vllm.search.store.EvaluationStore`
as the MCTS search, one generator call per chunk of questions, so an interrupted run resumes
where it stopped and results are exact reruns of the same requests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from tqdm import tqdm

from polar_vllm.program import Program, full_program
from polar_vllm.search.actions import ActionSpace
from polar_vllm.search.batched import QuestionResult, SearchQuestion, SearchStats, store_missing
from polar_vllm.search.generation import ProgramGenerator
from polar_vllm.search.store import EvaluationStore

__all__ = ["candidate_programs", "score_questions"]


def candidate_programs(
    space: ActionSpace, max_block: int, extra: Sequence[Program] = ()
) -> tuple[Program, ...]:
    """The full program, then every program one move (a block of ``1..max_block`` layers
    skipped or repeated) away from it inside ``space``'s length window, in move order, then
    the ``extra`` programs not already there (e.g. longer skips, outside one move). A
    ``max_block`` of 0 gives the full program and ``extra`` only (a chosen candidate set)."""
    if max_block < 0:
        raise ValueError(f"max_block must be >= 0, got {max_block}")
    full = full_program(space.depth)
    if max_block == 0:
        return (full, *dict.fromkeys(p for p in extra if p != full))
    single_moves = ActionSpace(
        space.depth,
        space.min_length,
        space.max_length,
        max_block=max_block,
        block_depth=1,
        max_passes=space.max_passes,
    )
    moves = (full, *single_moves.children(full, 0))
    return moves + tuple(dict.fromkeys(p for p in extra if p not in moves))


def score_questions(
    questions: Sequence[SearchQuestion],
    generator: ProgramGenerator,
    programs: Sequence[Program],
    store: EvaluationStore,
    *,
    max_tokens: int,
    questions_per_call: int = 64,
    progress: bool = True,
) -> tuple[list[QuestionResult], SearchStats]:
    """Evaluate every program on every question; results in question order (each question's
    programs in ``programs`` order) and run counters.

    Pairs already in ``store`` are reused; the missing pairs of ``questions_per_call``
    questions go to the generator in one call.
    """
    if questions_per_call < 1:
        raise ValueError(f"questions_per_call must be >= 1, got {questions_per_call}")
    if len({q.problem.id for q in questions}) != len(questions):
        raise ValueError("question ids must be unique")
    started = time.perf_counter()
    stats = SearchStats(questions=len(questions))
    total = len(questions) * len(programs)
    with tqdm(total=total, desc="dense", unit="prog", disable=not progress) as bar:
        for first in range(0, len(questions), questions_per_call):
            chunk = questions[first : first + questions_per_call]
            missing = [
                (q, p) for q in chunk for p in programs if store.get(q.problem.id, p) is None
            ]
            stats.reused += len(chunk) * len(programs) - len(missing)
            store_missing(missing, generator, store, stats, max_tokens)
            stats.rounds += 1
            bar.update(len(chunk) * len(programs))
    stats.seconds = time.perf_counter() - started
    results = [
        QuestionResult(q.problem, tuple((p, store.get(q.problem.id, p).correct) for p in programs))
        for q in questions
    ]
    return results, stats
