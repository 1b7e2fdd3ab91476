"""The access point: an ASGI app with the OpenAI, admin and operations routes."""

from verbund.gateway._app import create_app
from verbund.gateway._services import Services

__all__ = ["Services", "create_app"]
