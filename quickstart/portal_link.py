"""Where to watch a run in the local cloud's portal (the link `run` prints once)."""


def announce_portal(settings):
    """Print the portal's one-time login link once the cluster is ready (local cloud only)."""
    if not settings.is_local:
        return
    from quickstart.localcloud.portal import login_url

    url = login_url(settings.state_dir, settings.resource_manager_url)
    if url:
        print(f"Cluster ready; watch it at {url}", flush=True)
