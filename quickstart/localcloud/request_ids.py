"""Request ids (``x-ms-request-id``, an error's RequestId, AAD's trace ids): UUID-shaped, unique,
never secret.

``uuid.uuid4`` asks the kernel for random bytes on every call; under many clients that system
call hands the interpreter lock to another thread and the request then waits to get it back. An
id only has to be unique, so they come from Python's generator, seeded once from the kernel (and
again in a forked child).
"""

from __future__ import annotations

import random
import uuid


def request_id() -> str:
    """A fresh version-4 UUID string for one answer."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))
