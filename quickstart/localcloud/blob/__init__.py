"""Azure Blob, path-style, as azure-storage-blob 2.1.0 uses it: a surface of the local cloud.

The subset the Batch AI recipes use: containers, block blobs (single-shot and Put Block / Put
Block List), ranged reads, properties, metadata, listings. Same account, key and strictness as
Azure Files, whose SharedKey, SAS checks, names and error answers it shares. Split by concern:
routing (routes.py), authentication (auth.py: the Blob SAS string), containers, what a stored
blob is (stored.py), writing blobs (uploads.py) and their pending blocks (blocks.py), reading,
properties and deleting (blobs.py), listing, names, and the check that sends a request for the
other service to the right endpoint (crossed.py).
"""


def install(cloud) -> None:
    """Serve Azure Blob for the cloud's storage account (see server.py's extension API)."""
    from .routes import BlobRoutes

    cloud.blob_handler = BlobRoutes(cloud).handle


__all__ = ["install"]
