"""devhub's Jobs emulation (issue #13 item 3), driven end to end by the real huggingface_hub client:
run_job / run_uv_job / fetch_job_logs / inspect_job / list_jobs / cancel_job / rerun_job against
``DevHub(..., jobs=True)``, whose jobs are local subprocesses."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hubpub.devhub import DevHub
from hubpub.hub._client import hub_client

from hubserver import ALICE_TOKEN, BOB_TOKEN, USERS

SECRET = "hf_job_secret_value_4242"


@pytest.fixture
def jobs_hub(tmp_path):
    hub = DevHub(tmp_path / "data", USERS, jobs=True).start()
    with hub_client(hub.endpoint):
        yield hub
    hub.stop()


@pytest.fixture
def api(jobs_hub):
    return HfApi(endpoint=jobs_hub.endpoint, token=ALICE_TOKEN)


def py(code: str) -> list[str]:
    return ["python", "-c", code]


def wait(api, job_id: str, timeout: float = 8):
    return api.wait_for_job(job_id, timeout=timeout, poll_interval=0.05)


def test_run_job_streams_its_logs_and_completes(api, jobs_hub):
    job = api.run_job(image="python:3.12", command=py("import os, sys; print('hello', os.environ['GREETING']);"
                                                      " print('to stderr', file=sys.stderr); print(os.getcwd())"),
                      env={"GREETING": "from devhub"}, labels={"kind": "smoke"})
    assert job.status.stage in ("RUNNING", "COMPLETED") and job.owner.name == "alice"
    assert job.url == f"{jobs_hub.endpoint}/jobs/alice/{job.id}"
    logs = list(api.fetch_job_logs(job_id=job.id, follow=True))  # streamed until the job ends
    assert logs[:2] == ["hello from devhub", "to stderr"]
    assert logs[2] == str(jobs_hub.store.root / "jobs" / job.id / "work")  # the scratch folder inside the data dir
    info = api.inspect_job(job_id=job.id)
    assert (info.status.stage, info.status.message) == ("COMPLETED", None)
    assert info.docker_image == "python:3.12" and info.command[0] == "python" and info.environment == {"GREETING": "from devhub"}
    assert info.flavor == "cpu-basic" and info.started_at and info.finished_at and info.durations.total_secs is not None
    assert list(api.fetch_job_logs(job_id=job.id)) == logs  # replay after the end, without follow
    assert list(api.fetch_job_logs(job_id=job.id, tail=1)) == logs[-1:]
    assert [j.id for j in api.list_jobs(namespace="alice", labels={"kind": "smoke"})] == [job.id]
    assert list(api.list_jobs(namespace="alice", status="RUNNING")) == []
    assert "cpu-basic" in [h.name for h in api.list_jobs_hardware()]


def test_a_failing_command_is_error_with_its_exit_code(api):
    job = api.run_job(image="python:3.12", command=py("import sys; print('about to fail'); sys.exit(3)"))
    info = wait(api, job.id)
    assert (info.status.stage, info.status.message) == ("ERROR", "Job failed with exit code: 3")
    assert list(api.fetch_job_logs(job_id=job.id)) == ["about to fail"]
    missing = api.run_job(image="python:3.12", command=["no-such-command-devhub"])
    info = wait(api, missing.id)
    assert info.status.stage == "ERROR" and "cannot start 'no-such-command-devhub'" in info.status.message


def test_cancel_kills_the_whole_process_group(api, tmp_path):
    pidfile = tmp_path / "child.pid"
    code = ("import subprocess, time; child = subprocess.Popen(['sleep', '60']);"
            f" open({str(pidfile)!r}, 'w').write(str(child.pid)); print('started', flush=True); time.sleep(60)")
    job = api.run_job(image="python:3.12", command=py(code))
    deadline = time.monotonic() + 5
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    child = int(pidfile.read_text())
    api.cancel_job(job_id=job.id)
    info = wait(api, job.id)
    assert (info.status.stage, info.status.message) == ("CANCELED", "Job canceled")
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child), "the job's child process outlived the cancel"
    assert list(api.fetch_job_logs(job_id=job.id)) == ["started"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"  # a zombie is dead, only not reaped yet
    except FileNotFoundError:
        return False


def test_the_timeout_ends_a_job_with_error(api):
    job = api.run_job(image="python:3.12", command=["sleep", "30"], timeout=1)
    info = wait(api, job.id)
    assert (info.status.stage, info.status.message) == ("ERROR", "Job timed out after 1 seconds")
    assert info.durations.running_secs is not None and info.durations.running_secs < 6


def test_secrets_reach_the_process_and_nothing_else(api, jobs_hub):
    job = api.run_job(image="python:3.12", secrets={"HF_TOKEN": SECRET}, env={"VISIBLE": "yes"},
                      command=py("import os; s = os.environ['HF_TOKEN']; print('secret length', len(s)); print('leak:', s)"))
    logs = list(api.fetch_job_logs(job_id=job.id, follow=True))
    assert logs == [f"secret length {len(SECRET)}", "leak: ***"]  # received it; printed, it is masked
    info = api.inspect_job(job_id=job.id)
    assert info.secrets == {"HF_TOKEN": None} and info.environment == {"VISIBLE": "yes"}
    request = urllib.request.Request(f"{jobs_hub.endpoint}/api/jobs/alice/{job.id}", headers={"Authorization": f"Bearer {ALICE_TOKEN}"})
    listing = urllib.request.Request(f"{jobs_hub.endpoint}/api/jobs/alice", headers={"Authorization": f"Bearer {ALICE_TOKEN}"})
    for req in (request, listing):
        assert SECRET not in urllib.request.urlopen(req).read().decode()
    stored = [p for p in jobs_hub.store.root.rglob("*") if p.is_file()]
    assert stored and not [p for p in stored if SECRET.encode() in p.read_bytes()]
    # devhub's own environment does not leak into jobs
    os.environ["DEVHUB_TEST_PARENT_ONLY"] = "parent"
    try:
        job = api.run_job(image="python:3.12", command=py("import os; print(os.environ.get('DEVHUB_TEST_PARENT_ONLY'))"))
        assert list(api.fetch_job_logs(job_id=job.id, follow=True)) == ["None"]
    finally:
        del os.environ["DEVHUB_TEST_PARENT_ONLY"]


@pytest.mark.filterwarnings("ignore:'HfApi.run_uv_job' is experimental")
def test_python_and_uv_run_are_the_local_interpreter(api):
    job = api.run_uv_job("python", script_args=["-c", "import sys; print(sys.executable)"], dependencies=["numpy"])
    logs = list(api.fetch_job_logs(job_id=job.id, follow=True))
    assert logs == ["devhub jobs: uv --with numpy ignored: the job uses the local environment", sys.executable]
    assert wait(api, job.id).status.stage == "COMPLETED"
    rerun = api.rerun_job(job_id=job.id)
    assert rerun.id != job.id and wait(api, rerun.id).status.stage == "COMPLETED"


def test_jobs_belong_to_their_namespace(api, jobs_hub):
    job = api.run_job(image="python:3.12", command=py("print(1)"))
    bob = HfApi(endpoint=jobs_hub.endpoint, token=BOB_TOKEN)
    with pytest.raises(HfHubHTTPError) as err:
        bob.inspect_job(job_id=job.id, namespace="alice")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        bob.inspect_job(job_id=job.id)
    assert err.value.response.status_code == 404
    with pytest.raises(HfHubHTTPError) as err:
        bob.cancel_job(job_id=job.id)
    assert err.value.response.status_code == 404
    assert list(bob.list_jobs(namespace="bob")) == []
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=jobs_hub.endpoint, token=False).run_job(image="x", command=["true"], namespace="alice")
    assert err.value.response.status_code == 401


def test_bad_job_specs_are_400(api, jobs_hub):
    def post(spec):
        request = urllib.request.Request(f"{jobs_hub.endpoint}/api/jobs/alice", data=json.dumps(spec).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {ALICE_TOKEN}", "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())["error"]
        return 200, None

    good = {"dockerImage": "python:3.12", "command": ["true"], "arguments": [], "environment": {}, "flavor": "cpu-basic"}
    for change, message in [({"command": []}, "'command' must be a non-empty list"),
                            ({"command": "true"}, "'command' must be a list"),
                            ({"command": ["a\x00b"]}, "no NUL"),
                            ({"environment": {"BAD NAME": "x"}}, "not a valid environment variable name"),
                            ({"flavor": "quantum-xl"}, "unknown flavor"),
                            ({"timeoutSeconds": 0}, "'timeoutSeconds' must be between"),
                            ({"volumes": [{"type": "bucket"}]}, "does not emulate volumes"),
                            ({"dockerImage": None}, "missing 'dockerImage'")]:
        status, error = post({**good, **change})
        assert status == 400 and message in error, (change, status, error)
    assert post([1, 2])[0] == 400


def test_jobs_are_off_unless_asked_for(tmp_path):
    with DevHub(tmp_path / "data", USERS) as hub, hub_client(hub.endpoint):
        api = HfApi(endpoint=hub.endpoint, token=ALICE_TOKEN)
        with pytest.raises(HfHubHTTPError) as err:
            api.run_job(image="python:3.12", command=["python", "-c", "print(1)"])
        assert err.value.response.status_code == 404
        assert "jobs are disabled; start devhub with --jobs" in str(err.value)
        assert not (tmp_path / "data" / "jobs").exists()


def test_a_restart_marks_running_jobs_as_error(tmp_path):
    hub = DevHub(tmp_path / "data", USERS, jobs=True).start()
    with hub_client(hub.endpoint):
        api = HfApi(endpoint=hub.endpoint, token=ALICE_TOKEN)
        done = api.run_job(image="python:3.12", command=py("print('kept')"))
        wait(api, done.id)
        job = api.run_job(image="python:3.12", command=["sleep", "30"])
    hub.stop()  # kills the running job...
    running = hub.jobs.jobs[job.id]
    deadline = time.monotonic() + 5
    while not running.done and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running.record["status"]["stage"] == "CANCELED"
    # ...but had devhub died (SIGKILL), the record on disk would still say RUNNING
    record = {**running.record, "status": {"stage": "RUNNING", "message": None}, "finishedAt": None}
    (tmp_path / "data" / "jobs" / job.id / "job.json").write_text(json.dumps(record))
    with DevHub(tmp_path / "data", USERS, jobs=True) as again, hub_client(again.endpoint):
        api = HfApi(endpoint=again.endpoint, token=ALICE_TOKEN)
        info = api.inspect_job(job_id=job.id)
        assert (info.status.stage, info.status.message) == ("ERROR", "devhub stopped while the job was running")
        assert list(api.fetch_job_logs(job_id=done.id)) == ["kept"]
