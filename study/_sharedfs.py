"""Whether a local path lies on a file system that every node of a cluster can see."""

from __future__ import annotations

import os

__all__ = ["SHARED_FILESYSTEMS", "on_shared_filesystem"]

#: File-system types (``/proc/mounts``) on which every node sees the same files.
SHARED_FILESYSTEMS = frozenset(
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
        "9p",
        "afs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.juicefs",
        "fuse.ceph",
        "fuse.beegfs",
    }
)


def on_shared_filesystem(path: str, mounts_file: str = "/proc/mounts") -> bool:
    """Whether ``path`` lies on a network file system (Linux ``/proc/mounts``).

    Args:
        path: A local path (need not exist yet).
        mounts_file: The mount table to read (a test passes its own).

    Returns:
        True when the deepest mount point holding ``path`` has a shared type;
        False also when the mount table cannot be read.
    """
    try:
        with open(mounts_file, encoding="utf-8") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return False
    real = os.path.realpath(path)
    best, fstype = "", ""
    for point, kind in mounts:
        point = point.replace("\\040", " ")  # /proc/mounts escapes spaces
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, fstype = point, kind
    return fstype in SHARED_FILESYSTEMS or fstype.startswith("nfs")
