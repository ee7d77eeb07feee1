"""A 3-node RabbitMQ cluster and a Redis with a replica and three Sentinels, on this
machine, for the fault tests of the clustered setup (tests/faults/test_cluster_faults.py).

Each node is a process of its own, with its own node name, ports and data folder
under the test's temporary folder, and its own Erlang cookie (so the machine's own
RabbitMQ, on its own name and ports, is never touched). Everything started is
stopped, and the folders go with the test's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(count: int, low: int = 20000, high: int = 30000, step: int = 1) -> list[int]:
    """`count` free ports from `low` up, `step` apart, each with its partners (+20000
    for a node's Erlang distribution, +30000 for the CLI's) free too: below 35536,
    so those partners are valid ports."""
    ports: list[int] = []
    port = low + (os.getpid() * 7) % 1000 * 5
    while len(ports) < count:
        if port >= high:
            port = low
        if all(_port_free(p) for p in (port, port + 20000)):
            ports.append(port)
        port += step
    return ports


def rabbitmq_available() -> str | None:
    """Why a RabbitMQ cluster cannot be started here, or None."""
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        return "RabbitMQ's server is not installed (Debian's rabbitmq-server)"
    return None


@dataclass
class RabbitNode:
    name: str  # Erlang node name: name@host
    port: int  # AMQP
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.folder / "pid"


@dataclass
class RabbitCluster:
    """Three RabbitMQ nodes clustered together, each on 127.0.0.1 and its own port."""

    folder: Path
    size: int = 3
    nodes: list[RabbitNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().split(".")[0]
        run = uuid.uuid4().hex[:6]
        self.home = self.folder / "home"  # the cookie the nodes and the CLI share
        self.home.mkdir(exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o400)
        ports = free_ports(self.size)
        for index, port in enumerate(ports):
            name = f"llmtest{run}{'abcdefgh'[index]}@{host}"
            self.nodes.append(RabbitNode(name, port, self.folder / name.split("@")[0]))

    def _env(self, node: RabbitNode) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.port),
            "RABBITMQ_DIST_PORT": str(node.port + 20000),
            "RABBITMQ_MNESIA_BASE": str(node.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.folder / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(node.folder / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.folder / "advanced.config"),
            "RABBITMQ_PID_FILE": str(node.pid_file),
            "RABBITMQ_CONF_ENV_FILE": str(node.folder / "rabbitmq-env.conf"),
        }

    def ctl(self, node: RabbitNode, *args: str, tool: str = "rabbitmqctl", timeout: float = 60) -> str:
        """Run a RabbitMQ CLI tool against `node`; its output."""
        done = subprocess.run(
            [str(RABBIT_BIN / tool), "-n", node.name, *args],
            env=self._env(node),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} on {node.name}: {done.stdout}{done.stderr}")
        return done.stdout

    def _launch(self, node: RabbitNode) -> None:
        node.folder.mkdir(parents=True, exist_ok=True)
        (node.folder / "enabled_plugins").write_text("[].\n")
        (node.folder / "rabbitmq-env.conf").write_text("")
        # Guest may connect from 127.0.0.1 (its only address here); a lost node is
        # noticed by its peers within a few seconds.
        (node.folder / "rabbitmq.conf").write_text("loopback_users = none\n")
        (node.folder / "advanced.config").write_text("[{kernel, [{net_ticktime, 10}]}].\n")
        log = open(node.folder / "server.out", "ab")  # noqa: SIM115 - the process's, closed with it
        node.process = subprocess.Popen(
            [str(RABBIT_BIN / "rabbitmq-server")], env=self._env(node), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def _await(self, node: RabbitNode, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.ctl(node, "await_startup", "--timeout", "30")
                return
            except (RuntimeError, subprocess.TimeoutExpired):
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"RabbitMQ node {node.name} exited: {self.log_tail(node)}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"RabbitMQ node {node.name} did not start: {self.log_tail(node)}") from None
                time.sleep(1)

    def log_tail(self, node: RabbitNode) -> str:
        out = node.folder / "server.out"
        return out.read_text(errors="replace")[-2000:] if out.exists() else ""

    def start(self) -> RabbitCluster:
        for node in self.nodes:
            self._launch(node)
        for node in self.nodes:
            self._await(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        return self

    @property
    def hosts(self) -> str:
        """RABBIT_MQ_HOST for a gateway of this cluster: every node."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def running(self) -> list[RabbitNode]:
        return [node for node in self.nodes if node.process is not None and node.process.poll() is None]

    def leader_of(self, queue: str) -> RabbitNode:
        """The node that leads the quorum queue `queue` now."""
        asked = self.running()[0]
        rows = json.loads(self.ctl(asked, "list_queues", "name", "leader", "--formatter", "json", "-q"))
        leaders = {row["name"]: row["leader"] for row in rows}
        if queue not in leaders:
            raise RuntimeError(f"no queue {queue}: {sorted(leaders)}")
        return next(node for node in self.nodes if node.name == leaders[queue])

    def kill(self, node: RabbitNode) -> None:
        """SIGKILL the node's Erlang VM, as a host that dies."""
        pid = int(node.pid_file.read_text().strip())
        os.kill(pid, signal.SIGKILL)
        if node.process is not None:
            node.process.wait(30)

    def stop(self) -> None:
        """Stop every node still running, and forget the cluster's data."""
        for node in self.running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.ctl(node, "stop", timeout=60)
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                if node.pid_file.exists():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(node.pid_file.read_text().strip()), signal.SIGKILL)
                node.process.kill()
                node.process.wait(10)
        for node in self.nodes:
            shutil.rmtree(node.folder / "mnesia", ignore_errors=True)


@dataclass
class SentinelRedis:
    """A Redis master, one replica and three Sentinels watching them, on free ports."""

    folder: Path
    master_name: str = "mymaster"
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.ports = free_ports(5, low=21000, high=29000, step=3)
        self.server_ports = {"a": self.ports[0], "b": self.ports[1]}
        self.sentinel_ports = self.ports[2:]

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - the process's, closed with it
        self.processes[name] = subprocess.Popen([self.binary, *args], stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def _await(self, port: int) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                self._client(port).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Redis on port {port} did not start") from None
                time.sleep(0.05)

    def start(self) -> SentinelRedis:
        a, b = self.server_ports["a"], self.server_ports["b"]
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._spawn("a", [*common, "--port", str(a), "--dir", str(self.folder)])
        self._await(a)
        self._spawn("b", [*common, "--port", str(b), "--dir", str(self.folder), "--replicaof", "127.0.0.1", str(a)])
        self._await(b)
        for index, port in enumerate(self.sentinel_ports):
            conf = self.folder / f"sentinel{index}.conf"  # a Sentinel rewrites its own file
            conf.write_text(
                f"bind 127.0.0.1\nport {port}\ndir {self.folder}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {a} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} 1000\n"
                f"sentinel failover-timeout {self.master_name} 5000\n"
                f"sentinel parallel-syncs {self.master_name} 1\n"
            )
            self._spawn(f"sentinel{index}", [str(conf), "--sentinel"])
            self._await(port)
        # Ready once the replica is in sync and every Sentinel knows the others.
        deadline = time.monotonic() + 30
        while True:
            info = self._client(a).info("replication")
            sentinels = [self._client(p).sentinel_master(self.master_name) for p in self.sentinel_ports]
            if info.get("connected_slaves") == 1 and all(int(s["num-other-sentinels"]) == 2 for s in sentinels):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"Sentinels not ready: {info} {sentinels}")
            time.sleep(0.2)

    @property
    def sentinels(self) -> str:
        """REDIS_SENTINELS for a gateway of these Sentinels."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def master_port(self) -> int:
        """The master's port, as the Sentinels say."""
        _, port = self._client(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(self.master_name)
        return int(port)

    def master(self) -> redis.Redis:
        return self._client(self.master_port())

    def kill_master(self) -> int:
        """SIGKILL the master, as a host that dies; the port it had."""
        port = self.master_port()
        name = next(name for name, p in self.server_ports.items() if p == port)
        self.processes[name].kill()
        self.processes[name].wait(10)
        return port

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)
