"""`hubpub quantize`."""
