"""The operations users perform, each once, with its permission checks.

JSON-RPC (api/), the CLI (cli/) and, later, the dashboard are adapters over this layer: they
turn a request into a call here and the result into their own form. Permissions are decided
here, for a `Principal` (api/auth.py makes one from a bearer token); `None` is the local
operator (authentication off, or the CLI on the machine), who may do everything.

    service = Service(settings, database, repository, scheduler)
    task = await service.tasks.get(principal, task_id)
"""

from apflow_server.service.app import Service
from apflow_server.service.caller import Principal, check_owner, user_scope

__all__ = ["Principal", "Service", "check_owner", "user_scope"]
