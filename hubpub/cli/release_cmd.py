"""`hubpub release`."""
