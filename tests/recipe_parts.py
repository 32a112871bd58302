"""Recipe pieces many tests share: the cheapest validate that still measures something."""

# one warm-up-free timed call per mode, 4 new tokens, and a 2-window perplexity on the held-out pydoc text
FAST_VALIDATE = """\
[validate]
device = "cpu"
max_new_tokens = 4
warmup_runs = 0
latency_runs = 1

[[eval]]
kind = "perplexity"
file = "builtin:pydoc"
seqlen = 32
max_samples = 2
"""
