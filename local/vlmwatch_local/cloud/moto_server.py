"""``python -m vlmwatch_local.cloud.moto_server -H HOST -p PORT``: moto's server with :mod:`.moto_speedups`.

The local stack's ``moto="process"`` (``make up``, ``make demo``, the CLI's tests) starts this instead of
``python -m moto.server``: the same server, without the two hot spots.
"""

from __future__ import annotations

import sys

from moto import server

from vlmwatch_local.cloud import moto_speedups

if __name__ == "__main__":
    moto_speedups.install()
    server.main(sys.argv[1:])
