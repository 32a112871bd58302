"""`hubpub release --on hf-jobs` and `hubpub jobs ...`, end to end: the real huggingface_hub jobs
client against `DevHub(..., jobs=True)`, whose jobs run as local subprocesses.

The tiny Qwen2 travels with the recipe (it lies in the recipe's folder), the job unpacks the
bundle, runs the bundled hubpub's `release` and pushes to the same devhub with the secret token.
"""

from __future__ import annotations

import _thread
import io
import shutil
import tarfile
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubpub.cli import cli
from hubpub.hub import jobs
from hubpub.hub._client import hub_client
from hubpub.recipe import load_recipe
from hubserver import ALICE, ALICE_TOKEN as TOKEN, USERS

RECIPE = """\
[model]
source = "model"
name = "tiny-qwen2"

[quantize]
method = "rtn"
bits = 4
group_size = 32
device = "cpu"
calibration = "data/calib.txt"

[validate]
device = "cpu"
max_new_tokens = 4
warmup_runs = 0
latency_runs = 1
builtin_modes = false

[[validate.modes]]
name = "greedy"
prompt = "The quick brown"

[[eval]]
kind = "perplexity"
file = "data/heldout.txt"
seqlen = 32
max_samples = 2

[card]
plots = false
license = "apache-2.0"
base_model = "test-org/tiny-qwen2"

[push]
repo_id = "{repo}"
tag = "v1"
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from hubpub.devhub import DevHub

    server = DevHub(tmp_path_factory.mktemp("jobs-hub"), USERS, jobs=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def project(tiny_qwen2, tmp_path_factory):
    """A recipe folder holding the model, a calibration text and an eval text: everything travels."""
    folder = tmp_path_factory.mktemp("jobs-project")
    shutil.copytree(tiny_qwen2, folder / "model")
    (folder / "data").mkdir()
    from tiny_models import corpus_text

    text = corpus_text(40_000)
    (folder / "data" / "calib.txt").write_text(text[:20_000])
    (folder / "data" / "heldout.txt").write_text(text[20_000:])
    return folder


def write(project: Path, name: str, repo: str = f"{ALICE}/tiny-job", extra: str = "") -> Path:
    path = project / name
    path.write_text(RECIPE.format(repo=repo) + extra)
    return path


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def api(hub):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.endpoint, token=TOKEN)


def run(args: list[str]):
    return CliRunner().invoke(cli, args)


def job_ids(hub) -> list[str]:
    return sorted(hub.jobs.jobs)


def wait_for_log(hub, job_id: str, text: str, timeout: float = 120.0) -> None:
    import time

    end = time.monotonic() + timeout
    with hub_client(hub.endpoint):
        while text not in "\n".join(api(hub).fetch_job_logs(job_id=job_id, namespace=ALICE)):
            assert time.monotonic() < end, f"{text!r} not in the log of job {job_id}"
            time.sleep(0.2)


# ----------------------------------------------------------------------------- before submitting
def test_bundle_is_deterministic_and_carries_the_named_inputs(project):
    recipe = load_recipe(write(project, "bundle.toml"))
    one, two = jobs.build_bundle(recipe, ["recipe/bundle.toml"]), jobs.build_bundle(recipe, ["recipe/bundle.toml"])
    assert one.sha256 == two.sha256 and one.data == two.data  # content-addressed upload: same release, same bytes
    assert set(one.inputs) == {"model", "data/calib.txt", "data/heldout.txt"}
    with tarfile.open(fileobj=io.BytesIO(one.data)) as tar:
        names = set(tar.getnames())
    assert {"job.json", "recipe/bundle.toml", "recipe/data/calib.txt", "recipe/model/config.json", "hubpub/cli/jobs_cmd.py"} <= names
    assert not any("__pycache__" in n for n in names)
    assert any(r.startswith("torch==") for r in one.job["requirements"])


def test_path_outside_the_recipe_folder_cannot_travel(project, hub, token, tmp_path):
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("text")
    path = write(project, "outside.toml", extra=f'\n[[eval]]\nkind = "perplexity"\nfile = "{outside}"\n')
    before = job_ids(hub)
    result = run(["release", str(path), "--on", "hf-jobs", "--endpoint", hub.endpoint])
    assert result.exit_code == 1
    line = path.read_text().splitlines().index(f'file = "{outside}"') + 1
    assert result.output == (
        f"Error: {path}:{line}: eval[1].file: {str(outside)!r} is outside the recipe's folder {project}, so it cannot travel"
        " with the job; move it into that folder and name it by a relative path\n"
    )
    assert job_ids(hub) == before


def test_no_token_is_a_one_line_error(project, hub, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login either
    result = run(["release", str(write(project, "notoken.toml")), "--on", "hf-jobs", "--endpoint", hub.endpoint])
    assert result.exit_code == 1
    assert result.output == f"Error: {jobs.NO_TOKEN}\n"


def test_unknown_flavor_lists_what_the_api_reports(project, hub, token):
    result = run(["release", str(write(project, "flavor.toml")), "--on", "hf-jobs", "--endpoint", hub.endpoint, "--flavor", "a10g-tiny"])
    assert result.exit_code == 1
    with hub_client(hub.endpoint):
        listed = [h.name for h in api(hub).list_jobs_hardware()]
    assert result.output == f"Error: --flavor 'a10g-tiny': not a Jobs flavor; the Jobs API lists: {', '.join(listed)}\n"


def test_a_bad_flavor_in_any_recipe_of_a_matrix_starts_no_job(project, hub, token):
    good = write(project, "m-good.toml")
    bad = write(project, "m-bad.toml", extra='\n[jobs]\nflavor = "quantum-xl"\n')
    before = job_ids(hub)
    result = run(["release", str(good), str(bad), "--on", "hf-jobs", "--endpoint", hub.endpoint])
    assert result.exit_code == 1
    with hub_client(hub.endpoint):
        listed = [h.name for h in api(hub).list_jobs_hardware()]
    line = bad.read_text().splitlines().index('flavor = "quantum-xl"') + 1
    assert result.output == (f"Error: {bad}:{line}: jobs.flavor 'quantum-xl': not a Jobs flavor; the Jobs API lists:"
                             f" {', '.join(listed)}\n")
    assert job_ids(hub) == before  # the good recipe was not sent either


def test_dry_run_shows_the_job_and_submits_nothing(project, hub, token):
    before = job_ids(hub)
    result = run(["release", str(write(project, "dry.toml")), "--on", "hf-jobs", "--endpoint", hub.endpoint, "--dry-run", "--timeout", "90m"])
    assert result.exit_code == 0, result.output
    assert "Dry run: would submit dry as a job:" in result.output
    assert "timeout: 5400 s" in result.output and "secrets: HF_TOKEN" in result.output
    assert TOKEN not in result.output
    assert job_ids(hub) == before


# ----------------------------------------------------------------------------- the round trip
def test_release_as_a_job_streams_logs_pushes_and_keeps_the_secret(project, hub, token):
    path = write(project, "release.toml", repo=f"{ALICE}/tiny-job")
    result = run(["release", str(path), "--on", "hf-jobs", "--endpoint", hub.endpoint, "--flavor", "t4-small"])
    assert result.exit_code == 0, result.output
    (job_id,) = [j for j in job_ids(hub) if hub.jobs.jobs[j].record["labels"]["recipe"] == "release"]
    # the job's log streamed to the terminal: the bundled hubpub announced itself and ran every stage
    assert "hubpub job: hubpub 0.1.0" in result.output
    for stage in ("quantize", "validate", "card", "push"):
        assert f"{stage:<9} ran in" in result.output
    assert jobs.RESULT_PREFIX not in result.output  # the result line is read, not shown
    assert f"job {job_id}: COMPLETED" in result.output
    assert f"commit: {hub.endpoint}/{ALICE}/tiny-job/commit/" in result.output.split(f"job {job_id}: COMPLETED")[1]
    assert f"published: {hub.endpoint}/{ALICE}/tiny-job (tag v1)" in result.output
    assert "Perplexity" in result.output.split(f"Release of release (job {job_id})")[1]

    client = api(hub)
    with hub_client(hub.endpoint):
        info = client.inspect_job(job_id=job_id, namespace=ALICE)
        logs = "\n".join(client.fetch_job_logs(job_id=job_id, namespace=ALICE))
        tags = [t.name for t in client.list_repo_refs(f"{ALICE}/tiny-job").tags]
        files = {f.path for f in client.list_repo_tree(f"{ALICE}/tiny-job", revision="v1", recursive=True)}
        bundle = client.hf_hub_download(f"{ALICE}/{jobs.STAGING_NAME}", info.environment["HUBPUB_BUNDLE_FILE"],
                                        cache_dir=str(project / ".cache"))
    assert tags == ["v1"] and {"hubpub_metrics.json", "hubpub_recipe.toml", "README.md"} <= files
    assert info.flavor == "t4-small" and info.labels["hubpub"] == "0-1-0"
    # the token is a secret: a name in the spec, never a value in env, command, logs or the bundle
    assert info.secrets == {"HF_TOKEN": None}
    assert TOKEN not in repr(info.environment) and TOKEN not in repr(info.command)
    assert TOKEN not in logs and TOKEN not in result.output
    assert TOKEN.encode() not in Path(bundle).read_bytes()


def test_failed_job_exits_1_with_its_last_log_line(project, hub, token):
    broken = project / "broken-model"
    broken.mkdir(exist_ok=True)
    (broken / "config.json").write_text("{}")
    path = write(project, "broken.toml")
    path.write_text(path.read_text().replace('source = "model"', 'source = "broken-model"'))
    result = run(["release", str(path), "--on", "hf-jobs", "--endpoint", hub.endpoint])
    assert result.exit_code == 1
    (job_id,) = [j for j in job_ids(hub) if hub.jobs.jobs[j].record["labels"]["recipe"] == "broken"]
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: job {job_id} ended ERROR: Job failed with exit code: 1; last log line: Error: ")
    assert "has no *.safetensors weights" in last and last.endswith(f"full log: hubpub jobs logs {job_id}")


def test_timeout_stops_the_job_and_is_an_error(project, hub, token):
    path = write(project, "slow.toml")
    result = run(["release", str(path), "--on", "hf-jobs", "--endpoint", hub.endpoint, "--timeout", "2s"])
    assert result.exit_code == 1
    (job_id,) = [j for j in job_ids(hub) if hub.jobs.jobs[j].record["labels"]["recipe"] == "slow"]
    assert result.output.strip().splitlines()[-1] == (
        f"Error: job {job_id} did not finish within its timeout and was stopped; raise --timeout or [jobs] timeout"
        f" ({hub.endpoint}/jobs/{ALICE}/{job_id})"
    )
    with hub_client(hub.endpoint):
        assert api(hub).inspect_job(job_id=job_id, namespace=ALICE).status.stage == "ERROR"  # not left running


def test_watchdog_cancels_a_job_the_hub_did_not_stop(project, hub, token):
    submitted = jobs.submit(load_recipe(write(project, "watchdog.toml")), endpoint=hub.endpoint, timeout="1h")
    outcome = jobs.JobClient(hub.endpoint).follow(submitted.job_id, timeout=0.5, grace=0.5, poll=0.2)
    assert outcome.timed_out and outcome.stage == "CANCELED"
    assert "did not finish within its timeout" in outcome.error()


def test_ctrl_c_cancels_the_job_when_nobody_can_answer(project, hub, token):
    path = write(project, "interrupt.toml")
    seen = threading.Event()
    real_echo = __import__("click").echo

    def echo(message=None, *args, **kwargs):
        real_echo(message, *args, **kwargs)
        if isinstance(message, str) and message.startswith("hubpub job:") and not seen.is_set():
            seen.set()
            _thread.interrupt_main()  # what Ctrl-C does

    import click

    click_echo, click.echo = click.echo, echo
    try:
        result = run(["release", str(path), "--on", "hf-jobs", "--endpoint", hub.endpoint])
    finally:
        click.echo = click_echo
    assert seen.is_set()
    (job_id,) = [j for j in job_ids(hub) if hub.jobs.jobs[j].record["labels"]["recipe"] == "interrupt"]
    assert result.exit_code == 130, result.output
    assert f"canceled job {job_id}" in result.output  # stdin is no terminal: cancel, leave nothing running
    with hub_client(hub.endpoint):
        assert api(hub).inspect_job(job_id=job_id, namespace=ALICE).status.stage == "CANCELED"


def test_detach_then_status_logs_cancel(project, hub, token):
    path = write(project, "detach.toml")
    result = run(["release", str(path), "--on", "hf-jobs", "--endpoint", hub.endpoint, "--detach"])
    assert result.exit_code == 0, result.output
    (job_id,) = [j for j in job_ids(hub) if hub.jobs.jobs[j].record["labels"]["recipe"] == "detach"]
    assert f"detach: job {job_id}  {hub.endpoint}/jobs/{ALICE}/{job_id}" in result.output
    wait_for_log(hub, job_id, "hubpub job:")
    status = run(["jobs", "status", job_id, "--endpoint", hub.endpoint])
    assert status.exit_code == 0 and status.output.startswith(f"job {job_id}: RUNNING\nflavor: a10g-small\n")
    listed = run(["jobs", "list", "--endpoint", hub.endpoint])
    assert job_id in listed.output and "detach" in listed.output
    canceled = run(["jobs", "cancel", job_id, "--endpoint", hub.endpoint])
    assert canceled.output == f"canceled job {job_id}\n"
    status = run(["jobs", "status", job_id, "--endpoint", hub.endpoint])
    assert status.output.startswith(f"job {job_id}: CANCELED (Job canceled)\n")
    logs = run(["jobs", "logs", job_id, "--endpoint", hub.endpoint])
    assert logs.exit_code == 0 and "hubpub job:" in logs.output
    missing = run(["jobs", "status", "0123456789abcdef01234567", "--endpoint", hub.endpoint])
    assert missing.exit_code == 1
    assert missing.output.startswith("Error: job 0123456789abcdef01234567 not found at ")


def test_matrix_runs_recipes_as_parallel_jobs_and_prints_one_table(project, hub, token):
    good = write(project, "good.toml")
    bad = write(project, "bad.toml")
    bad.write_text(bad.read_text().replace('source = "model"', 'source = "broken-model"'))
    (project / "broken-model").mkdir(exist_ok=True)
    (project / "broken-model" / "config.json").write_text("{}")
    result = run(["release", str(good), str(bad), "--on", "hf-jobs", "--endpoint", hub.endpoint, "--no-push", "--until", "quantize"])
    assert result.exit_code == 1
    ids = {hub.jobs.jobs[j].record["labels"]["recipe"]: j for j in job_ids(hub) if hub.jobs.jobs[j].record["labels"]["recipe"] in ("good", "bad")}
    assert set(ids) == {"good", "bad"}
    lines = result.output.splitlines()
    assert any(line.startswith("good | quantize  ran in") for line in lines)
    assert any(line.startswith("bad  | Error: ") and "has no *.safetensors weights" in line for line in lines)
    table = result.output.split("Releases on Hugging Face Jobs")[1]
    good_row = next(line for line in table.splitlines() if ids["good"] in line)
    bad_row = next(line for line in table.splitlines() if ids["bad"] in line)
    assert "COMPLETED" in good_row and "not pushed" in good_row
    assert "FAILED" in bad_row or "ERROR" in bad_row
    assert lines[-1] == "Error: 1 of 2 jobs failed: see the table above (full logs: hubpub jobs logs ID)"


def test_jobs_table_is_checked_with_file_line_and_field(write_recipe):
    from hubpub.errors import RecipeError

    path = write_recipe('[model]\nsource = "org/model"\n\n[jobs]\nflavor = "h200"\ntimeout = "2x"\n')
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}:6: jobs.timeout: must be a duration like '2h', '90m', '3600s' or a number of seconds (got '2x')"
    path = write_recipe('[model]\nsource = "org/model"\n\n[jobs]\nflavor = "h200"\ntimeout = "90m"\n')
    assert load_recipe(path).jobs.timeout_s == 5400
