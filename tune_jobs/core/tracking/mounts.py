"""Which file system a path sits on, from the kernel's mounts table: a SQLite store must not be
written over a network file system, whose locks SQLite cannot rely on (its own documentation
says so; MLflow and Optuna users report "database is locked" and corrupted stores there)."""

from __future__ import annotations

import os
from pathlib import Path

# Types as /proc/mounts names them: NFS (EFS too), SMB, the parallel file systems of clusters,
# and FUSE mounts of the same kinds.
NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ceph",
        "glusterfs",
        "afs",
        "panfs",
        "wekafs",
        "9p",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.ceph",
        "fuse.beegfs",
        "fuse.juicefs",
        "fuse.gcsfuse",
        "fuse.s3fs",
    }
)


def _unescape(field: str) -> str:
    """/proc/mounts writes a space as \\040, a tab as \\011, a backslash as \\134."""
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def filesystem_of(path: str | os.PathLike, mounts: str = "/proc/mounts") -> str | None:
    """The type of the file system that holds `path` (the deepest mount point above it), or
    None when the mounts table cannot be read."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    target = Path(path).expanduser().resolve()
    best, kind = -1, None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(_unescape(fields[1]))
        if (target == point or point in target.parents) and len(point.parts) > best:
            best, kind = len(point.parts), fields[2]
    return kind


def network_store_warning(uri: str, mounts: str = "/proc/mounts") -> str | None:
    """One line when `uri` is a SQLite file on a network file system, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    kind = filesystem_of(db.parent if not db.is_dir() else db, mounts)
    if kind is None or kind not in NETWORK_FS:
        return None
    return (
        f"warning: the SQLite store {db} is on a network file system ({kind}), where SQLite's locks are "
        "unreliable; keep it on a local disk, or use a tracking server on PostgreSQL (python -m tune_jobs.mlflow_server)"
    )
