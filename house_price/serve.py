"""Serve a checkpoint over HTTP: a pricing API and a page to price a house by hand.

    house-price serve best.ckpt                          # http://127.0.0.1:8000: the page; /docs: the API
    house-price serve best.ckpt --port 9000 --workers 2  # two processes answering on one port

The checkpoint is loaded once per worker; each request is priced in memory, with the same preprocessing and
float64 decoding as `house-price predict`, so the prices are the same numbers. Endpoints: POST /predict, POST
/explain, GET /schema, GET /health, GET / (the page), GET /docs (OpenAPI); see house_price/service.py. It binds
127.0.0.1 (this machine only) unless --host says otherwise, and has no authentication: put it behind your own
gateway before opening it to a network. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from house_price.datamodules.errors import HousePriceError, exit_cleanly_on_error

SETTINGS = "HOUSE_PRICE_SERVE"  # what a worker process of `--workers N` reads: the checkpoint and the limits, as JSON


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by scripts/train.py")
    parser.add_argument("--host", default="127.0.0.1", help="address to answer on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="processes answering on the port, each with the model (default 1)")
    parser.add_argument("--max-rows", type=int, default=10_000, help="houses per request at most (default 10,000)")
    parser.add_argument("--max-body-mb", type=float, default=32, help="request body size at most, in MiB (default 32)")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: it costs time per request)")
    arguments = parser.parse_args(argv)

    import uvicorn  # after the arguments: --help answers at once

    from house_price.service import Limits, create_app

    if arguments.workers < 1:
        raise HousePriceError(f"--workers is {arguments.workers}; give 1 or more processes")
    limits = Limits(max_rows=arguments.max_rows, max_body_bytes=int(arguments.max_body_mb * 2**20))
    check_port_free(arguments.host, arguments.port)
    settings = {"checkpoint": str(arguments.checkpoint.resolve()), "max_rows": limits.max_rows, "max_body_bytes": limits.max_body_bytes,
                "workers": arguments.workers}
    app = create_app(arguments.checkpoint, limits)  # a bad checkpoint is refused here, in one line, before any worker starts
    if arguments.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: answering on {arguments.host}: any machine that reaches this one can use the service, which has no "
              "authentication", file=sys.stderr)
    print(f"Serving {arguments.checkpoint} on http://{arguments.host}:{arguments.port}: the page at /, the API at /docs "
          f"({arguments.workers} worker{'s' if arguments.workers > 1 else ''}; Ctrl-C stops)", flush=True)
    options = {"host": arguments.host, "port": arguments.port, "log_level": "warning", "access_log": arguments.access_log}
    if arguments.workers == 1:
        uvicorn.run(app, **options)
    else:
        del app
        os.environ[SETTINGS] = json.dumps(settings)
        uvicorn.run("house_price.serve:app_from_settings", factory=True, workers=arguments.workers, **options)


def app_from_settings():
    """A worker's app, from the settings its parent left in the environment (uvicorn starts workers by import)."""
    import torch

    from house_price.service import Limits, create_app

    settings = json.loads(os.environ[SETTINGS])
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings["workers"]))  # the cores shared, not oversubscribed
    return create_app(settings["checkpoint"], Limits(max_rows=settings["max_rows"], max_body_bytes=settings["max_body_bytes"]))


def check_port_free(host: str, port: int) -> None:
    """Refuse, in one line, a port something else holds, before loading anything."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise HousePriceError(f"cannot answer on {host}:{port} ({error.strerror or error}); pick another with --port, or stop what "
                              "holds it") from None


if __name__ == "__main__":
    exit_cleanly_on_error(main)
