"""`hubpub validate`."""
