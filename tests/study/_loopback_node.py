"""``ray start`` for a worker node that joins a loopback-only head, on loopback too.

Run as ``python -m tests.study._loopback_node start --address 127.0.0.1:PORT …``.

Ray refuses a worker node while ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (the
switch that keeps a head on 127.0.0.1), and with ``1`` it swaps every
loopback address it is given (``--address``, ``--node-ip-address``) for the
machine's LAN address. So this runs Ray's CLI with the switch on and that one
swap (``services.resolve_ip_for_localhost``) turned into the identity: the
node joins the head at 127.0.0.1 and uses 127.0.0.1 as its own address.
``tests/study/test_cluster_s3.py`` checks that every server of the node
listens on loopback only.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Ray's ``ray`` command with loopback addresses taken as given."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
    from ray._private import services
    from ray.scripts.scripts import main as ray_cli

    services.resolve_ip_for_localhost = lambda host: host
    sys.argv = ["ray", *sys.argv[1:]]
    ray_cli()


if __name__ == "__main__":
    main()
