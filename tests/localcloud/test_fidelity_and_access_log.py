"""Fidelity (issue 13, point 6) and the foreground access log (issue 12, point 5)."""

from __future__ import annotations

import datetime
import io
from email.utils import parsedate_to_datetime

from azure.storage.file import FilePermissions

from quickstart.localcloud import LocalCloud
from quickstart.localcloud.connection import requests_session

from ..conftest import make_file_service
from .fuzzing import FuzzTarget


def test_batchai_answers_carry_etag_last_modified_and_experiment_name(local_cloud):
    target = FuzzTarget(local_cloud).prepare()
    job = {
        "properties": {
            "cluster": {"id": target.zero_cluster},
            "nodeCount": 1,
            "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/afs",
            "customToolkitSettings": {"commandLine": "true"},
        }
    }
    path = f"{target.ws}/experiments/exp/jobs/waits"
    assert target.arm("PUT", path, job).status_code == 202
    got = target.arm("GET", path)
    assert got.headers["ETag"] and parsedate_to_datetime(got.headers["Last-Modified"])
    props = got.json()["properties"]
    assert props["experimentName"] == "exp"
    # a zero-node cluster: the job is queued and says why
    assert props["executionState"] == "queued"
    (reason,) = props["executionInfo"]["errors"]
    assert reason["code"] == "WaitingForClusterResize" and "at most 0" in reason["message"]
    cluster = target.arm("GET", target.zero_cluster)
    first_tag = cluster.headers["ETag"]
    resize = {"properties": {"scaleSettings": {"manual": {"targetNodeCount": 0}}}}
    assert target.arm("PATCH", target.zero_cluster, resize).ok
    assert target.arm("GET", target.zero_cluster).headers["ETag"] != first_tag
    operations = target.arm("GET", "/providers/Microsoft.BatchAI/operations").json()["value"]
    assert "Microsoft.BatchAI/workspaces/experiments/jobs/write" in {o["name"] for o in operations}


def test_a_file_sas_does_not_list_or_create_directories(local_cloud):
    service = make_file_service(local_cloud.connection)
    service.create_share("sasdirs")
    service.create_directory("sasdirs", "d")
    expiry = datetime.datetime.utcnow() + datetime.timedelta(hours=1)
    token = service.generate_file_shared_access_signature(
        "sasdirs", None, "d", permission=FilePermissions(read=True, create=True), expiry=expiry
    )
    http = requests_session(local_cloud.connection)
    base = f"{local_cloud.base_url}/{local_cloud.connection['storage_account']}/sasdirs/d"
    listing = http.get(f"{base}?restype=directory&comp=list&{token}")
    assert listing.status_code == 403
    assert listing.headers["x-ms-error-code"] == "AuthorizationResourceTypeMismatch"
    made = http.put(f"{base}/sub?restype=directory&{token}")
    assert made.status_code == 403 and not service.exists("sasdirs", "d/sub")


def _upload_9_mib(cloud) -> None:
    """A 9 MiB file through the SDK: a Create File and three Put Range calls."""
    service = make_file_service(cloud.connection)
    service.create_share("uploads")
    service.create_file_from_bytes("uploads", None, "big.bin", bytes(9 * 1024 * 1024))


def test_the_console_shows_a_line_per_call_and_one_per_uploaded_file(tmp_path):
    console = io.StringIO()
    with LocalCloud(tmp_path / "state", access_log=True, log_stream=console) as cloud:
        _upload_9_mib(cloud)
        http = requests_session(cloud.connection)
        http.get(f"{cloud.base_url}/adfs/oauth2/token?client_secret=hunter2")
    lines = console.getvalue().splitlines()
    uploads = [line for line in lines if "big.bin" in line]
    assert len(uploads) == 2, lines  # its Create File, then one line for its three ranges
    assert "uploaded, 3 ranges, 9.0 MiB of 9.0 MiB" in uploads[1]
    assert any("/adfs/oauth2/token?client_secret=REDACTED -> 405" in line for line in lines)
    assert "hunter2" not in console.getvalue()
    full = (tmp_path / "state" / "access.log").read_text()
    assert full.count("comp=range") == 3 and "hunter2" not in full


def test_verbose_echoes_every_request(tmp_path):
    console = io.StringIO()
    with LocalCloud(tmp_path / "state", verbose=True, log_stream=console) as cloud:
        _upload_9_mib(cloud)
    assert console.getvalue().count("comp=range") == 3
