"""A free TCP port on the loopback interface, for the processes and servers tests start.

From localenv's FREE_PORTS, below Linux's ephemeral range (32768-60999), from which every
outgoing connection takes its local port: a port the kernel calls free there may be taken by
some connection before the test's server binds it, and a run of several workers makes thousands
of connections. Each worker of a run (pytest-xdist) hands out ports in turn from a slice of its
own, so that two tests of one run never race for one port; localenv's parts take theirs once, at
their start."""

from __future__ import annotations

import itertools
import os

from tests.support.environment import localenv


def _slice() -> range:
    ports: range = localenv.FREE_PORTS
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ...
    index = int(worker.removeprefix("gw")) if worker.removeprefix("gw").isdigit() else 0
    size = len(ports) // count
    return ports[index * size : (index + 1) * size]


_PORTS = _slice()
_TURN = itertools.cycle(_PORTS)


def free_port() -> int:
    """A port nothing listens on now, the next free one of this worker's slice."""
    for _ in range(len(_PORTS)):
        port = next(_TURN)
        if localenv.port_free(port):
            return port
    raise RuntimeError(f"no free port from {_PORTS.start} to {_PORTS.stop - 1}")
