"""Property-based fuzzing of every route of the local cloud: what it sends and what must hold.

Shared by the short fuzz in the default tests (``test_fuzz.py``) and the long one
(``tests/bench/fuzz_localcloud.py``). A ``FuzzTarget`` prepares a running local cloud with one of
everything (resource group, workspace, experiment, a zero-node cluster, a share with a file) so
that drawn requests reach the handlers' depths, then sends requests drawn by ``requests_()``:

* Batch AI bodies are drawn from the 2018-05-01 models as the SDK carries them
  (``azure.mgmt.batchai.models``: ``_attribute_map`` names and types, ``_validation`` the
  required fields, both generated from the spec), each field either well typed, of a wrong
  type, or absent, with the spec's enum values;
* ARM resource-group bodies and queries, AAD token forms, and Azure Files operations signed with
  the account key (so they pass authentication and reach the handlers), with drawn headers,
  query values and names;
* Azure Blob operations (containers, blobs, blocks, block lists, properties and metadata, List
  Blobs with odd prefixes, delimiters and markers), signed with the account key or carrying a
  container or blob SAS the SDK made, as is or tampered with.

What must hold (``check``): every answer is 2xx, 3xx or 4xx; a 4xx carries the service's error
JSON (ARM, AAD) or XML (Files, Blob); and the log holds no traceback.

Safety: command lines are drawn from a harmless set, jobs are sent to the zero-node cluster (they
stay queued), and node counts stay small (the node-count bound is issue 13 point 3's).
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
import uuid
from email.utils import formatdate
from urllib.parse import parse_qsl, quote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import requests
from hypothesis import strategies as st

from quickstart.localcloud.connection import BLOB_PATH_PREFIX, requests_session
from quickstart.localcloud.files.sharedkey import sign, string_to_sign

API = "2018-05-01"
BLOCK_QUERY = {"comp": "block", "blockid": "YmxvY2sx"}  # base64("block1")
SAFE_COMMANDS = ["true", "echo fuzz", "exit 0", "sleep 0"]
ENUMS = {  # enum values of the 2018-05-01 spec for fields the SDK types as plain strings
    "schedulingPriority": ["low", "normal", "high"],
    "nodeDeallocationOption": ["requeue", "terminate", "waitforjobcompletion"],
    "languageType": ["Python", "BrainScript"],
    "vmPriority": ["dedicated", "lowpriority"],
    "toolType": ["cntk", "tensorflow", "caffe", "caffe2", "chainer", "horovod", "custommpi"],
}
COMMAND_FIELDS = {"commandLine"}
NODE_COUNT_FIELDS = {
    "targetNodeCount",
    "minimumNodeCount",
    "maximumNodeCount",
    "initialNodeCount",
}
WEIRD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "é" * 300,
        "STRASSE",
        "straße",
        "İ",
        "a/b",
        "..",
        "%2e%2e",
        "\x00",
        "\u202e",
        "x" * 70,
    ]
)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def _wrong(value_kind: str):
    """A JSON value of another type than ``value_kind`` (what a careless client sends)."""
    others = {
        "str": st.integers() | st.booleans() | st.lists(st.integers(), max_size=2) | st.none(),
        "int": st.text(max_size=5) | st.floats(allow_nan=False) | st.booleans() | st.none(),
        "bool": st.text(max_size=5) | st.integers(),
        "object": st.text(max_size=5) | st.integers() | st.lists(st.integers(), max_size=2),
        "list": st.text(max_size=5)
        | st.integers()
        | st.dictionaries(st.text(max_size=3), ANY_JSON),
    }
    return others.get(value_kind, ANY_JSON)


def _unflatten(flat: dict) -> dict:
    """{"properties.nodeCount": 1} -> {"properties": {"nodeCount": 1}} (msrest's flattening)."""
    out: dict = {}
    for key, value in flat.items():
        parts = [p.replace("\\.", ".") for p in key.replace("\\.", "\0").split(".")]
        parts = [p.replace("\0", ".") for p in parts]
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
    return out


class ModelBodies:
    """Hypothesis strategies for JSON bodies of the SDK's msrest models (the spec's shapes)."""

    def __init__(self, cluster_ids: list[str], share_urls: list[str], noisy: bool = True):
        from azure.mgmt.batchai import models

        self.models = models
        self.cluster_ids = cluster_ids
        self.share_urls = share_urls
        self.noisy = noisy

    def body(self, name: str):
        """A body of model ``name``: as often nearly valid (so it reaches the deep checks and
        the store) as noisy (wrong types and missing fields anywhere)."""
        clean = ModelBodies(self.cluster_ids, self.share_urls, noisy=False).for_model(name)
        if name == "JobCreateParameters":
            clean = clean.map(_one_toolkit)
        return st.one_of(clean, self.for_model(name))

    def for_model(self, name: str, depth: int = 0):
        model = getattr(self.models, name, None)
        if model is None or not hasattr(model, "_attribute_map"):  # an enum class
            values = [e.value for e in model] if model is not None else []
            return st.sampled_from(values) if values else st.text(max_size=10)
        if depth > 5:
            return st.just({})
        required = {k for k, v in getattr(model, "_validation", {}).items() if v.get("required")}
        readonly = {k for k, v in getattr(model, "_validation", {}).items() if v.get("readonly")}
        fields = {}
        for attr, spec in model._attribute_map.items():
            if attr in readonly:
                continue
            leaf = spec["key"].split(".")[-1]
            value = self.for_type(spec["type"], leaf, depth + 1)
            if not self.noisy:  # well typed, optional fields mostly absent
                absent = st.none() | st.none() | st.none()
                fields[spec["key"]] = value if attr in required else absent | value
                continue
            # well typed most of the time; else a wrong type, or absent (required ones too)
            choice = st.one_of(value, value, value, _wrong(_kind(spec["type"])))
            fields[spec["key"]] = choice if attr in required else st.none() | choice
        return st.fixed_dictionaries(fields).map(
            lambda flat: _unflatten({k: v for k, v in flat.items() if v is not None})
        )

    def for_type(self, type_name: str, leaf: str, depth: int):
        if type_name.startswith("["):
            return st.lists(self.for_type(type_name[1:-1], leaf, depth), max_size=3)
        if type_name.startswith("{"):
            return st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3)
        if type_name == "str":
            return self.for_string(leaf)
        if type_name in ("int", "long"):
            if not self.noisy:
                return st.integers(0 if leaf in NODE_COUNT_FIELDS else 1, 3)
            if leaf in NODE_COUNT_FIELDS:
                return st.integers(-2, 3)
            return st.integers(-5, 10) | st.sampled_from([2**31, 2**63, -(2**63)])
        if type_name == "bool":
            return st.booleans()
        if type_name in ("float", "number"):
            return st.floats(allow_nan=False, allow_infinity=False)
        if type_name in ("iso-8601", "duration"):
            return st.sampled_from(["P7D", "PT1H", "2018-05-01T00:00:00Z", "nonsense", ""])
        if type_name == "ResourceId":
            return st.fixed_dictionaries({"id": st.sampled_from(self.cluster_ids) | st.text()})
        return self.for_model(type_name, depth)

    def for_string(self, leaf: str):
        if leaf in COMMAND_FIELDS:
            return st.sampled_from(SAFE_COMMANDS)
        if leaf in ENUMS:
            valid = st.sampled_from(ENUMS[leaf])
            return valid | st.text(max_size=8) if self.noisy else valid
        if leaf == "azureFileUrl":
            valid = st.sampled_from(self.share_urls)
            return valid | st.text(max_size=30) if self.noisy else valid
        if leaf in ("relativeMountPath", "pathPrefix", "path", "stdOutErrPathPrefix"):
            valid = st.sampled_from(
                ["$AZ_BATCHAI_MOUNT_ROOT/afs", "$AZ_BATCHAI_JOB_MOUNT_ROOT/afs"]
            )
            if leaf == "relativeMountPath":
                valid = st.just("afs2")
            odd = st.sampled_from(["afs", "/tmp", "../x", "$AZ_BATCHAI_MOUNT_ROOT/../.."])
            return valid | odd | st.text(max_size=20) if self.noisy else valid
        if not self.noisy:
            return st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,11}", fullmatch=True)
        return st.text(max_size=20) | WEIRD_TEXT


TOOLKITS = (
    "cntkSettings",
    "pyTorchSettings",
    "tensorFlowSettings",
    "caffeSettings",
    "caffe2Settings",
    "chainerSettings",
    "customToolkitSettings",
    "customMpiSettings",
    "horovodSettings",
)


def _one_toolkit(body: dict) -> dict:
    """A job body with exactly one toolkit, as the service requires (else it never gets far)."""
    props = body.get("properties")
    if not isinstance(props, dict):
        return body
    present = [k for k in TOOLKITS if k in props]
    for extra in present[1:]:
        del props[extra]
    if not present:
        props["customToolkitSettings"] = {"commandLine": "true"}
    return body


def _kind(type_name: str) -> str:
    if type_name.startswith("["):
        return "list"
    if type_name in ("str", "iso-8601", "duration"):
        return "str"
    if type_name in ("int", "long"):
        return "int"
    if type_name == "bool":
        return "bool"
    return "object"


VERSION = "2018-03-28"  # the storage API version the requests are signed with


class FuzzTarget:
    """A running local cloud prepared for fuzzing, and the requests that hit it."""

    def __init__(self, cloud):
        self.cloud = cloud
        self.connection = cloud.connection
        self.base = cloud.base_url
        self.sub = self.connection["subscription_id"]
        self.account = self.connection["storage_account"]
        self.key = self.connection["storage_key"]
        self.session = requests_session(self.connection)
        self.token = self._token()
        self.rg = "fuzzrg"
        self.ws = f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/providers/Microsoft.BatchAI/workspaces/ws"
        self.zero_cluster = f"{self.ws}/clusters/zero"
        self.share_url = f"{self.base}/{self.account}/fuzzshare"
        self.blob_base = f"{self.base}/{BLOB_PATH_PREFIX}/{self.account}"
        self.tried = 0
        self.statuses: dict[int, int] = {}
        self.last_status = 0
        self.by_surface: dict[str, dict[str, int]] = {}  # surface -> {"2xx": n, "4xx": n, ...}

    # -- preparation (through the same raw HTTP, each step checked)

    def _token(self) -> str:
        answer = self.session.post(
            f"{self.base}/{self.connection['tenant']}/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.connection["client_id"],
                "client_secret": self.connection["client_secret"],
                "resource": self.connection["active_directory_resource_id"],
            },
        )
        answer.raise_for_status()
        return answer.json()["access_token"]

    def prepare(self, blob: bool = True) -> FuzzTarget:
        """The resources the fuzz aims at; ``blob=False`` for a server older than its Blob
        service (a benchmark's baseline)."""
        rg = f"/subscriptions/{self.sub}/resourcegroups/{self.rg}"
        self._ok(self.arm("PUT", rg, {"location": "eastus"}, "2021-04-01"))
        self._ok(self.arm("PUT", self.ws, {"location": "eastus"}))
        self._ok(self.arm("PUT", f"{self.ws}/experiments/exp", None))
        self._ok(self.files("PUT", "fuzzshare", {"restype": "share"}))
        self._ok(self.files("PUT", "fuzzshare/dir", {"restype": "directory"}))
        headers = {"x-ms-type": "file", "x-ms-content-length": "16"}
        self._ok(self.files("PUT", "fuzzshare/dir/file.txt", {}, headers))
        if blob:
            self._ok(self.blob("PUT", "fuzzcontainer", {"restype": "container"}))
            blob_headers = {"x-ms-blob-type": "BlockBlob"}
            self._ok(self.blob("PUT", "fuzzcontainer/dir/blob.txt", {}, blob_headers, b"x" * 16))
            self._ok(self.blob("PUT", "fuzzcontainer/dir/blob.txt", BLOCK_QUERY, {}, b"block"))
        mounts = {
            "azureFileShares": [
                {
                    "accountName": self.account,
                    "azureFileUrl": self.share_url,
                    "credentials": {"accountKey": self.key},
                    "relativeMountPath": "afs",
                }
            ]
        }
        cluster = {
            "properties": {
                "vmSize": "STANDARD_NC6",
                "scaleSettings": {"manual": {"targetNodeCount": 0}},
                "nodeSetup": {"mountVolumes": mounts},
                "userAccountSettings": {"adminUserName": "fuzz", "adminUserPassword": "Fuzz-1234"},
            }
        }
        self._ok(self.arm("PUT", self.zero_cluster, cluster))
        return self

    @staticmethod
    def _ok(response: requests.Response) -> None:
        if response.status_code >= 300:
            raise AssertionError(f"fuzz preparation failed: {response.status_code} {response.text}")

    # -- sending

    def arm(self, method, path, body=None, version=API, headers=None, query=None, raw=None):
        params = {"api-version": version} if version is not None else {}
        params.update(query or {})
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        all_headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        if data is not None:
            all_headers.setdefault("Content-Type", "application/json")
        return self.send(method, self.base + quote(path, safe="/"), params, all_headers, data)

    def files(self, method, path, query, headers=None, body=None, signed=True):
        url = f"{self.base}/{self.account}/{quote(path, safe='/')}"
        return self._storage(method, url, query, headers, body, signed)

    def blob(self, method, path, query, headers=None, body=None, signed=True, version=VERSION):
        """A Blob request; with ``signed`` False it carries no SharedKey (a SAS in ``query``,
        or nothing)."""
        url = f"{self.blob_base}/{quote(path, safe='/')}"
        return self._storage(method, url, query, headers, body, signed, version)

    def _storage(self, method, url, query, headers, body, signed, version=VERSION):
        prepared = self._prepared_storage(method, url, query, headers, body, signed, version)
        return self._send_prepared(prepared)

    def _prepared_storage(
        self, method, url, query, headers, body=None, signed=True, version=VERSION
    ):
        request = requests.Request(method, url, params=query, headers=headers or {}, data=body)
        prepared = self.session.prepare_request(request)
        prepared.headers["x-ms-date"] = formatdate(time.time(), usegmt=True)
        # a version the fuzz drew is sent as drawn (the service's version check is fuzzed too)
        prepared.headers.setdefault("x-ms-version", version)
        if signed:
            raw_path, _, raw_query = prepared.path_url.partition("?")
            canonical = string_to_sign(method, prepared.headers, raw_path, raw_query, self.account)
            prepared.headers["Authorization"] = (
                f"SharedKey {self.account}:{sign(self.key, canonical)}"
            )
        return prepared

    def cut_off(self, method, url, query, headers, length: int, sent: bytes, hang_up="shutdown"):
        """Send a signed storage request by hand that promises ``length`` body bytes, send only
        ``sent`` and hang up: a TCP FIN without TLS's close_notify ("shutdown"), or a plain
        close ("close")."""
        prepared = self._prepared_storage(method, url, query, headers)
        prepared.headers["Content-Length"] = str(length)
        raw_path, _, raw_query = prepared.path_url.partition("?")
        canonical = string_to_sign(method, prepared.headers, raw_path, raw_query, self.account)
        prepared.headers["Authorization"] = f"SharedKey {self.account}:{sign(self.key, canonical)}"
        head = f"{method} {prepared.path_url} HTTP/1.1\r\nHost: x\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in prepared.headers.items()
        )
        where = urlsplit(self.base)
        context = ssl.create_default_context(cafile=self.connection["ca_cert"])
        with socket.create_connection((where.hostname, where.port), timeout=10) as plain:
            with context.wrap_socket(plain, server_hostname=where.hostname) as tls:
                tls.sendall(head.encode() + b"\r\n" + sent)
                if hang_up == "shutdown":
                    tls.shutdown(socket.SHUT_WR)

    def send(self, method, url, params, headers, data):
        request = requests.Request(method, url, params=params, headers=headers, data=data)
        return self._send_prepared(self.session.prepare_request(request))

    def _send_prepared(self, prepared):
        self.tried += 1
        response = self.session.send(prepared, timeout=60)
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        self.last_status = response.status_code
        return response

    def tracebacks(self) -> int:
        log = self.cloud.state_dir / "localcloud.log"
        return log.read_text(errors="replace").count("Traceback") if log.exists() else 0


def check(response: requests.Response, surface: str) -> None:
    """What must hold for any answer: no 5xx, and a 4xx carries the service's error body."""
    request = response.request
    where = f"{request.method} {request.url[:200]}"
    assert response.status_code < 500, f"{where} -> {response.status_code}: {response.text[:500]}"
    if response.status_code < 400 or request.method == "HEAD":
        return
    if surface in ("files", "blob"):
        try:
            root = ElementTree.fromstring(response.content)
        except ElementTree.ParseError as err:
            raise AssertionError(
                f"{where} -> {response.status_code}, not XML ({err}): {response.text[:300]!r}"
            ) from None
        assert root.tag == "Error" and root.findtext("Code"), where
        assert response.headers.get("x-ms-error-code") == root.findtext("Code"), where
    elif surface == "token":
        body = response.json()
        assert isinstance(body.get("error"), str) and body.get("error_description"), where
    else:
        error = response.json().get("error")
        assert isinstance(error, dict) and error.get("code") and error.get("message"), where


# ---------------------------------------------------------------------- drawn requests

NAMES = st.sampled_from(["ws", "exp", "zero", "other", "missing", "UPPER", "a-b_c"]) | WEIRD_TEXT
QUERY = st.dictionaries(
    st.sampled_from(
        [
            "api-version",
            "maxresults",
            "$skiptoken",
            "$top",
            "outputdirectoryid",
            "directory",
            "linkexpiryinminutes",
            "prefix",
            "marker",
            "comp",
            "restype",
            "sig",
            "client_secret",
        ]
    ),
    st.text(max_size=12) | st.integers(-5, 5000).map(str),
    max_size=3,
)


def _spare(name: str, kept: str) -> str:
    """``name``, unless it is (in any case) the prepared resource ``kept``."""
    return f"{name}-other" if name.lower() == kept else name


@st.composite
def batchai_request(draw, target: FuzzTarget, bodies: ModelBodies):
    """A Batch AI request on a drawn route, with a body drawn from the route's model."""
    ws, exp, cl, job = draw(NAMES), draw(NAMES), draw(NAMES), draw(NAMES)
    rg = draw(st.sampled_from([target.rg, "missingrg"]))
    base = f"/subscriptions/{target.sub}/resourceGroups/{rg}/providers/Microsoft.BatchAI"
    routes = [
        ("GET", f"{base}/workspaces", None),
        ("PUT", f"{base}/workspaces/{ws}", "WorkspaceCreateParameters"),
        ("PATCH", f"{base}/workspaces/{ws}", "WorkspaceUpdateParameters"),
        ("GET", f"{base}/workspaces/{ws}", None),
        ("GET", f"{base}/workspaces/ws/clusters", None),
        ("PUT", f"{base}/workspaces/ws/clusters/{cl}", "ClusterCreateParameters"),
        ("PATCH", f"{base}/workspaces/ws/clusters/{cl}", "ClusterUpdateParameters"),
        ("GET", f"{base}/workspaces/ws/clusters/{cl}", None),
        ("POST", f"{base}/workspaces/ws/clusters/{cl}/listRemoteLoginInformation", None),
        ("GET", f"{base}/workspaces/ws/experiments", None),
        ("PUT", f"{base}/workspaces/ws/experiments/{exp}", None),
        ("GET", f"{base}/workspaces/ws/experiments/exp/jobs", None),
        ("PUT", f"{base}/workspaces/ws/experiments/exp/jobs/{job}", "JobCreateParameters"),
        ("GET", f"{base}/workspaces/ws/experiments/exp/jobs/{job}", None),
        ("POST", f"{base}/workspaces/ws/experiments/exp/jobs/{job}/terminate", None),
        ("POST", f"{base}/workspaces/ws/experiments/exp/jobs/{job}/listOutputFiles", None),
        ("DELETE", f"{base}/workspaces/ws/experiments/exp/jobs/{job}", None),
        ("GET", "/providers/Microsoft.BatchAI/operations", None),
        (
            "GET",
            f"/subscriptions/{target.sub}/providers/Microsoft.BatchAI/locations/eastus/"
            f"operationresults/{draw(NAMES)}",
            None,
        ),
        ("GET", f"{base}/workspaces/ws/fileServers", None),
        ("GET", f"/subscriptions/{target.sub}/providers/Microsoft.BatchAI/workspaces", None),
        (
            "POST",
            f"{base}/workspaces/ws/experiments/exp/jobs/{job}/listRemoteLoginInformation",
            None,
        ),
        (
            "GET",
            f"/subscriptions/{target.sub}/providers/Microsoft.BatchAI/locations/eastus/"
            f"operationstatuses/{draw(NAMES)}",
            None,
        ),
        (
            "GET",
            f"/subscriptions/{target.sub}/providers/Microsoft.BatchAI/locations/eastus/usages",
            None,
        ),
        # deletes spare what the other requests need (ws, exp, zero): they hit other names
        ("DELETE", f"{base}/workspaces/{_spare(ws, 'ws')}", None),
        ("DELETE", f"{base}/workspaces/ws/clusters/{_spare(cl, 'zero')}", None),
        ("DELETE", f"{base}/workspaces/ws/experiments/{_spare(exp, 'exp')}", None),
    ]
    method, path, model = draw(st.sampled_from(routes))
    if model == "ClusterCreateParameters" and cl in ("zero",):
        path = path.replace("/zero", "/other")  # keep the zero-node cluster the fuzz relies on
    if method == "PATCH" and "/clusters/" in path and path.endswith("/zero"):
        path = path[: -len("zero")] + "other"
    body = draw(bodies.body(model)) if model else draw(st.none() | ANY_JSON)
    query = draw(QUERY)
    version = draw(st.sampled_from([API, API, API, "2017-09-01-preview", "", None]))
    return method, path, body, version, query


@st.composite
def arm_request(draw, target: FuzzTarget):
    """A resource-group or subscription request with drawn names, bodies and queries."""
    name = draw(st.sampled_from(["fuzzrg2", "FUZZRG2", "x" * 91, "bad name", "ok."]) | WEIRD_TEXT)
    path = draw(
        st.sampled_from(
            [
                "/subscriptions",
                f"/subscriptions/{target.sub}",
                f"/subscriptions/{target.sub}/resourcegroups",
                f"/subscriptions/{target.sub}/resourcegroups/{name}",
                f"/subscriptions/{uuid.uuid4()}/resourcegroups/{name}",
                f"/subscriptions/{target.sub}/operationresults/{name}",
                "/providers/Microsoft.Nothing",
            ]
        )
    )
    method = draw(st.sampled_from(["GET", "PUT", "PATCH", "HEAD", "DELETE", "POST"]))
    body = draw(
        st.none()
        | ANY_JSON
        | st.fixed_dictionaries(
            {"location": st.sampled_from(["eastus", "East US", "mars", ""]) | ANY_JSON},
            optional={
                "tags": st.dictionaries(st.text(max_size=600), st.text(max_size=300)) | ANY_JSON
            },
        )
    )
    raw = draw(st.none() | st.sampled_from(["{", "[" * 5000 + "]" * 5000, "\xff\xfe", "null"]))
    return method, path, body, draw(st.sampled_from(["2021-04-01", "bad", "", None])), raw


@st.composite
def token_request(draw, target: FuzzTarget):
    """An AAD token request: drawn form fields, content types and tenants."""
    fields = draw(
        st.dictionaries(
            st.sampled_from(["grant_type", "client_id", "client_secret", "resource", "scope"]),
            st.sampled_from(["client_credentials", target.connection["client_id"], "", "x" * 50])
            | st.text(max_size=20),
            max_size=5,
        )
    )
    tenant = draw(st.sampled_from([target.connection["tenant"], "adfs", "ADFS"]))
    method = draw(st.sampled_from(["POST", "POST", "GET", "PUT"]))
    content_type = draw(
        st.sampled_from(
            ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"]
        )
    )
    return method, f"{target.base}/{tenant}/oauth2/token", fields, content_type


@st.composite
def files_request(draw, target: FuzzTarget):
    """An Azure Files request signed with the account key: drawn operation, path and headers."""
    name = draw(st.sampled_from(["file.txt", "FILE.TXT", "new.bin", "dir", "é" * 128]) | WEIRD_TEXT)
    path = draw(
        st.sampled_from(
            [
                "fuzzshare",
                "fuzzshare/dir",
                f"fuzzshare/dir/{name}",
                f"fuzzshare/{name}",
                f"missingshare/{name}",
                "Bad_Share",
            ]
        )
    )
    query = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "restype": st.sampled_from(["share", "directory", "x"]),
                "comp": st.sampled_from(["list", "range", "properties", "metadata", "x"]),
                "maxresults": st.integers(-1, 6000).map(str) | st.text(max_size=4),
                "prefix": st.text(max_size=5),
                "marker": st.text(max_size=5),
            },
        )
    )
    headers = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "x-ms-type": st.sampled_from(["file", "File", "directory", ""]),
                "x-ms-content-length": st.integers(-1, 2**45).map(str) | st.text(max_size=5),
                "x-ms-range": st.sampled_from(["bytes=0-15", "bytes=0-0", "bytes=5-2", "bytes=0-"])
                | st.text(max_size=10),
                "x-ms-write": st.sampled_from(["update", "clear", "x"]),
                "x-ms-share-quota": st.integers(-1, 6000).map(str) | st.text(max_size=4),
                "x-ms-meta-Fuzz": st.text(max_size=40),
                "x-ms-meta-big": st.just("m" * 9000),
                "Content-MD5": st.text(max_size=24),
                "x-ms-content-type": st.text(max_size=20),
            },
        )
    )
    headers = {k: _header_value(v) for k, v in headers.items()}
    method = draw(st.sampled_from(["GET", "PUT", "HEAD", "DELETE", "POST"]))
    if method == "DELETE" and path in ("fuzzshare", "fuzzshare/dir", "fuzzshare/dir/file.txt"):
        method = "HEAD"  # keep what the other requests need to reach the handlers' depths
    body = draw(st.none() | st.binary(max_size=64))
    signed = draw(st.booleans() | st.just(True))
    return method, path, query, headers, body, signed


BLOB_NAMES = (
    st.sampled_from(["dir/blob.txt", "new.bin", "dir/new.bin", "a/b/c"])
    | st.sampled_from(
        ["dir/blob.txt", "DIR/BLOB.TXT", "new.bin", "dir", "dir/", "a//b", "é" * 200, "x" * 1100]
    )
    | WEIRD_TEXT
    | st.text(max_size=12)
)
ODD_LISTING_TEXT = st.sampled_from(
    ["", "/", "//", "dir", "dir/", "dir/b", "..", "../", "%2F", "é", "\x00", "*", "?", "\\", "zz"]
) | st.text(max_size=6)
BLOCK_IDS = st.sampled_from(
    ["YmxvY2sx", "YmxvY2sy", "", "====", "not base64!", "QQ", "QUFB" * 30, "%2Bx%3D"]
) | st.binary(min_size=1, max_size=70).map(lambda raw: base64.b64encode(raw).decode())


@st.composite
def block_list_body(draw) -> bytes:
    """A Put Block List body: a list of drawn ids and kinds, or a broken document."""
    kinds = st.sampled_from(["Latest", "Committed", "Uncommitted", "Other"])
    items = draw(st.lists(st.tuples(kinds, BLOCK_IDS), max_size=4))
    good = (
        "<?xml version='1.0' encoding='utf-8'?><BlockList>"
        + "".join(f"<{kind}>{escape(block_id)}</{kind}>" for kind, block_id in items)
        + "</BlockList>"
    )
    broken = st.sampled_from(
        ["<BlockList>", "<Other/>", "", "<BlockList><Latest><x/></Latest></BlockList>", "\xff"]
    )
    return draw(st.just(good) | broken | st.just("<a>" * 3000 + "</a>" * 3000)).encode()


@st.composite
def sas_query(draw, target: FuzzTarget, container: str, name: str) -> dict:
    """A container or blob SAS made by the SDK for ``container``/``name``, as is or with a field
    changed (permissions, window, resource, version, signature)."""
    from azure.storage.blob.sharedaccesssignature import BlobSharedAccessSignature

    maker = BlobSharedAccessSignature(target.account, target.key)
    permission = draw(st.sampled_from(["r", "rl", "rwdl", "w", "d", "racwdl"]))
    expiry = time.time() + draw(st.sampled_from([3600, -3600]))
    expiry_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))
    if draw(st.booleans()):
        token = maker.generate_container(container, permission=permission, expiry=expiry_text)
    else:
        token = maker.generate_blob(container, name, permission=permission, expiry=expiry_text)
    params = dict(parse_qsl(token, keep_blank_values=True))
    changed = draw(
        st.dictionaries(
            st.sampled_from(["sp", "se", "st", "sr", "sv", "sig", "spr", "sip", "rscd"]),
            st.sampled_from(["", "r", "b", "c", "x", "2099-01-01", "http", "1.2.3.4"])
            | st.text(max_size=8),
            max_size=2,
        )
    )
    return {**params, **changed}


BLOB_OPERATIONS = [  # (method, what the path names, query, headers, body) as the SDK sends them
    ("PUT", "container", {"restype": "container"}, {}, "none"),
    ("GET", "container", {"restype": "container"}, {}, "none"),
    ("GET", "container", {"restype": "container", "comp": "metadata"}, {}, "none"),
    ("DELETE", "container", {"restype": "container"}, {}, "none"),
    ("GET", "account", {"comp": "list"}, {}, "none"),
    ("GET", "container", {"restype": "container", "comp": "list"}, {}, "none"),
    ("PUT", "blob", {}, {"x-ms-blob-type": "BlockBlob"}, "bytes"),
    ("GET", "blob", {}, {}, "none"),
    ("HEAD", "blob", {}, {}, "none"),
    ("DELETE", "blob", {}, {}, "none"),
    ("PUT", "blob", {"comp": "block"}, {}, "bytes"),
    ("PUT", "blob", {"comp": "blocklist"}, {}, "block list"),
    ("GET", "blob", {"comp": "blocklist"}, {}, "none"),
    ("PUT", "blob", {"comp": "properties"}, {}, "none"),
    ("GET", "blob", {"comp": "metadata"}, {}, "none"),
    ("PUT", "blob", {"comp": "metadata"}, {}, "none"),
]
BLOB_QUERY_NOISE = {
    "restype": st.sampled_from(["container", "service", "share", "x"]),
    "comp": st.sampled_from(["list", "block", "blocklist", "properties", "metadata", "range", "x"]),
    "blockid": BLOCK_IDS,
    "blocklisttype": st.sampled_from(["committed", "uncommitted", "all", "x"]),
    "prefix": ODD_LISTING_TEXT,
    "delimiter": ODD_LISTING_TEXT,
    "marker": ODD_LISTING_TEXT,
    "maxresults": st.integers(-1, 6000).map(str) | st.text(max_size=4),
    "include": st.sampled_from(["metadata", "snapshots,metadata", "x", ""]),
    "timeout": st.integers(-1, 100).map(str),
}
BLOB_HEADER_NOISE = {
    "x-ms-blob-type": st.sampled_from(["BlockBlob", "PageBlob", "AppendBlob", ""]),
    "x-ms-type": st.just("file"),
    "x-ms-range": st.sampled_from(["bytes=0-15", "bytes=0-0", "bytes=5-2", "bytes=0-"])
    | st.text(max_size=10),
    "x-ms-range-get-content-md5": st.sampled_from(["true", "false", "x"]),
    "x-ms-blob-content-type": st.text(max_size=20),
    "x-ms-blob-content-md5": st.text(max_size=24),
    "x-ms-blob-cache-control": st.text(max_size=10),
    "x-ms-meta-Fuzz": st.text(max_size=40),
    "x-ms-meta-bad name": st.just("v"),
    "x-ms-meta-big": st.just("m" * 9000),
    "Content-MD5": st.text(max_size=24) | st.just("rL0Y20zC+Fzt72VPzMSk2A=="),
    "x-ms-version": st.sampled_from(["2018-03-28", "2099-01-01", "x"]),
}


@st.composite
def _some_of(draw, fields: dict) -> dict:
    """Up to three of ``fields`` (name -> strategy), each with a drawn value."""
    names = draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True))
    return {name: draw(fields[name]) for name in names}


@st.composite
def blob_request(draw, target: FuzzTarget):
    """An Azure Blob request, signed with the account key or carrying a SAS: one of the SDK's
    operations on drawn names, with its listing and block parameters drawn, and as often as not
    other query parameters, headers and a body drawn on top."""
    name = draw(BLOB_NAMES)
    container = draw(
        st.sampled_from(["fuzzcontainer", "fuzzcontainer", "other-container", "Bad_Container"])
    )
    method, names, query, headers, body_kind = draw(st.sampled_from(BLOB_OPERATIONS))
    path = {"account": "", "container": container, "blob": f"{container}/{name}"}[names]
    query = dict(query)
    if query.get("comp") == "list":
        query.update(
            draw(
                st.fixed_dictionaries(
                    {},
                    optional={k: BLOB_QUERY_NOISE[k] for k in ("prefix", "delimiter", "marker")}
                    | {
                        "maxresults": BLOB_QUERY_NOISE["maxresults"],
                        "include": st.just("metadata"),
                    },
                )
            )
        )
    if query.get("comp") == "block":
        query["blockid"] = draw(BLOCK_IDS)
    if query.get("comp") == "blocklist" and method == "GET":
        query["blocklisttype"] = draw(BLOB_QUERY_NOISE["blocklisttype"])
    body = {
        "none": None,
        "bytes": draw(st.binary(max_size=64)),
        "block list": draw(block_list_body()),
    }[body_kind]
    headers = dict(headers)
    if draw(st.booleans()):  # noise on top of the operation
        query.update(draw(_some_of(BLOB_QUERY_NOISE)))
        headers.update(draw(_some_of(BLOB_HEADER_NOISE)))
        method = draw(st.sampled_from([method, method, "GET", "PUT", "HEAD", "DELETE", "POST"]))
        body = draw(st.just(body) | st.none() | st.binary(max_size=64) | block_list_body())
    headers = {k: _header_value(v) for k, v in headers.items()}
    if method == "DELETE" and path in ("fuzzcontainer", "fuzzcontainer/dir/blob.txt"):
        method = "HEAD"  # keep what the other requests need to reach the handlers' depths
    signed = True
    if draw(st.integers(0, 3)) == 0:  # a SAS instead of the key, now and then
        query.update(draw(sas_query(target, container, name)))
        signed = False
    return method, path, query, headers, body, signed


def _header_value(text: str) -> str:
    """``text`` as a header value an HTTP client can send (UTF-8 bytes read as Latin-1)."""
    value = "".join(c for c in text if c >= " " and c != "\x7f").strip()
    return value.encode("utf-8").decode("latin-1")


def send_drawn(target: FuzzTarget, data, bodies: ModelBodies) -> None:
    """Draw one request of any surface (with hypothesis' ``data``), send it, check the answer."""
    surface = data.draw(
        st.sampled_from(["batchai", "batchai", "arm", "token", "files", "files", "blob", "blob"])
    )
    if surface == "batchai":
        method, path, body, version, query = data.draw(batchai_request(target, bodies))
        check(target.arm(method, path, body, version, query=query), "arm")
    elif surface == "arm":
        method, path, body, version, raw = data.draw(arm_request(target))
        check(target.arm(method, path, body, version, raw=raw), "arm")
    elif surface == "token":
        method, url, fields, content_type = data.draw(token_request(target))
        response = target.send(method, url, {}, {"Content-Type": content_type}, fields)
        check(response, "token")
    elif surface == "files":
        method, path, query, headers, body, signed = data.draw(files_request(target))
        check(target.files(method, path, query, headers, body, signed), "files")
    else:
        method, path, query, headers, body, signed = data.draw(blob_request(target))
        response = target.blob(method, path, query, headers, body, signed)
        check(response, "blob")
    counts = target.by_surface.setdefault(surface, {})
    kind = f"{target.last_status // 100}xx"
    counts[kind] = counts.get(kind, 0) + 1
