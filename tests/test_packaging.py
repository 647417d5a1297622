"""The wheel carries the service, the server extension and the prebuilt panel (no node needed).

The server extension is the module ``jupyterhub_dask_gateway.server_extension``; wheels up to
``PREVIOUS_LAYOUT`` installed it as a top-level ``jupyter_server_ext``, and an upgrade from
one of those must leave nothing of that name behind, importable or enabled.
"""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILT = REPO / "jupyterhub_dask_gateway" / "server_extension" / "labextension"
EXTENSION = "jupyterhub_dask_gateway.server_extension"
OLD_EXTENSION = "jupyter_server_ext"
# The last commit whose wheel installed the server extension as OLD_EXTENSION.
PREVIOUS_LAYOUT = "a8940e8"
SERVER_CONFIG = "etc/jupyter/jupyter_server_config.d/jupyterhub_dask_gateway.json"


def build_wheel(source: Path, out: Path) -> Path:
    """``pip wheel`` of ``source`` into ``out``, with this environment's build backend."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    (path,) = out.glob("jupyterhub_dask_gateway-*.whl")
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if not (BUILT / "package.json").exists():
        pytest.skip("the lab extension is not built (run scripts/setup.sh)")
    return build_wheel(REPO, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def previous_wheel(tmp_path_factory):
    """A wheel of the layout before the rename (top-level ``jupyter_server_ext``), v0.0.1.

    Built from ``git archive PREVIOUS_LAYOUT`` (the working tree is left alone), with this
    checkout's built panel copied in so no node is needed; its version is set below the
    current one so that installing the current wheel over it is an upgrade.
    """
    if not (BUILT / "package.json").exists():
        pytest.skip("the lab extension is not built (run scripts/setup.sh)")
    # what its wheel is built from
    paths = [OLD_EXTENSION, "jupyterhub_dask_gateway", "labextension/install.json"]
    paths += ["pyproject.toml", "README.md", ".gitignore", "package.json"]
    if not shutil.which("git"):
        pytest.skip("no git to read the previous layout from")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=zip", PREVIOUS_LAYOUT, *paths],
        capture_output=True,
        timeout=60,
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {PREVIOUS_LAYOUT} is not in this clone: {archive.stderr.decode()}")
    source = tmp_path_factory.mktemp("previous-layout")
    zipfile.ZipFile(io.BytesIO(archive.stdout)).extractall(source)
    shutil.copytree(BUILT, source / OLD_EXTENSION / "labextension")
    (source / "jupyterhub_dask_gateway" / "_version.py").write_text('__version__ = "0.0.1"\n')
    return build_wheel(source, tmp_path_factory.mktemp("previous-wheel"))


class Venv:
    """A fresh virtual environment for installing wheels into, as a user would.

    The dependencies come from the test environment (itself a venv, so
    --system-site-packages would not reach them) as bare path entries, so its .pth files
    (this checkout's editable install) stay out.
    """

    def __init__(self, path: Path, home: Path):
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
        self.path = path
        self.python = str(path / "bin" / "python")
        self.home = home
        self.site_packages = Path(
            self.run("-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
        )
        (self.site_packages / "test-dependencies.pth").write_text(
            "\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n"
        )

    def run(self, *args, check=True) -> str:
        """``python ARGS`` in this environment (no node on PATH); its output, colours removed."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
        env["PATH"] = f"{self.path / 'bin'}:/usr/bin:/bin"
        env["HOME"] = str(self.home)
        done = subprocess.run(
            [self.python, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=self.home,
        )
        if check and done.returncode:
            raise AssertionError(f"{args} failed: {done.stdout}{done.stderr}")
        return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)

    def install(self, wheel: Path) -> str:
        return self.run(
            "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", str(wheel)
        )

    def server_extensions(self) -> dict[str, str]:
        """``jupyter server extension list``: {import name: 'enabled OK', 'disabled', ...}."""
        text = self.run("-m", "jupyter_server", "extension", "list")
        found = {}
        for line in text.splitlines():
            words = line.split()
            if len(words) == 2 and words[1] in ("enabled", "disabled"):
                found[words[0]] = words[1]
            elif len(words) == 3 and words[0] in found and words[2] in ("OK", "ok"):
                found[words[0]] += " OK"
        return found

    def importable(self, module: str) -> bool:
        spec = (
            "import importlib.util, sys; print(importlib.util.find_spec(sys.argv[1]) is not None)"
        )
        return self.run("-c", spec, module).strip() == "True"


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert len(names) == len(set(names))
    data = [n for n in names if ".data/data/" in n]
    prefix = "share/jupyter/labextensions/jupyterhub-dask-gateway/"
    assert any(n.endswith(prefix + "package.json") for n in data)
    assert any(n.endswith(prefix + "install.json") for n in data)
    assert any(prefix + "static/" in n for n in data)
    assert any(n.endswith(SERVER_CONFIG) for n in data)
    assert any(n.startswith("jupyterhub_dask_gateway/proxy/tcp.py") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "jupyterhub-dask-gateway = jupyterhub_dask_gateway.app:main" in text


def test_server_extension_lives_in_the_package(wheel):
    """One top-level package; the panel and the config.d file only as shared data, once."""
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith((".data", ".dist-info"))} == {
        "jupyterhub_dask_gateway"
    }
    assert not any(n.startswith(f"{OLD_EXTENSION}/") for n in names)
    module = EXTENSION.replace(".", "/")
    for file in ("__init__.py", "app.py", "gateway.py", "handlers.py"):
        assert f"{module}/{file}" in names
    assert not any(n.startswith((f"{module}/labextension/", f"{module}/etc/")) for n in names)
    for built in BUILT.rglob("*"):
        if built.is_file():
            copies = [n for n in names if n.endswith("/" + built.relative_to(BUILT).as_posix())]
            assert len(copies) == 1, copies
    (config,) = [n for n in names if n.endswith(SERVER_CONFIG)]
    assert json.loads(zipfile.ZipFile(wheel).read(config)) == {
        "ServerApp": {"jpserver_extensions": {EXTENSION: True}}
    }


def test_installed_wheel_enables_both_extensions(wheel, tmp_path):
    """Install into a fresh venv (no node on PATH) and ask Jupyter what it sees."""
    venv = Venv(tmp_path / "venv", home=tmp_path)
    venv.install(wheel)
    text = venv.run("-m", "jupyterlab.labextensions", "list", check=False)
    line = next(ln for ln in text.splitlines() if "jupyterhub-dask-gateway" in ln)
    assert str(venv.path) in text and "enabled" in line and "OK" in line
    extensions = venv.server_extensions()
    assert extensions[EXTENSION] == "enabled OK"
    assert OLD_EXTENSION not in extensions
    assert not venv.importable(OLD_EXTENSION)


def test_upgrade_leaves_no_old_extension(previous_wheel, wheel, tmp_path):
    """The previous layout's wheel, then this one over it: only the new name is left."""
    venv = Venv(tmp_path / "venv", home=tmp_path)
    venv.install(previous_wheel)
    # the starting point really is the old layout, enabled
    assert venv.server_extensions().get(OLD_EXTENSION) == "enabled OK"
    assert venv.importable(OLD_EXTENSION)

    output = venv.install(wheel)
    assert "Successfully uninstalled jupyterhub-dask-gateway-0.0.1" in output, output
    extensions = venv.server_extensions()
    assert extensions[EXTENSION] == "enabled OK"
    assert OLD_EXTENSION not in extensions
    assert not venv.importable(OLD_EXTENSION)
    assert not (venv.site_packages / OLD_EXTENSION).exists()
    config = json.loads((venv.path / SERVER_CONFIG).read_text())
    assert config == {"ServerApp": {"jpserver_extensions": {EXTENSION: True}}}
