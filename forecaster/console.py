"""What every `forecaster` command shares: the consoles it prints on, the default registry and
the trusted keys for a bundle check (and the two options that name them)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from device.keys import TrustedKeys
from forecaster.errors import ForecasterError

__all__ = [
    "REGISTRY_DEFAULT",
    "TrustedKeyOption",
    "TrustedRegistryOption",
    "console",
    "err_console",
    "trusted_or_fail",
]

# Piped output (logs, CI) gets room for the wide metric tables instead of 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=320)
err_console = Console(stderr=True)

REGISTRY_DEFAULT = Path("models/registry")

# The options of every command that checks a bundle's signature, for `trusted_or_fail`.
TrustedRegistryOption = Annotated[
    Path, typer.Option(help="Registry whose development keys are trusted.")
]
TrustedKeyOption = Annotated[
    list[Path] | None, typer.Option(help="Trusted public key file or dir.")
]


def trusted_or_fail(registry: Path, trusted_key: list[Path] | None) -> TrustedKeys:
    """The keys a bundle check trusts: `trusted_key`, else the development keys beside `registry`."""
    from forecaster.training.bundles import trusted_keys_for

    keys = trusted_keys_for(registry, trusted_key)
    if not keys:
        raise ForecasterError(
            f"no trusted public keys: pass --trusted-key, or keep the development keys beside {registry}"
        )
    return keys
