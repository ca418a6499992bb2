"""A study on a two-node Ray cluster on this machine, for ``test_engine_faults``.

Run as its own process (the pytest process already holds a Ray connection)::

    python -m tests.study._faults_two_nodes STUDY STORAGE NAME TRAINABLE OUT_JSON

It starts a head node and one worker node with one CPU each
(``ray.cluster_utils.Cluster``), then runs ``xsam-tune run`` (``study.cli.main``)
against the head twice: first without ``--allow-local-storage``, which must
be refused (two nodes, local storage), then with it (both nodes see this
machine's files). It writes both exit codes and the two node ids to OUT_JSON
and always shuts the cluster down.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Sequence


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: Sequence[str]) -> int:
    """Start the cluster, run the study twice, record the outcome; 0 unless it crashed."""
    study, storage, name, trainable, out = argv
    from ray.cluster_utils import Cluster

    from study.cli import main as xsam_tune

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
            # Ray's fixed default (52365) may be taken by another Ray on this machine
            "dashboard_agent_listen_port": free_port(),
        },
    )
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        common = ["run", study, "--address", cluster.address, "--storage", storage]
        common += ["--trainable", trainable, "-q"]
        refused = xsam_tune([*common, "--name", f"{name}-refused"])
        print("--- refused run done", flush=True)
        rc = xsam_tune([*common, "--name", name, "--allow-local-storage"])
        result = {
            "refused_rc": refused,
            "rc": rc,
            "address": cluster.address,
            "head": cluster.head_node.node_id,
            "worker": worker.node_id,
        }
        with open(out, "w", encoding="utf-8") as f:
            json.dump(result, f)
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
