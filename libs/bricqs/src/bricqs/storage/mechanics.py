"""Kept only for the local runner (`bricqs.devstack`), which another change moves into its
own package; there its import becomes `bricqs.storage.definitions` and `.tenants`, and this
module goes. Everything else imports the aggregate's module."""

from bricqs.storage.definitions import create_definition
from bricqs.storage.tenants import Tenant

__all__ = ["Tenant", "create_definition"]
