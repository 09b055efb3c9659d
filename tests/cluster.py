"""A real multi-node Ray cluster on this machine for tests: ``ray start --block``.

Every node is a ``ray start ... --block`` process in a session of its own, on
127.0.0.1 only. A node is stopped by its pid (SIGTERM ends ``ray start
--block`` and the processes it started); a "lost" node is simulated by
SIGKILLing its raylet. Nothing here calls ``ray stop`` (it would end every Ray
on the machine, the test session's own included).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
ENV = {
    **os.environ,
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray Job entrypoints (`python -m ensemble …`) find this venv's python first.
    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
}


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port not handed out before in this process.

    The OS may offer a just-released port again; two Ray components given the
    same port make `ray start` fail ("used by other components").
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def session_pids(sid: int) -> list[int]:
    """Pids of the processes in session ``sid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 of stat: session id
            out.append(int(entry.name))
    return out


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class LocalCluster:
    """Head plus worker nodes of ``cpus`` CPUs each, all on 127.0.0.1."""

    def __init__(
        self,
        log_dir: Path,
        *,
        dashboard: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = {**ENV, **(env or {})}
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dashboard_port = free_port() if dashboard else None
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.dashboard = dashboard

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, args: list[str]) -> None:
        log = open(self.log_dir / f"node{len(self.nodes)}.log", "wb")
        # Ports with fixed defaults (the dashboard agent's HTTP port is 52365)
        # would clash with the test session's own Ray and with other clusters:
        # a clashing agent disables its HTTP server and Ray Jobs then answer
        # "No available agent to submit job".
        ports = [
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
        proc = subprocess.Popen(
            [RAY, "start", *args, *ports, "--block", "--disable-usage-stats"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        self.nodes.append(proc)

    def start_head(self, cpus: int = 1, object_store_mb: int = 200) -> None:
        args = [
            "--head",
            f"--port={self.port}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}",
            "--num-gpus=0",
            f"--object-store-memory={object_store_mb * 1024**2}",
            f"--ray-client-server-port={free_port()}",
            f"--temp-dir={self.log_dir / 'ray'}",
        ]
        if self.dashboard:
            args += [
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
            ]
        else:
            args += ["--include-dashboard=false"]
        self._start(args)
        self.wait_nodes(1)

    def add_worker(self, cpus: int = 1, object_store_mb: int = 200) -> None:
        self._start(
            [
                f"--address={self.address}",
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={cpus}",
                "--num-gpus=0",
                f"--object-store-memory={object_store_mb * 1024**2}",
            ]
        )
        self.wait_nodes(len(self.nodes))

    def alive_nodes(self) -> int:
        code = (
            "import ray,sys;ray.init(address=sys.argv[1],logging_level='ERROR');"
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        try:
            res = subprocess.run(
                [sys.executable, "-c", code, self.address],
                capture_output=True,
                text=True,
                env=self.env,
                timeout=45,
            )
        except subprocess.TimeoutExpired:
            # a driver can hang on a GCS that is still starting (seen with
            # token authentication on a loaded machine): not up yet, ask again
            return 0
        try:
            return int(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    def wait_nodes(self, n: int, timeout: float = 150) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(p.poll() is not None for p in self.nodes):
                raise RuntimeError(f"a ray node exited; see {self.log_dir}")
            if self.alive_nodes() >= n:
                return
            time.sleep(1)
        raise TimeoutError(
            f"{n} ray nodes not up after {timeout} s; see {self.log_dir}"
        )

    def kill_worker_raylet(self, index: int = 1) -> int:
        """SIGKILL the raylet of node ``index``: the node is lost mid-run."""
        sid = self.nodes[index].pid
        for pid in session_pids(sid):
            if "/raylet " in command_line(pid) or command_line(pid).endswith("/raylet"):
                os.kill(pid, signal.SIGKILL)
                return pid
        raise RuntimeError("raylet of the worker node not found")

    def stop(self) -> None:
        """Stop every node by pid: SIGTERM, then SIGKILL what is left."""
        for proc in reversed(self.nodes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.nodes):
            try:
                proc.wait(timeout=3)  # a node whose raylet was killed hangs
            except subprocess.TimeoutExpired:
                proc.kill()
        for proc in self.nodes:
            for pid in session_pids(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.nodes.clear()
