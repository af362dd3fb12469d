"""The approvals inbox: a FastAPI router mounted at ``/inbox`` by :func:`install_inbox`."""

from gateway.inbox.auth import Authenticator, LocalUsers, Person, hash_password
from gateway.inbox.deps import InboxConfig, InboxConfigError, inbox_config_from_env, install_inbox

__all__ = [
    "Authenticator",
    "InboxConfig",
    "InboxConfigError",
    "LocalUsers",
    "Person",
    "hash_password",
    "inbox_config_from_env",
    "install_inbox",
]
