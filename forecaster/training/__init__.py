"""Machinery every task shares: the early-stopping training loop (`loops`), the nets' common
trunk (`nets`), ONNX export and parity (`export`), signed bundles (`bundles`), the report's
common keys (`reports`) and task recipe sections (`sections`). Import from the modules."""
