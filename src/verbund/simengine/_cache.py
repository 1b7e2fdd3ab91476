"""The simulated prefix cache: LRU over hashed message prefixes, sized in tokens.

A conversation's prefixes form a chain: ``h1`` covers the first message, ``h2`` the first
two, and so on. Each entry is charged only the tokens its last message adds, so the
cache's size is the union of what it holds, as with vLLM's shared KV blocks. A hit
touches the whole chain with the shortest prefix last, so eviction takes the longest
prefixes (the leaves) first and a surviving entry's parents survive with it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PrefixCache", "Prompt", "message_text", "tokens_of"]


def message_text(message: Any) -> str:
    """The text of a chat message's content (a string or a list of text parts)."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def tokens_of(chars: int) -> int:
    """About four characters a token."""
    return chars // 4


@dataclass(frozen=True, slots=True)
class Prompt:
    """A chat prompt as the cache sees it: a hash and a token count per prefix."""

    hashes: tuple[bytes, ...]  # hashes[i] covers messages[: i + 1]
    cumulative_tokens: tuple[int, ...]  # tokens of messages[: i + 1]

    @classmethod
    def of(cls, messages: Sequence[Any]) -> Prompt:
        hashes: list[bytes] = []
        cumulative: list[int] = []
        h = b""
        chars = 0
        for m in messages:
            role = m.get("role", "") if isinstance(m, dict) else ""
            text = message_text(m)
            h = hashlib.blake2b(
                h + str(role).encode() + b"\0" + text.encode() + b"\0", digest_size=16
            ).digest()
            chars += len(text)
            hashes.append(h)
            cumulative.append(tokens_of(chars))
        return cls(tuple(hashes), tuple(cumulative))

    @property
    def tokens(self) -> int:
        return max(1, self.cumulative_tokens[-1]) if self.cumulative_tokens else 1


class PrefixCache:
    """Which message prefixes an engine still holds; ``capacity`` is in tokens."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._entries: OrderedDict[bytes, int] = OrderedDict()
        self.size = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompt: Prompt) -> int:
        """Tokens of the longest cached prefix of ``prompt`` (0 on a miss); touches it."""
        for i in range(len(prompt.hashes) - 1, -1, -1):
            if prompt.hashes[i] in self._entries:
                for h in reversed(prompt.hashes[: i + 1]):
                    self._entries.move_to_end(h)
                return prompt.cumulative_tokens[i]
        return 0

    def insert(self, prompt: Prompt) -> None:
        """Hold every prefix of ``prompt``, evicting the least recently used leaves."""
        if self.capacity == 0:
            return
        previous = 0
        charges: list[tuple[bytes, int]] = []
        for h, cum in zip(prompt.hashes, prompt.cumulative_tokens, strict=True):
            charges.append((h, max(1, cum - previous)))
            previous = cum
        for h, cost in reversed(charges):
            if h in self._entries:
                self._entries.move_to_end(h)
                continue
            self._entries[h] = cost
            self.size += cost
        while self.size > self.capacity and self._entries:
            _, cost = self._entries.popitem(last=False)
            self.size -= cost
