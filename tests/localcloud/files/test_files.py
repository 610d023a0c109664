"""Azure Files through azure-storage-file 2.1.0's FileService, plus the raw wire facts it relies on."""

from __future__ import annotations

import datetime
import threading

import pytest
from azure.common import AzureConflictHttpError, AzureHttpError, AzureMissingResourceHttpError
from azure.storage.file import ContentSettings, FilePermissions, FileService, SharePermissions

from quickstart.localcloud.connection import requests_session
from tests.conftest import make_file_service

MiB = 1024 * 1024


def _payload(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes that differ in every 4 MiB range (so misplaced ranges are caught)."""
    block = bytes((i * 7 + seed) % 251 for i in range(4096))
    data = bytearray(block * (size // len(block) + 1))[:size]
    for offset in range(0, size, 4 * MiB):
        data[offset : offset + 8] = (offset // MiB + seed).to_bytes(8, "big")
    return bytes(data)


# ------------------------------------------------------------------ shares and directories


def test_create_share_both_ways_exists_and_delete(file_service):
    assert file_service.create_share("batchaiquickstart", fail_on_exist=False) is True
    assert file_service.create_share("batchaiquickstart", fail_on_exist=False) is False
    with pytest.raises(AzureConflictHttpError) as caught:
        file_service.create_share("batchaiquickstart", fail_on_exist=True)
    assert caught.value.error_code == "ShareAlreadyExists"
    assert file_service.exists("batchaiquickstart") is True
    assert file_service.exists("othershare") is False
    assert file_service.delete_share("batchaiquickstart") is True
    assert file_service.delete_share("batchaiquickstart") is False
    assert file_service.exists("batchaiquickstart") is False


def test_share_properties_keep_quota_and_metadata(file_service):
    file_service.create_share("quotashare", metadata={"owner": "quickstart"}, quota=10)
    share = file_service.get_share_properties("quotashare")
    assert share.properties.quota == 10
    assert share.metadata == {"owner": "quickstart"}
    assert [s.name for s in file_service.list_shares()] == ["quotashare"]


def test_directories_create_exists_nested_and_delete(file_service):
    file_service.create_share("dirshare")
    assert file_service.create_directory("dirshare", "mnistcntksample", fail_on_exist=False) is True
    assert (
        file_service.create_directory("dirshare", "mnistcntksample", fail_on_exist=False) is False
    )
    with pytest.raises(AzureConflictHttpError) as caught:
        file_service.create_directory("dirshare", "mnistcntksample", fail_on_exist=True)
    assert caught.value.error_code == "ResourceAlreadyExists"
    with pytest.raises(AzureMissingResourceHttpError) as caught:
        file_service.create_directory("dirshare", "missing/child")
    assert caught.value.error_code == "ParentNotFound"
    assert file_service.create_directory("dirshare", "mnistcntksample/inner") is True
    assert file_service.exists("dirshare", "mnistcntksample/inner") is True
    assert file_service.exists("dirshare", "nothere") is False
    assert file_service.exists("noshare", "nothere") is False
    with pytest.raises(AzureConflictHttpError) as caught:
        file_service.delete_directory("dirshare", "mnistcntksample")
    assert caught.value.error_code == "DirectoryNotEmpty"
    assert file_service.delete_directory("dirshare", "mnistcntksample/inner") is True
    assert file_service.delete_directory("dirshare", "mnistcntksample") is True
    assert file_service.exists("dirshare", "mnistcntksample") is False


def test_operations_on_missing_share_are_share_not_found(file_service):
    with pytest.raises(AzureMissingResourceHttpError) as caught:
        file_service.create_directory("ghostshare", "dir")
    assert caught.value.error_code == "ShareNotFound"


# ------------------------------------------------------------------ files


@pytest.mark.parametrize("max_connections", [1, 4])
def test_upload_with_out_of_order_ranges_and_download(file_service, tmp_path, max_connections):
    file_service.create_share("data")
    file_service.create_directory("data", "mnistcntksample")
    data = _payload(9 * MiB + 123)
    source = tmp_path / "Train-28x28_cntk_text.txt"
    source.write_bytes(data)
    file_service.create_file_from_path(
        "data", "mnistcntksample", source.name, str(source), max_connections=max_connections
    )
    target = tmp_path / "downloaded"
    file_service.get_file_to_path(
        "data", "mnistcntksample", source.name, str(target), max_connections=max_connections
    )
    assert target.read_bytes() == data
    on_disk = file_service.get_file_properties("data", "mnistcntksample", source.name)
    assert on_disk.properties.content_length == len(data)


def test_large_download_uses_several_ranged_gets(file_service, tmp_path):
    file_service.create_share("bigdata")
    data = _payload(40 * MiB, seed=3)  # > 32 MiB: a first 32 MiB GET, then 8 MiB ranges
    file_service.create_file_from_bytes("bigdata", None, "big.bin", data, max_connections=4)
    target = tmp_path / "big.bin"
    file_service.get_file_to_path("bigdata", None, "big.bin", str(target), max_connections=4)
    assert target.read_bytes() == data


def test_ranged_reads(file_service):
    file_service.create_share("ranges")
    data = _payload(5 * MiB)
    file_service.create_file_from_bytes("ranges", None, "f.bin", data)
    part = file_service.get_file_to_bytes(
        "ranges", None, "f.bin", start_range=100, end_range=4 * MiB + 99
    )
    assert part.content == data[100 : 4 * MiB + 100]
    assert part.properties.content_range == f"bytes 100-{4 * MiB + 99}/{len(data)}"


def test_empty_file_downloads_as_empty(file_service, tmp_path):
    file_service.create_share("empties")
    file_service.create_file_from_bytes("empties", None, "empty.txt", b"")
    assert file_service.get_file_to_bytes("empties", None, "empty.txt").content == b""
    file_service.get_file_to_path("empties", None, "empty.txt", str(tmp_path / "e"))
    assert (tmp_path / "e").read_bytes() == b""


def test_file_properties_content_settings_and_metadata(file_service):
    file_service.create_share("props")
    file_service.create_file_from_bytes(
        "props",
        None,
        "ConvNet_MNIST.py",
        b"print('hi')\n",
        content_settings=ContentSettings(content_type="text/x-python"),
        metadata={"kind": "script"},
    )
    f = file_service.get_file_properties("props", None, "ConvNet_MNIST.py")
    assert f.properties.content_length == 12
    assert f.properties.content_settings.content_type == "text/x-python"
    assert f.metadata == {"kind": "script"}
    assert f.properties.etag and f.properties.last_modified
    assert file_service.exists("props", None, "ConvNet_MNIST.py") is True
    assert file_service.exists("props", None, "other.py") is False
    assert file_service.exists("props", "nodir", "other.py") is False


def test_create_file_replaces_an_existing_one(file_service):
    file_service.create_share("replace")
    file_service.create_file_from_bytes("replace", None, "f.txt", b"a much longer first version")
    file_service.create_file_from_bytes("replace", None, "f.txt", b"short")
    assert file_service.get_file_to_bytes("replace", None, "f.txt").content == b"short"


def test_list_directories_and_files_with_paging(file_service):
    file_service.create_share("listing")
    file_service.create_directory("listing", "dir")
    for name, size in (("b.txt", 3), ("a.txt", 0), ("c.txt", 10)):
        file_service.create_file_from_bytes("listing", "dir", name, b"x" * size)
    file_service.create_directory("listing", "dir/sub")
    entries = list(file_service.list_directories_and_files("listing", "dir"))
    files = [(e.name, e.properties.content_length) for e in entries if type(e).__name__ == "File"]
    dirs = [e.name for e in entries if type(e).__name__ == "Directory"]
    assert files == [("a.txt", 0), ("b.txt", 3), ("c.txt", 10)]
    assert dirs == ["sub"]
    page = file_service.list_directories_and_files("listing", "dir", num_results=2)
    assert len(list(page)) == 2 and page.next_marker
    rest = file_service.list_directories_and_files("listing", "dir", marker=page.next_marker)
    assert sorted(e.name for e in rest) == ["c.txt", "sub"]
    root = [e.name for e in file_service.list_directories_and_files("listing")]
    assert root == ["dir"]


def test_delete_file_and_missing_file(file_service):
    file_service.create_share("deletes")
    file_service.create_file_from_bytes("deletes", None, "f.txt", b"data")
    file_service.delete_file("deletes", None, "f.txt")
    assert file_service.exists("deletes", None, "f.txt") is False
    with pytest.raises(AzureMissingResourceHttpError) as caught:
        file_service.delete_file("deletes", None, "f.txt")
    assert caught.value.error_code == "ResourceNotFound"


def test_eight_threads_upload_and_read_distinct_files(local_cloud):
    connection = local_cloud.connection
    make_file_service(connection).create_share("parallel")
    errors = []

    def worker(index: int) -> None:
        try:
            service = make_file_service(connection)
            data = _payload(5 * MiB + index * 1000, seed=index)
            name = f"file-{index}.bin"
            service.create_file_from_bytes("parallel", None, name, data, max_connections=2)
            got = service.get_file_to_bytes("parallel", None, name).content
            assert got == data, f"{name} came back different"
        except Exception as err:  # surfaced in the main thread below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    names = sorted(
        e.name for e in make_file_service(connection).list_directories_and_files("parallel")
    )
    assert names == sorted(f"file-{i}.bin" for i in range(8))


# ------------------------------------------------------------------ authentication


def test_wrong_key_is_refused_and_creates_nothing(local_cloud, file_service):
    conn = local_cloud.connection
    wrong_key = "A" * 86 + "=="
    bad = make_file_service(
        conn, conn["storage_connection_string"].replace(conn["storage_key"], wrong_key)
    )
    with pytest.raises(AzureHttpError) as caught:
        bad.create_share("sneaky")
    assert caught.value.status_code == 403
    assert caught.value.error_code == "AuthenticationFailed"
    assert wrong_key not in str(caught.value) and conn["storage_key"] not in str(caught.value)
    assert file_service.exists("sneaky") is False


def test_unsigned_request_is_refused(local_cloud, file_service):
    file_service.create_share("private")
    response = requests_session(local_cloud.connection).get(
        f"{local_cloud.base_url}/{local_cloud.connection['storage_account']}/private",
        params={"restype": "share"},
    )
    assert response.status_code == 401
    assert response.headers["x-ms-error-code"] == "NoAuthenticationInformation"


def test_client_request_id_is_echoed_and_errors_are_xml(local_cloud, file_service):
    file_service.create_share("echo")
    response = requests_session(local_cloud.connection).get(
        f"{local_cloud.base_url}/{local_cloud.connection['storage_account']}/echo/nofile.txt",
        headers={"x-ms-client-request-id": "my-request-42"},
    )
    assert response.headers["x-ms-client-request-id"] == "my-request-42"
    assert response.headers["x-ms-error-code"] == "NoAuthenticationInformation"
    assert response.text.startswith('<?xml version="1.0" encoding="utf-8"?><Error><Code>')


def _sas_url(file_service, share, directory, name, **kwargs):
    kwargs.setdefault("permission", FilePermissions.READ)
    kwargs.setdefault("expiry", datetime.datetime.utcnow() + datetime.timedelta(hours=1))
    token = file_service.generate_file_shared_access_signature(share, directory, name, **kwargs)
    return file_service.make_file_url(share, directory, name, sas_token=token)


def test_read_sas_downloads_with_ranges_as_output_streamers_do(local_cloud, file_service):
    file_service.create_share("logs")
    file_service.create_directory("logs", "stdouterr")
    file_service.create_file_from_bytes("logs", "stdouterr", "stderr.txt", b"epoch 1\nepoch 2\n")
    url = _sas_url(file_service, "logs", "stdouterr", "stderr.txt")
    http = requests_session(local_cloud.connection)
    whole = http.get(url)
    assert (whole.status_code, whole.content) == (200, b"epoch 1\nepoch 2\n")
    tail = http.get(url, headers={"Range": "bytes=8-"})
    assert (tail.status_code, tail.content) == (206, b"epoch 2\n")
    assert tail.headers["Content-Range"] == "bytes 8-15/16"
    at_end = http.get(url, headers={"Range": "bytes=16-"})
    assert at_end.status_code == 416
    assert at_end.headers["Content-Range"] == "bytes */16"


def test_cloud_helper_makes_batchai_style_download_urls(local_cloud, file_service):
    file_service.create_share("models")
    file_service.create_file_from_bytes("models", None, "ConvNet_MNIST_0.dnn", b"\x00model\xff")
    url = local_cloud.context.file_sas_url("models", "ConvNet_MNIST_0.dnn", expiry_minutes=5)
    query = url.split("?", 1)[1]
    assert [p.split("=")[0] for p in query.split("&")] == ["sv", "sr", "sig", "se", "sp"]
    assert "sr=f" in query and "sp=rl" in query
    assert requests_session(local_cloud.connection).get(url).content == b"\x00model\xff"


@pytest.mark.parametrize("case", ["tampered", "expired", "not_yet_valid", "other_file", "write"])
def test_bad_sas_is_403(local_cloud, file_service, case):
    file_service.create_share("guarded")
    file_service.create_file_from_bytes("guarded", None, "a.txt", b"secret a")
    file_service.create_file_from_bytes("guarded", None, "b.txt", b"secret b")
    http = requests_session(local_cloud.connection)
    now = datetime.datetime.utcnow()
    if case == "expired":
        url = _sas_url(
            file_service, "guarded", None, "a.txt", expiry=now - datetime.timedelta(minutes=1)
        )
    elif case == "not_yet_valid":
        url = _sas_url(
            file_service,
            "guarded",
            None,
            "a.txt",
            start=now + datetime.timedelta(hours=1),
            expiry=now + datetime.timedelta(hours=2),
        )
    else:
        url = _sas_url(file_service, "guarded", None, "a.txt")
    if case == "tampered":
        url = url.replace("sp=r", "sp=rw")
    if case == "other_file":
        url = url.replace("/a.txt?", "/b.txt?")
    if case == "write":
        response = http.put(
            url,
            headers={"x-ms-type": "file", "x-ms-content-length": "5", "x-ms-version": "2019-02-02"},
        )
        expected_code = "AuthorizationPermissionMismatch"
    else:
        response = http.get(url)
        expected_code = "AuthenticationFailed"
    assert response.status_code == 403
    assert response.headers["x-ms-error-code"] == expected_code
    assert b"secret" not in response.content
    assert "<Error><Code>" in response.text


def test_share_sas_in_a_connection_string_lists_and_reads(local_cloud, file_service):
    file_service.create_share("shared")
    file_service.create_file_from_bytes("shared", None, "readme.txt", b"hello")
    token = file_service.generate_share_shared_access_signature(
        "shared",
        permission=SharePermissions(read=True, list=True),
        expiry=datetime.datetime.utcnow() + datetime.timedelta(hours=1),
    )
    endpoint = f"{local_cloud.base_url}/{local_cloud.connection['storage_account']}"
    reader = FileService(
        connection_string=f"FileEndpoint={endpoint};SharedAccessSignature={token}",
        request_session=requests_session(local_cloud.connection),
    )
    assert [e.name for e in reader.list_directories_and_files("shared")] == ["readme.txt"]
    assert reader.get_file_to_bytes("shared", None, "readme.txt").content == b"hello"
    with pytest.raises(AzureHttpError) as caught:
        reader.create_file_from_bytes("shared", None, "new.txt", b"nope")
    assert caught.value.status_code == 403
    assert file_service.exists("shared", None, "new.txt") is False
    with pytest.raises(AzureHttpError) as caught:  # the share's usage is the account owner's
        reader.get_share_stats_in_bytes("shared")
    assert caught.value.status_code == 403


def test_share_stats_count_the_bytes_the_share_holds(file_service):
    file_service.create_share("stats")
    assert file_service.get_share_stats_in_bytes("stats") == 0
    file_service.create_directory("stats", "dir")
    file_service.create_file_from_bytes("stats", "dir", "a.bin", b"a" * 1000)
    file_service.create_file("stats", None, "sparse.bin", 3 * MiB)  # sized, never written
    assert file_service.get_share_stats_in_bytes("stats") == 1000 + 3 * MiB
    assert file_service.get_share_stats("stats") == 1  # GiB, rounded up as the SDK does
    file_service.delete_file("stats", "dir", "a.bin")
    assert file_service.get_share_stats_in_bytes("stats") == 3 * MiB
    with pytest.raises(AzureMissingResourceHttpError) as caught:
        file_service.get_share_stats("ghostshare")
    assert caught.value.error_code == "ShareNotFound"


def test_request_log_never_shows_sas_signatures(tmp_path, capfd):
    from quickstart.localcloud import LocalCloud

    with LocalCloud(tmp_path / "state", access_log=True) as cloud:
        service = make_file_service(cloud.connection)
        service.create_share("loud")
        service.create_file_from_bytes("loud", None, "f.txt", b"x")
        url = _sas_url(service, "loud", None, "f.txt")
        signature = url.split("sig=")[1].split("&")[0]
        assert requests_session(cloud.connection).get(url).status_code == 200
    err = capfd.readouterr().err
    assert "sig=REDACTED" in err
    assert signature not in err and cloud.connection["storage_key"] not in err


def test_names_are_case_insensitive_and_case_preserving(file_service):
    file_service.create_share("cases")
    file_service.create_directory("cases", "MnistSample")
    assert file_service.create_directory("cases", "mnistsample", fail_on_exist=False) is False
    file_service.create_file_from_bytes("cases", "MNISTSAMPLE", "Data.TXT", b"one")
    assert file_service.get_file_to_bytes("cases", "mnistsample", "data.txt").content == b"one"
    file_service.create_file_from_bytes(
        "cases",
        "mnistsample",
        "DATA.txt",
        b"two",  # replaces
        content_settings=ContentSettings(content_type="text/plain"),
    )
    props = file_service.get_file_properties("cases", "MNISTsample", "data.TXT")
    assert props.properties.content_settings.content_type == "text/plain"
    listing = list(file_service.list_directories_and_files("cases", "MnistSample"))
    assert [(e.name, e.properties.content_length) for e in listing] == [("Data.TXT", 3)]
    assert file_service.get_file_to_bytes("cases", "MnistSample", "Data.TXT").content == b"two"


def test_a_directory_is_not_a_file_and_a_file_is_not_a_directory(file_service):
    file_service.create_share("kinds")
    file_service.create_directory("kinds", "adir")
    file_service.create_file_from_bytes("kinds", None, "afile", b"x")
    assert file_service.exists("kinds", None, "adir") is False
    assert file_service.exists("kinds", "afile") is False
    with pytest.raises(AzureConflictHttpError):
        file_service.create_file_from_bytes("kinds", None, "adir", b"clobber")
    with pytest.raises(AzureConflictHttpError):
        file_service.create_directory("kinds", "afile", fail_on_exist=True)
    assert file_service.get_file_to_bytes("kinds", None, "afile").content == b"x"


def test_share_sas_cannot_delete_its_share(local_cloud, file_service):
    file_service.create_share("keepme")
    token = file_service.generate_share_shared_access_signature(
        "keepme",
        permission=SharePermissions(read=True, write=True, delete=True, list=True),
        expiry=datetime.datetime.utcnow() + datetime.timedelta(hours=1),
    )
    endpoint = f"{local_cloud.base_url}/{local_cloud.connection['storage_account']}"
    holder = FileService(
        connection_string=f"FileEndpoint={endpoint};SharedAccessSignature={token}",
        request_session=requests_session(local_cloud.connection),
    )
    with pytest.raises(AzureHttpError) as caught:
        holder.delete_share("keepme", fail_not_exist=True)
    assert caught.value.status_code == 403
    assert file_service.exists("keepme") is True


def test_stored_content_md5_comes_back_on_whole_and_ranged_reads(file_service):
    import base64
    import hashlib

    data = b"model weights" * 1000
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    file_service.create_share("md5s")
    file_service.create_file_from_bytes("md5s", None, "w.bin", data)
    file_service.set_file_properties("md5s", None, "w.bin", ContentSettings(content_md5=md5))
    assert (
        file_service.get_file_properties(
            "md5s", None, "w.bin"
        ).properties.content_settings.content_md5
        == md5
    )
    ranged = file_service.get_file_to_bytes("md5s", None, "w.bin")  # a ranged GET underneath
    assert ranged.content == data
    assert ranged.properties.content_settings.content_md5 == md5


def test_properties_do_not_outlive_a_file_replaced_directly_on_the_share(local_cloud, file_service):
    file_service.create_share("mounted")
    file_service.create_file_from_bytes(
        "mounted",
        None,
        "out.txt",
        b"v1",
        content_settings=ContentSettings(
            content_type="text/plain", content_md5="AAAAAAAAAAAAAAAAAAAAAA=="
        ),
    )
    on_disk = local_cloud.context.share_path("mounted", "out.txt")
    replacement = on_disk.with_name("out.txt.new")
    replacement.write_bytes(b"v2 written by a job through the mount")
    replacement.replace(on_disk)  # what a job on the node does
    props = file_service.get_file_properties("mounted", None, "out.txt").properties
    assert props.content_length == len(b"v2 written by a job through the mount")
    assert props.content_settings.content_md5 is None
    assert props.content_settings.content_type == "application/octet-stream"
