"""Monte Carlo tree search over the programs of one question.

The root is the full program ``0..D-1``; every node is one program and its children are the
programs one :class:`~polar_vllm.search.actions.ActionSpace` move away. A program appears at
most once in a tree (a move leading to a program already in the tree is not offered), so every
simulation evaluates exactly one new program and nothing is evaluated twice.

One simulation: from the root, at each node, with probability ``random_expand`` (or always,
when the node has no live child yet) add a random unexplored child and stop there; otherwise
descend to the live child with the highest score

    ``mean_reward + exploration * sqrt(ln(N_parent) / N_child) - layer_cost * |pi| / D``.

``layer_cost`` is the paper's length penalty lambda, in reward units per ``D`` executed layers
(the predictor's decoding ``length_penalty`` is a different setting).

The new leaf's program is the candidate to evaluate; its reward (1 if the greedy answer is
correct, else 0) is added along the path. Evaluation is asynchronous so that many questions
(and several leaves of one question) can be evaluated in one batch: :meth:`ProgramSearch.propose`
returns a round of candidates, counting a visit on their paths at once (a "virtual loss", so
leaves proposed in the same round spread out), and :meth:`ProgramSearch.complete` adds the
rewards. A node is *exhausted* when it has no unexplored child and every child is exhausted.

The search is deterministic: its random generator is seeded from a string, and its course
depends only on the rewards it is given, not on how rounds of different questions are batched.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from polar_vllm.program import Program, full_program
from polar_vllm.search.actions import ActionSpace

__all__ = ["MctsSettings", "Node", "ProgramSearch", "ucb_score"]


@dataclass(frozen=True)
class MctsSettings:
    """Search parameters (see the module docstring)."""

    simulations: int = 100
    layer_cost: float = 5.0
    exploration: float = 1.0
    random_expand: float = 0.1
    leaves_per_round: int = 4

    def __post_init__(self) -> None:
        if self.simulations < 0 or self.leaves_per_round < 1:
            raise ValueError(f"need simulations >= 0 and leaves_per_round >= 1, got {self}")
        if not 0 <= self.random_expand <= 1 or self.exploration < 0 or self.layer_cost < 0:
            raise ValueError(f"invalid search settings {self}")


@dataclass(eq=False)
class Node:
    """One program in the tree, with its visit count and summed reward."""

    program: Program
    tree_depth: int
    children: list[Node] = field(default_factory=list)
    unexplored: list[Program] | None = None
    visits: int = 0
    reward: float = 0.0
    exhausted: bool = False


def ucb_score(child: Node, parent_visits: int, depth: int, settings: MctsSettings) -> float:
    """Selection score of ``child``: mean reward + exploration bonus - length penalty."""
    mean = child.reward / child.visits
    bonus = settings.exploration * math.sqrt(math.log(parent_visits) / child.visits)
    return mean + bonus - settings.layer_cost * len(child.program) / depth


class ProgramSearch:
    """The search tree of one question; drive it with :meth:`propose` and :meth:`complete`."""

    def __init__(self, space: ActionSpace, settings: MctsSettings, seed: str) -> None:
        self.space = space
        self.settings = settings
        self.rng = random.Random(f"polar-vllm-mcts:{seed}")
        self.root = Node(full_program(space.depth), tree_depth=0)
        self.in_tree: set[Program] = {self.root.program}
        self.evaluated: list[tuple[Program, bool]] = []
        self.simulations_done = 0
        self.exhausted = False
        self._pending: list[tuple[Program, list[Node]]] = []

    @property
    def done(self) -> bool:
        """True when the budget is spent (or the tree exhausted) and no result is outstanding."""
        if self._pending or not self.evaluated:
            return False
        return self.exhausted or self.simulations_done >= self.settings.simulations

    def propose(self) -> list[Program]:
        """The next round of programs to evaluate (the full program first, alone).

        Every proposed program must get its reward through :meth:`complete` before the next
        call. Returns ``[]`` when the search is done.
        """
        if self._pending:
            raise RuntimeError("propose() called before complete() for the previous round")
        if not self.evaluated:
            self._visit([self.root])
            return [self.root.program]
        budget = self.settings.simulations - self.simulations_done
        for _ in range(min(self.settings.leaves_per_round, budget)):
            path = self._select()
            if path is None:
                self.exhausted = True
                break
            self._visit(path)
            self.simulations_done += 1
        return [program for program, _ in self._pending]

    def complete(self, correct: Sequence[bool]) -> None:
        """Rewards of the last :meth:`propose` round, in its order."""
        if len(correct) != len(self._pending):
            raise ValueError(f"expected {len(self._pending)} results, got {len(correct)}")
        for (program, path), ok in zip(self._pending, correct, strict=True):
            for node in path:
                node.reward += float(ok)
            self.evaluated.append((program, bool(ok)))
        self._pending = []

    def _visit(self, path: list[Node]) -> None:
        for node in path:
            node.visits += 1
        self._pending.append((path[-1].program, path))

    def _take_unexplored(self, node: Node) -> Program | None:
        """Remove and return a random child program of ``node`` not yet in the tree."""
        pool = node.unexplored
        assert pool is not None
        while pool:
            index = self.rng.randrange(len(pool))
            pool[index], pool[-1] = pool[-1], pool[index]
            program = pool.pop()
            if program not in self.in_tree:
                return program
        return None

    def _select(self) -> list[Node] | None:
        """Path from the root to a newly added leaf, or ``None`` when the tree is exhausted."""
        while not self.root.exhausted:
            node = self.root
            path = [node]
            while True:
                if node.unexplored is None:
                    node.unexplored = self.space.children(node.program, node.tree_depth)
                live = [child for child in node.children if not child.exhausted]
                if node.unexplored and (
                    not live or self.rng.random() < self.settings.random_expand
                ):
                    program = self._take_unexplored(node)
                    if program is not None:
                        child = Node(program, tree_depth=node.tree_depth + 1)
                        node.children.append(child)
                        self.in_tree.add(program)
                        path.append(child)
                        return path
                if not live:
                    node.exhausted = True
                    break
                node = max(
                    live,
                    key=lambda c, n=node.visits: ucb_score(c, n, self.space.depth, self.settings),
                )
                path.append(node)
        return None
