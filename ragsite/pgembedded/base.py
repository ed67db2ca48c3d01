"""Postgres backend that starts the embedded server before connecting.

It is the project's Postgres backend (ragsite.postgres: django-prometheus's, with a health check
that costs no round trip) plus one step: resolve the socket folder of the embedded server
(starting it when it is not running) just before each new connection, so a restarted or stopped
server is brought back by the next connection attempt, with the server settings sized for the
machine (``OPTIONS["embedded_server_settings"]``, ragsite/pgtuning.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragsite import embedded_db
from ragsite.postgres import base


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        options = self.settings_dict["OPTIONS"]
        data_dir = Path(options.get("embedded_data_dir", ""))
        self.settings_dict["HOST"] = embedded_db.socket_dir(data_dir, options.get("embedded_server_settings"))
        params = super().get_connection_params()
        params.pop("embedded_data_dir", None)
        params.pop("embedded_server_settings", None)
        return params
