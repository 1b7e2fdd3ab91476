"""``python -m verbund.simengine``: run one simulated engine under uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn

from verbund.simengine._app import BrokenStream, create_app
from verbund.simengine._engine import EngineSpec


class _QuietBrokenStreams(logging.Filter):
    """A stream broken on purpose is not worth uvicorn's traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, BrokenStream):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m verbund.simengine", description="A simulated LLM engine."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="sim", help="engine name (in /_sim/stats)")
    p.add_argument(
        "--model",
        action="append",
        dest="models",
        help="model name served (repeatable; default: the engine name)",
    )
    p.add_argument("--slots", type=int, default=4, help="sequences running at once")
    p.add_argument("--prefill-ms-per-token", type=float, default=0.5)
    p.add_argument("--decode-ms-per-token", type=float, default=20.0)
    p.add_argument("--prefix-cache-tokens", type=int, default=32768)
    p.add_argument("--kv-cache-tokens", type=int, default=0, help="0: 4096 a slot")
    p.add_argument("--max-tokens-default", type=int, default=16)
    p.add_argument("--metrics-style", choices=["vllm", "vllm-old", "sglang"], default="vllm")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    if args.slots < 1:
        p.error("--slots must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    spec = EngineSpec(
        name=args.name,
        models=tuple(args.models or [args.name]),
        slots=args.slots,
        prefill_ms_per_token=args.prefill_ms_per_token,
        decode_ms_per_token=args.decode_ms_per_token,
        prefix_cache_tokens=args.prefix_cache_tokens,
        kv_cache_tokens=args.kv_cache_tokens,
        metrics_style=args.metrics_style,
        default_max_tokens=args.max_tokens_default,
    )
    logging.getLogger("uvicorn.error").addFilter(_QuietBrokenStreams())
    config = uvicorn.Config(
        create_app(spec),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        server_header=False,
        lifespan="off",
    )
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
