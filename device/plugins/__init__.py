"""Agent plugins: handler sets the agent runs beside its bar handler, written against
`device.agent.host.Host`. `device/cli.py` wires `DEFAULT_PLUGINS`; a new plugin goes in its own
module here and into that tuple.

- `deploy`: signed bundles and rollbacks on `fleet/<agent>/deploy`.
- `nowcast`: the GDP nowcast (`macro/<series>` in, `nowcast/gdp/<region>` out, requests answered).
"""

from __future__ import annotations

from device.agent.host import PluginFactory
from device.plugins.deploy import Deployer, deploy_plugin
from device.plugins.nowcast import NowcastService, nowcast_plugin

__all__ = ["DEFAULT_PLUGINS", "Deployer", "NowcastService", "deploy_plugin", "nowcast_plugin"]

# Nowcast first: the deployer accepts bundles of the tasks the installed plugins serve, which it
# asks the host for at each deploy (so the order does not matter for that, only for the routes).
DEFAULT_PLUGINS: tuple[PluginFactory, ...] = (nowcast_plugin, deploy_plugin)
