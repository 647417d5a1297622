"""The wheel carries the service, the server extension and the prebuilt panel (no node needed)."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILT = REPO / "jupyter_server_ext" / "labextension" / "package.json"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if not BUILT.exists():
        pytest.skip("the lab extension is not built (run scripts/setup.sh)")
    out = tmp_path_factory.mktemp("wheel")
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
            str(REPO),
        ],
        check=True,
        timeout=300,
    )
    (path,) = out.glob("jupyterhub_dask_gateway-*.whl")
    return path


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    data = [n for n in names if ".data/data/" in n]
    prefix = "share/jupyter/labextensions/jupyterhub-dask-gateway/"
    assert any(n.endswith(prefix + "package.json") for n in data)
    assert any(n.endswith(prefix + "install.json") for n in data)
    assert any(prefix + "static/" in n for n in data)
    assert any(
        n.endswith("etc/jupyter/jupyter_server_config.d/jupyterhub_dask_gateway.json") for n in data
    )
    assert any(n.startswith("jupyterhub_dask_gateway/proxy/tcp.py") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "jupyterhub-dask-gateway = jupyterhub_dask_gateway.app:main" in text


def test_installed_wheel_enables_both_extensions(wheel, tmp_path):
    """Install into a fresh venv (no node on PATH) and ask Jupyter what it sees."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # The dependencies come from the test environment (itself a venv, so
    # --system-site-packages would not reach them); a bare path entry, so its own .pth
    # files (this checkout's editable install) stay out.
    site_dir = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site_dir, "test-dependencies.pth").write_text(
        "\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n"
    )
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"  # the venv first, and no node needed
    env["HOME"] = str(tmp_path)
    labs = subprocess.run(
        [str(py), "-m", "jupyterlab.labextensions", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", labs.stdout + labs.stderr)
    line = next(ln for ln in text.splitlines() if "jupyterhub-dask-gateway" in ln)
    assert str(venv) in text and "enabled" in line and "OK" in line
    servers = subprocess.run(
        [str(py), "-m", "jupyter_server", "extension", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", servers.stdout + servers.stderr)
    assert "jupyter_server_ext enabled" in text
    assert any("jupyter_server_ext" in ln and "OK" in ln for ln in text.splitlines())
