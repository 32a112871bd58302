"""`hubpub card`."""
