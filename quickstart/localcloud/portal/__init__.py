"""The local cloud's portal: clusters, jobs, live logs, learning curves and every API call, as
web pages at ``/portal`` of the same HTTPS server (what the Azure portal's blades were to Batch
AI users, for a cloud that lives on this machine).

``install(cloud)`` plugs it in as a surface; ``login_url(state_dir)`` is the one-time login link
of the local cloud serving from ``state_dir`` (what the CLI prints).
"""

from .app import install
from .login import login_url

__all__ = ["install", "login_url"]
