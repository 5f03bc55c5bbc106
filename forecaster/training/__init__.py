"""Machinery every task shares: the early-stopping training loop (`loops`), the nets' common
trunk (`nets`), ONNX export and parity (`export`), signed bundles (`bundles`), what reports and
manifests share (`reports`) and a task's own recipe section (`sections`).

Import from the modules: this package imports nothing itself, so that the operator tools can
sign and read bundles without loading torch."""

__all__: list[str] = []
