"""hubpub-plugin-demo: what a third-party hubpub plugin looks like (see pyproject.toml's entry points)."""

__version__ = "0.1.0"
