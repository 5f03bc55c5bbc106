"""Run a module as `__main__` with the training stack made unimportable.

`python tests/integration/edge_only.py device.cli --config agent.toml` runs the edge agent the way
an edge install would: any import of torch, pandas, statsmodels, arch or forecaster fails.
"""

from __future__ import annotations

import importlib.abc
import runpy
import sys

BLOCKED = ("torch", "pandas", "statsmodels", "arch", "forecaster")


class BlockTrainingStack(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not available on an edge device")


if __name__ == "__main__":
    for loaded in list(sys.modules):
        if loaded.partition(".")[0] in BLOCKED:
            raise SystemExit(f"{loaded} was imported before the blocker was installed")
    sys.meta_path.insert(0, BlockTrainingStack())
    module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
