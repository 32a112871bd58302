"""devhub: hubpub's local Hugging Face Hub-compatible server (loopback only).

``hubpub devhub`` runs it; tests start ``DevHub(data_dir, {"alice": "token"}).start()`` in a thread.
``DevHub(..., jobs=True)`` (``hubpub devhub --jobs``) also emulates Hugging Face Jobs with local
subprocesses. docs/devhub.md: what it is for, its security model, the jobs emulation's limits.
"""

from .server import DevHub, DevhubError, RequestRecord, check_loopback, parse_user
from .users import ENV_VAR, load_users

__all__ = ["DevHub", "DevhubError", "ENV_VAR", "RequestRecord", "check_loopback", "load_users", "parse_user"]
