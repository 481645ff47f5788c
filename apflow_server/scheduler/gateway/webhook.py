"""Kept for earlier import paths (the user guide imports from here): see
`apflow_server.exports.triggers` and `apflow_server.exports.kubernetes`."""

from apflow_server.exports.kubernetes import (
    DEFAULT_IMAGE,
    DEFAULT_SIGNING_IMAGE,
    cronjob_name,
    generate_kubernetes_cronjob,
)
from apflow_server.exports.triggers import (
    DEFAULT_SECRET_ENV,
    GatewayInputError,
    WebhookConfig,
    escape_cron_command,
    generate_cron_config,
    generate_webhook_url,
    signing_statements,
    trigger_url,
)

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_SECRET_ENV",
    "DEFAULT_SIGNING_IMAGE",
    "GatewayInputError",
    "WebhookConfig",
    "cronjob_name",
    "escape_cron_command",
    "generate_cron_config",
    "generate_kubernetes_cronjob",
    "generate_webhook_url",
    "signing_statements",
    "trigger_url",
]
