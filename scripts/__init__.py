"""Operator scripts (run from the repository root as `python -m scripts.<name>`); they share the
broker, agent and feed helpers of tests/support."""
