"""Azure Files, path-style, as azure-storage-file 2.1.0 uses it: a surface of the local cloud.

Split by concern: routing (which operation a request is), authentication (SharedKey and SAS),
the handlers (what each operation does to the share), and names (Azure's rules for share and
path names and how they compare).
"""

from .routes import install

__all__ = ["install"]
