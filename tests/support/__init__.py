"""Helpers the tests and scripts/ share: ports, brokers, the CLI runner, a fake agent host.

Importable as `tests.support` from the repository root (tests and `python -m scripts.<name>`)."""
