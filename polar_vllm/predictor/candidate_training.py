"""Training a candidate predictor on dense labels and choosing its operating points.

Dense label files (``polar-vllm search`` with ``method: dense``) hold, for every question, the
correctness of every program of one candidate set. The head learns one probability per
candidate (:mod:`.candidate_head`); its training starts from the candidates' base rates, and
the epoch with the lowest validation loss is kept. Then every operating point of a grid is
scored on the validation questions by lookup (:func:`~.selection.calibrate`), and two are
stored in the predictor's ``config.yaml``:

* ``accuracy``: the most accurate point that runs at most ``D`` layers on average;
* ``efficiency``: within ``efficiency_layers * D`` layers, the most accurate point
  (``efficiency_cost: layers``), or the cheapest in served layer-tokens that is surely more
  accurate than the full program and than every static candidate within those layers
  (``efficiency_cost: served``, :func:`~.selection.pick_served`; the candidates are priced
  from the answers stored with the validation labels, :mod:`.served_cost`); none is stored
  when no point qualifies (e.g. no candidate is that short).

The validation frontier (accuracy against mean executed layers) is written as JSON and PNG
next to the predictor, with the full program and the best static candidate marked. Last, the
familiarity guard is fitted on the training and validation questions
(:func:`fit_familiarity_guard`, also ``polar-vllm fit-guard`` for a trained predictor), its
quantile chosen on hand-worded validation questions when the settings give their dense labels
(:func:`choose_guard`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from polar_vllm.data.wordings import family_of
from polar_vllm.predictor.encoder import TextEncoder
from polar_vllm.predictor.errors import PredictorError
from polar_vllm.predictor.familiarity import (
    GUARD_FILE,
    FamiliarityGuard,
    embed_questions,
    fit_guards,
    guards_of_embeddings,
    question_embeddings,
    question_words,
    save_guard,
)
from polar_vllm.predictor.family_gate import choose_gate, choose_word_fallback, held_out_family
from polar_vllm.predictor.labels import read_labels
from polar_vllm.predictor.predictor_config import (
    CONFIG_FILE,
    PredictorConfig,
    model_matches,
    read_config,
)
from polar_vllm.predictor.run_settings import RunSettings
from polar_vllm.predictor.selection import (
    CalibratedPoint,
    OperatingPoint,
    calibrate,
    choose,
    guard_applies,
    pick_point,
    pick_served,
)
from polar_vllm.predictor.served_cost import candidate_costs, pricing
from polar_vllm.predictor.storage import CandidateSet, Predictor, load_predictor, save_predictor
from polar_vllm.predictor.training import (
    HISTORY_FILE,
    PLOT_FILE,
    EncodedSet,
    TrainResult,
    encode_questions,
    of_levels,
    plot_losses,
    split_validation,
    train_head,
)
from polar_vllm.program import Program, format_program
from polar_vllm.search.labels import LabelRecord

__all__ = [
    "FRONTIER_FILE",
    "GUARD_CHOICE_FILE",
    "GUARD_QUANTILES",
    "best_static",
    "candidate_set_of",
    "choose_guard",
    "dense_matrix",
    "fit_familiarity_guard",
    "head_outputs",
    "train_candidates",
]

FRONTIER_FILE = "validation_frontier.json"
GUARD_CHOICE_FILE = "guard_choice.json"
"""What :func:`choose_guard` measured, beside the predictor."""

GUARD_QUANTILES: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
"""The guard quantiles :func:`choose_guard` tries (from the settings' quantile up)."""

FAMILY_GATE_QUANTILES: tuple[float, ...] = (0.7, 0.9)
"""Further quantiles a gate chosen on held-out families may take: a gate that must keep
every held-out family safe may need to send most questions to its fallback."""

MIN_FOLD_SHARE = 0.5
"""A wording family is held out only if the rest keeps at least this share of the training
questions: a head trained on much less than the shipped one's data is another, weaker head,
and what it does on the family says little about the shipped head."""


def candidate_set_of(records: Sequence[LabelRecord]) -> tuple[Program, ...]:
    """The candidate programs every dense label record evaluated, in the order the first
    record ran them: label runs of different candidate sets train a head on the programs
    they share (a note is printed when some are left out).

    Raises :class:`PredictorError` when the records share no program besides, or without,
    the full program."""
    if not records:
        raise PredictorError("no dense label records")
    programs = tuple(program for program, _ in records[0].evaluated)
    common = set(programs)
    for record in records:
        common &= {program for program, _ in record.evaluated}
    shared = tuple(program for program in programs if program in common)
    full = tuple(range(records[0].depth))
    if full not in common or len(shared) < 2:
        raise PredictorError(
            "the dense label records share no candidate besides the full program: a "
            "candidate predictor needs dense labels (search method: dense) of one candidate set"
        )
    if len(shared) < len(programs) or any(len(r.evaluated) > len(shared) for r in records):
        print(f"candidate set: the {len(shared)} programs every label record evaluated")
    return shared


def dense_matrix(records: Sequence[LabelRecord], programs: Sequence[Program]) -> torch.Tensor:
    """[Q, C] correctness (1.0 / 0.0) of every candidate program on every record."""
    out = torch.zeros(len(records), len(programs))
    for q, record in enumerate(records):
        correct = dict(record.evaluated)
        for c, program in enumerate(programs):
            out[q, c] = float(correct[program])
    return out


def _encoded(records: Sequence[LabelRecord], encoder: TextEncoder, programs) -> EncodedSet:
    return EncodedSet(
        ids=[r.id for r in records],
        states=encode_questions([r.question for r in records], encoder),
        boundaries=torch.zeros(0),
        ops=torch.zeros(0),
        candidates=dense_matrix(records, programs),
    )


@torch.no_grad()
def _probabilities(head: Any, data: EncodedSet, batch_size: int = 256) -> torch.Tensor:
    head.eval()
    rows = list(range(len(data)))
    out = [
        torch.sigmoid(head(*data.batch(rows[first : first + batch_size])))
        for first in range(0, len(rows), batch_size)
    ]
    return torch.cat(out)


def _frontier(points: Sequence[CalibratedPoint]) -> list[CalibratedPoint]:
    """The points no other point beats on both accuracy and mean layers, by mean layers."""
    ordered = sorted(points, key=lambda p: (p.mean_layers, -p.accuracy))
    frontier: list[CalibratedPoint] = []
    for point in ordered:
        if not frontier or point.accuracy > frontier[-1].accuracy:
            frontier.append(point)
    return frontier


def _plot_frontier(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    frontier = report["frontier"]
    ax.plot(
        [p["mean_layers"] for p in frontier],
        [p["accuracy"] for p in frontier],
        marker=".",
        label="predictor (operating points)",
    )
    for name, marker in (("full_program", "s"), ("best_static", "^")):
        ax.scatter(
            report[name]["layers"], report[name]["accuracy"], marker=marker, s=60, label=name
        )
    for name, point in report["operating_points"].items():
        ax.annotate(name, (point["mean_layers"], point["accuracy"]), textcoords="offset points",
                    xytext=(4, -12))  # fmt: skip
    ax.set_xlabel("mean executed layers")
    ax.set_ylabel("accuracy (validation, by lookup)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label_records(settings: RunSettings) -> tuple[list[LabelRecord], list[LabelRecord]]:
    """The dense training and validation label records of ``settings``' levels: the
    ``labels`` and ``val_labels`` files (without ``val_labels``, a seeded ``val_fraction`` of
    the ``labels`` questions validates), and each wording family of ``family_labels`` cut
    into both (every ``family_val_every``-th question of each family and level validates)."""
    options = settings.train
    if not options.labels:
        raise PredictorError("a candidate predictor needs dense training labels (train: labels)")
    train_records = of_levels(read_labels(options.labels), options.levels)
    if options.val_labels:
        val_records = of_levels(read_labels(options.val_labels), options.levels)
    else:
        train_records, val_records = split_validation(
            train_records, options.val_fraction, options.seed
        )
    seen: dict[tuple[str, int | None], int] = {}
    for record in of_levels(read_labels(options.family_labels), options.levels):
        # counted per family and level: label files interleave levels, so a count per family
        # alone would send whole levels to validation
        key = (family_of(record.id), record.level)
        index = seen[key] = seen.get(key, -1) + 1
        validates = index % options.family_val_every == options.family_val_every - 1
        (val_records if validates else train_records).append(record)
    if not train_records or not val_records:
        raise PredictorError(
            f"no dense {'training' if not train_records else 'validation'} label records"
            + ("" if options.levels is None else f" of levels {options.levels}")
        )
    return train_records, val_records


def best_static(correct: torch.Tensor) -> int:
    """The candidate right most often over the questions of ``correct`` [Q, C] (ties: the
    first): the best static program of those questions."""
    return int(correct.mean(dim=0).argmax())


def fit_familiarity_guard(
    settings: RunSettings,
    directory: str | os.PathLike[str] | None = None,
    encoder: TextEncoder | None = None,
    records: tuple[list[LabelRecord], list[LabelRecord]] | None = None,
) -> FamiliarityGuard | None:
    """Fit the familiarity guard of the candidate predictor in ``directory`` (default:
    ``settings.predictor_dir``) on ``settings``' training and validation questions and store
    it there; None (and any stored guard removed) when ``familiarity_quantile`` is null.
    With ``guard_val_labels`` its quantile and fallback (the full program, or the best static
    program of the training and validation questions) are chosen on those questions
    (:func:`choose_guard`). ``records``: the training and validation label records when the
    caller has read them."""
    out = Path(directory if directory is not None else settings.predictor_dir)
    quantile = settings.train.familiarity_quantile
    if quantile is None:
        (out / GUARD_FILE).unlink(missing_ok=True)
        (out / GUARD_CHOICE_FILE).unlink(missing_ok=True)
        return None
    train_records, val_records = records if records is not None else _label_records(settings)
    if encoder is None:  # the predictor's own encoder, as prediction runs it
        config = read_config(out / CONFIG_FILE)
        encoder = TextEncoder(config.encoder, max_tokens=config.max_question_tokens)
    guard_labels = settings.train.guard_val_labels
    if settings.train.gate_by_family:
        guard, report = _family_gate(settings, out, encoder, train_records, val_records)
        (out / GUARD_CHOICE_FILE).write_text(json.dumps(report, indent=1))
        save_guard(out, guard)
        return guard
    quantiles = [q for q in GUARD_QUANTILES if q > quantile] if guard_labels else []
    guards = fit_guards(
        encoder,
        [record.question for record in train_records],
        [record.question for record in val_records],
        [quantile, *quantiles],
    )
    guard = guards[0]
    if guard_labels:
        predictor = load_predictor(out, with_guard=False)  # a stored guard may be stale
        programs = predictor.candidates.programs
        static = best_static(dense_matrix([*train_records, *val_records], programs))
        fallbacks = [None]
        if static != predictor.candidates.full_index:
            fallbacks.append(format_program(programs[static]))
        tried = [replace(g, fallback=fallback) for g in guards for fallback in fallbacks]
        guard, report = choose_guard(predictor, tried, read_labels(guard_labels), val_records)
        (out / GUARD_CHOICE_FILE).write_text(json.dumps(report, indent=1))
    save_guard(out, guard)
    return guard


def _subset(data: EncodedSet, rows: Sequence[int]) -> EncodedSet:
    assert data.candidates is not None
    return replace(
        data,
        ids=[data.ids[r] for r in rows],
        states=[data.states[r] for r in rows],
        candidates=data.candidates[list(rows)],
    )


def _family_gate(
    settings: RunSettings,
    directory: Path,
    encoder: TextEncoder,
    train_records: Sequence[LabelRecord],
    val_records: Sequence[LabelRecord],
) -> tuple[FamiliarityGuard, dict[str, Any]]:
    """The guard of the predictor in ``directory``, its quantile and fallback chosen on
    held-out wording families (:mod:`.family_gate`): each family of the training and
    validation records scored by a head trained without it (unless that leaves less than
    :data:`MIN_FOLD_SHARE` of the training questions), and the ``guard_val_labels`` questions
    by the trained head. Returns the guard and the choice's report."""
    options = settings.train
    predictor = load_predictor(directory, with_guard=False)
    candidates = predictor.candidates
    programs, depth = candidates.programs, predictor.config.depth
    points = {name: OperatingPoint(**p) for name, p in predictor.config.operating_points.items()}
    quantiles = [q for q in (*GUARD_QUANTILES, *FAMILY_GATE_QUANTILES)
                 if q >= options.familiarity_quantile]  # fmt: skip
    train_set = _encoded(train_records, encoder, programs)
    val_set = _encoded(val_records, encoder, programs)
    train_emb = embed_questions(encoder, [r.question for r in train_records])
    val_emb = embed_questions(encoder, [r.question for r in val_records])
    train_families = [family_of(r.id) for r in train_records]
    val_families = [family_of(r.id) for r in val_records]
    train_words = torch.tensor([question_words(r.question) for r in train_records])
    val_words = torch.tensor([question_words(r.question) for r in val_records])
    common = {"quantiles": quantiles, "points": points, "lengths": candidates.lengths,
              "depth": depth, "full_index": candidates.full_index}  # fmt: skip

    def fallbacks_of(keep_train: list[int], keep_val: list[int]) -> dict[str, Any]:
        """The best static program of the training rows ``keep_train``, and the word fallback
        of those and the validation rows ``keep_val``."""
        word_fallback = choose_word_fallback(
            torch.cat([train_set.candidates[keep_train], val_set.candidates[keep_val]]),
            torch.cat([train_words[keep_train], val_words[keep_val]]),
            [*(train_families[i] for i in keep_train), *(val_families[i] for i in keep_val)],
            candidates.full_index,
        )
        static = best_static(train_set.candidates[keep_train])
        return {"static_index": static, "word_fallback": word_fallback}

    def word_report(word_fallback: tuple[int, int] | None) -> dict[str, Any] | None:
        if word_fallback is None:
            return None
        return {
            "program": format_program(programs[word_fallback[0]]),
            "min_words": word_fallback[1],
        }

    held_out, too_large, fold_word_fallbacks = [], [], {}
    for family in dict.fromkeys([*train_families, *val_families]):
        keep_train = [i for i, f in enumerate(train_families) if f != family]
        keep_val = [i for i, f in enumerate(val_families) if f != family]
        if len(keep_train) < MIN_FOLD_SHARE * len(train_families) or not keep_val:
            too_large.append(family)
            continue
        fold_train = _subset(train_set, keep_train)
        fold = train_head(predictor.config, fold_train, _subset(val_set, keep_val), options)
        rows_train = [i for i, f in enumerate(train_families) if f == family]
        rows_val = [i for i, f in enumerate(val_families) if f == family]
        held = [_subset(train_set, rows_train), _subset(val_set, rows_val)]
        fold_fallbacks = fallbacks_of(keep_train, keep_val)
        fold_word_fallbacks[family] = word_report(fold_fallbacks["word_fallback"])
        held_out.append(
            held_out_family(
                family,
                torch.cat([h.candidates for h in held]),
                torch.cat([_probabilities(fold.head, h) for h in held]),
                torch.cat([train_emb[rows_train], val_emb[rows_val]]),
                reference=train_emb[keep_train],
                val_embeddings=val_emb[keep_val],
                words=torch.cat([train_words[rows_train], val_words[rows_val]]),
                **fold_fallbacks,
                **common,
            )
        )
    shipped_fallbacks = fallbacks_of(list(range(len(train_records))), list(range(len(val_records))))
    if options.guard_val_labels:
        records = read_labels(options.guard_val_labels)
        if not set(programs) <= set(candidate_set_of(records)):
            raise PredictorError("guard_val_labels must hold every candidate of the predictor")
        probs, embeddings = head_outputs(predictor, [r.question for r in records])
        held_out.append(
            held_out_family(
                "guard_val_labels",
                dense_matrix(records, programs),
                probs,
                embeddings,
                reference=train_emb,
                val_embeddings=val_emb,
                words=torch.tensor([question_words(r.question) for r in records]),
                **shipped_fallbacks,
                **common,
            )
        )
    if not held_out:
        raise PredictorError(
            "no wording family can be held out: each leaves less than "
            f"{MIN_FOLD_SHARE:.0%} of the training questions"
        )
    quantile, fallback, report = choose_gate(held_out, quantiles)
    report["not_held_out"] = too_large  # families too large to leave out of training
    report["fold_word_fallbacks"] = fold_word_fallbacks
    report["word_fallback"] = word_report(shipped_fallbacks["word_fallback"])
    fallback_program, min_words = {
        "full": (None, None),
        "best_static": (shipped_fallbacks["static_index"], None),
        "static_by_words": shipped_fallbacks["word_fallback"] or (None, None),
    }[fallback]
    guard = replace(
        guards_of_embeddings(train_emb, val_emb, [quantile])[0],
        fallback=None if fallback_program is None else format_program(programs[fallback_program]),
        fallback_min_words=min_words,
    )
    report["fallback_strategy"] = report["chosen_fallback"]
    report["chosen_fallback"] = guard.fallback or "full"  # the program, as choose_guard reports
    return guard, report


def choose_guard(
    predictor: Predictor,
    guards: Sequence[FamiliarityGuard],
    records: Sequence[LabelRecord],
    val_records: Sequence[LabelRecord] = (),
) -> tuple[FamiliarityGuard, dict[str, Any]]:
    """The guard (of ``guards``) to ship, chosen by lookup on dense labels of
    validation questions worded unlike the training ones (``records``) and of in-distribution
    validation questions (``val_records``).

    Only the operating points the guard applies to count (:func:`~.selection.guard_applies`;
    one that always runs the full program scores the same under every guard). A guard is
    *safe* when every such point of ``predictor`` with it is right on ``records`` at least as
    often as the full program. The fallback is chosen where it acts, on ``records``: the one
    whose best guard is right most often there (mean over the points). Of its safe guards the
    chosen one takes the fewest questions from the head (the smallest quantile): the head is
    what was trained and calibrated, and ``val_records`` (in-distribution validation
    questions) only report what each guard costs there (``pooled_accuracy``). Scoring guards
    by their accuracy on all validation questions pooled instead let one question of 240
    decide between a guard falling back to the full program and one falling back to a program
    that carries over to other wordings. Without a safe guard, the one whose worst point is
    right most often on ``records``. Ties go to the earlier guard (so with no such point, the
    smallest quantile of the first guard's fallback). Returns it and a report of every guard's
    accuracies, beside the full program's.
    """
    candidates = predictor.candidates
    if candidates is None:
        raise PredictorError("a familiarity guard is chosen for a candidate predictor only")
    pooled_records = [*records, *val_records]
    if not set(candidates.programs) <= set(candidate_set_of(pooled_records)):
        raise PredictorError("guard_val_labels must hold every candidate of the predictor")
    correct = dense_matrix(pooled_records, candidates.programs)
    probs, embeddings = head_outputs(predictor, [record.question for record in pooled_records])
    depth, full = predictor.config.depth, candidates.full_index
    points = {name: OperatingPoint(**p) for name, p in predictor.config.operating_points.items()}
    # the head's choice at each operating point does not depend on the guard
    choices = {
        name: choose(probs, candidates.lengths, depth, full, point)
        for name, point in points.items()
        if guard_applies(point)
    }
    reworded = torch.arange(len(pooled_records)) < len(records)  # the rows of ``records``
    full_accuracy = float(correct[reworded, full].mean())
    pooled_full_accuracy = float(correct[:, full].mean())
    report_rows = []
    for guard in guards:
        familiar = guard.familiar(embeddings)
        fallback = torch.full_like(familiar, predictor.fallback_index(guard), dtype=torch.long)
        accuracy, pooled = {}, {}
        for name, chosen in choices.items():
            guarded_right = correct.gather(1, torch.where(familiar, chosen, fallback)[:, None])
            accuracy[name] = float(guarded_right[reworded].mean())
            pooled[name] = float(guarded_right.mean())
        report_rows.append(
            {
                "quantile": guard.quantile,
                "threshold": guard.threshold,
                "fallback": guard.fallback or "full",
                "fallback_share": float((~familiar[reworded]).float().mean()),
                "accuracy": accuracy,
                "pooled_accuracy": pooled,
                "safe": min(accuracy.values(), default=full_accuracy) >= full_accuracy - 1e-9,
            }
        )
    any_safe = any(row["safe"] for row in report_rows)

    def reworded_accuracy(row: dict[str, Any]) -> float:
        accuracy = list(row["accuracy"].values()) or [full_accuracy]
        return round(sum(accuracy) / len(accuracy), 9)

    if any_safe:
        safe = [i for i, row in enumerate(report_rows) if row["safe"]]
        # the fallback of the safe guard most accurate on the reworded questions (the first best)
        best = max(safe, key=lambda i: (reworded_accuracy(report_rows[i]), -i))
        fallback = report_rows[best]["fallback"]
        chosen_index = min(
            (i for i in safe if report_rows[i]["fallback"] == fallback),
            key=lambda i: (guards[i].quantile, i),
        )
    else:
        scores = [round(min(row["accuracy"].values()), 9) for row in report_rows]
        chosen_index = scores.index(max(scores))  # the first best
    report = {
        "questions": len(records),
        "in_distribution_questions": len(val_records),
        "full_program_accuracy": full_accuracy,
        "pooled_full_program_accuracy": pooled_full_accuracy,
        "rule": "fallback by reworded accuracy, then its smallest safe quantile"
        if any_safe
        else "no safe guard: reworded",
        "guards": report_rows,
        "chosen_quantile": guards[chosen_index].quantile,
        "chosen_fallback": guards[chosen_index].fallback or "full",
    }
    return guards[chosen_index], report


@torch.no_grad()
def head_outputs(
    predictor: Predictor, questions: Sequence[str], batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate probabilities [Q, C] and sentence embeddings [Q, E] of ``questions``."""
    probs, embeddings = [], []
    for first in range(0, len(questions), batch_size):
        encoded = predictor.encoder.encode(list(questions[first : first + batch_size]))
        probs.append(torch.sigmoid(predictor.head(encoded.states, encoded.mask).float().cpu()))
        embeddings.append(question_embeddings(encoded).cpu())
    return torch.cat(probs), torch.cat(embeddings)


def train_candidates(
    settings: RunSettings, directory: str | os.PathLike[str] | None = None
) -> TrainResult:
    """Train a candidate predictor as ``settings`` say, choose its operating points on the
    validation labels and write it (with loss history, plots and the validation frontier)."""
    options = settings.train
    train_records, val_records = _label_records(settings)
    programs = candidate_set_of([*train_records, *val_records])
    depth = train_records[0].depth
    for record in (*train_records, *val_records):
        if record.depth != depth or not model_matches(settings.model, record.model):
            raise PredictorError(
                f"label {record.id!r} is for model {record.model!r} of depth {record.depth}, "
                f"expected {settings.model!r} of depth {depth}"
            )
    config = PredictorConfig(
        model=settings.model,
        depth=depth,
        encoder=options.encoder,
        dropout=options.dropout,
        head="candidates",
        candidates=tuple(format_program(p) for p in programs),
    )
    encoder = TextEncoder(config.encoder, max_tokens=config.max_question_tokens)
    config = replace(config, encoder_dim=encoder.dim)
    train_set = _encoded(train_records, encoder, programs)
    val_set = _encoded(val_records, encoder, programs)
    out = Path(directory if directory is not None else settings.predictor_dir)
    result = train_head(config, train_set, val_set, options)

    candidates = CandidateSet.of(config)
    served = options.efficiency_cost == "served"
    points = calibrate(
        _probabilities(result.head, val_set),
        val_set.candidates,
        candidates.lengths,
        depth,
        candidates.full_index,
        costs=_served_costs(settings, val_records, programs) if served else None,
    )
    budget = options.efficiency_layers * depth
    within = candidates.lengths <= budget
    best_short = float(val_set.candidates[:, within].mean(dim=0).max()) if within.any() else 0.0
    chosen = {"accuracy": pick_point(points, depth)}
    try:
        chosen["efficiency"] = (
            pick_served(points, budget, best_short) if served else pick_point(points, budget)
        )
    except ValueError as error:  # e.g. no candidate is short enough: the accuracy point alone
        print(f"no efficiency operating point is stored: {error} on the validation questions")
    all_correct = torch.cat([train_set.candidates, val_set.candidates])
    rates = all_correct.mean(dim=0)
    best = best_static(all_correct)
    val_rates = val_set.candidates.mean(dim=0)
    report = {
        "validation_questions": len(val_set),
        "full_program": {
            "layers": depth,
            "accuracy": float(val_rates[candidates.full_index]),
        },
        "best_static": {
            "program": config.candidates[best],
            "layers": len(programs[best]),
            "accuracy": float(val_rates[best]),
            "train_and_val_accuracy": float(rates[best]),
        },
        "oracle": float(val_set.candidates.max(dim=1).values.mean()),
        "best_static_within_efficiency_layers": best_short,
        "efficiency_cost": options.efficiency_cost,
        "operating_points": {
            name: {**asdict(p.point), **_metrics(p)} for name, p in chosen.items()
        },
        "frontier": [{**asdict(p.point), **_metrics(p)} for p in _frontier(points)],
    }
    record = {
        "seed": options.seed,
        "epochs": options.epochs,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "train_questions": len(train_set),
        "val_questions": len(val_set),
        "labels": [Path(p).name for p in options.labels],
        "val_labels": [Path(p).name for p in options.val_labels],
        "validation": {name: _metrics(p) for name, p in chosen.items()},
    }
    config = replace(
        config,
        operating_points={name: asdict(p.point) for name, p in chosen.items()},
        operating_point="accuracy",
        training=record,
    )
    save_predictor(out, config, result.head)
    (out / HISTORY_FILE).write_text(json.dumps({**record, **result.history}, indent=1))
    plot_losses(result.history, out / PLOT_FILE)
    (out / FRONTIER_FILE).write_text(json.dumps(report, indent=1))
    _plot_frontier(report, (out / FRONTIER_FILE).with_suffix(".png"))
    fit_familiarity_guard(settings, out, encoder, (train_records, val_records))
    return result


def _served_costs(
    settings: RunSettings, records: Sequence[LabelRecord], programs: Sequence[Program]
) -> torch.Tensor:
    """Served layer-tokens [Q, C] of every candidate on the validation ``records``, priced
    with the model's tokenizer and LM head from the answers stored with the labels."""
    options = settings.train
    paths = [*(options.val_labels or options.labels), *options.family_labels]
    tokenizer, head = pricing(settings.model)
    return candidate_costs(records, programs, paths, tokenizer, head).cost


def _metrics(point: CalibratedPoint) -> dict[str, float | None]:
    return {
        "accuracy": point.accuracy,
        "mean_layers": point.mean_layers,
        "full_share": point.full_share,
        "gain_bound": point.gain_bound,
        "relative_cost": point.relative_cost,
    }
