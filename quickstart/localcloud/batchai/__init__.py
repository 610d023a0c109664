"""Microsoft.BatchAI 2018-05-01: a surface of the local cloud.

``routes`` answers the REST API, ``schema`` checks request bodies and draws response bodies,
``scheduler`` moves clusters, nodes and the job queue on, and ``nodeagent`` runs one job's
processes on this host.
"""

from .routes import install

__all__ = ["install"]
