"""Program search: MCTS over layer programs, evaluated in batches, and the oracle study.

* :mod:`~polar_vllm.search.actions`: legal moves (skip or repeat a block of layers);
* :mod:`~polar_vllm.search.mcts`: the search tree of one question;
* :mod:`~polar_vllm.search.batched`: rounds over many questions, one generator call per round;
* :mod:`~polar_vllm.search.store`: the resumable JSONL record of evaluations;
* :mod:`~polar_vllm.search.labels`: per-question label records;
* :mod:`~polar_vllm.search.study`: oracle statistics and plot;
* :mod:`~polar_vllm.search.config`, :mod:`~polar_vllm.search.backends`,
  :mod:`~polar_vllm.search.pipeline`, :mod:`~polar_vllm.search.cli`: configs, generators, the
  ``polar-vllm search`` / ``study`` commands.
"""

from polar_vllm.search.actions import ActionSpace, length_window
from polar_vllm.search.batched import QuestionResult, SearchQuestion, SearchStats, search_questions
from polar_vllm.search.labels import label_record, read_label_records, write_label_records
from polar_vllm.search.mcts import MctsSettings, ProgramSearch, ucb_score
from polar_vllm.search.store import Evaluation, EvaluationStore
from polar_vllm.search.study import oracle_study, write_study

__all__ = [
    "ActionSpace",
    "Evaluation",
    "EvaluationStore",
    "MctsSettings",
    "ProgramSearch",
    "QuestionResult",
    "SearchQuestion",
    "SearchStats",
    "label_record",
    "length_window",
    "oracle_study",
    "read_label_records",
    "search_questions",
    "ucb_score",
    "write_label_records",
    "write_study",
]
