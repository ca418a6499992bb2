"""The launcher's pieces without a study run: storage, the study record, the Ray connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from study import StudyLaunchError, parse_study
from study._cluster import check_storage
from study._record import (
    choose_run_name,
    mark_ended,
    mark_resumed,
    read_record,
    read_study_config,
    start_record,
    update_record,
)
from study._sharedfs import on_shared_filesystem
from study._storage import exists, is_uri, join, parent, read_text, storage_root, write_text
from xsam_contract import STUDY_FIELDS, STUDY_FILES


def test_local_and_uri_paths(tmp_path: Path) -> None:
    assert is_uri("s3://b/x") and is_uri("memory://x") and not is_uri("/tmp/x")
    assert join("s3://b/studies/", "q") == "s3://b/studies/q" and parent("s3://b/s/q") == "s3://b/s"
    assert join(str(tmp_path), "q") == str(tmp_path / "q") and parent(str(tmp_path / "q")) == str(
        tmp_path
    )
    assert storage_root("s3://b/studies/") == "s3://b/studies"
    assert storage_root("~/studies") == os.path.expanduser("~/studies")


@pytest.mark.parametrize("kind", ["local", "uri"])
def test_write_then_read_text(tmp_path: Path, kind: str) -> None:
    root = str(tmp_path / "a" / "b") if kind == "local" else f"file://{tmp_path}/a/b"
    assert read_text(root, "x.txt") is None and not exists(join(root, "x.txt"))
    write_text(root, "x.txt", "first")
    write_text(root, "x.txt", "second é")
    assert read_text(root, "x.txt") == "second é" and exists(join(root, "x.txt"))
    # the local write leaves no temporary file behind
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["x.txt"]


def test_unusable_remote_storage(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    uri = f"file://{blocker}/studies"
    with pytest.raises(StudyLaunchError, match=f"^storage {uri}/tiny: "):
        write_text(f"{uri}/tiny", "study.json", "{}")


def test_default_name_is_dated_when_taken(tmp_path: Path) -> None:
    assert choose_run_name(str(tmp_path), None, "q") == "q"
    (tmp_path / "q").mkdir()
    dated = choose_run_name(str(tmp_path), None, "q")
    assert dated.startswith("q-") and len(dated) == len("q-20250101-120000")
    with pytest.raises(StudyLaunchError, match="exists already"):
        choose_run_name(str(tmp_path), "q", "other")


def test_record_lifecycle(base: dict[str, Any], tmp_path: Path) -> None:
    cfg = parse_study(base)
    study_dir = str(tmp_path / "tiny")
    start_record(
        cfg,
        run_name="tiny",
        root=str(tmp_path),
        study_dir=study_dir,
        num_trials=10,
        command=["xsam-tune", "run"],
        address=None,
    )
    assert sorted(os.listdir(study_dir)) == sorted([STUDY_FILES["record"], STUDY_FILES["spec"]])
    assert read_study_config(study_dir) == cfg
    record = read_record(study_dir)
    assert set(record) <= set(STUDY_FIELDS) and record["num_trials"] == 10
    assert record["metric"] == "test_acc" and "started_at" in record

    mark_ended(study_dir, complete=False, total=10, errors=0)
    assert "interrupted_at" in read_record(study_dir)
    mark_resumed(study_dir, ["xsam-tune", "resume", study_dir])
    record = read_record(study_dir)
    assert "interrupted_at" not in record and record["resumed"][0]["command"][1] == "resume"
    mark_ended(study_dir, complete=True, total=10, errors=1)
    record = read_record(study_dir)
    assert record["trials"] == {"total": 10, "errors": 1} and "finished_at" in record
    assert json.loads((tmp_path / "tiny" / "study.json").read_text()) == record


def test_record_refuses_a_field_outside_the_contract(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not in xsam_contract\.STUDY_FIELDS"):
        update_record(str(tmp_path), lambda record: record.update(hardware="x"))


def test_multi_node_cluster_with_local_storage(tmp_path: Path, monkeypatch) -> None:
    import ray

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}])
    with pytest.raises(
        StudyLaunchError, match="local to this machine, but the cluster has 2 nodes"
    ):
        check_storage(str(tmp_path), allow_local=False)
    check_storage(str(tmp_path), allow_local=True)
    check_storage("s3://bucket/studies", allow_local=False)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": False}])
    check_storage(str(tmp_path), allow_local=False)


def test_shared_filesystem_detection(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        f"server:/export {tmp_path}/shared nfs4 rw 0 0\n"
        f"tmpfs {tmp_path}/shared/tmp tmpfs rw 0 0\n"
    )
    assert on_shared_filesystem(str(tmp_path / "shared" / "studies"), str(mounts))
    assert not on_shared_filesystem(str(tmp_path / "shared" / "tmp" / "x"), str(mounts))
    assert not on_shared_filesystem(str(tmp_path / "local"), str(mounts))


def test_loopback_only_makes_ray_pick_the_loopback_address() -> None:
    # Fails when Ray stops deciding the node address by ENABLE_RAY_CLUSTER (a
    # fresh interpreter: no Ray node may be connected).
    code = """
import json
from ray._private import services
from study._cluster import loopback_only
with loopback_only():
    inside = services.get_node_ip_address()
print(json.dumps({"inside": inside}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1])["inside"] == "127.0.0.1"
