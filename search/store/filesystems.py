"""Is a store's path safe for several writers? The filesystem under a path, read from the
kernel's mount table, and the two rules that follow from it on a cluster:

- SQLite on a network filesystem (NFS, Lustre, GPFS, BeeGFS, CIFS, ...) corrupts under
  concurrent writers: its locks are advisory byte-range locks that these filesystems
  implement partly, per node, or not at all (sqlite.org/faq.html#q5). Refused there.
- The journal file is locked with ``flock``, which is cluster-wide on NFSv4, on NFSv3 with
  its lock manager, on GPFS and on Lustre mounted with ``-o flock``, but node-local on an
  NFS mount with ``nolock``/``local_lock=flock`` and on Lustre without ``flock``: refused
  on such mounts, since two nodes would both hold "the" lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from search.errors import ConfigError
from search.store.locations import journal_path, sqlite_file, tracking_uri

# The mount table to read; tests point it at a made-up one to stand for a cluster's mounts.
MOUNTINFO_ENV = "CIFAR_SEARCH_MOUNTINFO"
MOUNTINFO = Path("/proc/self/mountinfo")

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "lustre",
        "gpfs",
        "beegfs",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "fuse.ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "fuse.juicefs",
        "ocfs2",
        "gfs2",
        "panfs",
        "wekafs",
        "afs",
        "9p",
    }
)
SAFE_STORAGES = "the default journal file (no --storage), postgresql://, or SQLite on a local disk"
SAFE_TRACKING = (
    "an MLflow server (MLFLOW_TRACKING_URI=http://HOST:PORT; `cli.py slurm` starts one), "
    "a postgresql:// URI, or SQLite on a local disk"
)


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str
    options: frozenset[str]  # per-mount and per-superblock options together

    @property
    def network(self) -> bool:
        return self.fstype in NETWORK_FILESYSTEMS


def mount_of(path: str | os.PathLike) -> Mount | None:
    """The mount holding ``path`` (or its nearest existing parent); None if unknown."""
    table = Path(os.environ.get(MOUNTINFO_ENV) or MOUNTINFO)
    try:
        mounts = parse_mountinfo(table.read_text())
    except OSError:  # not Linux: nothing to tell
        return None
    target = _existing(Path(path))
    best = None
    # the deepest mount point holding the path (of mounts stacked on one point, the later
    # line); mountinfo lists mounts by id, not in mount order, so no more is read from order
    for mount in mounts:
        point = mount.point.rstrip("/") or "/"
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.point.rstrip("/") or "/")):
            best = mount
    return best


def parse_mountinfo(text: str) -> list[Mount]:
    """``/proc/self/mountinfo`` lines: ``id parent dev root POINT OPTS [tags] - TYPE SRC SOPTS``."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) < dash + 3:
            continue
        point = _unescape(fields[4])
        options = fields[5].split(",") + (
            fields[dash + 3].split(",") if len(fields) > dash + 3 else []
        )
        mounts.append(Mount(point, fields[dash + 1], frozenset(options)))
    return mounts


def _unescape(text: str) -> str:
    """The kernel writes space, tab, newline and backslash in mount points as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def _existing(path: Path) -> str:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.path.realpath(path)


def refuse_sqlite_on_network(database: Path, key: str, value: str, choices: str) -> None:
    """A one-line ConfigError when the SQLite ``database`` lies on a network filesystem."""
    mount = mount_of(database)
    if mount is not None and mount.network:
        raise ConfigError(
            f"SQLite on a network filesystem ({mount.fstype} at {mount.point}) corrupts "
            f"under several writers; use {choices}",
            key=key,
            value=value,
        )


def refuse_local_only_flock(journal: Path) -> None:
    """A one-line ConfigError when ``flock`` on the journal's mount is not cluster-wide."""
    mount = mount_of(journal)
    problem = None if mount is None else local_only_flock(mount)
    if problem:
        raise ConfigError(
            f"the journal's lock would not be seen by other nodes: {problem}; remount, "
            "or use --storage postgresql://...",
            key="journal",
            value=str(journal),
        )


def local_only_flock(mount: Mount) -> str | None:
    """Why ``flock`` on this mount locks on one node only, or None when it is cluster-wide."""
    options = mount.options
    if mount.fstype in ("nfs", "nfs4"):
        if "nolock" in options:
            return f"{mount.point} is NFS mounted with nolock"
        for local in ("local_lock=flock", "local_lock=all"):
            if local in options:
                return f"{mount.point} is NFS mounted with {local}"
    if mount.fstype == "lustre" and "flock" not in options:
        how = "localflock" if "localflock" in options else "without -o flock"
        return f"{mount.point} is Lustre mounted {how}"
    return None


def refuse_unsafe_sharing(
    study_name: str, storage_url: str | None, *, across_nodes: bool, tracking: bool = True
) -> None:
    """Before several workers share a study's stores: a one-line ConfigError for SQLite
    (the Optuna storage, or with ``tracking`` the MLflow store) on a network filesystem,
    and, ``across_nodes`` (a SLURM array), for a journal whose lock is node-local. One
    process alone, or workers on one node sharing a journal, are fine as they are."""
    if storage_url is None:
        if across_nodes:
            refuse_local_only_flock(journal_path(study_name))
    elif (database := sqlite_file(storage_url)) is not None:
        refuse_sqlite_on_network(database, "--storage", storage_url, SAFE_STORAGES)
    uri = tracking_uri()
    if tracking and (database := sqlite_file(uri)) is not None:
        refuse_sqlite_on_network(database, "MLFLOW_TRACKING_URI", uri, SAFE_TRACKING)
