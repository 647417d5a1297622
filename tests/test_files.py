"""Private-file writes: 0600 whatever the umask, never through a link, fresh or atomic."""

import os
import stat

import pytest

from jupyterhub_dask_gateway.files import write_private


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_mode_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        write_private(str(tmp_path / "a"), "secret")
        existing = tmp_path / "b"
        existing.write_text("old, and longer than the new content")
        existing.chmod(0o644)
        write_private(str(existing), b"new")
    finally:
        os.umask(old)
    assert (tmp_path / "a").read_text() == "secret" and mode(tmp_path / "a") == 0o600
    assert existing.read_bytes() == b"new" and mode(existing) == 0o600


@pytest.mark.parametrize("how", [{}, {"exclusive": True}])
def test_a_link_at_the_name_is_never_followed(tmp_path, how):
    target = tmp_path / "target"
    target.write_text("untouched")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OSError):
        write_private(str(link), "x", **how)
    assert target.read_text() == "untouched"


def test_replace_swaps_the_file_and_never_writes_through_a_link(tmp_path):
    target = tmp_path / "target"
    target.write_text("untouched")
    path = tmp_path / "env"
    path.symlink_to(target)
    write_private(str(path), "fresh", replace=True)
    assert not path.is_symlink() and path.read_text() == "fresh" and mode(path) == 0o600
    assert target.read_text() == "untouched"
    write_private(str(path), "again", replace=True, durable=True)
    assert path.read_text() == "again"
    assert sorted(os.listdir(tmp_path)) == ["env", "target"]  # no temporary file left


def test_exclusive_refuses_an_existing_file_and_cleans_up_a_failed_write(tmp_path):
    path = tmp_path / "key"
    write_private(str(path), "k1", exclusive=True, durable=True)
    with pytest.raises(FileExistsError):
        write_private(str(path), "k2", exclusive=True)
    assert path.read_text() == "k1"
    with pytest.raises(TypeError):
        write_private(str(tmp_path / "half"), 42, exclusive=True)
    assert not (tmp_path / "half").exists()


def test_owner_and_dir_fd(tmp_path, accounts):
    alice = accounts["alice"]
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_private("cert", "PEM", dir_fd=fd, exclusive=True, owner=(alice.pw_uid, alice.pw_gid))
    finally:
        os.close(fd)
    info = os.stat(tmp_path / "cert")
    assert (info.st_uid, info.st_gid) == (alice.pw_uid, alice.pw_gid)
    assert (tmp_path / "cert").read_text() == "PEM" and mode(tmp_path / "cert") == 0o600
