"""The local cloud: Azure (AAD, ARM, Microsoft.BatchAI, Azure Files) emulated on 127.0.0.1.

    from quickstart.localcloud import LocalCloud
    with LocalCloud(".localcloud") as cloud:
        print(cloud.connection["resource_manager_url"])

See server.py for the server and the extension API, connection.py for connection.json, and
standby.py for taking over a state directory when the command that served it ends.
"""

from .connection import CONNECTION_FILE, DEFAULT_STATE_DIR, azure_cloud, is_serving, read_connection
from .server import LocalCloud, LocalCloudError, serve_forever
from .standby import Standby

__all__ = [
    "LocalCloud",
    "LocalCloudError",
    "serve_forever",
    "Standby",
    "CONNECTION_FILE",
    "DEFAULT_STATE_DIR",
    "read_connection",
    "azure_cloud",
    "is_serving",
]
