"""Batched search over many questions: one generator call per round.

Every round asks each active question's :class:`~polar_vllm.search.mcts.ProgramSearch` for its
next candidates, looks each (question, program) pair up in the
:class:`~polar_vllm.search.store.EvaluationStore`, sends all missing pairs of all questions to
``generator.generate`` in ONE call (the vLLM generator batches them in the engine, each request
with its own program), stores the results, and hands every question its rewards. At most
``questions_per_round`` questions are active at a time; a finished question makes room for the
next one. Each question's search is seeded by its id and depends only on its own rewards, so the
result does not depend on the batching, and a resumed run replays the stored results without
evaluating them again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm

from polar_vllm.data import MathProblem, answers_match, extract_answer
from polar_vllm.program import Program
from polar_vllm.search.actions import ActionSpace
from polar_vllm.search.generation import GenerationRequest, ProgramGenerator
from polar_vllm.search.mcts import MctsSettings, ProgramSearch
from polar_vllm.search.store import Evaluation, EvaluationStore

__all__ = [
    "QuestionResult",
    "SearchQuestion",
    "SearchStats",
    "evaluate_pairs",
    "search_questions",
    "store_missing",
]


@dataclass(frozen=True)
class SearchQuestion:
    """A problem and the prompt text the model sees for it."""

    problem: MathProblem
    prompt: str


@dataclass(frozen=True)
class QuestionResult:
    """The programs evaluated for one question, in search order, with their correctness."""

    problem: MathProblem
    evaluated: tuple[tuple[Program, bool], ...]


@dataclass
class SearchStats:
    """Counters of one :func:`search_questions` run."""

    questions: int = 0
    rounds: int = 0
    generate_calls: int = 0
    generated: int = 0
    reused: int = 0
    generate_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def programs_per_second(self) -> float:
        """Programs evaluated per second of generator time (0 when none were)."""
        return self.generated / self.generate_seconds if self.generate_seconds > 0 else 0.0


def evaluate_pairs(
    pairs: Sequence[tuple[SearchQuestion, Program]],
    generator: ProgramGenerator,
    max_tokens: int,
) -> list[Evaluation]:
    """Generate every pair in one call and score the answers."""
    requests = [GenerationRequest(q.prompt, program, max_tokens=max_tokens) for q, program in pairs]
    texts = generator.generate(requests)
    if len(texts) != len(requests):
        raise RuntimeError(f"generator returned {len(texts)} texts for {len(requests)} requests")
    out = []
    for (question, program), text in zip(pairs, texts, strict=True):
        answer = extract_answer(text)
        correct = answers_match(answer, question.problem.answer)
        out.append(Evaluation(question.problem.id, program, correct, answer, text))
    return out


def store_missing(
    missing: Sequence[tuple[SearchQuestion, Program]],
    generator: ProgramGenerator,
    store: EvaluationStore,
    stats: SearchStats,
    max_tokens: int,
) -> None:
    """Evaluate the ``missing`` pairs in one generator call (none when empty), store them and
    count the call in ``stats``."""
    if not missing:
        return
    call_started = time.perf_counter()
    store.add(evaluate_pairs(missing, generator, max_tokens))
    stats.generate_seconds += time.perf_counter() - call_started
    stats.generate_calls += 1
    stats.generated += len(missing)


def search_questions(
    questions: Sequence[SearchQuestion],
    generator: ProgramGenerator,
    space: ActionSpace,
    settings: MctsSettings,
    store: EvaluationStore,
    *,
    max_tokens: int,
    seed: int,
    questions_per_round: int | None = None,
    progress: bool = True,
) -> tuple[list[QuestionResult], SearchStats]:
    """Search programs for every question; results in question order, and run counters.

    Raises ``ValueError`` on duplicate question ids or a generator whose depth differs from
    ``space.depth``.
    """
    if generator.depth != space.depth:
        raise ValueError(f"generator depth {generator.depth} != action space depth {space.depth}")
    if len({q.problem.id for q in questions}) != len(questions):
        raise ValueError("question ids must be unique")
    if questions_per_round is not None and questions_per_round < 1:
        raise ValueError(f"questions_per_round must be >= 1, got {questions_per_round}")
    started = time.perf_counter()
    stats = SearchStats(questions=len(questions))
    searches: dict[str, ProgramSearch] = {}  # the active questions' trees
    evaluated: dict[str, tuple[tuple[Program, bool], ...]] = {}  # finished questions
    per_question = settings.simulations + 1
    waiting = deque(questions)
    active: list[SearchQuestion] = []
    bar = tqdm(
        total=len(questions) * per_question, desc="search", unit="prog", disable=not progress
    )
    with bar:
        while waiting or active:
            while waiting and (questions_per_round is None or len(active) < questions_per_round):
                question = waiting.popleft()
                searches[question.problem.id] = ProgramSearch(
                    space, settings, f"{seed}:{question.problem.id}"
                )
                active.append(question)
            proposals = [(q, searches[q.problem.id].propose()) for q in active]
            missing = [
                (q, program)
                for q, programs in proposals
                for program in programs
                if store.get(q.problem.id, program) is None
            ]
            proposed = sum(len(programs) for _, programs in proposals)
            stats.reused += proposed - len(missing)
            store_missing(missing, generator, store, stats, max_tokens)
            stats.rounds += 1
            finished = 0
            for q, programs in proposals:
                search = searches[q.problem.id]
                search.complete([store.get(q.problem.id, p).correct for p in programs])
                if search.done:  # keep its results, free its tree
                    finished += per_question - len(search.evaluated)
                    evaluated[q.problem.id] = tuple(search.evaluated)
                    del searches[q.problem.id]
            bar.set_postfix(calls=stats.generate_calls, reused=stats.reused, refresh=False)
            bar.update(proposed + finished)
            active = [q for q in active if q.problem.id in searches]
    stats.seconds = time.perf_counter() - started
    results = [QuestionResult(q.problem, evaluated[q.problem.id]) for q in questions]
    return results, stats
