"""The portal over HTTPS without a browser: who gets in, what actions need, what is never
shown, and the pages' facts (queue reasons, unusable nodes, the API call log, the actions)."""

from __future__ import annotations

import re
import time

import azure.mgmt.batchai.models as models
import pytest

from quickstart.localcloud import LocalCloud
from quickstart.localcloud.connection import requests_session
from quickstart.localcloud.portal import login_url
from tests.localcloud.batchai.test_batchai import CLUSTER, EXP, RG, WS, cluster_params, wait_for
from tests.localcloud.portal.world import SECRET_VALUE, make_world, start_job


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("portal-http")
    cloud = LocalCloud(tmp / "localcloud", cluster_allocation_delay=0.1).start()
    try:
        env = make_world(cloud, tmp)
        env.job_id = start_job(env, "httpjob", epochs=2, pause=0.2)
        env.base = cloud.base_url
        env.browser = requests_session(cloud.connection)
        assert env.browser.get(login_url(cloud.state_dir, cloud.base_url)).status_code == 200
        wait_for(lambda: "Finished Epoch[2 of 2]" in env.browser.get(log_url(env)).text)
        yield env
    finally:
        for job in env.client.jobs.list_by_experiment(RG, WS, EXP):
            if job.execution_state in ("queued", "running"):
                env.client.jobs.terminate(RG, WS, EXP, job.name).result()
        cloud.stop()


def log_url(env, job_id=None) -> str:
    return f"{env.base}/portal/job/log?id={job_id or env.job_id}"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_nothing_without_the_session(world):
    stranger = requests_session(world.connection)
    job = world.job_id
    for path in (
        "/portal/",
        f"/portal/job?id={job}",
        f"/portal/job/log?id={job}",
        f"/portal/job/curve?id={job}",
        f"/portal/job/file?id={job}&dir=stdouterr&path=stdout.txt",
        f"/portal/cluster?id={world.cluster.id.lower()}",
        "/portal/calls",
    ):
        answer = stranger.get(world.base + path)
        assert answer.status_code == 401, path
        assert "httpjob" not in answer.text and "tick" not in answer.text
    refused = stranger.post(world.base + "/portal/action", data={"action": "terminate", "id": job})
    assert refused.status_code == 401
    assert stranger.get(world.base + "/portal/login?token=").status_code == 403
    bare = stranger.get(world.base + "/portal", allow_redirects=False)
    assert bare.status_code == 308 and bare.headers["Location"].endswith("/portal/")
    assert stranger.get(world.base + "/portal/logout").status_code == 405
    assert stranger.get(world.base + "/portal/static/../server.py").status_code == 404


def test_the_session_cookie_is_httponly_secure_strict(world):
    fresh = requests_session(world.connection)
    answer = fresh.get(login_url(world.cloud.state_dir, world.base), allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"] == "/portal/"
    cookie = answer.headers["Set-Cookie"]
    assert all(flag in cookie for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/portal"))
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]


def test_actions_need_the_form_token_and_this_origin(world):
    job = world.job_id
    page = world.browser.get(f"{world.base}/portal/confirm?action=delete&id={job}")
    form = {"action": "delete", "id": job, "csrf": csrf_of(page.text)}
    for data, headers in (
        ({**form, "csrf": ""}, {}),
        ({**form, "csrf": "forged"}, {}),
        (form, {"Origin": "https://evil.example"}),
    ):
        answer = world.browser.post(world.base + "/portal/action", data=data, headers=headers)
        assert answer.status_code == 403 and "Request refused" in answer.text
    assert world.client.jobs.get(RG, WS, EXP, "httpjob").execution_state == "running"


def test_secrets_never_appear_anywhere(world):
    secrets = [SECRET_VALUE, world.connection["storage_key"], world.connection["client_secret"]]
    secrets.append("Adm1n-Passw0rd!")  # the cluster's admin password
    job = world.job_id
    pages = [
        "/portal/",
        f"/portal/job?id={job}",
        f"/portal/job/log?id={job}",
        f"/portal/cluster?id={world.cluster.id.lower()}",
        "/portal/calls",
        f"/portal/experiment?id={job.rsplit('/jobs/', 1)[0]}",
        f"/portal/job/file?id={job}&dir=stdouterr&path=stdout.txt",
    ]
    for path in pages:
        text = world.browser.get(world.base + path).text
        assert not [s for s in secrets if s in text], path
    log = world.browser.get(log_url(world)).json()
    assert "the secret is ••••••" in log["stdout.txt"]["text"]


def test_output_files_download_and_nothing_outside_them(world):
    job = world.job_id
    url = f"{world.base}/portal/job/file?id={job}&dir=stdouterr&path="
    answer = world.browser.get(url + "stderr.txt")
    assert answer.status_code == 200 and "Finished Epoch[1 of 2]" in answer.text
    assert answer.headers["Content-Type"] == "application/octet-stream"
    assert answer.headers["Content-Disposition"].startswith("attachment")
    for escape in ("../../../connection.json", "/etc/passwd", "../stdouterr/../../x"):
        assert world.browser.get(url + escape).status_code == 404


def test_the_log_endpoint_returns_only_new_text(world):
    first = world.browser.get(log_url(world)).json()
    offset = first["stdout.txt"]["offset"]
    time.sleep(0.5)
    later = world.browser.get(log_url(world) + f"&stdout.txt={offset}").json()
    assert later["stdout.txt"]["text"].startswith("tick ")
    assert later["stdout.txt"]["offset"] > offset and later["state"] == "running"


def test_api_calls_are_recorded_redacted_and_filterable(world):
    listing = world.client.jobs.list_output_files(
        RG, WS, EXP, "httpjob", models.JobsListOutputFilesOptions(outputdirectoryid="stdouterr")
    )
    url = next(f.download_url for f in listing if f.name.endswith("stdout.txt"))
    requests_session(world.connection).get(url)  # a SAS download: its sig= must be redacted
    page = world.browser.get(world.base + "/portal/calls?q=stdout.txt").text
    assert "sig=REDACTED" in page and re.search(r"sig=(?!REDACTED)", page) is None
    failing = world.browser.get(world.base + "/portal/calls?status=4").text
    assert "<td>200</td>" not in failing
    every = world.browser.get(world.base + "/portal/calls").text
    assert "azure-mgmt-batchai" in every and "POST /subscriptions/…" in every


def test_a_queued_job_says_why(world):
    job_id = start_job(world, "waitingjob")  # the cluster's one node runs httpjob
    page = world.browser.get(f"{world.base}/portal/job?id={job_id}").text
    assert "Why it is queued" in page
    assert (
        "It needs 1 idle node(s); cluster &#39;mycluster&#39; has 0 idle. Busy with: httpjob."
        in page
    )


def test_resize_from_the_portal_starts_the_queued_job(world):
    cluster = world.cluster.id.lower()
    page = world.browser.get(f"{world.base}/portal/confirm?action=resize&id={cluster}").text
    assert "Resize cluster mycluster?" in page
    form = {"action": "resize", "id": cluster, "nodes": "2", "csrf": csrf_of(page)}
    answer = world.browser.post(world.base + "/portal/action", data=form)
    assert answer.status_code == 200 and "/portal/cluster?id=" in answer.url
    wait_for(lambda: world.client.jobs.get(RG, WS, EXP, "waitingjob").execution_state == "running")
    assert world.client.clusters.get(RG, WS, CLUSTER).scale_settings.manual.target_node_count == 2
    calls = world.browser.get(world.base + "/portal/calls?q=portal").text
    assert "PATCH /subscriptions/…" in calls and "mycluster" in calls and "portal (you)" in calls


def test_delete_from_the_portal(world):
    job = world.job_id.rsplit("/", 1)[0] + "/waitingjob"
    page = world.browser.get(f"{world.base}/portal/confirm?action=delete&id={job}").text
    form = {"action": "delete", "id": job, "csrf": csrf_of(page)}
    answer = world.browser.post(world.base + "/portal/action", data=form)
    assert answer.status_code == 200 and answer.url.endswith("/portal/")
    assert "waitingjob" not in world.browser.get(world.base + "/portal/").text
    assert world.browser.get(f"{world.base}/portal/job?id={job}").status_code == 404


def test_an_unusable_node_says_why(world):
    params = cluster_params(world.connection, world.files, share="nosuchshare")
    world.client.clusters.create(RG, WS, "badcluster", params).result()
    bad = world.cluster.id.rsplit("/", 1)[0].lower() + "/badcluster"
    wait_for(
        lambda: (
            world.client.clusters.get(RG, WS, "badcluster").node_state_counts.unusable_node_count
        )
    )
    page = world.browser.get(f"{world.base}/portal/cluster?id={bad}").text
    assert "Allocation errors" in page and "AZFMountError" in page
    assert "Unusable: 1" in page and "unusable" in page


def test_an_experiment_compares_its_jobs_on_one_chart(world):
    start_job(world, "comparejob", epochs=2, pause=0.2)  # on the node the deleted job freed
    experiment = world.job_id.rsplit("/jobs/", 1)[0]
    url = f"{world.base}/portal/experiment?id={experiment}"
    page = wait_for(
        lambda: (lambda t: t if t.count('class="point"') == 8 else None)(
            world.browser.get(url).text
        )
    )
    assert page.count("<polyline") == 4  # two jobs, on the loss chart and the error chart
    assert "httpjob" in page and "comparejob" in page


def test_the_overview_pages_jobs_newest_first(world):
    from tests.bench.bench_portal import copy_job

    store = world.cloud.context.store
    before = len(list(world.client.jobs.list_by_experiment(RG, WS, EXP)))  # other tests' too
    copy_job(store, store.get_resource(world.job_id), 60)
    first = world.browser.get(world.base + "/portal/").text
    assert "page 1 of 2" in first and "httpjob0059" in first and "httpjob0000" not in first
    second = world.browser.get(world.base + "/portal/?page=2").text
    assert "page 2 of 2" in second and "httpjob0000" in second and "httpjob0059" not in second
    assert f'myexperiment</a> <span class="muted">{before + 60} job(s)' in first
    assert world.browser.get(world.base + "/portal/?page=99").status_code == 200


def test_the_overview_lists_blob_containers_with_what_list_blobs_counts(world):
    from tests.conftest import make_blob_service

    blobs = make_blob_service(world.cloud.connection)
    blobs.create_container("portal-data")
    blobs.create_blob_from_bytes("portal-data", "train/images.bin", b"x" * 3000)
    blobs.create_blob_from_bytes("portal-data", "labels.bin", b"y" * 1000)
    root = world.cloud.context.store.container_dir("portal-data")
    (root / "link-to-labels").symlink_to(root / "labels.bin")  # a job's link: not a blob
    (root / "empty-folder").mkdir()
    page = world.browser.get(world.base + "/portal/").text
    section = page.split("<h2>Blob containers</h2>", 1)[1]
    assert re.search(r"<td>portal-data</td><td>3\.9 KiB</td><td>2</td>", section), section[:400]
