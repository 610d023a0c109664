"""connection.json: how any script finds and authenticates to a local cloud.

The local cloud writes it into its state directory each time it starts. It holds the endpoints,
the development credentials and the CA certificate to trust, so a script connects exactly as
the quickstart does::

    conn = read_connection(".localcloud")
    cloud = azure_cloud(conn)
    creds = ServicePrincipalCredentials(conn["client_id"], conn["client_secret"],
                                        tenant=conn["tenant"], cloud_environment=cloud,
                                        verify=conn["ca_cert"])
    rm = ResourceManagementClient(creds, conn["subscription_id"],
                                  base_url=conn["resource_manager_url"])
    rm.config.connection.verify = conn["ca_cert"]
    files = FileService(connection_string=conn["storage_connection_string"],
                        request_session=requests_session(conn))   # verify=ca_cert, trust_env off
    blobs = BlockBlobService(connection_string=conn["storage_connection_string"],
                             request_session=requests_session(conn))  # BlobEndpoint=

This module is imported by clients, so it needs neither the server nor its store.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from pathlib import Path
from urllib.parse import urlsplit

CONNECTION_FILE = "connection.json"
DEFAULT_STATE_DIR = ".localcloud"
HEALTH_PATH = "/_localcloud/health"
# Azure tells Files and Blob apart by host name (<account>.file./.blob.core...); on one host and
# port the Blob endpoint is a path of its own, so a request can never reach the other service.
BLOB_PATH_PREFIX = "blob"

CONNECTION_KEYS = (
    "resource_manager_url",
    "active_directory_url",
    "active_directory_resource_id",
    "tenant",
    "client_id",
    "client_secret",
    "subscription_id",
    "storage_account",
    "storage_key",
    "storage_connection_string",
    "ca_cert",
)


class ConnectionFileError(Exception):
    """connection.json exists but cannot be used (the message says why and what to do)."""


def build_connection(
    *,
    base_url: str,
    tenant: str,
    client_id: str,
    client_secret: str,
    subscription_id: str,
    storage_account: str,
    storage_key: str,
    ca_cert: str | os.PathLike,
) -> dict:
    """The connection dictionary for a local cloud serving at ``base_url`` (no trailing slash)."""
    file_endpoint = f"{base_url}/{storage_account}"
    blob_endpoint = f"{base_url}/{BLOB_PATH_PREFIX}/{storage_account}"
    return {
        "resource_manager_url": base_url + "/",
        "active_directory_url": base_url + "/adfs",
        "active_directory_resource_id": base_url + "/",
        "tenant": tenant,
        "client_id": client_id,
        "client_secret": client_secret,
        "subscription_id": subscription_id,
        "storage_account": storage_account,
        "storage_key": storage_key,
        "storage_connection_string": (
            f"DefaultEndpointsProtocol=https;AccountName={storage_account};"
            f"AccountKey={storage_key};FileEndpoint={file_endpoint};BlobEndpoint={blob_endpoint}"
        ),
        "ca_cert": str(Path(ca_cert).resolve()),
    }


def write_connection(state_dir: str | os.PathLike, connection: dict) -> Path:
    """Write connection.json atomically, readable by its owner only (it holds secrets)."""
    path = Path(state_dir) / CONNECTION_FILE
    temp = path.with_name(CONNECTION_FILE + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(connection, out, indent=2)
        out.write("\n")
    os.replace(temp, path)
    return path


def read_connection(state_dir: str | os.PathLike = DEFAULT_STATE_DIR) -> dict | None:
    """The connection.json of ``state_dir``; None if there is none yet.

    Raises ConnectionFileError if the file is unreadable or lacks keys.
    """
    path = Path(state_dir) / CONNECTION_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConnectionFileError(f"cannot read {path}: {err.strerror}") from None
    try:
        connection = json.loads(text)
    except ValueError:
        raise ConnectionFileError(
            f"{path} is not valid JSON; delete it and start the local cloud again"
        ) from None
    missing = [
        key for key in CONNECTION_KEYS if not isinstance(connection, dict) or key not in connection
    ]
    if missing:
        raise ConnectionFileError(
            f"{path} lacks {', '.join(missing)}; delete it and start the local cloud again"
        )
    return connection


def azure_cloud(connection: dict):
    """An ``msrestazure.azure_cloud.Cloud`` for the local cloud, as one is made for Azure Stack."""
    from msrestazure.azure_cloud import Cloud, CloudEndpoints, CloudSuffixes

    host = urlsplit(connection["resource_manager_url"]).netloc
    return Cloud(
        "LocalCloud",
        endpoints=CloudEndpoints(
            management=connection["resource_manager_url"],
            resource_manager=connection["resource_manager_url"],
            active_directory=connection["active_directory_url"],
            active_directory_resource_id=connection["active_directory_resource_id"],
        ),
        suffixes=CloudSuffixes(storage_endpoint=host),
    )


def requests_session(connection: dict):
    """A requests Session that trusts the local cloud's CA, and reads whole answers in large
    pieces (``quickstart.http_sessions``: 1.3-2 times the storage SDK's download rate).

    ``trust_env`` is off because requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a
    session's ``verify`` (and proxy variables would route 127.0.0.1 elsewhere); pass this session
    as ``FileService(..., request_session=...)``.
    """
    from quickstart.http_sessions import whole_body_session

    session = whole_body_session()
    session.verify = connection["ca_cert"]
    session.trust_env = False
    return session


def is_serving(connection: dict | None, timeout: float = 2.0) -> bool:
    """True if the local cloud described by ``connection`` answers 200 on its health URL
    (TLS verified against its CA, and the answer comes from that same cloud)."""
    if not connection:
        return False
    url = urlsplit(connection["resource_manager_url"])
    try:
        context = ssl.create_default_context(cafile=connection["ca_cert"])
    except (OSError, ssl.SSLError):
        return False
    conn = http.client.HTTPSConnection(
        url.hostname, url.port or 443, timeout=timeout, context=context
    )
    try:
        conn.request("GET", HEALTH_PATH)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return False
        health = json.loads(body)
        # the same port may now serve another state directory's cloud: check it is this one
        return health.get("subscription_id") == connection["subscription_id"]
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()
