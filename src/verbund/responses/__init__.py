"""The Responses API (``/v1/responses``) on top of chat completions.

Pure translation, request by request: :func:`translate_request` checks a Responses
request and turns it into a chat completions body; :func:`response_from_chat` turns a
complete chat answer into a Response object; :class:`EventTranslator` and
:class:`TranslatedStream` turn a streamed chat answer into the Responses API's events
as it arrives. The route (``verbund.gateway._responses``) sends the chat body through
the one admission path and proxy every chat completion takes.
"""

from verbund.responses._answer import response_from_chat
from verbund.responses._events import EventTranslator
from verbund.responses._objects import Echo, FunctionName, new_id
from verbund.responses._request import Translation, translate_request
from verbund.responses._stored import ResponseStore, StoredResponse
from verbund.responses._stream import TranslatedStream

__all__ = [
    "Echo",
    "EventTranslator",
    "FunctionName",
    "ResponseStore",
    "StoredResponse",
    "TranslatedStream",
    "Translation",
    "new_id",
    "response_from_chat",
    "translate_request",
]
