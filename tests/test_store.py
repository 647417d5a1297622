"""The store: write-through, reload, encryption at rest, key rotation, pruning."""

import os
import stat

import pytest
from cryptography.fernet import Fernet

from jupyterhub_dask_gateway.models import Cluster, JobStatus, Worker
from jupyterhub_dask_gateway.store import Store, load_or_create_key_file


def cluster(name="c1"):
    return Cluster(
        name=name,
        username="alice",
        token="secret-token-" + name,
        tls_cert="CERT-" + name,
        tls_key="KEY-" + name,
        options={"a": 1},
        config={"worker_cores": 1},
        start_time=1000,
    )


def test_round_trip_and_encryption(tmp_path):
    url = f"sqlite:///{tmp_path}/db.sqlite"
    key = Fernet.generate_key()
    store = Store(url, [key])
    c = cluster()
    store.add_cluster(c)
    w = Worker(name="w1", cluster_name="c1", start_time=5)
    store.add_worker(w)
    c.status = JobStatus.RUNNING
    c.shared_groups = ["team"]
    store.update_cluster(c)
    w.status = JobStatus.RUNNING
    store.update_worker(w)
    store.close()

    raw = open(tmp_path / "db.sqlite", "rb").read()
    wal = tmp_path / "db.sqlite-wal"
    if wal.exists():
        raw += wal.read_bytes()
    assert b"secret-token-c1" not in raw and b"KEY-c1" not in raw

    loaded = Store(url, [key]).load()["c1"]
    assert loaded.token == "secret-token-c1" and loaded.tls_key == "KEY-c1"
    assert loaded.status == JobStatus.RUNNING and loaded.shared_groups == ["team"]
    assert loaded.workers["w1"].status == JobStatus.RUNNING


def test_key_rotation_and_wrong_key(tmp_path):
    url = f"sqlite:///{tmp_path}/db.sqlite"
    old, new = Fernet.generate_key(), Fernet.generate_key()
    Store(url, [old]).add_cluster(cluster())
    assert Store(url, [new, old]).load()["c1"].token == "secret-token-c1"
    with pytest.raises(RuntimeError, match="encryption keys"):
        Store(url, [new]).load()


def test_key_file_is_created_once_0600(tmp_path):
    path = tmp_path / "key"
    keys = load_or_create_key_file(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key_file(str(path)) == keys


def test_prune_old_stopped_clusters(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/db.sqlite", [Fernet.generate_key()])
    old, recent, active = cluster("old"), cluster("recent"), cluster("active")
    old.stop_time, recent.stop_time = 1_000, 99_000
    for c in (old, recent, active):
        store.add_cluster(c)
    store.add_worker(Worker(name="w", cluster_name="old"))
    assert store.prune(max_age_s=10, now_ms=100_000) == ["old"]
    assert set(store.load()) == {"recent", "active"}
