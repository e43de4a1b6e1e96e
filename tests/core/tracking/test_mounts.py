"""A SQLite store on a network file system gets one line of warning (a fake mounts table)."""

from tune_jobs.core.tracking.mounts import filesystem_of, network_store_warning

MOUNTS = """\
/dev/nvme0n1p1 / ext4 rw,relatime 0 0
fs-1.efs.us-west-2.amazonaws.com:/ /shared nfs4 rw,hard 0 0
10.0.0.5@tcp:/lfs /lustre lustre rw 0 0
//nas/team /mnt/my\\040nas cifs rw 0 0
tmpfs /shared/scratch tmpfs rw 0 0
"""


def test_the_deepest_mount_point_decides(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    assert filesystem_of("/shared/mlflow/mlflow.db", mounts) == "nfs4"
    assert filesystem_of("/shared/scratch/mlflow.db", mounts) == "tmpfs"
    assert filesystem_of("/sharedfoo/mlflow.db", mounts) == "ext4"
    assert filesystem_of("/mnt/my nas/m.db", mounts) == "cifs"
    assert filesystem_of("/x", tmp_path / "absent") is None


def test_sqlite_on_nfs_or_lustre_warns_in_one_line_and_nothing_else_does(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    for uri, kind in (("sqlite:////shared/mlflow/mlflow.db", "nfs4"), ("sqlite:////lustre/u/mlflow.db", "lustre")):
        line = network_store_warning(uri, mounts)
        assert line.startswith(
            f"warning: the SQLite store {uri[len('sqlite:///') :]} is on a network file system ({kind})"
        )
        assert "\n" not in line
    for uri in ("sqlite:////home/me/mlflow.db", "sqlite:////shared/scratch/m.db", "http://10.0.0.10:5000"):
        assert network_store_warning(uri, mounts) is None
