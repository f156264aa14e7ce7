"""Serve a checkpoint over HTTP: a pricing API and a page to price a house by hand.

    house-price serve best.ckpt                          # http://127.0.0.1:8000: the page; /docs: the API
    house-price serve best.ckpt --port 9000 --workers 2  # two processes answering on one port

The checkpoint is loaded once per worker; each request is priced in memory, with the same preprocessing and
float64 decoding as `house-price predict`, so the prices are the same numbers. Endpoints: POST /predict, POST
/explain, GET /schema, GET /health, GET / (the page), GET /docs (OpenAPI); see house_price/serving/service.py. It binds
127.0.0.1 (this machine only) unless --host says otherwise, and has no authentication: put it behind your own
gateway before opening it to a network. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from house_price.commands.arguments import mebibytes, positive, whole_number
from house_price.errors import HousePriceError, exit_cleanly_on_error

if TYPE_CHECKING:  # imported where used: --help answers at once
    from house_price.serving.limits import Limits

SETTINGS = "HOUSE_PRICE_SERVE"  # what a worker process of `--workers N` reads: the checkpoint and the limits, as JSON


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by scripts/train.py")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to answer on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", default="8000", help="port, 1-65535 (default 8000)")
    parser.add_argument(
        "--workers", default="1", help="processes answering on the port, each with the model (default 1)"
    )
    parser.add_argument(
        "--threads", help="requests each process prices at once, off its event loop (default: the cores / workers)"
    )
    parser.add_argument("--max-rows", default="10000", help="houses per request at most (default 10,000)")
    parser.add_argument("--max-body-mb", default="32", help="request body size at most, in MiB (default 32)")
    parser.add_argument(
        "--body-budget-mb",
        default="64",
        help="the bodies being read or priced at once, together, at most, in MiB; past it a request gets 503 (default 64)",
    )
    parser.add_argument(
        "--max-connections", default="100", help="open connections at once; past it a request gets 503 (default 100)"
    )
    parser.add_argument(
        "--idle-seconds",
        default="5",
        help="a connection that sends no request for this long is closed, a new one too (default 5)",
    )
    parser.add_argument(
        "--torch-threads",
        default="1",
        help="torch threads each pricing thread uses (default 1: benchmarks/SERVE.md measures 1 against 2)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (off: it costs time per request)")
    return parser.parse_args(argv)


def read_limits(arguments: argparse.Namespace) -> tuple[int, int, Limits]:
    """(port, workers, the service's limits) from the arguments, each refused in one line where it is no number the
    option takes."""
    from house_price.hardware import cores
    from house_price.serving.limits import Limits

    port = whole_number(arguments.port, "--port", 1, 65_535)
    workers = whole_number(arguments.workers, "--workers", 1)
    threads = whole_number(arguments.threads, "--threads", 1) if arguments.threads else max(1, cores() // workers)
    limits = Limits(
        max_rows=whole_number(arguments.max_rows, "--max-rows", 1),
        max_body_bytes=mebibytes(arguments.max_body_mb, "--max-body-mb"),
        body_budget_bytes=mebibytes(arguments.body_budget_mb, "--body-budget-mb"),
        max_connections=whole_number(arguments.max_connections, "--max-connections", 1),
        idle_seconds=positive(arguments.idle_seconds, "--idle-seconds"),
        threads=threads,
    )

    return port, workers, limits


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)

    import torch
    import uvicorn  # after the arguments: --help answers at once

    from house_price.serving.service import IdleTimeoutProtocol, create_app

    port, workers, limits = read_limits(arguments)
    threads = limits.threads
    # Each pricing thread runs torch on one core: two threads of one request would wait for each other whenever a
    # second request (or anything else) holds a core (benchmarks/SERVE.md measures both).
    torch_threads = whole_number(arguments.torch_threads, "--torch-threads", 1)
    torch.set_num_threads(torch_threads)
    check_port_free(arguments.host, port)
    settings = {
        "checkpoint": str(arguments.checkpoint.resolve()),
        "limits": dataclasses.asdict(limits),
        "torch_threads": torch_threads,
    }
    app = create_app(
        arguments.checkpoint, limits
    )  # a bad checkpoint is refused here, in one line, before any worker starts
    if arguments.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: answering on {arguments.host}: any machine that reaches this one can use the service, which has no "
            "authentication",
            file=sys.stderr,
        )
    print(
        f"Serving {arguments.checkpoint} on http://{arguments.host}:{port}: the page at /, the API at /docs "
        f"({workers} worker{'s' if workers > 1 else ''} of {threads} pricing thread{'s' if threads > 1 else ''}; Ctrl-C stops)",
        flush=True,
    )
    options = {
        "host": arguments.host,
        "port": port,
        "log_level": "warning",
        "access_log": arguments.access_log,
        "http": IdleTimeoutProtocol,
        "timeout_keep_alive": limits.idle_seconds,
        "limit_concurrency": limits.max_connections,
    }
    if workers == 1:
        uvicorn.run(app, **options)
    else:
        del app
        os.environ[SETTINGS] = json.dumps(settings)
        uvicorn.run("house_price.commands.serve:app_from_settings", factory=True, workers=workers, **options)


def app_from_settings():
    """A worker's app, from the settings its parent left in the environment (uvicorn starts workers by import)."""
    import torch

    from house_price.serving.limits import Limits
    from house_price.serving.service import create_app

    settings = json.loads(os.environ[SETTINGS])
    torch.set_num_threads(settings["torch_threads"])
    return create_app(settings["checkpoint"], Limits(**settings["limits"]))


def check_port_free(host: str, port: int) -> None:
    """Refuse, in one line, a port something else holds, before loading anything."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise HousePriceError(
            f"cannot answer on {host}:{port} ({error.strerror or error}); pick another with --port, or stop what "
            "holds it"
        ) from None


if __name__ == "__main__":
    exit_cleanly_on_error(main)
