"""The results index: ``benchmarks/results/README.md`` and the results tables of ``docs/``,
generated from the result JSON files and ``benchmarks/results/index.json``.

``index.json`` holds what a result file does not: the command that made it, the machine, the
date, whether it is current and, if not, what superseded it. Everything else (the numbers)
comes from the result files, so the tables cannot drift from them. A docs table is a block

    <!-- results: throughput/throughput_cpu.json -->
    ...generated...
    <!-- /results -->

    python benchmarks/results_index.py           # rewrite the index and the docs tables
    python benchmarks/results_index.py --check   # exit 1 if stale, unindexed or inconsistent
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS = REPOSITORY / "benchmarks" / "results"
DOCS = ("docs/benchmarks.md", "docs/research.md")
BLOCK = re.compile(r"(<!-- results: (\S+) -->\n)(.*?)(<!-- /results -->)", re.DOTALL)
BLOCK_NAMES = re.compile(r"^<!-- results: (\S+) -->$", re.MULTILINE)
SCRIPTS = {
    "executor_core": "benchmarks/executor_core.py",
    "compile_boundaries": "benchmarks/compile_boundaries.py",
    "layer_call_cost": "benchmarks/layer_call_cost.py",
    "predictor_overhead": "benchmarks/predictor_overhead.py",
    "program_batching": "benchmarks/program_batching.py",
    "search_speed": "benchmarks/search_speed.py",
    "throughput": "benchmarks/throughput.py",
    "kv_capacity": "benchmarks/kv_capacity.py",
    "host_work": "benchmarks/host_work.py",
    "search": "polar-vllm search",
    "predictor": "polar-vllm eval",
    "predictor_payoff": "benchmarks/predictor_payoff.py, benchmarks/served_predictor.py",
}


def load_index(root: Path = REPOSITORY) -> list[dict[str, Any]]:
    """The entries of ``index.json``, one per result file (``file`` relative to results/)."""
    path = root / "benchmarks" / "results" / "index.json"
    return json.loads(path.read_text(encoding="utf-8"))["results"]


def result_files(root: Path = REPOSITORY) -> list[str]:
    """The committed result JSON files under benchmarks/results/ (all of them on disk when the
    tree is not a git checkout), relative to that folder; ``index.json`` excluded."""
    results = root / "benchmarks" / "results"
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", "*.json"],
            cwd=results,
            capture_output=True,
            check=True,
            text=True,
        ).stdout.split("\0")
        files = [name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):
        files = [str(path.relative_to(results)) for path in results.rglob("*.json")]
    return sorted(name for name in files if name != "index.json")


def _flags(command: str) -> dict[str, str]:
    words = shlex.split(command)
    return {
        word[2:].replace("-", "_"): value
        for word, value in zip(words, [*words[1:], ""], strict=True)
        if word.startswith("--") and not value.startswith("--")
    }


def _same(flag: str, setting: Any) -> bool:
    if isinstance(setting, list):
        return flag.split(",") == [str(item) for item in setting]
    if isinstance(setting, float):
        return float(flag) == setting
    return flag == str(setting)


def problems(root: Path = REPOSITORY) -> list[str]:
    """What is wrong with the index: unindexed or missing files, bad links, commands whose
    options disagree with the settings their result file records."""
    index = load_index(root)
    found = set(result_files(root))
    names = [entry["file"] for entry in index]
    listed = set(names)
    out = [f"{name}: not in index.json" for name in sorted(found - listed)]
    out += [f"{name}: in index.json but not a result file" for name in sorted(listed - found)]
    out += [f"{name}: listed twice" for name in sorted({n for n in names if names.count(n) > 1})]
    for entry in index:
        name = entry["file"]
        for key in ("command", "machine", "date", "current"):
            if key not in entry:
                out.append(f"{name}: no {key}")
        newer = entry.get("superseded_by")
        if entry.get("current") is False and newer not in listed:
            out.append(f"{name}: superseded, but superseded_by names no indexed result")
        if name not in found:
            continue
        data = json.loads((root / "benchmarks" / "results" / name).read_text(encoding="utf-8"))
        settings = data.get("settings") or data.get("config") or {}
        for key, value in _flags(entry.get("command", "")).items():
            if key in settings and not _same(value, settings[key]):
                out.append(f"{name}: command has --{key} {value}, the run recorded {settings[key]}")
    return out


# ---------------------------------------------------------------- tables, one kind per folder


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def _throughput(data: dict[str, Any]) -> str:
    depth = data["depth"]
    sizes = sorted({row["batch_size"] for row in data["rows"]})
    order = [
        "stock",
        "stock-eager",
        "full",
        "h50",
        "h75",
        "h90",
        "r110",
        "r125",
        "mixed",
        "labels",
        "predicted",
    ]
    variants = sorted(
        dict.fromkeys(row["variant"] for row in data["rows"]),
        key=lambda v: order.index(v) if v in order else len(order),
    )
    by_key = {(row["variant"], row["batch_size"]): row for row in data["rows"]}

    def cell(row: dict[str, Any] | None) -> str:
        if row is None:
            return ""
        if row["variant"] == "stock":
            return f"{row['tokens_per_s']:.1f} tok/s"
        text = f"{row['ratio_to_stock']:.2f}x"
        spread = row.get("ratios_by_repeat") or []
        if len(spread) > 1:
            text += f" ({min(spread):.2f}-{max(spread):.2f})"
        ideal = depth / row["mean_executed_layers"]
        if abs(ideal - 1) > 0.005:
            text += f" = {row['ratio_to_stock'] / ideal:.2f}"
        return text

    rows = []
    for variant in variants:
        rows_of = [by_key[variant, s] for s in sizes if (variant, s) in by_key]
        layers = [row["mean_executed_layers"] for row in rows_of]
        shown = " / ".join(dict.fromkeys(f"{value:.1f}" for value in layers))
        rows.append([variant, shown, *(cell(by_key.get((variant, s))) for s in sizes)])
    note = (
        "Ratio to stock vLLM in the same run (median of repeats; per-repeat range in brackets) "
        "and, after `=`, the share of the ideal D / layers where that ideal is not 1."
    )
    table = _table(["variant", "layers", *(f"batch {s}" for s in sizes)], rows)
    return note + " " + _engine_modes(data) + "\n\n" + table


def _engine_modes(data: dict[str, Any]) -> str:
    """Which mode the engines ran in, and their start-up times where the run recorded them."""
    mode = data.get("stock_mode")
    if mode is None:
        return "Stock and PoLar both ran eagerly (`enforce_eager=True`)."
    text = (
        "Stock and PoLar ran in vLLM's default mode (compiled)"
        if mode == "compiled"
        else "Stock and PoLar ran eagerly (`enforce_eager=True`)"
    )
    if "stock-eager" in data.get("startup_s", {}):
        text += "; `stock-eager` is stock with `enforce_eager=True`, an extra row"
    startup = data.get("startup_s")
    if startup:
        times = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in startup.items())
        text += f". Start-up, from empty compile caches (load, profile, compile, warm-up): {times}"
    return text + "."


def _program_batching(data: dict[str, Any]) -> str:
    rows = []
    for row in data["rows"]:
        ratio, share = row["ratio_to_stock"], row["share_of_ideal"]
        ttft = row.get("mean_time_to_first_token_s")
        engines = ("stock", "polar_fcfs", "polar_program_aware")
        rows.append(
            [
                row["mix"],
                str(row["batch_size"]),
                str(row["requests"]),
                f"{row['tokens_per_s']['stock']:.1f}",
                f"{row['ideal_ratio']:.3f}x",
                f"{ratio['polar_fcfs']:.3f}x",
                f"{ratio['polar_program_aware']:.3f}x",
                f"{share['polar_fcfs']:.2f} -> {share['polar_program_aware']:.2f}",
                " / ".join(f"{ttft[e]:.1f}" for e in engines)
                if ttft and None not in ttft.values()
                else "not recorded",
            ]
        )
    header = ["mix", "batch", "requests", "stock tok/s", "ideal", "vLLM's order"]
    header += ["program-aware", "share of ideal", "time to first token, s (stock / order / aware)"]
    return _table(header, rows)


def _layer_call_cost(data: dict[str, Any]) -> str:
    costs = ", ".join(f"{n}: {ms:.2f}" for n, ms in data["per_layer_ms"].items())
    head = (
        f"Weights per layer {data['layer_weight_bytes'] / 2**20:.1f} MiB, memory read "
        f"{data['read_gbps']:.1f} GB/s, so a call costs at least "
        f"{data['weight_read_floor_ms']:.2f} ms. Measured ms per layer call by rows: {costs}. "
        "Share of ideal the decode schedule allows:"
    )
    sizes = sorted({row["batch_size"] for row in data["rows"]})
    groups: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
    for row in data["rows"]:
        groups.setdefault((row["mix"], row["queue_factor"]), {})[row["batch_size"]] = row
    rows = []
    for (mix, factor), by_size in groups.items():
        if factor > 1 and mix in ("full", "h75"):
            continue  # one program: 1.00 at any queue depth
        label = f"{mix}, " + ("B (no queue)" if factor == 1 else f"{factor} x B waiting")
        cells = [f"{by_size[s]['share_of_ideal']:.2f}" if s in by_size else "" for s in sizes]
        steps = "-".join(dict.fromkeys(f"{by_size[s]['schedule_steps']:.0f}" for s in sizes))
        rows.append([label, steps, *cells])
    header = ["mix, requests", "schedule steps", *(f"batch {s}" for s in sizes)]
    return head + "\n\n" + _table(header, rows)


def _executor_core(data: dict[str, Any]) -> str:
    rows = [
        [
            str(row["batch"]),
            row["workload"],
            str(row["distinct_programs"]),
            str(row["schedule_len"]),
            f"{row['time_ms']:.3f}",
            f"{row['ratio']:.2f}x",
            f"{row['ratio_step']:.2f}x",
        ]
        for row in data["rows"]
    ]
    header = ["batch", "workload", "programs", "steps", "ms", "vs ideal", "vs schedule ideal"]
    return _table(header, rows)


def _compile_boundaries(data: dict[str, Any]) -> str:
    rows = [
        [
            str(row["tokens"]),
            f"{row['eager_ms']:.1f}",
            f"{row['whole_ms']:.1f}",
            f"{row['per_layer_ms']:.1f}",
            f"{row['per_layer_vs_whole']:.3f}x",
        ]
        for row in data["rows"]
    ]
    header = ["tokens", "eager, ms", "whole stack compiled, ms", "each layer compiled, ms",
              "each layer / whole"]  # fmt: skip
    return _table(header, rows)


def _predictor_overhead(data: dict[str, Any]) -> str:
    rows = [
        [
            str(row["batch_size"]),
            f"{row['encoder_ms']:.2f}",
            f"{row['head_ms']:.2f}",
            f"{row['decoding_ms']:.2f}",
            f"{row['total_ms']:.2f}",
            f"{row['generation_s']:.2f}",
            f"{100 * row['share_of_latency']:.2f}%",
        ]
        for row in data["rows"]
    ]
    header = ["batch", "encoder ms", "head ms", "decoding ms", "per request ms"]
    return _table([*header, "generation s (batch)", "share of latency"], rows)


def _search_speed(data: dict[str, Any]) -> str:
    if "configs" in data:  # engine settings of search configs, side by side
        rows = [
            [
                f"`{name}`",
                c["dtype"],
                c["scheduling"],
                str(c["max_num_seqs"] or "default"),
                f"{c['programs_per_s']:.2f}",
                f"{c['ratio_to_first']:.2f}x",
            ]
            for name, c in data["configs"].items()
        ]
        header = ["search config", "dtype", "scheduling", "max_num_seqs", "programs/s", "ratio"]
        return _table(header, rows)
    rows = [
        [name, str(b["programs"]), f"{b['seconds']:.1f}", f"{b['programs_per_s']:.2f}"]
        for name, b in data["backends"].items()
    ]
    text = _table(["back end", "programs", "seconds", "programs/s"], rows)
    if "speedup" in data:
        text += (
            f"\n\nSpeed-up {data['speedup']:.1f}x; identical texts on the requests both ran: "
            f"{100 * data['same_text_share']:.0f}%."
        )
    return text


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _oracle_study(data: dict[str, Any]) -> str:
    rows = []
    for level, stats in [*data["levels"].items(), ("all", data["all"])]:
        oracle = stats["oracle_accuracy"]
        rows.append(
            [
                level,
                str(stats["questions"]),
                _percent(stats["base_accuracy"]),
                _percent(oracle["skip_only"]),
                _percent(oracle["loop_only"]),
                _percent(oracle["skip_and_loop"]),
                f"{_percent(stats['right_with_shorter_program'])} of {stats['base_right']}",
                f"{_percent(stats['wrong_fixed_within_depth'])} of {stats['base_wrong']}",
            ]
        )
    header = ["level", "n", "base", "oracle skip-only", "oracle loop-only", "oracle skip+loop"]
    return _table([*header, "right, with a shorter valid program", "wrong, fixed within D"], rows)


def _predictor_eval(data: dict[str, Any]) -> str:
    groups = sorted(
        data["groups"],
        key=lambda g: (0 if g.startswith("level") else 1 if g == "in_distribution" else 2, g),
    )
    methods = list(dict.fromkeys(m for g in groups for m in data["groups"][g]))
    layers_group = "in_distribution" if "in_distribution" in groups else groups[0]
    rows = []
    for method in methods:
        cells = []
        for group in groups:
            stats = data["groups"][group].get(method)
            cells.append(
                f"{100 * stats['pass@1']:.1f} / {100 * stats['pass@5']:.1f}" if stats else ""
            )
        layers = data["groups"][layers_group][method]["avg_layers"]
        rows.append([method, *cells, f"{layers:.1f}"])
    text = f"pass@1 / pass@5 in %, per question group; mean executed layers of {layers_group}.\n\n"
    table = _table(["method", *groups, "layers"], rows)
    oracle = data.get("oracle")
    if not oracle:
        return text + table
    beside = ", ".join(
        f"{name} {_percent(row['pass@1'])}" for name, row in oracle["methods"].items()
    )
    return (
        f"{text}{table}\n\nOracle (a search of {oracle['questions']} of these test questions, "
        f"for reporting only): {_percent(oracle['pass@1'])} at {oracle['avg_layers']:.1f} layers "
        f"(shortest right program); on the same questions: {beside}."
    )


def _served_run(data: dict[str, Any]) -> str:
    """One served run through ``vllm serve`` and the openai client."""
    rows = [
        [
            str(data["questions"]),
            data["operating_point"],
            _percent(data["pass@1"]),
            f"{data['mean_layers']:.1f}",
            str(data["distinct_programs"]),
            f"{data['requests_per_s']:.2f}",
        ]
    ]
    header = ["questions", "operating point", "pass@1", "mean layers", "programs", "req/s"]
    return _table(header, rows)


def _payoff_bound(data: dict[str, Any]) -> str:
    """The validation frontier in layer-tokens against the requests/s goals."""
    rows = []
    for name, bound in data["bounds"].items():
        point, best = bound["operating_point"], bound["best_within_budget"]
        rows.append(
            [
                name,
                _percent(point["accuracy"]),
                f"{point['mean_layers']:.2f}",
                f"{point['relative_cost']:.3f}",
                f"{bound['engine_share_of_ideal']:.2f}",
                f"{bound['expected_ratio']:.2f}x",
                f"{bound['goal']:.2f}x: ≤ {bound['cost_budget']:.3f}",
                "none"
                if best is None
                else f"{_percent(best['accuracy'])} ({best['mean_layers']:.1f})",
                f"{bound['best_ratio_at_greedy_accuracy']:.2f}x",
                f"{_percent(point['at_max_tokens'])} ({point['right_at_max_tokens']:.0f} right)",
            ]
        )
    header = ["point", "pass@1 (val)", "mean layers", "layer-tokens vs stock", "engine keeps"]
    extra = [
        "expected req/s",
        "goal: layer-tokens needed",
        "best pass@1 there (layers)",
        "req/s at greedy's pass@1, at most",
        f"answers at {data['max_tokens']} tokens",
    ]
    cheapest = data["cheapest_at_greedy_accuracy"]
    greedy = (
        f"Greedy: {_percent(data['greedy_accuracy'])} on the same "
        f"{data['validation_questions']} validation questions; the cheapest point at least as "
        f"accurate costs {cheapest['relative_cost']:.3f} of stock's layer-tokens "
        f"({cheapest['mean_layers']:.1f} layers; "
        f"{data['cheapest_at_greedy_accuracy_knowing_costs']['relative_cost']:.3f} had the head "
        f"known every answer's cost). The LM head counts as "
        f"{data['head_layers']:.1f} layers per generated token."
    )
    return f"{_table([*header, *extra], rows)}\n\n{greedy}"


def _payoff_variants(data: dict[str, Any]) -> str:
    """Stock and PoLar at each operating point, served side by side."""
    rows = []
    for name, row in data["variants"].items():
        share = row.get("predictor_share")
        ideal = row.get("ideal_ratio")
        rows.append(
            [
                name,
                _percent(row["pass@1"]["in_distribution"]),
                _percent(row["pass@1"].get("ood")),
                f"{row['mean_layers']:.2f}",
                f"{row['requests_per_s']:.2f} ({row['ratio_to_stock']:.2f}x)",
                "–" if ideal is None else f"{ideal:.2f}x ({row['share_of_ideal']:.2f})",
                f"{row['cold_ratio_to_stock']:.2f}x" if "cold_seconds" in row else "not run",
                f"{row['generated_tokens'] / row['requests']:.1f}",
                f"{row['generated_tokens_per_s']:.1f}",
                "–" if share is None else f"{100 * share:.2f}%",
            ]
        )
    header = ["variant", "pass@1 (test)", "pass@1 (OOD)", "mean layers", "req/s (vs stock)"]
    extra = ["ideal (share kept)", "cold pass (vs stock)", "tokens/request", "gen tok/s"]
    return _table([*header, *extra, "predictor share"], rows)


def _predictor_payoff(data: dict[str, Any]) -> str:
    if "bounds" in data:
        return _payoff_bound(data)
    if "variants" not in data:
        return _served_run(data)
    return _payoff_variants(data)


def _kv_capacity(data: dict[str, Any]) -> str:
    rows = [
        [
            row["variant"],
            f"{row['mean_executed_layers']:.1f}",
            f"{row['mean_kv_groups_entered']:.1f}",
            f"{row['kv_capacity_tokens']:,.0f} ({row['capacity_ratio_to_stock']:.2f}x)",
            f"{row['tokens_per_s']:.1f} ({row['ratio_to_stock']:.2f}x)",
            f"{row['peak_running']} ({row['peak_ratio_to_stock']:.2f}x)",
            f"{row['preemptions']:.0f}",
        ]
        for row in data["rows"]
    ]
    header = ["variant", "layers", "KV groups", "KV capacity, tokens", "tok/s"]
    return _engine_modes(data) + "\n\n" + _table([*header, "peak running", "preemptions"], rows)


def _host_work(data: dict[str, Any]) -> str:
    depth = data["depth"]
    phases = ["schedule", "allocate_slots", "prepare_inputs", "plan_batch", "sub_batches"]
    phases += ["model_forward"]
    rows = []
    for name, row in data["rows"].items():
        ideal = depth / row["layers"]
        ratio = f"{row['ratio_to_stock']:.2f}x"
        if abs(ideal - 1) > 0.005:
            ratio += f" = {row['share_of_ideal']:.2f}"
        times = [f"{row['ms_per_step'][phase]:.2f}" for phase in phases]
        rows.append([name, f"{row['layers']:.1f}", ratio, f"{row['steps']:.0f}", *times])
    header = ["variant", "layers", "tok/s vs stock (= of ideal)", "steps", *phases]
    note = "Milliseconds per engine step, inclusive (`allocate_slots` is part of `schedule`)."
    return _engine_modes(data) + " " + note + "\n\n" + _table(header, rows)


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "throughput": _throughput,
    "kv_capacity": _kv_capacity,
    "host_work": _host_work,
    "program_batching": _program_batching,
    "layer_call_cost": _layer_call_cost,
    "executor_core": _executor_core,
    "compile_boundaries": _compile_boundaries,
    "predictor_overhead": _predictor_overhead,
    "search_speed": _search_speed,
    "search": _oracle_study,
    "predictor": _predictor_eval,
    "predictor_payoff": _predictor_payoff,
}


def _summary(data: dict[str, Any]) -> str:
    settings = data.get("settings") or data.get("config") or {}
    parts = [str(settings.get("model") or data.get("model") or "")]
    repeats = "repeat" if settings.get("repeats") == 1 else "repeats"
    for key, label in (("dtype", ""), ("max_tokens", "new tokens"), ("repeats", repeats)):
        if settings.get(key) is not None:
            parts.append(f"{settings[key]} {label}".strip())
    if "queue_factor" in settings:
        parts.append(f"{settings['queue_factor']} x B waiting")
    if "max_delay_s" in settings:
        parts.append(f"max_delay_s {settings['max_delay_s']:g}")
    return ", ".join(part for part in parts if part)


def render_block(name: str, root: Path = REPOSITORY) -> str:
    """The generated text of one result: what ran where and when, the command, the table."""
    entry = {e["file"]: e for e in load_index(root)}[name]
    data = json.loads((root / "benchmarks" / "results" / name).read_text(encoding="utf-8"))
    status = "" if entry["current"] else f" Superseded by `{entry['superseded_by']}`."
    summary = _summary(data)
    head = (
        f"`benchmarks/results/{name}`: {entry['machine']}, {entry['date']}"
        + (f"; {summary}" if summary else "")
        + "."
        + status
        + (f" Note: {entry['note']}." if entry.get("note") else "")
    )
    table = RENDERERS[name.split("/")[0]](data)
    return f"{head}\n\n```bash\n{entry['command']}\n```\n\n{table}\n"


def render_readme(root: Path = REPOSITORY) -> str:
    """``benchmarks/results/README.md``: every result, by benchmark."""
    index = sorted(load_index(root), key=lambda e: (e["file"].split("/")[0], e["date"], e["file"]))
    lines = [
        "# Results index",
        "",
        "Generated by `python benchmarks/results_index.py` from `index.json` (command, machine,",
        "date, status) and the result files; do not edit by hand. Each result's PNG, where there",
        "is one, sits next to its JSON. The tables of these results are in",
        "[docs/benchmarks.md](../../docs/benchmarks.md) and",
        "[docs/research.md](../../docs/research.md).",
        "A superseded result was made by the same benchmark on the same machine before a later,",
        "improved run; it is kept for the record and left out of the docs tables.",
    ]
    folder = None
    for entry in index:
        kind = entry["file"].split("/")[0]
        if kind != folder:
            folder = kind
            lines += ["", f"## {kind}/ ({SCRIPTS[kind]})", ""]
            lines += ["| result | status | machine | date | command |", "|" + " --- |" * 5]
        name = entry["file"]
        status = "current" if entry["current"] else f"superseded by `{entry['superseded_by']}`"
        if entry.get("note"):
            status += f"; {entry['note']}"
        link = f"[{name.split('/')[-1]}]({name})"
        lines.append(
            f"| {link} | {status} | {entry['machine']} | {entry['date']} | `{entry['command']}` |"
        )
    return "\n".join(lines) + "\n"


def render_doc(text: str, root: Path = REPOSITORY) -> str:
    """``text`` with every results block regenerated."""
    return BLOCK.sub(lambda m: m.group(1) + render_block(m.group(2), root) + m.group(4), text)


def outputs(root: Path = REPOSITORY) -> dict[Path, str]:
    """Every generated file and its content."""
    out = {root / "benchmarks" / "results" / "README.md": render_readme(root)}
    for doc in DOCS:
        path = root / doc
        if path.exists():
            out[path] = render_doc(path.read_text(encoding="utf-8"), root)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    issues = problems()
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            issues.append(f"{path.relative_to(REPOSITORY)}: stale, run benchmarks/results_index.py")
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPOSITORY)}")
    for issue in issues:
        print(issue, file=sys.stderr)
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
