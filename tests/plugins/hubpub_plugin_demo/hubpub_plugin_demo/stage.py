"""A fifth stage from outside hubpub: ``plugin-notes`` runs between card (30) and push (40) and
writes PLUGIN_NOTES.md into the release folder, so it is pushed with the release.

A stage is a ``hubpub.stages.Stage``: a name, an order, and run / key / outputs functions of a
``StageContext``. release, --from/--until and the CLI's choices read it from the stage table.
"""

from __future__ import annotations

from hubpub.stages import Stage, StageContext, digest

NOTES = "PLUGIN_NOTES.md"


def _key(ctx: StageContext) -> str:
    return digest(ctx.recipe.section_hash("model", "quantize"), ctx.recipe.model.display_name)


def _run(ctx: StageContext) -> str:
    from hubpub.artifacts import write_atomic

    text = f"# Notes\n\n{ctx.recipe.model.display_name}, released with the hubpub-plugin-demo stage.\n"
    write_atomic(ctx.out / NOTES, text)
    return text


NOTES_STAGE = Stage(name="plugin-notes", order=35, run=_run, key=_key, outputs=lambda ctx, result: [NOTES],
                    requires=(NOTES,), description="write PLUGIN_NOTES.md")
