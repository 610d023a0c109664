"""Who may do what on Azure Blob: SharedKey (the account key) or a container or blob SAS.

SharedKey is signed exactly as for Files (azure-storage-common signs both), so Files' check is
used as is. A Blob service SAS differs only in its string to sign
(``azure.storage.blob.sharedaccesssignature._BlobSharedAccessHelper``)::

    sp st se /blob/<account>/<container>[/<blob>] si sip spr sv [sr snapshot]
    rscc rscd rsce rscl rsct

one value per line, ``sr`` and ``snapshot`` only from sv=2018-11-09 on (older versions, such as
the 2016-05-31 of Batch AI's links, omit them). ``sr=c`` signs a container, ``sr=b`` one blob.
The rest (signature, time window, protocol, IP, permission) is Files' ``check_signed``.
"""

from __future__ import annotations

import time

from werkzeug.wrappers import Request

from ..files.auth import check_shared_key
from ..files.responses import StorageError
from ..files.sas import OVERRIDE_HEADERS, SasError, SasGrant, check_signed, signed_resource

SAS_RESOURCE_FIELDS_SINCE = "2018-11-09"


def blob_string_to_sign(params: dict, account: str, container: str, blob: str | None) -> str:
    """The string a Blob service SAS signs, for the version it names (``sv``)."""
    get = lambda key: params.get(key) or ""  # noqa: E731
    resource = f"/blob/{account}/{container}" + (f"/{blob}" if blob else "")
    fields = [get("sp"), get("st"), get("se"), resource, get("si"), get("sip"), get("spr")]
    fields.append(get("sv"))
    if get("sv") >= SAS_RESOURCE_FIELDS_SINCE:
        fields += [get("sr"), get("snapshot")]
    return "\n".join(fields + [get(key) for key in OVERRIDE_HEADERS])


def authenticate(
    request: Request,
    account: str,
    key: str,
    container: str,
    blob: str | None,
    operation: str,
    sas_allowed: bool = True,
) -> SasGrant | None:
    """Check the request's SAS or SharedKey; the SAS grant, or None for SharedKey.
    Raises StorageError (401/403) with the Blob service's code when it does not hold."""
    if "sig" not in request.args:
        check_shared_key(request, account, key)
        return None
    if not sas_allowed:
        raise StorageError(
            403,
            "AuthorizationResourceTypeMismatch",
            "A service SAS cannot list, create or delete containers; use the account key "
            "(SharedKey).",
        )
    params = request.args.to_dict()
    try:
        resource = signed_resource(params, ("b", "blob"), ("c", "container"), bool(blob))
        signed = blob_string_to_sign(params, account, container, blob if resource == "b" else None)
        return check_signed(params, signed, key, operation, request.remote_addr or "", time.time())
    except SasError as err:
        raise StorageError(403, err.code, err.message) from None
