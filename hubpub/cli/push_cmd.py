"""`hubpub push`."""
