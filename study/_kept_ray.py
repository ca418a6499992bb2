"""A local Ray instance kept running between studies, on request (issue 14).

Starting Ray costs seconds per study (its processes start, then stop at the
end). ``xsam-tune ray start`` starts one instance and leaves it running;
every ``xsam-tune run``/``resume`` without ``--address`` on this machine then
joins it instead of starting its own, and leaves it running;
``xsam-tune ray stop`` stops it. Nothing starts it without being asked.

It is the embedded instance's twin: a ``ray start --head --block`` process
(leader of its own session) on 127.0.0.1 only, with every CPU of the
machine, no dashboard and no usage statistics, token authentication as Ray
sets it, and its temp directory under the user's private one
(:mod:`study._ray_tmp`, mode 0700, checked). Its address and process id are
recorded in :data:`RECORD_NAME` there; a record whose process is gone or
whose port does not answer is stale: the run says so in one line, removes
it, and starts its own instance.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from study._errors import StudyLaunchError

__all__ = [
    "AUTH_MODE_ENV",
    "RECORD_NAME",
    "START_TIMEOUT_S",
    "KeptRay",
    "find_kept",
    "forwarded_env",
    "free_ports",
    "kept_command",
    "session_pids",
    "start_kept",
    "stop_kept",
    "use_auth_mode",
]

#: The record of the kept instance, in the user's private Ray temp directory.
RECORD_NAME = "kept-ray.json"
#: Ray's switch for token authentication.
AUTH_MODE_ENV = "RAY_AUTH_MODE"
#: Seconds ``xsam-tune ray start`` waits for Ray to come up.
START_TIMEOUT_S = 120.0
# The kept instance's own temp directory, under the private one; its output log.
_DIR_NAME = "kept"
_LOG_NAME = "kept-ray.log"
# A process that ignores SIGTERM this long is killed.
_STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class KeptRay:
    """A kept instance as recorded.

    Attributes:
        address: Its GCS address, ``127.0.0.1:PORT``.
        pid: The ``ray start --block`` process, leader of the instance's session.
        record: The record file.
        auth_mode: Its ``RAY_AUTH_MODE`` (``token`` unless the user chose otherwise).
    """

    address: str
    pid: int
    record: str
    auth_mode: str = "token"


def find_kept(temp_dir: str | None = None) -> tuple[KeptRay | None, str | None]:
    """The kept instance, if one is recorded and answers.

    Args:
        temp_dir: The private Ray temp directory (default: the user's).

    Returns:
        ``(instance, None)`` when it runs; ``(None, why)`` when the record is
        stale (it is removed, ``why`` says what was wrong); ``(None, None)``
        when there is no record.
    """
    record = os.path.join(temp_dir or _private_dir(), RECORD_NAME)
    try:
        with open(record, encoding="utf-8") as fh:
            data = json.load(fh)
        kept = KeptRay(
            address=str(data["address"]),
            pid=int(data["pid"]),
            record=record,
            auth_mode=str(data.get("auth_mode") or "token"),
        )
        host, port = kept.address.rsplit(":", 1)
        int(port)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, KeyError, TypeError):
        _remove(record)
        return None, f"unreadable record {record}"
    if host != "127.0.0.1":  # only ever written with the loopback address
        _remove(record)
        return None, f"record {record} names {kept.address}, not a loopback address"
    if not _alive(kept.pid):
        _remove(record)
        return None, f"its process {kept.pid} is gone"
    if not _answers(kept.address):
        _remove(record)
        return None, f"nothing answers at {kept.address}"
    return kept, None


def start_kept(num_cpus: int | None = None) -> tuple[KeptRay, bool]:
    """Start the kept instance unless one runs already.

    Args:
        num_cpus: CPUs it offers (default: every CPU of this machine).

    Returns:
        The instance, and whether this call started it.

    Raises:
        StudyLaunchError: Ray did not come up (the last lines of its log say why).
    """
    from study._cluster import LOOPBACK_ENV

    temp_dir = _private_dir()
    kept, _ = find_kept(temp_dir)
    if kept is not None:
        return kept, False
    own = os.path.join(temp_dir, _DIR_NAME)
    with contextlib.suppress(FileExistsError):
        os.mkdir(own, 0o700)
    if os.path.islink(own) or not os.path.isdir(own):
        raise StudyLaunchError(f"{own} is not a directory (a link?): remove it")
    gcs, dashboard, agent = free_ports(3)
    command = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        "--include-dashboard=false",
        # Ray runs a minimal dashboard process anyway: keep it off the default ports.
        f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={agent}",
        "--disable-usage-stats",
        f"--num-cpus={num_cpus or os.cpu_count() or 1}",
        f"--temp-dir={own}",
    ]
    # Token authentication as ray.init sets it for a new local instance: on unless
    # RAY_AUTH_MODE says otherwise, with a token made when there is none. Recorded,
    # because a driver joining by address turns it on only when told to.
    auth_mode = os.environ.get(AUTH_MODE_ENV) or "token"
    if auth_mode == "token":
        _ensure_token()
    # 127.0.0.1 as the node address, kept as given (study._cluster.loopback_only);
    # RAY_ADDRESS would make `ray start` join that cluster instead.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({LOOPBACK_ENV: "0", "RAY_USAGE_STATS_ENABLED": "0", AUTH_MODE_ENV: auth_mode})
    log_path = os.path.join(temp_dir, _LOG_NAME)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not stopped by this terminal's Ctrl-C
        )
    address = f"127.0.0.1:{gcs}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _started(log_path):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_session(proc.pid)
            raise StudyLaunchError(f"Ray did not start: {_tail(log_path)} (log: {log_path})")
        time.sleep(0.2)
    record = os.path.join(temp_dir, RECORD_NAME)
    kept = KeptRay(address=address, pid=proc.pid, record=record, auth_mode=auth_mode)
    _write_record(kept)
    return kept, True


def stop_kept() -> KeptRay | None:
    """Stop the kept instance (SIGTERM to its ``ray start`` process, which stops
    its node; SIGKILL to what of its session is left), and remove the record.

    Returns:
        The instance stopped, or None when none was running.
    """
    temp_dir = _private_dir()
    kept, _ = find_kept(temp_dir)
    if kept is None:
        return None
    _stop_session(kept.pid)
    _remove(kept.record)
    return kept


def forwarded_env() -> dict[str, str]:
    """The driver's ``XSAM_*`` variables, for the trials of a kept instance: its
    workers inherit the environment of ``xsam-tune ray start``, not the run's."""
    return {k: v for k, v in os.environ.items() if k.startswith("XSAM_")}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _private_dir() -> str:
    from study._ray_tmp import private_temp_dir

    return private_temp_dir()


def _write_record(kept: KeptRay) -> None:
    from xsam_contract import atomic_write

    payload = {
        "address": kept.address,
        "pid": kept.pid,
        "auth_mode": kept.auth_mode,
        "started_at": time.time(),
    }
    atomic_write(kept.record, json.dumps(payload) + "\n")


def _ensure_token() -> None:
    """Make Ray's default token (``~/.ray/auth_token``) when Ray finds none, as
    ``ray.init`` does for a new local instance."""
    from ray._private.authentication.authentication_token_setup import generate_and_save_token
    from ray._raylet import AuthenticationTokenLoader

    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        generate_and_save_token()


def use_auth_mode(kept: KeptRay) -> None:
    """Make this driver authenticate as the kept instance expects (Ray turns token
    authentication on for a driver joining by address only when told to);
    a ``RAY_AUTH_MODE`` the user set is left alone."""
    if os.environ.get(AUTH_MODE_ENV):
        return
    from ray._raylet import Config

    os.environ[AUTH_MODE_ENV] = kept.auth_mode
    Config.initialize("")  # Ray caches its config: re-read, as Ray does when it sets the mode


def _started(log_path: str) -> bool:
    try:
        with open(log_path, "rb") as fh:
            return b"Ray runtime started" in fh.read()
    except OSError:
        return False


def _tail(log_path: str) -> str:
    try:
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            lines = [line.strip() for line in fh if line.strip()]
    except OSError:
        return "no output"
    return " | ".join(lines[-3:]) or "no output"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not) and is a ``ray start`` of ours."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().split(b"\0")
    except OSError:
        return _signal_alive(pid)
    return state != "Z" and b"start" in cmdline and b"--head" in cmdline


def _signal_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not ours
        return False
    return True


def _answers(address: str, timeout: float = 2.0) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def session_pids(sid: int) -> list[int]:
    """The live processes of the session ``sid`` leads."""
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _stop_session(pid: int) -> None:
    """SIGTERM to the ``ray start --block`` leader (it stops its node), then SIGKILL
    to whatever of its session is left."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while session_pids(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
    for left in session_pids(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(left, signal.SIGKILL)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def kept_command(action: str, num_cpus: int | None = None) -> int:
    """``xsam-tune ray start|stop|status``: one line on stdout; the exit code.

    Raises:
        StudyLaunchError: ``--num-cpus`` is not positive, or Ray did not start.
    """
    if action == "start":
        if num_cpus is not None and num_cpus < 1:
            raise StudyLaunchError(f"--num-cpus: got {num_cpus}, allowed: 1 or more")
        kept, started = start_kept(num_cpus)
        verb = "started" if started else "already running"
        print(
            f"Ray {verb} at {kept.address} (this machine only); `xsam-tune run` and "
            "`resume` without --address use it until `xsam-tune ray stop`"
        )
        return 0
    if action == "stop":
        kept = stop_kept()
        print(f"Ray at {kept.address} stopped" if kept else "no Ray of `xsam-tune ray start` runs")
        return 0
    kept, why = find_kept()
    if kept is not None:
        print(f"Ray of `xsam-tune ray start` runs at {kept.address} (process {kept.pid})")
        return 0
    print(
        "no Ray of `xsam-tune ray start` runs"
        + (f" (a stale record removed: {why})" if why else "")
    )
    return 3
