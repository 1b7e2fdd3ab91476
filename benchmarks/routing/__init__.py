"""Routing benchmark: policies compared on simulated engines (see ``run.py``)."""
