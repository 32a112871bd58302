"""Read a previous release back from the Hub (for the card's history section)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .. import artifacts
from ..errors import PushError
from ._client import hub_client, hub_errors, resolve_endpoint, resolve_token


def fetch_previous_release(repo_id: str, tag: str, endpoint: str | None = None) -> tuple[str, str]:
    """(hubpub_metrics.json text, hubpub_recipe.toml text) of the release tagged ``tag`` in ``repo_id``.

    Read-only: a token is used when there is one (private repos), none is required."""
    from huggingface_hub.errors import RemoteEntryNotFoundError, RevisionNotFoundError

    endpoint = resolve_endpoint(endpoint)
    token = resolve_token(required=False)
    texts = []
    with hub_client(endpoint), hub_errors(endpoint, repo_id, revision=tag), tempfile.TemporaryDirectory(prefix="hubpub-prev-") as cache:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=token)
        for name in (artifacts.METRICS, artifacts.RECIPE_COPY):
            try:
                path = api.hf_hub_download(repo_id, name, revision=tag, cache_dir=cache)
            except RevisionNotFoundError:
                raise PushError(f"tag {tag!r} not found in {repo_id} at {endpoint}: check card.previous_tag") from None
            except RemoteEntryNotFoundError:
                raise PushError(f"{repo_id}@{tag} has no {name}: it was not published by hubpub; unset card.previous_tag") from None
            texts.append(Path(path).read_text(encoding="utf-8"))
    return texts[0], texts[1]
