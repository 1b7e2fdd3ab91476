"""The trust tests link an access point to an in-process site agent as the agent tests do."""

from tests.agent.conftest import linked_factory

__all__ = ["linked_factory"]
