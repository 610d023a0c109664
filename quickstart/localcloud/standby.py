"""Take over serving a state directory when the command that served it ends.

A command that finds a local cloud already serving its state directory (``status --follow``
in a second terminal while ``run`` owns the cloud) uses that one. If the owner ends first, the
borrower would be left talking to a closed port. ``Standby`` waits in the background for the
owner's state-directory lock to come free, then starts a cloud of its own on the same state
directory, which reuses the owner's port, certificate and token key (``LocalCloud`` does that
on every restart), so the borrower's clients carry on with the same URLs and tokens.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .server import LocalCloud, LocalCloudError

POLL_SECONDS = 0.1
log = logging.getLogger("quickstart.localcloud")


class Standby:
    """``with Standby(state_dir, on_take_over): ...``: serve ``state_dir`` if its owner stops.

    ``on_take_over(cloud)`` is called once, from the standby thread, after this process has
    started serving. Leaving the block stops the standby and any cloud it started.
    """

    def __init__(self, state_dir: str | Path, on_take_over=None):
        self.state_dir = Path(state_dir)
        self.on_take_over = on_take_over
        self.cloud: LocalCloud | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._wait_for_owner, name="local-cloud-standby", daemon=True
        )

    def __enter__(self) -> Standby:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._thread.join()
        if self.cloud is not None:
            self.cloud.stop()

    def _wait_for_owner(self) -> None:
        while not self._stopping.wait(POLL_SECONDS):
            cloud = LocalCloud(self.state_dir)
            try:
                cloud.start()  # fails at once while the owner holds the state directory's lock
            except LocalCloudError:
                continue
            except Exception:  # anything else will not mend by trying again: the command goes on
                log.debug(
                    "could not take over the local cloud in %s", self.state_dir, exc_info=True
                )
                return
            if self._stopping.is_set():  # the command ended while this one was starting
                cloud.stop()
                return
            self.cloud = cloud
            if self.on_take_over is not None:
                self.on_take_over(cloud)
            return
