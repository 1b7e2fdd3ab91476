"""Verbund: one OpenAI-compatible API over the AI services of many university sites."""

__version__ = "0.1.0"
