"""Which filesystem a store lies on, read from a mount table, and the refusals that follow:
SQLite on a network filesystem, a journal whose lock other nodes would not see."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.errors import ConfigError
from search.store import open_storage
from search.store.filesystems import (
    MOUNTINFO_ENV,
    local_only_flock,
    mount_of,
    parse_mountinfo,
    refuse_local_only_flock,
    refuse_unsafe_sharing,
)

REAL = Path("/proc/self/mountinfo")


def _table(tmp_path: Path, *mounts: tuple[str, str, str]) -> Path:
    """A mountinfo file: ``/`` on ext4, then (point, type, super options) as given."""
    lines = ["22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw"]
    for i, (point, fstype, options) in enumerate(mounts):
        point_text = point.replace(" ", "\\040")
        lines.append(
            f"{30 + i} 22 0:{50 + i} / {point_text} rw,relatime - {fstype} srv:/x {options}"
        )
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_deepest_mount_holding_a_path_is_found(tmp_path, monkeypatch):
    shared = tmp_path / "shared space"
    (shared / "lab").mkdir(parents=True)
    table = _table(
        tmp_path,
        (str(tmp_path), "tmpfs", "rw"),
        (str(shared), "nfs4", "rw,vers=4.2,hard"),
        (str(shared / "lab"), "lustre", "rw,flock"),
    )
    monkeypatch.setenv(MOUNTINFO_ENV, str(table))
    assert mount_of(shared / "a" / "not-yet" / "mlflow.db").fstype == "nfs4"  # spaces, missing
    assert mount_of(shared / "lab" / "x").fstype == "lustre"
    assert mount_of(tmp_path / "shared").fstype == "tmpfs"  # a prefix, not a parent
    assert mount_of("/etc").fstype == "ext4"


def test_the_real_mount_table_is_read():
    if not REAL.exists():
        pytest.skip("no /proc/self/mountinfo: not Linux")
    mounts = parse_mountinfo(REAL.read_text())
    assert any(m.point == "/" for m in mounts)
    assert mount_of(Path.cwd()) is not None


@pytest.mark.parametrize(
    "fstype, options, problem",
    [
        ("nfs4", "rw,vers=4.2", None),
        ("nfs", "rw,vers=3,nolock", "nolock"),
        ("nfs4", "rw,local_lock=flock", "local_lock=flock"),
        ("lustre", "rw,flock", None),
        ("lustre", "rw,localflock", "localflock"),
        ("lustre", "rw", "without -o flock"),
        ("gpfs", "rw", None),
    ],
)
def test_which_mounts_lock_the_journal_across_nodes(tmp_path, fstype, options, problem):
    (mount,) = parse_mountinfo(_table(tmp_path, ("/shared", fstype, options)).read_text())[1:]
    found = local_only_flock(mount)
    assert (found is None) if problem is None else (problem in found)


def test_sqlite_on_nfs_is_refused_for_shared_use_only(tmp_path, monkeypatch):
    monkeypatch.setenv(MOUNTINFO_ENV, str(_table(tmp_path, (str(tmp_path), "nfs4", "rw"))))
    database = tmp_path / "db" / "optuna.db"
    url = f"sqlite:///{database}"
    with pytest.raises(ConfigError) as err:
        refuse_unsafe_sharing("s", url, across_nodes=False, tracking=False)
    text = str(err.value)
    assert text.startswith(f"--storage = '{url}': SQLite on a network filesystem (nfs4")
    assert "journal" in text and "postgresql" in text and "\n" not in text
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI .* MLflow server"):
        refuse_unsafe_sharing("s", None, across_nodes=False)
    # one process alone may use SQLite on its NFS home: opening the storage is not refused
    database.parent.mkdir()
    open_storage("s", url)
    assert database.exists()


def test_a_journal_on_a_node_local_lock_is_refused_across_nodes_only(tmp_path, monkeypatch):
    table = _table(tmp_path, (str(tmp_path), "lustre", "rw,localflock"))
    monkeypatch.setenv(MOUNTINFO_ENV, str(table))
    with pytest.raises(ConfigError, match="Lustre mounted localflock"):
        refuse_local_only_flock(tmp_path / "mlruns" / "s.journal")
    with pytest.raises(ConfigError, match="journal = .*other nodes"):
        refuse_unsafe_sharing("s", None, across_nodes=True, tracking=False)
    refuse_unsafe_sharing("s", None, across_nodes=False, tracking=False)  # one node: fine
