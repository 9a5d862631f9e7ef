"""The project's own error hierarchy, named after what the caller should do next.

Library exceptions (pika, smtplib, SQLAlchemy) are wrapped into these at the edge, so the core
decides between "try again" and "give up" without knowing which library failed.
"""


class ServiceError(Exception):
    """Base of every error this project raises on purpose."""


class TransientError(ServiceError):
    """Trying again later may succeed: connection refused or reset, timeouts, SMTP 4xx."""


class PermanentError(ServiceError):
    """Trying again can never succeed: malformed input, unknown schema, SMTP 5xx."""


class ConfigError(ServiceError):
    """A setting is missing or malformed; the message names the variable, never a secret."""
