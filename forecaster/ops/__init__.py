"""The operator tools: MQTT feeds of real data, the live view, the fleet, the nowcast client, the
demo and the retraining scheduler. Import the module you need (each pulls in what it uses):

- `mqtt`: the one MQTT client of these tools (bounded inbox, acknowledged waits, FeedError).
- `feeds`, `macro_feed`: market bars and macro releases from real data, and the paced replayer.
- `watch`: the live forecast board; `fleet`: statuses, bundle publishing, rollback.
- `nowcast`: the GDP nowcast request/response client.
- `demo`: everything on one machine.
- `schedule`, `promote`, `settings`: retrain on cron, publish only what is better, its TOML.
- `cli`: the commands that call them.
"""

from __future__ import annotations

__all__: list[str] = []
