"""devhub speaks the Hub protocol pieces push relies on, with the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
import urllib.request

import pytest
from click.testing import CliRunner
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hubpub.cli import cli
from hubpub.devhub import DevHub, DevhubError
from hubpub.hub._client import hub_client

from hubserver import ALICE_TOKEN, BOB_TOKEN, USERS, devhub  # noqa: F401

WEIGHTS = bytes(range(256)) * 40  # binary: goes to LFS


@pytest.fixture
def api(devhub):
    with hub_client(devhub.endpoint):
        yield HfApi(endpoint=devhub.endpoint, token=ALICE_TOKEN)


def test_whoami_and_bad_token(api, devhub):
    assert api.whoami()["name"] == "alice"
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=devhub.endpoint, token="hf_not_a_known_token").whoami()
    assert err.value.response.status_code == 401


def test_create_repo_exist_ok_answers_409_with_url(api, devhub):
    assert str(api.create_repo("alice/m")) == f"{devhub.endpoint}/alice/m"
    assert str(api.create_repo("alice/m", exist_ok=True)) == f"{devhub.endpoint}/alice/m"
    assert [r.status for r in devhub.requests if r.path == "/api/repos/create"] == [200, 409]
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("bob/m")
    assert err.value.response.status_code == 403


def test_preupload_oid_and_lfs_batch_skip_stored_objects(api, devhub):
    api.create_repo("alice/m")
    api.create_commit("alice/m", [CommitOperationAdd("w.safetensors", WEIGHTS), CommitOperationAdd("a.json", b"{}")], commit_message="one")
    assert devhub.stats["lfs_puts"] == 1
    request = urllib.request.Request(
        f"{devhub.endpoint}/api/models/alice/m/preupload/main", method="POST",
        headers={"Authorization": f"Bearer {ALICE_TOKEN}", "Content-Type": "application/json"},
        data=json.dumps({"files": [{"path": "w.safetensors", "sample": "", "size": len(WEIGHTS)},
                                   {"path": "a.json", "sample": "e30=", "size": 2}]}).encode())
    files = json.load(urllib.request.urlopen(request))["files"]
    assert files[0] == {"path": "w.safetensors", "uploadMode": "lfs", "shouldIgnore": False, "oid": hashlib.sha256(WEIGHTS).hexdigest()}
    assert files[1]["uploadMode"] == "regular" and files[1]["oid"] == hashlib.sha1(b"blob 2\0{}").hexdigest()
    # the same bytes under another name: the batch answers without actions, nothing is PUT
    api.create_commit("alice/m", [CommitOperationAdd("copy.safetensors", WEIGHTS)], commit_message="two")
    assert devhub.stats["lfs_puts"] == 1
    assert api.model_info("alice/m").siblings[-1].rfilename == "w.safetensors"


def test_stale_parent_commit_is_412(api):
    api.create_repo("alice/m")
    first = api.create_commit("alice/m", [CommitOperationAdd("a.txt", b"a")], commit_message="a").oid
    api.create_commit("alice/m", [CommitOperationAdd("b.txt", b"b")], commit_message="b", parent_commit=first)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit("alice/m", [CommitOperationAdd("c.txt", b"c")], commit_message="c", parent_commit=first)
    assert err.value.response.status_code == 412


def test_tree_paging_follows_link_headers(tmp_path):
    with DevHub(tmp_path / "data", USERS, page_size=2) as hub, hub_client(hub.endpoint):
        api = HfApi(endpoint=hub.endpoint, token=ALICE_TOKEN)
        api.create_repo("alice/m")
        api.create_commit("alice/m", [CommitOperationAdd(f"d/f{i}.txt", str(i).encode()) for i in range(5)], commit_message="five")
        start = len(hub.requests)
        files = api.list_repo_files("alice/m")
        assert files == [".gitattributes", *(f"d/f{i}.txt" for i in range(5))]
        assert len([r for r in hub.requests[start:] if "/tree/" in r.path]) == 4  # 7 entries, 2 per page


def test_lfs_download_carries_linked_etag_and_content(api, devhub, tmp_path):
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    api.create_repo("alice/m")
    api.create_commit("alice/m", [CommitOperationAdd("w.safetensors", WEIGHTS)], commit_message="w")
    api.create_tag("alice/m", tag="v1")
    meta = get_hf_file_metadata(hf_hub_url("alice/m", "w.safetensors", revision="v1", endpoint=devhub.endpoint), token=ALICE_TOKEN)
    assert (meta.etag, meta.size) == (hashlib.sha256(WEIGHTS).hexdigest(), len(WEIGHTS))
    path = api.hf_hub_download("alice/m", "w.safetensors", revision="v1", cache_dir=tmp_path / "cache")
    assert open(path, "rb").read() == WEIGHTS
    with pytest.raises(HfHubHTTPError) as err:
        api.create_tag("alice/m", tag="v1")
    assert err.value.response.status_code == 409


def test_private_repo_is_404_to_other_users_and_anonymous(api, devhub):
    api.create_repo("alice/p", private=True)
    for token in (BOB_TOKEN, False):
        with pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=devhub.endpoint, token=token).model_info("alice/p")
    assert api.model_info("alice/p").private is True


def test_state_survives_a_restart(tmp_path):
    with DevHub(tmp_path / "data", USERS) as hub, hub_client(hub.endpoint):
        api = HfApi(endpoint=hub.endpoint, token=ALICE_TOKEN)
        api.create_repo("alice/m")
        oid = api.create_commit("alice/m", [CommitOperationAdd("w.safetensors", WEIGHTS)], commit_message="w").oid
        api.create_tag("alice/m", tag="v1", revision=oid)
    with DevHub(tmp_path / "data", USERS) as hub, hub_client(hub.endpoint):
        refs = HfApi(endpoint=hub.endpoint, token=ALICE_TOKEN).list_repo_refs("alice/m")
        assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", oid)]


def test_binds_to_loopback_only(tmp_path):
    with pytest.raises(DevhubError) as err:
        DevHub(tmp_path / "data", USERS, host="0.0.0.0")
    assert str(err.value) == "--host 0.0.0.0: devhub binds to the loopback interface only (it has no TLS and test tokens); use --host 127.0.0.1"
    result = CliRunner().invoke(cli, ["devhub", "--user", "alice"])
    assert (result.exit_code, result.output) == (1, "Error: --user 'alice': expected NAME:TOKEN with a token of 8+ characters, e.g. --user alice:hf_alice_secret\n")


def test_stats_endpoint_counts_requests(api, devhub):
    api.whoami()
    stats = json.load(urllib.request.urlopen(f"{devhub.endpoint}/api/_devhub/stats"))
    assert stats["requests"] >= 1 and stats["lfs_puts"] == 0
