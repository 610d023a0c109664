"""The development credentials of one local cloud, made on first start and kept in its store.

They are random per state directory (not well-known constants) so that a test which passes
with the right secret and fails with a wrong one really exercises the checks, and so that two
state directories never accept each other's tokens or signatures.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass

from ..store import Store

STORAGE_ACCOUNT = "localcloudstore"  # never devstoreaccount1: azure-storage-file refuses that name


@dataclass(frozen=True)
class Credentials:
    tenant: str
    client_id: str
    client_secret: str
    subscription_id: str
    storage_account: str
    storage_key: str  # base64, as Azure storage keys are
    token_signing_key: bytes  # HMAC key for the bearer tokens the AAD endpoint issues


def ensure_credentials(store: Store) -> Credentials:
    """Load this state directory's credentials, making any that are missing."""
    return Credentials(
        tenant=store.setting("tenant", lambda: str(uuid.uuid4())),
        client_id=store.setting("client_id", lambda: str(uuid.uuid4())),
        client_secret=store.setting("client_secret", lambda: secrets.token_urlsafe(32)),
        subscription_id=store.setting("subscription_id", lambda: str(uuid.uuid4())),
        storage_account=store.setting("storage_account", lambda: STORAGE_ACCOUNT),
        storage_key=store.setting(
            "storage_key", lambda: base64.b64encode(secrets.token_bytes(64)).decode("ascii")
        ),
        token_signing_key=base64.b64decode(
            store.setting(
                "token_signing_key",
                lambda: base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
            )
        ),
    )
