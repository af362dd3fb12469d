"""Connection defaults and environment variable names shared by the client API and the ``wfa`` CLI.

Kept free of imports so that ``wfa --help`` and ``wfa validate`` start without loading the Temporal
SDK or the database driver.
"""

from __future__ import annotations

__all__ = [
    "ADDRESS_ENV",
    "DATABASE_URL_ENV",
    "DEFAULT_ADDRESS",
    "DEFAULT_NAMESPACE",
    "DEFAULT_TASK_QUEUE",
    "DEFAULT_TENANT",
    "NAMESPACE_ENV",
    "TASK_QUEUE_ENV",
    "TENANT_ENV",
]

ADDRESS_ENV = "TEMPORAL_ADDRESS"
NAMESPACE_ENV = "TEMPORAL_NAMESPACE"
TASK_QUEUE_ENV = "TEMPORAL_TASK_QUEUE"
TENANT_ENV = "WFA_TENANT"
DATABASE_URL_ENV = "DATABASE_URL"  # the same name as activities.store.database.DATABASE_URL_ENV

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_NAMESPACE = "default"
DEFAULT_TASK_QUEUE = "workflow-automation"
DEFAULT_TENANT = "default"  # the same as activities.store.repository.DEFAULT_TENANT
