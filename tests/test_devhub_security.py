"""devhub's hardening (issue #14): paths stay inside the data folder, LFS objects belong to their
repo, the token is checked before a body is read, bodies are capped, every malformed request is a
JSON 4xx, names follow the Hub's rules, tokens stay off argv; and a seeded request fuzzer."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import random
import socket
import time

import pytest
from click.testing import CliRunner
from huggingface_hub import CommitOperationAdd, HfApi

from hubpub.cli import cli
from hubpub.devhub import DevHub, DevhubError, load_users

from hubserver import ALICE_TOKEN, BOB_TOKEN, USERS, devhub  # noqa: F401

WEIGHTS = bytes(range(256)) * 64  # binary: goes to LFS
SECRET_WEIGHTS = b"alice's private weights\0" * 500


def call(hub, method, path, body=b"", *, token=None, headers=None, content_type="application/json"):
    """One request on a fresh connection: (status, headers, body)."""
    conn = http.client.HTTPConnection(hub.host, hub.port, timeout=10)
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    if body and "Content-Type" not in sent:
        sent["Content-Type"] = content_type
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request(method, path, body=data if data or method in ("POST", "PUT") else None, headers=sent)
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


def raw(hub, data: bytes, *, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Bytes as they are on a fresh connection, and the one answer they get."""
    with socket.create_connection((hub.host, hub.port), timeout=timeout) as sock:
        sock.sendall(data)
        resp = http.client.HTTPResponse(sock, method=data.split(b" ", 1)[0].decode("latin-1"))
        resp.begin()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def ndjson(*lines) -> bytes:
    return b"\n".join(json.dumps(line).encode() for line in lines)


def header(summary="c"):
    return {"key": "header", "value": {"summary": summary, "description": ""}}


def assert_json_error(status, headers, body, expected):
    assert status in ((expected,) if isinstance(expected, int) else expected), (status, body)
    assert headers.get("Content-Type", headers.get("content-type")) == "application/json", headers
    assert isinstance(json.loads(body)["error"], str)


@pytest.fixture
def api(devhub):
    from hubpub.hub._client import hub_client

    with hub_client(devhub.endpoint):
        yield HfApi(endpoint=devhub.endpoint, token=ALICE_TOKEN)


# ----------------------------------------------------------------------------- paths and oids
@pytest.mark.parametrize("oid", ["/etc/passwd", "../x", "../../../etc/passwd", "..", "A" * 64, "0" * 63, "0" * 65,
                                 "g" * 64, 64, None, "0" * 64 + "/../x"])
def test_a_commit_with_a_bad_lfs_oid_is_400_and_serves_nothing(api, devhub, oid):
    api.create_repo("alice/m")
    status, headers, body = call(devhub, "POST", "/api/models/alice/m/commit/main", ndjson(
        header(), {"key": "lfsFile", "value": {"path": "w.safetensors", "algo": "sha256", "oid": oid, "size": 10}}),
        token=ALICE_TOKEN, content_type="application/x-ndjson")
    assert_json_error(status, headers, body, 400)
    assert call(devhub, "GET", "/alice/m/resolve/main/w.safetensors")[0] == 404
    assert [f.rfilename for f in api.model_info("alice/m").siblings] == [".gitattributes"]


@pytest.mark.parametrize("size", [-1, 1.5, "10", True, None])
def test_sizes_are_non_negative_integers_everywhere(api, devhub, size):
    api.create_repo("alice/m")
    oid = hashlib.sha256(b"x").hexdigest()
    status, headers, body = call(devhub, "POST", "/api/models/alice/m/commit/main", ndjson(
        header(), {"key": "lfsFile", "value": {"path": "w.bin", "oid": oid, "size": size}}), token=ALICE_TOKEN)
    assert_json_error(status, headers, body, 400)
    status, headers, body = call(devhub, "POST", "/_devhub/lfs-verify/alice/m", {"oid": oid, "size": size}, token=ALICE_TOKEN)
    assert_json_error(status, headers, body, 400)
    status, _, body = call(devhub, "POST", "/alice/m.git/info/lfs/objects/batch",
                           {"operation": "upload", "objects": [{"oid": oid, "size": size}]}, token=ALICE_TOKEN)
    assert status == 200
    (obj,) = json.loads(body)["objects"]
    assert obj["error"]["code"] == 422 and "actions" not in obj  # no upload ticket for a bad object
    status, headers, body = call(devhub, "POST", "/api/models/alice/m/preupload/main",
                                 {"files": [{"path": "a.txt", "sample": "", "size": size}]}, token=ALICE_TOKEN)
    if size is not None:  # a missing size means 0 for preupload, as with the client's own payloads
        assert_json_error(status, headers, body, 400)


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "./a", ".", "a\x00b", "a\\b",
                                  ".git/config", "sub/.cache/x", "", "a/", "x" * 1001, "a\nb"])
def test_bad_file_paths_are_refused_in_commits_and_preupload(api, devhub, path):
    api.create_repo("alice/m")
    content = base64.b64encode(b"hello").decode()
    status, headers, body = call(devhub, "POST", "/api/models/alice/m/commit/main", ndjson(
        header(), {"key": "file", "value": {"path": path, "content": content, "encoding": "base64"}}), token=ALICE_TOKEN)
    assert_json_error(status, headers, body, 400)
    status, headers, body = call(devhub, "POST", "/api/models/alice/m/preupload/main",
                                 {"files": [{"path": path, "sample": content, "size": 5}]}, token=ALICE_TOKEN)
    assert_json_error(status, headers, body, 400)
    assert [f.rfilename for f in api.model_info("alice/m").siblings] == [".gitattributes"]


def test_nothing_outside_the_data_folder_is_served_or_probed(api, devhub, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"TOP SECRET OUTSIDE THE DATA DIR")
    api.create_repo("alice/m")
    api.create_commit("alice/m", [CommitOperationAdd("w.safetensors", WEIGHTS)], commit_message="w")
    probes = ["/alice/m/resolve/main/../../outside.txt", "/alice/m/resolve/main/..%2F..%2F..%2Foutside.txt",
              "/alice/m/resolve/main/%2Fetc%2Fpasswd", "/alice/m/resolve/..%2F..%2Foutside.txt/x",
              "/..%2F..%2F/x/resolve/main/outside.txt", "/api/models/..%2F../x", "/api/models/alice/..%2F..%2Foutside",
              "/api/models/alice/m/tree/main/..%2F..", "/api/models/alice/m/commits/..%2F..%2Foutside.txt"]
    for path in probes:
        status, headers, body = call(devhub, "GET", path)
        assert 400 <= status < 500 and b"TOP SECRET" not in body and b"root:" not in body, (path, status, body)
    # lfs-verify answers the same for an arbitrary file, a missing object and an invalid oid: nothing is revealed
    for oid in ("../../outside.txt", "/etc/passwd"):
        assert call(devhub, "POST", "/_devhub/lfs-verify/alice/m", {"oid": oid, "size": 31}, token=ALICE_TOKEN)[0] == 400
    missing = hashlib.sha256(b"never uploaded").hexdigest()
    status, _, body = call(devhub, "POST", "/_devhub/lfs-verify/alice/m", {"oid": missing, "size": 14}, token=ALICE_TOKEN)
    assert status == 404
    assert call(devhub, "POST", "/_devhub/lfs-verify/alice/m", {"oid": hashlib.sha256(WEIGHTS).hexdigest(),
                                                                "size": len(WEIGHTS)}, token=ALICE_TOKEN)[0] == 200


# ----------------------------------------------------------------------------- LFS objects belong to their repo
def test_another_repos_private_object_cannot_be_claimed_by_its_sha256(api, devhub, tmp_path):
    api.create_repo("alice/secret", private=True)
    api.create_commit("alice/secret", [CommitOperationAdd("w.safetensors", SECRET_WEIGHTS)], commit_message="w")
    oid, size = hashlib.sha256(SECRET_WEIGHTS).hexdigest(), len(SECRET_WEIGHTS)
    bob = HfApi(endpoint=devhub.endpoint, token=BOB_TOKEN)
    bob.create_repo("bob/loot")
    # a commit naming alice's object: refused as if it never existed
    status, headers, body = call(devhub, "POST", "/api/models/bob/loot/commit/main", ndjson(
        header("steal"), {"key": "lfsFile", "value": {"path": "stolen.safetensors", "algo": "sha256", "oid": oid, "size": size}}),
        token=BOB_TOKEN)
    assert_json_error(status, headers, body, 400)
    assert "never uploaded to bob/loot" in json.loads(body)["error"]
    assert call(devhub, "GET", "/bob/loot/resolve/main/stolen.safetensors")[0] == 404
    # the batch does not say "stored already": bob must upload the bytes himself
    status, _, body = call(devhub, "POST", "/bob/loot.git/info/lfs/objects/batch",
                           {"operation": "upload", "objects": [{"oid": oid, "size": size}]}, token=BOB_TOKEN)
    assert status == 200 and "upload" in json.loads(body)["objects"][0]["actions"]
    assert call(devhub, "POST", "/_devhub/lfs-verify/bob/loot", {"oid": oid, "size": size}, token=BOB_TOKEN)[0] == 404
    # someone who really has the bytes uploads them (once per repo) and then may commit them
    puts = devhub.stats["lfs_puts"]
    bob.create_commit("bob/loot", [CommitOperationAdd("mine.safetensors", SECRET_WEIGHTS)], commit_message="own copy")
    assert devhub.stats["lfs_puts"] == puts + 1
    # and the other way round alice's own repo keeps deduplicating
    api.create_commit("alice/secret", [CommitOperationAdd("copy.safetensors", SECRET_WEIGHTS)], commit_message="copy")
    assert devhub.stats["lfs_puts"] == puts + 1


def test_objects_already_in_a_repos_history_stay_usable(tmp_path):
    """A data folder from before ownership markers: the repo's history vouches for its objects."""
    from hubpub.hub._client import hub_client

    data = tmp_path / "data"
    with DevHub(data, USERS) as hub, hub_client(hub.endpoint):
        api = HfApi(endpoint=hub.endpoint, token=ALICE_TOKEN)
        api.create_repo("alice/m")
        api.create_commit("alice/m", [CommitOperationAdd("w.safetensors", WEIGHTS)], commit_message="w")
    for marker in (data / "lfs-owners").rglob("*"):
        if marker.is_file():
            marker.unlink()
    with DevHub(data, USERS) as hub, hub_client(hub.endpoint):
        api = HfApi(endpoint=hub.endpoint, token=ALICE_TOKEN)
        api.create_commit("alice/m", [CommitOperationAdd("again.safetensors", WEIGHTS)], commit_message="again")
        assert hub.stats["lfs_puts"] == 0


# ----------------------------------------------------------------------------- auth before body, caps
def test_a_write_without_a_valid_token_is_401_before_the_body_is_read(devhub):
    total = 256 << 20  # announced and (tried to be) sent; the server drops at most a few MiB then hangs up
    request = (b"POST /api/models/alice/m/commit/main HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer hf_wrong_token_123\r\n"
               b"Content-Type: application/x-ndjson\r\nContent-Length: %d\r\n\r\n" % total)
    with socket.create_connection((devhub.host, devhub.port), timeout=10) as sock:
        sock.sendall(request + b"x" * 65536)
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()  # the answer is there while 256 MiB are still unsent
        assert resp.status == 401 and resp.getheader("Connection") == "close"
        assert json.loads(resp.read())["error"] == "Invalid credentials in Authorization header"
        sent, chunk, started = 65536, b"y" * (1 << 20), time.monotonic()
        with pytest.raises(OSError):  # the server closes the connection instead of reading 256 MiB
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
        assert sent < 64 << 20 and time.monotonic() - started < 8
    # no token at all on a write endpoint, and junk after a wrong token: 401 (not 400)
    assert_json_error(*call(devhub, "POST", "/api/repos/create", b"\xff{{not json"), 401)
    assert_json_error(*call(devhub, "POST", "/api/repos/create", b"\xff{{not json", token="hf_wrong_token_123"), 401)
    assert_json_error(*call(devhub, "POST", "/alice/m.git/info/lfs/objects/batch", b"[", token="hf_wrong_token_123"), 401)
    assert_json_error(*call(devhub, "POST", "/api/jobs/alice", b"junk"), 401)
    assert devhub.stats["commit_bytes"] == 0


def test_expect_100_continue_is_only_sent_to_an_authenticated_writer(devhub):
    start = b"POST /api/repos/create HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
    with socket.create_connection((devhub.host, devhub.port), timeout=10) as sock:
        sock.sendall(start + b"Authorization: Bearer nope_nope_nope\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 401 ")
    with socket.create_connection((devhub.host, devhub.port), timeout=10) as sock:
        sock.sendall(start + f"Authorization: Bearer {ALICE_TOKEN}\r\n\r\n".encode())
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"{}")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")  # {} has no name


def test_bodies_over_the_caps_are_413(tmp_path):
    with DevHub(tmp_path / "data", USERS, max_json_bytes=1024, max_commit_bytes=4096, max_lfs_bytes=1000) as hub:
        assert call(hub, "POST", "/api/repos/create", {"name": "m"}, token=ALICE_TOKEN)[0] == 200
        big = {"files": [{"path": f"f{i}.txt", "sample": "", "size": 1} for i in range(100)]}
        assert_json_error(*call(hub, "POST", "/api/models/alice/m/preupload/main", big, token=ALICE_TOKEN), 413)
        commit = ndjson(header(), {"key": "file", "value": {"path": "a.txt", "content": "x" * 5000}})
        assert_json_error(*call(hub, "POST", "/api/models/alice/m/commit/main", commit, token=ALICE_TOKEN), 413)
        # chunked: counted as it arrives
        chunked = b"1000\r\n" + b"x" * 4096 + b"\r\n" + b"10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"
        status, headers, body = raw(hub, b"POST /api/models/alice/m/commit/main HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                    + ALICE_TOKEN.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
        assert status == 413 and "error" in json.loads(body)
        # an LFS object over the cap gets no upload URL
        status, _, body = call(hub, "POST", "/alice/m.git/info/lfs/objects/batch",
                               {"operation": "upload", "objects": [{"oid": "a" * 64, "size": 1001}]}, token=ALICE_TOKEN)
        (obj,) = json.loads(body)["objects"]
        assert status == 200 and obj["error"]["code"] == 413 and "actions" not in obj
        # a PUT whose length is not the announced size is refused before its body is read
        data = b"z" * 100
        status, _, body = call(hub, "POST", "/alice/m.git/info/lfs/objects/batch",
                               {"operation": "upload", "objects": [{"oid": hashlib.sha256(data).hexdigest(), "size": 100}]},
                               token=ALICE_TOKEN)
        href = json.loads(body)["objects"][0]["actions"]["upload"]["href"]
        path = href[len(hub.endpoint):]
        assert_json_error(*call(hub, "PUT", path, b"z" * 101), 400)
        assert call(hub, "PUT", path, data)[0] == 200  # the URL survived the refused attempt...
        assert_json_error(*call(hub, "PUT", path, data), 403)  # ...and is one-time
        assert_json_error(*call(hub, "PUT", "/_devhub/lfs/" + "0" * 32, b"x" * 10), 403)


# ----------------------------------------------------------------------------- malformed requests
AUTH = f"Authorization: Bearer {ALICE_TOKEN}\r\n".encode()


def req(method: str, path: str, body: bytes = b"", extra: bytes = AUTH) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode() + extra + b"\r\n" + body


CREATE, COMMIT = "/api/repos/create", "/api/models/alice/m/commit/main"
PREUPLOAD, BATCH = "/api/models/alice/m/preupload/main", "/alice/m.git/info/lfs/objects/batch"
MALFORMED = [  # (the request's bytes, the status it must get)
    (req("POST", CREATE, b"{not json"), 400),
    (req("POST", CREATE, b"[]"), 400),
    (req("POST", CREATE, b'{"name": 5}'), 400),
    (req("POST", CREATE, b'{"name": "m2", "private": "no"}'), 400),
    (req("POST", CREATE, b"[" * 4000), 400),
    (req("POST", CREATE, b"\xff\xfe\x00\x01"), 400),
    (req("POST", CREATE, b'{"organization": "alice"}'), 400),
    (req("POST", COMMIT, b"not {}\n"), 400),
    (req("POST", COMMIT, b"{}"), 400),
    (req("POST", COMMIT, b'{"key": "header", "value": 1}'), 400),
    (req("POST", COMMIT, b'{"key": "header", "value": {"summary": 1}}'), 400),
    (req("POST", COMMIT, b'{"key":"header","value":{"summary":"s","parentCommit":"zz"}}\n'), 400),
    (req("POST", COMMIT, b'{"key":"header","value":{"summary":"s"}}\n{"key":"file","value":{"path":"a","content":"!!","encoding":"base64"}}'), 400),
    (req("POST", COMMIT, b'{"key":"header","value":{"summary":"s"}}\n{"key":"rename","value":{"path":"a"}}'), 400),
    (req("POST", PREUPLOAD, b'{"files": [{"path": "a", "sample": "!!", "size": 1}]}'), 400),
    (req("POST", PREUPLOAD, b'{"files": "x"}'), 400),
    (req("POST", PREUPLOAD, b'{"files": [7]}'), 400),
    (req("POST", BATCH, b'{"operation": "download"}'), 400),
    (req("POST", BATCH, b'{"operation": "upload", "objects": {}}'), 400),
    (req("POST", "/api/models/alice/m/tag/main", b'{"tag": "../"}'), 400),
    (req("POST", "/api/models/alice/m/tag/main", b'{"message": "no tag"}'), 400),
    (req("POST", "/api/models/alice/m/branch/a..b", b"{}"), 400),
    (req("POST", "/api/models/alice/m/paths-info/main", b"\xff\xfe=1", b"Content-Type: application/x-www-form-urlencoded\r\n"), 400),
    (req("GET", "/api/models/alice/m/tree/main?cursor=-5"), 400),
    (req("GET", "/api/models/alice/m/tree/main?cursor=abc"), 400),
    (req("GET", "/api/models/alice/m/tree/main/..%2Fx"), 400),
    (req("GET", "/alice/m/resolve/main/a%00b"), 400),
    (b"POST /api/repos/create HTTP/1.1\r\n" + AUTH + b"Content-Length: abc\r\n\r\n", 400),
    (b"POST /api/repos/create HTTP/1.1\r\n" + AUTH + b"Content-Length: -1\r\n\r\n", 400),
    (b"POST /api/repos/create HTTP/1.1\r\n" + AUTH + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
    (b"POST /api/repos/create HTTP/1.1\r\n" + AUTH + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}", 400),
    (b"POST /api/repos/create HTTP/1.1\r\n" + AUTH + b"Transfer-Encoding: gzip\r\n\r\n{}", 400),
    (b"POST /api/repos/create HTTP/1.1\r\n" + AUTH + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400),
    (b"POST /api/repos/create HTTP/1.1\r\n" + AUTH + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n", 400),
    (req("POST", CREATE, b"{}", b"Authorization: Basic YWxpY2U6eA==\r\n"), 401),
    (req("GET", "/api/whoami-v2", b"", b"Authorization: Bearer\r\n"), 401),
    (req("GET", "/api/whoami-v2", b"", b""), 401),
    (req("BREW", "/api/whoami-v2"), 405),
    (req("PATCH", CREATE), 405),
    (req("DELETE", "/api/models/alice/m"), 405),
    (req("FOO", "/nowhere"), 404),
    (req("GET", "/api/models/alice/nothing-here"), 404),
    (req("GET", "/api/datasets/alice/m"), 404),
    (b"GET nowhere HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/whoami-v2 HTTP/2.0\r\n\r\n", 400),
    (b"GET /api/whoami-v2 HTTQ/1.1\r\n\r\n", 400),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1 extra words\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"GET /api/whoami-v2 HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", 431),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
]


def test_malformed_requests_get_a_json_4xx_and_the_server_lives_on(api, devhub):
    api.create_repo("alice/m")
    for request, expected in MALFORMED:
        status, headers, body = raw(devhub, request)
        assert status == expected, (request[:200], status, body)
        assert headers["content-type"] == "application/json", request[:200]
        assert isinstance(json.loads(body)["error"], str), request[:200]
    assert raw(devhub, req("PATCH", CREATE))[1]["allow"] == "POST"
    assert api.whoami()["name"] == "alice"
    assert all(r.status < 500 for r in devhub.requests)
    assert api.list_repo_refs("alice/m").tags == []


@pytest.mark.parametrize("name", [".", "..", "a--b", "a..b", "x.git", "-a", "a-", ".a", "a.", "café", "a" * 97, "a/b",
                                  "a b", "", "a\x00"])
def test_repo_names_follow_the_hubs_rules(devhub, name):
    assert_json_error(*call(devhub, "POST", "/api/repos/create", {"name": name}, token=ALICE_TOKEN), 400)
    assert_json_error(*call(devhub, "POST", "/api/repos/create", {"name": "ok", "organization": name}, token=ALICE_TOKEN), 400)
    assert list((devhub.store.root / "repos").rglob("*.json")) == []


def test_valid_unusual_names_work(devhub):
    for name in ("a", "A_1", "x.y-z_0", "_under", "9" * 96):
        assert call(devhub, "POST", "/api/repos/create", {"name": name}, token=ALICE_TOKEN)[0] == 200, name
    assert_json_error(*call(devhub, "GET", "/api/models/alice/a--b"), 400)
    assert call(devhub, "GET", "/api/models/alice/x.y-z_0")[0] == 200


# ----------------------------------------------------------------------------- tokens off argv
def test_users_come_from_a_file_or_the_environment(tmp_path):
    users_file = tmp_path / "users.txt"
    users_file.write_text("# devhub users\nalice:hf_alice_from_file_1\n\nbob:hf_bob_from_file_22\n")
    users_file.chmod(0o600)
    users, warnings = load_users(users_file, env={"HUBPUB_DEVHUB_USERS": "carol:hf_carol_env_333, dan:hf_dan_env_4444"})
    assert users == {"alice": "hf_alice_from_file_1", "bob": "hf_bob_from_file_22", "carol": "hf_carol_env_333",
                     "dan": "hf_dan_env_4444"}
    assert warnings == []
    users_file.chmod(0o644)
    assert load_users(users_file, env={})[1] == [f"--users-file {users_file} is readable by other users; run `chmod 600 {users_file}`"]
    bad = tmp_path / "bad.txt"
    bad.write_text("alice:hf_alice_from_file_1\nhf_token_without_a_name_5\n")
    with pytest.raises(DevhubError) as err:
        load_users(bad, env={})
    assert str(err.value).startswith(f"{bad}:2: expected NAME:TOKEN")
    assert "hf_token_without_a_name_5" not in str(err.value)
    with pytest.raises(DevhubError, match="user alice is given twice"):
        load_users(users_file, env={"HUBPUB_DEVHUB_USERS": "alice:hf_other_token_55"})
    with pytest.raises(DevhubError, match="have the same token"):
        load_users(None, env={"HUBPUB_DEVHUB_USERS": "x:hf_same_token_1 y:hf_same_token_1"})
    with pytest.raises(DevhubError) as err:
        load_users(None, env={"HUBPUB_DEVHUB_USERS": "a--b:hf_valid_token_9"})
    assert str(err.value).startswith("HUBPUB_DEVHUB_USERS entry 1: expected NAME:TOKEN")


def test_the_cli_reads_users_file_and_env_and_warns_about_argv_tokens(tmp_path, monkeypatch):
    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(DevHub, "serve_forever", interrupted)
    users_file = tmp_path / "users.txt"
    users_file.write_text("alice:hf_alice_from_file_1\n")
    users_file.chmod(0o600)
    base = ["devhub", "--port", "0", "--data", str(tmp_path / "data")]
    result = CliRunner().invoke(cli, [*base, "--users-file", str(users_file)], env={"HUBPUB_DEVHUB_USERS": "bob:hf_bob_env_token_2"})
    assert result.exit_code == 0, result.output
    assert "users: alice, bob" in result.output and "Warning" not in result.output
    assert "hf_alice_from_file_1" not in result.output and "hf_bob_env_token_2" not in result.output
    result = CliRunner().invoke(cli, [*base, "--user", "carol:hf_carol_argv_token_3"], env={"HUBPUB_DEVHUB_USERS": ""})
    assert result.exit_code == 0, result.output
    assert "Warning: --user puts the token on the command line, where `ps`" in result.output
    assert "users: carol" in result.output and "hf_carol_argv_token_3" not in result.output
    result = CliRunner().invoke(cli, [*base, "--jobs"], env={"HUBPUB_DEVHUB_USERS": ""})
    assert (result.exit_code, result.output) == (1, "Error: --jobs runs commands for whoever holds a token, and the default"
                                                    " dev token is public; give users with --users-file FILE or HUBPUB_DEVHUB_USERS\n")
    result = CliRunner().invoke(cli, [*base, "--jobs", "--users-file", str(users_file)], env={"HUBPUB_DEVHUB_USERS": ""})
    assert result.exit_code == 0 and "jobs: enabled" in result.output, result.output
    result = CliRunner().invoke(cli, [*base, "--users-file", str(tmp_path / "missing.txt")])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: --users-file {tmp_path / 'missing.txt'}: cannot read it (No such file or directory)")


# ----------------------------------------------------------------------------- the fuzzer
# Mostly plausible requests (the right method for the route, a valid token, the body the route
# expects), each with some parts mutated: the answers then come from deep inside the handlers.
_ROUTES = [("GET", "/api/whoami-v2", None), ("POST", "/api/repos/create", "create"), ("POST", "/api/validate-yaml", "any"),
           ("GET", "/api/_devhub/stats", None), ("GET", "/api/models/{o}/{n}", None),
           ("GET", "/api/models/{o}/{n}/revision/{r}", None), ("POST", "/api/models/{o}/{n}/preupload/{r}", "preupload"),
           ("POST", "/api/models/{o}/{n}/commit/{r}", "commit"), ("POST", "/api/models/{o}/{n}/paths-info/{r}", "form"),
           ("GET", "/api/models/{o}/{n}/tree/{r}/{f}", None), ("GET", "/api/models/{o}/{n}/tree/{r}?recursive={q}&cursor={q}", None),
           ("GET", "/api/models/{o}/{n}/commits/{r}", None), ("GET", "/api/models/{o}/{n}/refs", None),
           ("POST", "/api/models/{o}/{n}/tag/{r}", "tag"), ("DELETE", "/api/models/{o}/{n}/tag/{r}", None),
           ("POST", "/api/models/{o}/{n}/branch/{r}", "branch"), ("DELETE", "/api/models/{o}/{n}/branch/{r}", None),
           ("POST", "/{o}/{n}.git/info/lfs/objects/batch", "batch"), ("PUT", "/_devhub/lfs/{t}", "any"),
           ("POST", "/_devhub/lfs-verify/{o}/{n}", "verify"), ("GET", "/{o}/{n}/resolve/{r}/{f}", None),
           ("HEAD", "/{o}/{n}/resolve/{r}/{f}", None), ("GET", "/api/datasets/{o}/{n}", None),
           ("POST", "/api/jobs/{o}", "any"), ("GET", "/api/jobs/{o}/{t}/logs", None), ("GET", "/api/jobs/hardware", None)]
_ODD = ["..", ".", "%2e%2e", "a--b", "x.git", "%00", "%2F", "caf%C3%A9", "refs%2Fpr%2F1", "0" * 40, "..%2F..%2Foutside.txt",
        "%ff", "~", "*", "a" * 300, "", "-a", "a%0d%0aX-Injected:%201"]
_VALUES = [None, True, False, 0, -1, 1.5, 2**70, "", "x", "../../outside.txt", "/etc/passwd", "a" * 64, "A" * 64,
           "main", [], {}, [1, "a"], {"a": 1}, "\u0000", "é" * 10, "w.safetensors", "e30=", "a\r\nX-Injected: 1"]


def _maybe(rnd: random.Random, good, odds: float = 0.75):
    """``good`` most of the time, else an odd value."""
    return good if rnd.random() < odds else rnd.choice(_VALUES)


def _fuzz_body(rnd: random.Random, kind: str | None, oid: str) -> bytes:
    if kind is None or rnd.random() < 0.1:
        return rnd.choice([b"", b"", rnd.randbytes(rnd.randint(1, 200)), b"{" * rnd.randint(1, 3000), b"null"])
    if kind == "create":
        data = {"name": _maybe(rnd, rnd.choice(["m", "new", "p"])), "private": _maybe(rnd, rnd.random() < 0.5),
                "organization": _maybe(rnd, rnd.choice(["alice", "bob", None]))}
    elif kind == "preupload":
        data = {"files": _maybe(rnd, [{"path": _maybe(rnd, rnd.choice(["a.txt", "w.safetensors", "d/x.bin"])),
                                       "sample": _maybe(rnd, "aGk="), "size": _maybe(rnd, rnd.randint(0, 1 << 30))}
                                      for _ in range(rnd.randint(0, 3))])}
    elif kind == "batch":
        data = {"operation": _maybe(rnd, "upload"), "transfers": ["basic"], "hash_algo": "sha256",
                "objects": _maybe(rnd, [{"oid": _maybe(rnd, rnd.choice([oid, "b" * 64])), "size": _maybe(rnd, len(WEIGHTS))}
                                        for _ in range(rnd.randint(0, 3))])}
    elif kind == "verify":
        data = {"oid": _maybe(rnd, rnd.choice([oid, "c" * 64])), "size": _maybe(rnd, len(WEIGHTS))}
    elif kind == "tag":
        data = {"tag": _maybe(rnd, rnd.choice(["v1", "v2", "release/x"])), "message": _maybe(rnd, "m")}
    elif kind == "branch":
        data = {"startingPoint": _maybe(rnd, rnd.choice(["main", "v1", None]))}
    elif kind == "form":
        return b"paths=" + rnd.choice([b"a.txt", b"%ff%fe", b"../x", b"w.safetensors", b""]) + b"&expand=" + rnd.choice([b"true", b"1"])
    elif kind == "commit":
        lines: list = [{"key": "header", "value": {"summary": _maybe(rnd, "fuzz"), "description": _maybe(rnd, ""),
                                                   "parentCommit": _maybe(rnd, None)}}] if rnd.random() < 0.9 else []
        for _ in range(rnd.randint(0, 3)):
            key = _maybe(rnd, rnd.choice(["file", "lfsFile", "deletedFile", "deletedFolder"]), 0.9)
            value = {"path": _maybe(rnd, rnd.choice(["a.txt", "b.txt", "w2.safetensors", "d/", "w.safetensors"])),
                     "content": _maybe(rnd, "aGk="), "encoding": _maybe(rnd, "base64"),
                     "oid": _maybe(rnd, oid), "size": _maybe(rnd, len(WEIGHTS)), "algo": _maybe(rnd, "sha256")}
            lines.append({"key": key, "value": value if rnd.random() < 0.95 else [value]})
        body = b"\n".join(json.dumps(line).encode() for line in lines)
        return body if rnd.random() < 0.9 else body + b"\n{broken"
    else:
        data = {rnd.choice(["command", "dockerImage", "x", "files"]): rnd.choice(_VALUES) for _ in range(rnd.randint(0, 3))}
    return json.dumps(data if rnd.random() < 0.95 else [data]).encode()


def _fuzz_request(rnd: random.Random, oid: str) -> bytes:
    method, template, kind = rnd.choice(_ROUTES)
    if rnd.random() < 0.1:
        method = rnd.choice(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "BREW"])
    odd = lambda good: good if rnd.random() < 0.8 else rnd.choice(_ODD)  # noqa: E731
    path = template.format(o=odd(rnd.choice(["alice", "alice", "bob"])), n=odd(rnd.choice(["m", "m", "secret", "gone"])),
                           r=odd(rnd.choice(["main", "main", "v1", "dev"])), f=odd(rnd.choice(["w.safetensors", "a.txt", "d"])),
                           q=odd(rnd.choice(["true", "0", "1"])), t=odd(rnd.choice(["0" * 32, "f" * 24])))
    body = _fuzz_body(rnd, kind, oid)
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    auth = rnd.random()
    if auth < 0.7:
        lines.append(f"Authorization: Bearer {ALICE_TOKEN}")
    elif auth < 0.8:
        lines.append(f"Authorization: Bearer {BOB_TOKEN}")
    elif auth < 0.9:
        lines.append("Authorization: " + rnd.choice(["Bearer hf_wrong_token_123", "Basic abc", "Bearer", "", "Bearer  a b"]))
    if rnd.random() < 0.3:
        lines.append("Content-Type: " + rnd.choice(["application/json", "application/x-ndjson", "text/plain",
                                                    "application/x-www-form-urlencoded"]))
    if rnd.random() < 0.2:
        lines.append("Range: " + rnd.choice(["bytes=0-", "bytes=5-", "bytes=99999999-", "bytes=-5", "lines=1-2", "bytes=x-"]))
    framing = rnd.random()
    payload = body
    if framing < 0.08 and body:  # chunked, sometimes malformed
        size = f"{len(body):x}" if rnd.random() < 0.8 else rnd.choice(["zz", "-1", "", "1" * 20])
        payload = f"{size}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        lines.append("Transfer-Encoding: chunked")
    elif framing < 0.13:  # a bad length header
        lines.append("Content-Length: " + rnd.choice(["abc", "-1", "1e3", " ", "0x10", "99999999999999999999"]))
    elif framing < 0.16:  # two disagreeing ones
        lines += [f"Content-Length: {len(body)}", f"Content-Length: {len(body) + 1}"]
    elif framing < 0.19 and body:  # shorter than what follows: the rest is a second, junk request
        lines.append(f"Content-Length: {rnd.randint(0, len(body) - 1)}")
    else:
        lines.append(f"Content-Length: {len(body)}")
    if rnd.random() < 0.05:
        lines.append("Expect: 100-continue")
    if rnd.random() < 0.03:
        lines.append("Transfer-Encoding: identity")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + payload


def test_fuzzed_requests_always_get_a_wellformed_answer_below_500(api, devhub, tmp_path):
    (tmp_path / "outside.txt").write_bytes(b"TOP SECRET OUTSIDE THE DATA DIR")
    api.create_repo("alice/m")
    api.create_repo("alice/secret", private=True)
    api.create_commit("alice/m", [CommitOperationAdd("w.safetensors", WEIGHTS), CommitOperationAdd("a.txt", b"hi")],
                      commit_message="seed")
    api.create_tag("alice/m", tag="v1")
    bob = HfApi(endpoint=devhub.endpoint, token=BOB_TOKEN)
    bob.create_repo("bob/keep")  # a repo the fuzzer never names
    bob.create_commit("bob/keep", [CommitOperationAdd("w.safetensors", WEIGHTS)], commit_message="keep")
    oid = hashlib.sha256(WEIGHTS).hexdigest()
    rnd = random.Random(20240614)
    started, count = time.monotonic(), 0
    while count < 600 and time.monotonic() - started < 25:
        data = _fuzz_request(rnd, oid)
        method = data.split(b" ", 1)[0].decode()
        with socket.create_connection((devhub.host, devhub.port), timeout=5) as sock:
            try:
                sock.sendall(data)
            except OSError:  # the server answered early (401/413/400) and hung up mid-body: read that answer
                pass
            resp = http.client.HTTPResponse(sock, method=method)
            try:
                resp.begin()
                body = resp.read()
            except Exception as exc:  # noqa: BLE001 - any failure to parse the answer is the bug we look for
                raise AssertionError(f"no well-formed answer to {data[:300]!r}: {exc!r}") from None
        assert 100 <= resp.status < 500, (data[:300], resp.status, body[:300])
        if resp.status >= 400 and method != "HEAD":
            assert resp.getheader("Content-Type") == "application/json", data[:300]
            assert isinstance(json.loads(body)["error"], str), (data[:300], body[:300])
        assert b"TOP SECRET" not in body
        count += 1
    assert count >= 300, f"only {count} requests in 25 s"
    assert all(r.status < 500 for r in devhub.requests)
    assert api.whoami()["name"] == "alice"  # still serving
    path = bob.hf_hub_download("bob/keep", "w.safetensors", cache_dir=tmp_path / "dl")
    assert open(path, "rb").read() == WEIGHTS
