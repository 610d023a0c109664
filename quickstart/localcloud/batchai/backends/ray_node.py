"""What runs on a Ray node for the local cloud: one Batch AI node of one job (or one node's
setup task) as a detached Ray actor that keeps the node agent as its child.

Standard library only, and sent to the Ray cluster by value with the node agent's own source,
so a Ray node needs Python with Ray (and what the job itself imports), not this package.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import threading


class NodeAgentActor:
    """Starts ``nodeagent.py run-attached`` with a job's spec for one node and keeps it.

    The agent runs as this actor's child, started from a thread that lives as long as it does
    (the kernel's parent-death signal follows the starting thread), so when the actor's
    process ends, with its Ray node or by ``ray.kill``, the agent gets SIGTERM, stops the
    node's processes and records that the node was lost."""

    def __init__(self):
        self.process = None
        self.agent = None
        self.record_dir = None
        self._started = threading.Event()
        self._failure = None

    def start(self, agent_source: str, spec_json: str, record_dir: str) -> dict:
        """Start the node agent; returns once it runs: its pid and this node's address."""
        folder = tempfile.mkdtemp(prefix="batchai-node-agent-")
        path = os.path.join(folder, "nodeagent.py")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(agent_source)
        spec = importlib.util.spec_from_file_location("batchai_node_agent", path)
        self.agent = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = self.agent  # its dataclasses look their module up there
        spec.loader.exec_module(self.agent)
        self.record_dir = record_dir
        threading.Thread(
            target=self._keep, args=(path, spec_json), daemon=True, name="node-agent"
        ).start()
        self._started.wait(60)
        if self.process is None:
            raise OSError(f"the node agent did not start on this Ray node: {self._failure}")
        import ray  # the actor runs in a Ray worker

        return {
            "pid": self.process.pid,
            "address": ray.util.get_node_ip_address(),
            "ray_node": ray.get_runtime_context().get_node_id(),
        }

    def _keep(self, path: str, spec_json: str) -> None:
        # Ray limits its workers' OpenMP threads to their CPU share (one, for this actor); a
        # Batch AI job saw all of its node's cores, so the job is started without that limit.
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", path, "run-attached"],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError as err:
            self._failure = err
            self._started.set()
            return
        self._started.set()
        try:
            self.process.communicate(spec_json.encode("utf-8"))
        except OSError:
            pass
        self.process.wait()

    def poll(self):
        """None while the node agent runs, else its exit status."""
        return None if self.process is None else self.process.poll()

    def stop(self, grace: float) -> None:
        """SIGTERM to the node agent's whole session, SIGKILL after ``grace`` seconds."""
        if self.process is None or self.agent is None:
            return
        pid = self.process.pid
        handle = self.agent.JobHandle(
            pid, self.agent._start_ticks(pid) or 0, self.agent._boot_id(), self.record_dir
        )
        self.agent.terminate(handle, grace=grace)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def sees(folders: list, marker: str | None) -> dict:
    """Which of ``folders`` this Ray node cannot see (a share folder missing, or a marker the
    server wrote that is not there: the same path, but not the same filesystem). The node is
    named by its address and its Ray node ID: several Ray nodes may share one address (one host,
    or pods behind one IP), and the ID is what ``ray list nodes`` shows."""
    import ray

    missing = [f for f in folders if not os.path.isdir(f)]
    if marker and not os.path.exists(marker):
        missing.append(os.path.dirname(marker))
    node = f"{ray.util.get_node_ip_address()} (Ray node {ray.get_runtime_context().get_node_id()})"
    return {"node": node, "missing": missing}
