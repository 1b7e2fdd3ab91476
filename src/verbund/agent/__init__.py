"""The site agent (``verbund site``): the part of the federation each computing centre
runs. It announces the site's catalogue, health and state to the access points, relays
their inference to backends behind the site's firewall, and carries out its operator's
lifecycle actions. Access points reach it through
:class:`verbund.federation.AgentClient`.
"""

from verbund.agent._app import ROUTE_MODULES, create_agent_app
from verbund.agent._auth import Caller, Credentials, Role, caller_of, require
from verbund.agent._config import (
    AccessPointCredential,
    AgentSection,
    OperatorCredential,
    SiteAgentConfig,
    SiteModelConfig,
    SiteSection,
    load_site_config,
    parse_site_config,
)
from verbund.agent._run import make_agent_server
from verbund.agent._services import AgentServices

__all__ = [
    "ROUTE_MODULES",
    "AccessPointCredential",
    "AgentSection",
    "AgentServices",
    "Caller",
    "Credentials",
    "OperatorCredential",
    "Role",
    "SiteAgentConfig",
    "SiteModelConfig",
    "SiteSection",
    "caller_of",
    "create_agent_app",
    "load_site_config",
    "make_agent_server",
    "parse_site_config",
    "require",
]
