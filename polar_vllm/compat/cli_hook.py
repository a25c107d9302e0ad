"""Adds ``--polar`` and ``--polar-predictor`` to vLLM's command line (vLLM 0.32).

vLLM parses ``vllm serve ...`` before it loads plugins, so the flags cannot come from
:func:`polar_vllm.register`. Instead the ``polar_vllm_cli.pth`` startup file imports this module
in every Python process; it only records a wish to patch, costs microseconds and imports
nothing. When (and only when) vLLM's CLI argument module is imported, its ``make_arg_parser``
is wrapped (:mod:`polar_vllm.compat.cli_args`).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

TARGET_MODULE = "vllm.entrypoints.launchers.cli_args"


class _PatchOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds :data:`TARGET_MODULE` through the other finders, then patches it once loaded."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET_MODULE:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        self._inner_loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._inner_loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner_loader.exec_module(module)
        sys.meta_path.remove(self)
        from polar_vllm.compat.cli_args import add_polar_arguments

        add_polar_arguments(module)


if TARGET_MODULE not in sys.modules and not any(
    isinstance(finder, _PatchOnImport) for finder in sys.meta_path
):
    sys.meta_path.insert(0, _PatchOnImport())
