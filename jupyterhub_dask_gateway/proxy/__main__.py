"""Command line entry point of the TCP proxy: ``python -m jupyterhub_dask_gateway.proxy``.

Owns argument parsing, logging setup and the process-level details (token from
the environment, open-file limit, exit status); the proxy itself lives in
:mod:`.tcp`. The gateway starts this as its own process (new session) so that
established connections survive a gateway restart.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .tcp import parse_host_port, run_proxy

TOKEN_ENV = "JHDG_PROXY_TOKEN"


def _address(value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jupyterhub_dask_gateway.proxy",
        description=(
            "Public TCP proxy of jupyterhub-dask-gateway: routes TLS connections by SNI "
            "(daskgateway-<cluster name>) to Dask schedulers and everything else to the "
            "gateway's HTTP API. The route table is synced from the gateway; the token "
            f"for that comes from the {TOKEN_ENV} environment variable."
        ),
    )
    parser.add_argument(
        "--listen", required=True, type=_address, help="host:port to listen on (port 0: any)"
    )
    parser.add_argument(
        "--gateway-url",
        required=True,
        help="base URL of the gateway's HTTP API, e.g. http://127.0.0.1:8000/services/dask-gateway/",
    )
    parser.add_argument(
        "--http-target",
        type=_address,
        default=None,
        help="host:port that receives connections which are not TLS for a cluster "
        "(the gateway's HTTP port); without it they are closed",
    )
    parser.add_argument("--pid-file", help="write the process id here while running")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        type=str.upper,
        help="logging level (default INFO)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=_positive,
        default=10.0,
        help="seconds a client has to send its TLS ClientHello (default 10)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_positive,
        default=10.0,
        help="seconds to connect to a scheduler or the HTTP target (default 10)",
    )
    return parser


def _raise_open_file_limit() -> None:
    # Every proxied connection holds two sockets; the default soft limit (1024) is low.
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="[%(levelname)1.1s %(asctime)s.%(msecs)03d %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        logging.getLogger("jupyterhub_dask_gateway.proxy").error(
            "The %s environment variable must hold the proxy token", TOKEN_ENV
        )
        return 2
    _raise_open_file_limit()
    asyncio.run(
        run_proxy(
            args.listen,
            args.gateway_url,
            args.http_target,
            token,
            pid_file=args.pid_file,
            handshake_timeout=args.handshake_timeout,
            connect_timeout=args.connect_timeout,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
