"""The approvals inbox: a FastAPI router mounted at ``/inbox`` by :func:`install_inbox`."""

from gateway.inbox.auth import Authenticator, LocalUsers, Person, hash_password
from gateway.inbox.deps import InboxConfig, install_inbox

__all__ = ["Authenticator", "InboxConfig", "LocalUsers", "Person", "hash_password", "install_inbox"]
