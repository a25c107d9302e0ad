"""Imports point one way: program → executor → engine glue → models → serving, with the
pipeline (data, search, predictor) beside, the vLLM hooks of ``compat`` above what they install,
and the commands on top. Read from the source, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import polar_vllm

PACKAGE_DIR = Path(polar_vllm.__file__).parent

COMPAT_LOWER_TIER = {
    "attention_slots",
    "attention_metadata",
    "batch_jobs",
    "compiled_layers",
    "shutdown",
}
"""``compat`` modules lower layers may import (see ``polar_vllm/compat/__init__.py``)."""

BELOW_ENGINE = {"program", "executor", "engine"}

MAY_IMPORT: dict[str, set[str]] = {
    "program": set(),
    "data": set(),
    "executor": {"program"},
    "engine": {"program", "executor"},
    "compat-lower": BELOW_ENGINE,
    "models": BELOW_ENGINE | {"compat-lower"},
    "search": BELOW_ENGINE | {"data", "models", "compat-lower"},
    "predictor": BELOW_ENGINE | {"data", "models", "compat-lower", "search"},
    "serving": BELOW_ENGINE | {"data", "models", "predictor"},
    "compat": BELOW_ENGINE | {"compat-lower", "models", "predictor", "serving"},
}
"""The polar_vllm layers each layer may import (besides itself); ``cli`` and the package root
sit on top and may import anything."""


def _layer(module: str) -> str:
    """The layer of a dotted ``polar_vllm`` module name."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in {"__init__", "cli"}:
        return "top"
    if parts[0] == "compat" and len(parts) > 1 and parts[1] in COMPAT_LOWER_TIER:
        return "compat-lower"
    return parts[0]


def _imported_modules(path: Path, module: str) -> set[str]:
    """Every polar_vllm module ``path`` (the module ``module``) imports, at any depth."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [f"{target}.{alias.name}" for alias in node.names]
                found.add(target)
                found.update(name for name in names if _is_module(name))
            else:
                found.add(node.module or "")
                found.update(
                    f"{node.module}.{alias.name}"
                    for alias in node.names
                    if _is_module(f"{node.module}.{alias.name}")
                )
    return {name for name in found if name.split(".")[0] == "polar_vllm"}


def _is_module(dotted: str) -> bool:
    relative = Path(*dotted.split(".")[1:])
    return (PACKAGE_DIR / relative).with_suffix(".py").is_file() or (
        PACKAGE_DIR / relative / "__init__.py"
    ).is_file()


def _modules() -> list[tuple[Path, str]]:
    modules = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        modules.append((path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)))
    return modules


def test_every_layer_is_known():
    layers = {_layer(module) for _, module in _modules()}
    assert layers - {"top"} == set(MAY_IMPORT), layers


def test_imports_point_one_way():
    wrong = []
    for path, module in _modules():
        layer = _layer(module)
        if layer == "top":
            continue
        for imported in _imported_modules(path, module):
            target = _layer(imported)
            if target not in MAY_IMPORT[layer] | {layer} and imported != "polar_vllm":
                wrong.append(f"{module} ({layer}) imports {imported} ({target})")
    assert not wrong, "\n".join(wrong)


def test_the_package_root_holds_no_loose_modules():
    loose = sorted(path.name for path in PACKAGE_DIR.glob("*.py") if path.name != "__init__.py")
    assert not loose, loose


def test_the_layering_check_sees_a_wrong_import(tmp_path):
    """The check reads relative and lazy imports: an engine module that imports a model is
    caught."""
    source = tmp_path / "kv.py"
    source.write_text("def f():\n    from ..models import bundled\n", encoding="utf-8")
    imported = _imported_modules(source, "polar_vllm.engine.kv")
    assert "polar_vllm.models.bundled" in imported
    assert _layer("polar_vllm.models.bundled") not in MAY_IMPORT["engine"]
