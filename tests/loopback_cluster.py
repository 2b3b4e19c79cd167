"""A real multi-node Ray cluster on loopback: the harness of the Ray executor's tests and benchmark.

Test infrastructure, not part of the engine (it lived in pipeline/executors/ray.py before).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psutil

# ------------------------------------------------------------------------------ a cluster on one machine


class LoopbackCluster:
    """A real multi-node Ray cluster on this machine (a head and workers on 127.0.0.1), for tests and benchmarks.

    Each node is a `ray start --block` process in its own session, so `stop()` ends exactly the
    processes this object started (by process group), never another user's Ray.
    """

    def __init__(self, workers: int = 1, cpus_per_node: int = 1, object_store_mb: int = 256,
                 env: dict[str, str] | None = None, start_timeout_s: float = 90.0):
        import subprocess
        import sys
        import tempfile

        self.workers = workers
        self.temp_dir = tempfile.mkdtemp(prefix="cfray-", dir="/tmp")  # short: Ray's socket paths must fit
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._procs: list[subprocess.Popen] = []
        self._env = {**os.environ, **(env or {})}
        self._env.pop("RAY_ADDRESS", None)
        # Loopback only: token auth would need a token file shared by every node and driver.
        self._env.setdefault("RAY_AUTH_MODE", "disabled")
        ray_cli = str(Path(sys.executable).with_name("ray"))
        common = ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}", "--disable-usage-stats",
                  f"--object-store-memory={object_store_mb * 2**20}", "--dashboard-agent-listen-port=0", "--block"]
        try:
            self._start([ray_cli, "start", "--head", f"--port={self.port}", "--include-dashboard=false",
                         f"--temp-dir={self.temp_dir}", *common])
            _wait_for_port(self.port, start_timeout_s)
            for _ in range(workers):
                self._start([ray_cli, "start", f"--address={self.address}", *common])
            self._wait_for_nodes(workers + 1, start_timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, argv: list[str]) -> None:
        import subprocess

        log = open(Path(self.temp_dir) / f"node-{len(self._procs)}.log", "wb")
        self._procs.append(subprocess.Popen(argv, env=self._env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))

    def _wait_for_nodes(self, expected: int, timeout_s: float) -> None:
        import subprocess
        import sys

        script = (
            "import sys, time, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR', _node_ip_address='127.0.0.1')\n"
            f"deadline = time.monotonic() + {timeout_s}\n"
            f"while sum(n['Alive'] for n in ray.nodes()) < {expected}:\n"
            "    if time.monotonic() > deadline: sys.exit(1)\n"
            "    time.sleep(0.5)\n"
        )
        done = subprocess.run([sys.executable, "-c", script], env=self._env, capture_output=True,
                              timeout=timeout_s + 30)
        if done.returncode != 0:
            raise RuntimeError(f"the loopback Ray cluster did not come up: {done.stderr.decode()[-2000:]}")

    def stop(self) -> None:
        import subprocess

        import psutil

        # Ray's workers start their own sessions, so collect every descendant by pid before stopping.
        nodes: list[psutil.Process] = []
        started: list[psutil.Process] = []
        for proc in self._procs:
            with contextlib.suppress(psutil.Error):
                node = psutil.Process(proc.pid)
                nodes.append(node)
                started += [node, *node.children(recursive=True)]
        # Each `ray start --block` stops its own node's processes on SIGTERM, in about 2 s. Terminating every
        # process at once left the raylets and runtime-env agents of a dead GCS waiting for the kill 5 s later.
        for node in nodes:
            with contextlib.suppress(psutil.Error):
                node.terminate()
        for p in _still_running(started, timeout_s=5):
            with contextlib.suppress(psutil.Error):
                p.kill()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LoopbackCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _still_running(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """The processes of `procs` still running after up to `timeout_s`.

    A zombie counts as ended: a node's processes outlive their parent and are reparented to a PID 1 that may
    never reap them, so `psutil.wait_procs` would wait out its whole timeout on them.
    """
    import time

    import psutil

    def running() -> list[psutil.Process]:
        out = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
        return out

    deadline = time.monotonic() + timeout_s
    while (alive := running()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _free_port() -> int:
    # Ephemeral ports (32768+) never collide with Ray's default worker port range (10002-19999).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout_s: float) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the Ray head did not open port {port} within {timeout_s}s")
