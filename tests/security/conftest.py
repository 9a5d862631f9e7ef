"""Fixtures of the security suite."""

from tests.support.rabbit_node import private_rabbit

__all__ = ["private_rabbit"]
