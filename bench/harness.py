"""Shared parts of the benchmarks: the two gateways as processes, statistics, reports.

``run.py`` and ``slurm.py`` start this project's gateway (its CLI) and
dask-gateway-server 2026.3 (its CLI, from a virtualenv this module creates under
``bench/.venv-reference`` with pip) side by side, drive both with the same
unmodified ``dask-gateway`` client, and write markdown sections into
``docs/performance.md``. Every process a benchmark starts lives in one scratch
directory (as its working directory or on its command line), so cleanup finds
and kills exactly those processes by pid, and nothing else.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DOC = ROOT / "docs" / "performance.md"
REFERENCE_VENV = BENCH_DIR / ".venv-reference"
REFERENCE_VERSION = "2026.3.0"
PASSWORD = "bench-password"
OURS = "ours"
REF = "reference"


# --- small utilities --------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Fatal(RuntimeError):
    """An error that ends a :func:`wait_for` at once (e.g. the awaited process died)."""


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll ``predicate`` until it returns something truthy; raise after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Fatal:
            raise
        except Exception as exc:  # noqa: BLE001 - reported if we time out
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what} (last error: {last})")


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def settle(max_wait: float = 6.0, threshold: float = 35.0) -> float:
    """Wait (at most ``max_wait`` s) until the machine's CPU use drops below ``threshold`` %.

    Background work of the previous step (a warm interpreter importing distributed,
    a scheduler shutting down) would otherwise be billed to the next measurement,
    whichever server it belongs to. Returns the last CPU reading.
    """
    deadline = time.monotonic() + max_wait
    busy = psutil.cpu_percent(interval=0.25)
    while busy > threshold and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=0.25)
    return busy


def rss(pids) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total


def processes_in(directory: str) -> list[psutil.Process]:
    """Processes working in ``directory`` or naming it on their command line."""
    found = []
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cwd", "cmdline"]):
        if p.info["pid"] == me:
            continue
        cwd = p.info["cwd"] or ""
        cmd = " ".join(p.info["cmdline"] or [])
        if cwd.startswith(directory) or directory in cmd:
            found.append(p)
    return found


def kill_processes(procs) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def quiet_gateway_finalizers() -> None:
    """Drop the dask-gateway client's noise from ``Gateway.__del__`` after ``close()``.

    ``Gateway.__del__`` closes again and asks a stopped loop runner for its loop
    (RuntimeError "Accessing the loop property while the loop is not running"); the
    gateway was already closed, so nothing is lost. Other unraisable errors still print.
    """
    default = sys.unraisablehook

    def hook(unraisable):
        obj = getattr(unraisable, "object", None)
        if getattr(obj, "__qualname__", "") == "Gateway.__del__" and isinstance(
            unraisable.exc_value, RuntimeError
        ):
            return
        default(unraisable)

    sys.unraisablehook = hook


def mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"


# --- the reference server's virtualenv ---------------------------------------------------


def reference_python() -> Path:
    return REFERENCE_VENV / "bin" / "python"


def reference_proxy_binary() -> Path:
    return next(
        REFERENCE_VENV.glob(
            "lib/python*/site-packages/dask_gateway_server/proxy/dask-gateway-proxy"
        )
    )


def ensure_reference() -> Path:
    """Create ``bench/.venv-reference`` with dask-gateway-server 2026.3.0 (pip, PyPI).

    dask and distributed are pinned to the versions of this environment, so both
    gateways run identical schedulers and workers. The wheel's Go proxy binary is
    checked by running it. Returns the virtualenv's python.
    """
    py = reference_python()
    pins = {
        "dask-gateway-server": REFERENCE_VERSION,
        "dask-gateway": REFERENCE_VERSION,
        "dask": importlib.metadata.version("dask"),
        "distributed": importlib.metadata.version("distributed"),
    }
    # The [local,jobqueue] extras bring SQLAlchemy, which the DB-backed backends need.
    requirements = [f"dask-gateway-server[local,jobqueue]=={REFERENCE_VERSION}"]
    requirements += [f"{k}=={v}" for k, v in pins.items() if k != "dask-gateway-server"]
    probe = (
        "import importlib.metadata as m, json, sqlalchemy; "
        f"print(json.dumps({{n: m.version(n) for n in {list(pins)!r}}}))"
    )
    installed = None
    if py.exists():
        out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
        if out.returncode == 0:
            installed = json.loads(out.stdout)
    if installed != pins:
        log(f"installing the reference into {REFERENCE_VENV}: {' '.join(requirements)}")
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(REFERENCE_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", *requirements], check=True)
    proxy = reference_proxy_binary()
    out = subprocess.run([str(proxy), "-help"], capture_output=True, text=True)
    if "-tcp-address" not in out.stderr + out.stdout:
        raise RuntimeError(f"the reference's Go proxy {proxy} does not run: {out.stderr[-500:]}")
    return py


# --- the servers ----------------------------------------------------------------------------


class Server:
    """A gateway run from its CLI in ``directory``; subclasses know the config dialect."""

    label = ""

    def __init__(self, directory: Path, extra_config: str = ""):
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.api_port = free_port()
        self.public_port = free_port()
        self.extra_config = extra_config
        self.config_path = directory / "config.py"
        self.log_path = directory / "server.log"
        self.proc: subprocess.Popen | None = None

    # public, client-facing addresses (the proxy serves both the API and schedulers)
    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def api_address(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def proxy_address(self) -> str:
        return f"gateway://127.0.0.1:{self.public_port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return dict(os.environ)

    def launch(self) -> None:
        """Start the server process without waiting for it (a supervisor's restart)."""
        self.config_path.write_text(self.config())
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=self.env(),
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise Fatal(f"{self.label} exited: {self.log_tail()}")
            return port_open(self.api_port) and port_open(self.public_port) and self.healthy()

        wait_for(ready, timeout, f"{self.label} to listen")

    def start(self, timeout: float = 60) -> Server:
        self.launch()
        self.wait_ready(timeout)
        return self

    def healthy(self) -> bool:
        return True

    def kill(self) -> None:
        """SIGKILL the gateway process only (not its proxy, not its clusters)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def terminate(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def cleanup(self) -> None:
        self.terminate()
        kill_processes(processes_in(str(self.directory)))

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def gateway(self, user: str = "alice", **kwargs):
        from dask_gateway import BasicAuth, Gateway

        return Gateway(
            self.address,
            proxy_address=self.proxy_address,
            auth=BasicAuth(user, PASSWORD),
            **kwargs,
        )

    def service_pids(self) -> dict[str, list[int]]:
        """``{"gateway": [...], "proxy": [...], "other": [...]}`` of the idle server."""
        raise NotImplementedError

    def cluster_pids(self, name: str) -> list[int]:
        """Scheduler and worker processes of one cluster (found by their working directory)."""
        workdir = str(self.clusters_dir() / name)
        pids = set()
        for p in psutil.process_iter(["pid", "cwd"]):
            if (p.info["cwd"] or "").startswith(workdir):
                pids.add(p.info["pid"])
        return sorted(pids)

    def clusters_dir(self) -> Path:
        raise NotImplementedError

    def config(self) -> str:
        raise NotImplementedError


class OurGateway(Server):
    """This project's gateway: ``jupyterhub-dask-gateway --config FILE``."""

    label = OURS

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    def clusters_dir(self) -> Path:
        return self.state_dir / "clusters"

    def command(self):
        exe = Path(sys.executable).with_name("jupyterhub-dask-gateway")
        return [str(exe), "--config", str(self.config_path)]

    def config(self) -> str:
        return textwrap.dedent(f"""
            c.DaskGateway.address = "127.0.0.1:{self.api_port}"
            c.DaskGateway.proxy_address = "127.0.0.1:{self.public_port}"
            c.DaskGateway.state_dir = {str(self.state_dir)!r}
            c.DaskGateway.authenticator_class = "basic"
            c.BasicAuthenticator.password = {PASSWORD!r}
            c.ClusterConfig.worker_memory = "1 G"
            c.ClusterConfig.scheduler_memory = "1 G"
            c.LocalBackend.sigint_timeout = 3
        """) + textwrap.dedent(self.extra_config)

    def proxy_pid(self) -> int | None:
        try:
            return int((self.state_dir / "proxy.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def healthy(self) -> bool:
        return self.proxy_pid() is not None

    def service_pids(self):
        gateway = [self.proc.pid]
        proxy = [p for p in [self.proxy_pid()] if p]
        warm = [
            c.pid
            for c in psutil.Process(self.proc.pid).children()
            if "jupyterhub_dask_gateway.backends.warm" in " ".join(c.cmdline())
        ]
        return {"gateway": gateway, "proxy": proxy, "warm pool": warm}


class ReferenceGateway(Server):
    """dask-gateway-server 2026.3.0 from ``bench/.venv-reference``, its Go proxy included."""

    label = REF

    def __init__(self, directory: Path, extra_config: str = "", backend: str = ""):
        super().__init__(directory, extra_config)
        self.backend = backend or "dask_gateway_server.backends.local.UnsafeLocalBackend"
        from cryptography.fernet import Fernet

        key_file = directory / "encrypt.key"
        if not key_file.exists():
            key_file.write_bytes(Fernet.generate_key())
        self.encrypt_key = key_file.read_text().strip()

    def clusters_dir(self) -> Path:
        return self.directory / "clusters"

    def command(self):
        exe = REFERENCE_VENV / "bin" / "dask-gateway-server"
        return [str(exe), "--config", str(self.config_path)]

    def env(self):
        env = dict(os.environ)
        env["DASK_GATEWAY_ENCRYPT_KEYS"] = self.encrypt_key
        env["PATH"] = f"{REFERENCE_VENV / 'bin'}:{env.get('PATH', '')}"
        env.pop("VIRTUAL_ENV", None)
        return env

    def config(self) -> str:
        py = reference_python()
        return textwrap.dedent(f"""
            c.DaskGateway.address = "127.0.0.1:{self.api_port}"
            c.Proxy.address = "127.0.0.1:{self.public_port}"
            c.Proxy.tcp_address = "127.0.0.1:{self.public_port}"
            c.DaskGateway.backend_class = {self.backend!r}
            c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
            c.SimpleAuthenticator.password = {PASSWORD!r}
            c.DBBackendBase.db_url = "sqlite:///{self.directory / "gateway.sqlite"}"
            c.DBBackendBase.stop_clusters_on_shutdown = False
            c.LocalBackend.clusters_directory = {str(self.clusters_dir())!r}
            c.LocalBackend.sigint_timeout = 3
            c.ClusterConfig.scheduler_cmd = [{str(py)!r}, "-m", "distributed.cli.dask_scheduler"]
            c.ClusterConfig.worker_cmd = [{str(py)!r}, "-m", "distributed.cli.dask_worker"]
            c.ClusterConfig.worker_memory = "1 G"
            c.ClusterConfig.scheduler_memory = "1 G"
        """) + textwrap.dedent(self.extra_config)

    def healthy(self) -> bool:
        # The Go proxy answers once it has the gateway's route table.
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(f"{self.address}/api/health", timeout=1).close()
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def service_pids(self):
        gateway = [self.proc.pid]
        proxy = [
            c.pid
            for c in psutil.Process(self.proc.pid).children()
            if "dask-gateway-proxy" in c.name()
        ]
        return {"gateway": gateway, "proxy": proxy, "warm pool": []}


# --- reports ----------------------------------------------------------------------------------


def machine_description() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    versions = ", ".join(
        f"{n} {importlib.metadata.version(n)}"
        for n in ("dask-gateway", "distributed", "tornado", "aiohttp")
    )
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem:.1f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; {versions}; reference "
        f"dask-gateway-server {REFERENCE_VERSION} (Go proxy from its wheel)"
    )


def load_note(start: tuple, end: tuple) -> str:
    return (
        f"load average at start {start[0]:.2f}/{start[1]:.2f}/{start[2]:.2f}, "
        f"at end {end[0]:.2f}/{end[1]:.2f}/{end[2]:.2f} (1/5/15 min)"
    )


def report(command: str, how: str, elapsed: float, load_start, table: str, notes=()) -> str:
    """The text a script prints and writes into docs/performance.md: what ran, where, the table."""
    return "\n".join(
        [
            f"Command: `{command}` ({how}; took {elapsed:.0f} s; "
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}).",
            "",
            f"Machine: {machine_description()}.",
            f"Load: {load_note(load_start, os.getloadavg())}.",
            "",
            table,
        ]
        + ([""] + [f"- {n}" for n in notes] if notes else [])
    )


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_section(name: str, body: str) -> None:
    """Replace the text between ``<!-- bench:NAME -->`` markers in docs/performance.md."""
    begin, end = f"<!-- bench:{name} begin -->", f"<!-- bench:{name} end -->"
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


BENCH_USER = "alice"


def prepare_accounts(scratch: Path) -> None:
    """As root our gateway runs each user's clusters as their own account (the default):
    the benchmark's user needs one, and must be able to pass through the scratch dir."""
    import pwd

    if os.geteuid() != 0:
        raise SystemExit("run the benchmark as root: clusters run as the users' own accounts")
    try:
        pwd.getpwnam(BENCH_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", BENCH_USER], check=True)
    scratch.chmod(0o711)


def time_start_and_scale(server, user: str, workers: int, samples: dict, errors: list) -> None:
    """One run: ``new_cluster()`` until RUNNING into ``samples[("start", label)]``, then
    ``scale(workers)`` until they joined into ``samples[("workers", label)]``; failures
    into ``errors``. The cluster is shut down either way."""
    with server.gateway(user=user) as gw:
        t0 = time.perf_counter()
        try:
            cluster = gw.new_cluster()
        except Exception as exc:  # noqa: BLE001 - the error is the result
            errors.append(f"{server.label}: new_cluster() failed: {exc}")
            return
        samples.setdefault(("start", server.label), []).append(time.perf_counter() - t0)
        try:
            client = cluster.get_client(set_as_default=False)
            t0 = time.perf_counter()
            cluster.scale(workers)
            client.wait_for_workers(workers, timeout=120)
            samples.setdefault(("workers", server.label), []).append(time.perf_counter() - t0)
            client.close()
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{server.label}: {workers} worker(s) failed: {exc}")
        finally:
            cluster.shutdown()
