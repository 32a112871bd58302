"""`hubpub reproduce`: a release pushed to devhub is re-run from its own published recipe.

One real RTN release of the tiny Qwen2 is pushed once per module (tag v1); then a commit that
tampers with the published metrics is tagged v1-tampered. Reproducing v1 must give the same
numbers and byte-identical weights; reproducing v1-tampered must say which number is off.
Both are also run with ``--on hf-jobs``: the real huggingface_hub jobs client against
``DevHub(..., jobs=True)``, whose job runs the bundled hubpub's reproduce as a local process and
uploads its report, which comes back to the local report folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubpub import artifacts
from hubpub.cli import cli
from hubpub.hub._client import hub_client
from hubpub.recipe import load_recipe
from hubpub.release import release
from hubserver import ALICE_TOKEN as TOKEN, start_devhub

REPO_ID = "alice/tiny-rtn-repro"

RECIPE = """\
output_dir = "out/tiny"

[model]
source = "{source}"
name = "tiny-qwen2"

[quantize]
method = "rtn"
bits = 4
group_size = 32
device = "cpu"

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
file = "builtin:pydoc"
seqlen = 32
max_samples = 2

[card]
plots = false
license = "apache-2.0"
base_model = "test-org/tiny-qwen2"

[push]
repo_id = "{repo_id}"
tag = "v1"
"""


@pytest.fixture(scope="module")
def published(tiny_qwen2, tmp_path_factory):
    """(devhub, published metrics) after a real release and a tampering commit tagged v1-tampered."""
    folder = tmp_path_factory.mktemp("repro-project")
    recipe_path = folder / "recipe.toml"
    recipe_path.write_text(RECIPE.format(source=tiny_qwen2, repo_id=REPO_ID))
    hub = start_devhub(tmp_path_factory.mktemp("repro-hub"), jobs=True)  # jobs: for reproduce --on hf-jobs
    saved = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = TOKEN
    try:
        result = release(load_recipe(recipe_path), endpoint=hub.endpoint)
        assert result.repo_url == f"{hub.endpoint}/{REPO_ID}"
        metrics = artifacts.Metrics.read(result.output_dir / artifacts.METRICS)
        tampered = json.loads((result.output_dir / artifacts.METRICS).read_text())
        ppl = tampered["evals"][0]["metrics"]["perplexity"]
        ppl["quantized"] = ppl["quantized"] * 0.9  # a 10 % better number than was measured
        from huggingface_hub import HfApi

        api = HfApi(endpoint=hub.endpoint, token=TOKEN)
        with hub_client(hub.endpoint):
            commit = api.upload_file(path_or_fileobj=json.dumps(tampered).encode(), path_in_repo=artifacts.METRICS,
                                     repo_id=REPO_ID, commit_message="nicer numbers")
            api.create_tag(REPO_ID, tag="v1-tampered", revision=commit.oid)
        yield hub, metrics
    finally:
        if saved is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = saved
        hub.stop()


def test_release_reproduces_with_identical_weights_and_numbers(published, tmp_path):
    hub, metrics = published
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["reproduce", f"{REPO_ID}@v1", "--endpoint", hub.endpoint, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{REPO_ID}@v1 reproduces" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["reproduced"] is True and report["weights_identical"] is True and report["weights_required"] is True
    assert report["files"] and all(f["identical"] for f in report["files"])
    assert {f["path"] for f in report["files"]} == {p.name for p in (out / "release").glob("*.safetensors")}
    by_name = {m["name"]: m for m in report["metrics"]}
    ppl = by_name["eval perplexity: perplexity (quantized)"]
    assert ppl["published"] == metrics.evals[0].metrics["perplexity"]["quantized"]
    assert ppl["reproduced"] == ppl["published"] and ppl["within"] is True  # RTN on the same machine: the same number
    assert by_name["quantized weight_bytes"]["reproduced"] == metrics.quantized.weight_bytes
    assert by_name["quantized latency_s"]["within"] is None  # machine-dependent: shown, not judged
    assert by_name["mode greedy (quantized) ok"]["within"] is True
    md = (out / "report.md").read_text()
    assert f"**{REPO_ID}@v1 reproduces**" in md and "| eval perplexity: perplexity (quantized) | measured |" in md
    assert not (out / "release" / ".git").exists()
    with hub_client(hub.endpoint):
        from huggingface_hub import HfApi

        commits = HfApi(endpoint=hub.endpoint, token=TOKEN).list_repo_commits(REPO_ID)
    assert len(commits) == 3  # repo creation, the release, the tampering: reproduce pushed nothing


def test_reproduce_detects_tampered_metrics(published, tmp_path):
    hub, metrics = published
    out = tmp_path / "tampered"
    result = CliRunner().invoke(cli, ["reproduce", f"{REPO_ID}@v1-tampered", "--endpoint", hub.endpoint, "--out", str(out)])
    assert result.exit_code == 1, result.output
    real = metrics.evals[0].metrics["perplexity"]["quantized"]
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: {REPO_ID}@v1-tampered does not reproduce: eval perplexity: perplexity (quantized): published ")
    report = json.loads((out / "report.json").read_text())
    assert report["reproduced"] is False and report["weights_identical"] is True  # the weights are the real ones
    bad = [m for m in report["metrics"] if m["within"] is False]
    assert [m["name"] for m in bad] == ["eval perplexity: perplexity (quantized)"]
    assert bad[0]["reproduced"] == real and bad[0]["relative"] == pytest.approx(1 / 0.9 - 1, rel=1e-6)
    assert "does NOT reproduce" in (out / "report.md").read_text()


def test_repo_without_recipe_is_a_one_line_error(published, tmp_path):
    hub, _ = published
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    with hub_client(hub.endpoint):
        api.create_repo("alice/not-hubpub")
        api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id="alice/not-hubpub")
    result = CliRunner().invoke(cli, ["reproduce", "alice/not-hubpub", "--endpoint", hub.endpoint, "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert result.output == (
        "Error: alice/not-hubpub has no hubpub_recipe.toml: it was not published by hubpub, so there is no recipe to re-run"
        " (hubpub releases carry hubpub_recipe.toml, hubpub_manifest.json and hubpub_metrics.json)\n"
    )


def test_bad_target_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["reproduce", "not a repo", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == ("Error: 'not a repo': expected a Hub repo id like 'owner/name' or 'owner/name@v1'"
                             " (a tag, branch or commit)\n")


# ----------------------------------------------------------------------------- --on hf-jobs
def _jobs(hub) -> dict[str, dict]:
    return {job_id: job.record for job_id, job in hub.jobs.jobs.items()}


def test_reproduce_as_a_job_brings_the_report_back(published, tmp_path, monkeypatch):
    hub, metrics = published
    monkeypatch.chdir(tmp_path)  # the report goes to ./reproduce-<name>/ by default
    before = set(_jobs(hub))
    result = CliRunner().invoke(cli, ["reproduce", f"{REPO_ID}@v1", "--on", "hf-jobs", "--endpoint", hub.endpoint,
                                      "--flavor", "t4-small", "--timeout", "10m"])
    assert result.exit_code == 0, result.output
    (job_id,) = set(_jobs(hub)) - before
    record = _jobs(hub)[job_id]
    assert record["labels"]["kind"] == "reproduce" and record["flavor"] == "t4-small"
    out = tmp_path / "reproduce-tiny-rtn-repro"
    # the job's log streamed here: the bundled hubpub ran reproduce and uploaded the report
    assert "hubpub job: hubpub 0.1.0" in result.output and "hubpub job: report uploaded to alice/hubpub-job-inputs/reports/" in result.output
    assert f"job {job_id}: COMPLETED" in result.output
    assert result.output.strip().splitlines()[-1] == f"{REPO_ID}@v1 reproduces (job {job_id})"
    assert f"report: {out / 'report.md'}" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]  # the rebuilt weights stay in the job
    report = json.loads((out / "report.json").read_text())
    assert report["reproduced"] is True and report["weights_identical"] is True and report["weights_required"] is True
    ppl = {m["name"]: m for m in report["metrics"]}["eval perplexity: perplexity (quantized)"]
    assert ppl["reproduced"] == ppl["published"] == metrics.evals[0].metrics["perplexity"]["quantized"]
    assert f"**{REPO_ID}@v1 reproduces**" in (out / "report.md").read_text()
    # the token was a secret of the job: never in its spec, command, environment or log
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    with hub_client(hub.endpoint):
        info = api.inspect_job(job_id=job_id, namespace="alice")
        logs = "\n".join(api.fetch_job_logs(job_id=job_id, namespace="alice"))
        commits = api.list_repo_commits(REPO_ID)
    assert info.secrets == {"HF_TOKEN": None}
    assert TOKEN not in repr(info.environment) + repr(info.command) + logs + result.output
    assert info.environment["HUBPUB_REPORT_DIR"].startswith("reports/")
    assert len(commits) == 3  # the job pushed nothing to the release repo


def test_reproduce_as_a_job_of_tampered_metrics_exits_1_with_the_report(published, tmp_path):
    hub, metrics = published
    out = tmp_path / "tampered-job"
    result = CliRunner().invoke(cli, ["reproduce", f"{REPO_ID}@v1-tampered", "--on", "hf-jobs", "--endpoint", hub.endpoint,
                                      "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert " ERROR  " in result.output  # the job's own result: its reproduce exited 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: {REPO_ID}@v1-tampered does not reproduce: eval perplexity: perplexity (quantized): published ")
    assert line.endswith(f"(see {out / 'report.md'})")
    report = json.loads((out / "report.json").read_text())
    bad = [m for m in report["metrics"] if m["within"] is False]
    assert [m["name"] for m in bad] == ["eval perplexity: perplexity (quantized)"]
    assert bad[0]["reproduced"] == metrics.evals[0].metrics["perplexity"]["quantized"]


@pytest.mark.parametrize("case", ["not-hubpub", "no-token", "flavor", "no-source"])
def test_reproduce_on_jobs_bad_input_starts_no_job(published, tmp_path, monkeypatch, case):
    hub, _ = published
    from hubpub.hub import jobs

    before = set(_jobs(hub))
    args = ["reproduce", f"{REPO_ID}@v1", "--on", "hf-jobs", "--endpoint", hub.endpoint, "--out", str(tmp_path / "r")]
    if case == "not-hubpub":
        from huggingface_hub import HfApi

        api = HfApi(endpoint=hub.endpoint, token=TOKEN)
        with hub_client(hub.endpoint):
            api.create_repo("alice/plain-model", exist_ok=True)
            api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id="alice/plain-model")
        args[1] = "alice/plain-model"
        expected = ("Error: alice/plain-model has no hubpub_recipe.toml: it was not published by hubpub, so there is no recipe"
                    " to re-run (hubpub releases carry hubpub_recipe.toml, hubpub_manifest.json and hubpub_metrics.json)\n")
    elif case == "no-token":
        monkeypatch.delenv("HF_TOKEN")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        expected = f"Error: {jobs.NO_TOKEN}\n"
    elif case == "flavor":
        args += ["--flavor", "a10g-tiny"]
        from huggingface_hub import HfApi

        with hub_client(hub.endpoint):
            listed = [h.name for h in HfApi(endpoint=hub.endpoint, token=TOKEN).list_jobs_hardware()]
        expected = f"Error: --flavor 'a10g-tiny': not a Jobs flavor; the Jobs API lists: {', '.join(listed)}\n"
    else:  # a release whose recipe names a local base-model folder this machine does not have
        from huggingface_hub import CommitOperationAdd, HfApi

        api = HfApi(endpoint=hub.endpoint, token=TOKEN)
        gone = str(tmp_path / "gone" / "tiny-qwen2")
        with hub_client(hub.endpoint):
            got = {name: Path(api.hf_hub_download(REPO_ID, name, revision="v1", cache_dir=str(tmp_path / "c")))
                   for name in (artifacts.RECIPE_COPY, artifacts.MANIFEST, artifacts.METRICS)}
            recipe = "\n".join(f'source = "{gone}"' if line.startswith("source = ") else line
                               for line in got[artifacts.RECIPE_COPY].read_text().splitlines())
            api.create_repo("alice/local-source", exist_ok=True)
            api.create_commit("alice/local-source", commit_message="release", operations=[
                CommitOperationAdd(artifacts.RECIPE_COPY, recipe.encode()),
                *(CommitOperationAdd(name, got[name].read_bytes()) for name in (artifacts.MANIFEST, artifacts.METRICS))])
        args[1] = "alice/local-source"
        expected = (f"Error: alice/local-source: the recipe's model.source {gone!r} is a local folder that is not on"
                    " this machine; pass --source PATH (the base model it was made from)\n")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.output == expected
    assert set(_jobs(hub)) == before  # refused before any job was started


def test_ctrl_c_during_a_reproduce_job_cancels_it(published, tmp_path):
    import _thread
    import threading

    import click

    hub, _ = published
    before = set(_jobs(hub))
    seen = threading.Event()
    real_echo = click.echo

    def echo(message=None, *args, **kwargs):
        real_echo(message, *args, **kwargs)
        if isinstance(message, str) and message.startswith("hubpub job:") and not seen.is_set():
            seen.set()
            _thread.interrupt_main()  # what Ctrl-C does

    click.echo = echo
    try:
        result = CliRunner().invoke(cli, ["reproduce", f"{REPO_ID}@v1", "--on", "hf-jobs", "--endpoint", hub.endpoint,
                                          "--out", str(tmp_path / "r")])
    finally:
        click.echo = real_echo
    assert seen.is_set()
    (job_id,) = set(_jobs(hub)) - before
    assert result.exit_code == 130, result.output
    assert f"canceled job {job_id}" in result.output  # no terminal to ask: cancel, leave nothing running
    assert _jobs(hub)[job_id]["status"]["stage"] == "CANCELED"
    assert not (tmp_path / "r").exists()
