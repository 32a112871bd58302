"""devhub: hubpub's local Hugging Face Hub-compatible server (loopback only).

``hubpub devhub`` runs it; tests start ``DevHub(data_dir, {"alice": "token"}).start()`` in a thread.
"""

from .server import DevHub, DevhubError, RequestRecord, check_loopback, parse_user

__all__ = ["DevHub", "DevhubError", "RequestRecord", "check_loopback", "parse_user"]
