"""The results index covers every result file, agrees with the runs' recorded settings, and
the generated index and docs tables are up to date (no engine, no model: cheap)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _results_index():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("results_index")


def test_every_result_file_is_indexed_and_its_command_matches_its_settings():
    results_index = _results_index()
    assert results_index.problems() == []
    indexed = {entry["file"] for entry in results_index.load_index()}
    assert set(results_index.result_files()) == indexed
    assert {name.split("/")[0] for name in indexed} <= set(results_index.RENDERERS)


def test_generated_index_and_docs_tables_are_current():
    results_index = _results_index()
    generated = results_index.outputs()
    assert len(generated) == 1 + len(results_index.DOCS)
    for path, text in generated.items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is stale: run python benchmarks/results_index.py"
        )


def test_every_current_result_has_a_docs_table():
    results_index = _results_index()
    docs = "".join(
        (results_index.REPOSITORY / doc).read_text(encoding="utf-8") for doc in results_index.DOCS
    )
    shown = set(results_index.BLOCK_NAMES.findall(docs))
    current = {entry["file"] for entry in results_index.load_index() if entry["current"]}
    assert current == shown


def test_problems_names_unindexed_files_and_disagreeing_commands(tmp_path):
    results_index = _results_index()
    results = tmp_path / "benchmarks" / "results" / "throughput"
    results.mkdir(parents=True)
    (results / "throughput_a.json").write_text(json.dumps({"settings": {"repeats": 3}}))
    (results / "throughput_b.json").write_text("{}")
    entry = {"file": "throughput/throughput_a.json", "command": "x --repeats 2", "machine": "m"}
    entry |= {"date": "2026-01-01", "current": False, "superseded_by": "throughput/none.json"}
    (tmp_path / "benchmarks" / "results" / "index.json").write_text(
        json.dumps({"results": [entry]})
    )
    assert results_index.problems(tmp_path) == [
        "throughput/throughput_b.json: not in index.json",
        "throughput/throughput_a.json: superseded, but superseded_by names no indexed result",
        "throughput/throughput_a.json: command has --repeats 2, the run recorded 3",
    ]
