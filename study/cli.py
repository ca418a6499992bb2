"""The ``xsam-tune`` command.

Subcommands::

    xsam-tune run CONFIG [--set KEY=VALUE ...] [--address ADDR] [--storage PATH]
                         [--name NAME] [--dry-run] [--allow-local-storage]
                         [-q | -v | --json] [--print-dir-to FILE]
    xsam-tune resume DIR [--address ADDR] [--allow-local-storage] [-q | -v | --json]
    xsam-tune last-study [--storage PATH]
    xsam-tune ray start|stop|status [--num-cpus N]
    xsam-tune results|plot|report DIR ...   (from analysis/cli.py, when present)

A user error (invalid study file, missing file, unreachable cluster, …) ends
with one line ``xsam-tune: error: <message>`` on stderr and exit code 2.

While a study runs, the console of :mod:`study._console` prints its events
and progress (Ray Tune's own output only with ``-v``). The first Ctrl-C
stops the study resumably (exit code 130, the ``xsam-tune resume`` command
printed); a second one stops at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

from study._errors import StudyError, StudyLaunchError
from study._kept_ray import kept_command
from study._state import last_study

__all__ = ["build_parser", "main"]

PROG = "xsam-tune"
# Subcommands defined here (the others come from analysis/cli.py).
_STUDY_VERBS = frozenset({"run", "resume", "last-study", "ray"})

_EPILOG = """\
examples:
  xsam-tune run configs/quickstart.yaml
  xsam-tune run configs/degradation.yaml --set trial.epochs=5 --dry-run
  xsam-tune run configs/degradation.yaml --set trial.dataset=cifar10 \\
      --set trial.model=resnet18 --set resources.gpu=0.5 --address auto
  xsam-tune resume studies/degradation
  xsam-tune run configs/quickstart.yaml --print-dir-to dir.txt && xsam-tune report "$(cat dir.txt)"
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``xsam-tune`` command.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 success, 1 some trials failed, 2 user error,
        130 interrupted.
    """
    program = argv is None  # the xsam-tune command itself, not a call from Python
    argv = list(sys.argv[1:] if argv is None else argv)
    # The study verbs need no analysis parsers: skip importing the analysis layer.
    parser = build_parser(analysis=not (argv and argv[0] in _STUDY_VERBS))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (exit 2)
        return exc.code if isinstance(exc.code, int) else 2
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    args.argv = [PROG, *argv]
    try:
        code = int(func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `xsam-tune … | head`: the reader left, not an error
        _silence_stdout()
        return 0
    except Exception as exc:
        if _is_storage_full(exc):  # nothing lost: every file is written atomically
            print(
                f"{PROG}: error: storage full: {_one_line(exc)}; free space, then continue "
                f"with `{PROG} resume <study directory>`",
                file=sys.stderr,
            )
            return 1
        if not _is_user_error(exc):
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    # Not under a profiler or tracer (coverage): they write their data after the module ends.
    if program and argv[0] in ("run", "resume") and not (sys.getprofile() or sys.gettrace()):
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End a study's process without Python's module teardown, which takes seconds
    once Ray Tune and its dependencies are imported (issue 14). Everything is
    written by now; the exit handlers run and the output is flushed first."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def build_parser(*, analysis: bool = True) -> argparse.ArgumentParser:
    """The argument parser of ``xsam-tune``.

    Args:
        analysis: Also register the analysis layer's subcommands (``results``,
            ``plot``, ``report``), which imports ``analysis.cli``.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Ray Tune hyperparameter studies of SAM, XSAM and their variants.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="validate a study file and run the study",
        description="Validate a study file (with overrides) and run its trials with Ray Tune. "
        "At the end, print the best trials and the study directory.",
    )
    run.add_argument("config", metavar="CONFIG", help="study YAML file (see configs/)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field before validation; KEY is a dotted path "
        "(trial.epochs, space.steps.grid, search.num_samples), VALUE is YAML; repeatable",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and print the trials (grid) or the search space, without starting Ray",
    )
    run.add_argument(
        "--storage",
        metavar="PATH",
        help="root of study directories, a local path or a URI (default: the study's storage)",
    )
    run.add_argument(
        "--name",
        metavar="NAME",
        help="study-directory name (default: the study's name, dated if it exists already)",
    )
    _add_launch_options(run)
    run.set_defaults(func=_cmd_run)

    resume = sub.add_parser(
        "resume",
        help="resume an interrupted study",
        description="Resume a study from its directory: finished trials are kept, "
        "unfinished and errored ones continue from their last checkpoint.",
    )
    resume.add_argument("directory", metavar="DIR", help="study directory (<storage>/<name>)")
    _add_launch_options(resume)
    resume.set_defaults(func=_cmd_resume)

    last = sub.add_parser(
        "last-study",
        help="print the directory of the last study that ended on this machine",
        description="Print the directory of the last study run or resumed from this machine "
        "that finished or was interrupted, under --storage if given (for people: a script "
        "should use `xsam-tune run --print-dir-to FILE`, which names its own study).",
    )
    last.add_argument("--storage", metavar="PATH", help="only studies under this storage root")
    last.set_defaults(func=_cmd_last_study)

    kept = sub.add_parser(
        "ray",
        help="keep a local Ray instance running between studies (start, stop, status)",
        description="start: start Ray on this machine (loopback only) and leave it running; "
        "every run and resume without --address then joins it instead of starting Ray "
        "(seconds saved per study). stop: stop it. status: say whether it runs.",
    )
    kept.add_argument("action", choices=["start", "stop", "status"])
    kept.add_argument("--num-cpus", type=int, metavar="N", help="CPUs it offers (default: all)")
    kept.set_defaults(func=lambda args: kept_command(args.action, args.num_cpus))

    if analysis:
        _add_analysis_commands(sub)
    return parser


def _add_launch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        metavar="ADDR",
        help="Ray cluster to join (auto, HOST:PORT, ray://HOST:PORT); "
        "default: start Ray on this machine, reachable from it only",
    )
    p.add_argument(
        "--allow-local-storage",
        action="store_true",
        help="accept a local storage path on a multi-node cluster "
        "(every node must mount it at the same path)",
    )
    p.add_argument(
        "--trainable",
        metavar="MODULE:FUNCTION",
        help="function trainable to run instead of trainables.tune:train_trial",
    )
    p.add_argument(
        "--top",
        type=int,
        default=None,
        metavar="N",
        help="rows of the closing table, best first (default: every trial)",
    )
    output = p.add_mutually_exclusive_group()
    output.add_argument(
        "-q", "--quiet", action="store_true", help="print the progress line only (and the end)"
    )
    output.add_argument(
        "-v", "--verbose", action="store_true", help="Ray Tune's own output too (every result)"
    )
    output.add_argument(
        "--json", action="store_true", help="print events as JSON lines, for other tools"
    )
    p.add_argument(
        "--print-dir-to",
        metavar="FILE",
        help="when the run ends (finished or interrupted), write the study directory "
        "into FILE: a script reads its own study there (make demo does)",
    )


def _add_analysis_commands(sub: Any) -> None:
    # `results`, `plot` and `report` belong to the analysis layer: analysis/cli.py
    # registers them with `add_parsers(subparsers)`, each subparser setting
    # `func` to a callable(args) -> int exit code. Until that module exists
    # there are no such subcommands.
    try:
        module = importlib.import_module("analysis.cli")
    except ImportError:
        return
    add_parsers = getattr(module, "add_parsers", None)
    if callable(add_parsers):
        add_parsers(sub)


# --------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    from study._report import describe_study
    from study.config import load_study

    cfg = load_study(args.config, args.overrides)
    if args.dry_run:
        print(describe_study(cfg))
        where = os.path.join(args.storage or cfg.storage, args.name or cfg.name)
        print(f"\nstudy directory: {where} (dry run: nothing started)")
        return 0

    from study.launch import run_study

    console = _console(args, cfg)
    results = run_study(
        cfg, storage=args.storage, name=args.name, callbacks=[console], **_launch_options(args)
    )
    return _summarise(results, cfg, args, console)


def _cmd_resume(args: argparse.Namespace) -> int:
    from study.launch import read_study_config, resume_study

    cfg = read_study_config(args.directory)
    console = _console(args, cfg)
    results = resume_study(args.directory, callbacks=[console], **_launch_options(args))
    return _summarise(results, cfg, args, console)


def _cmd_last_study(args: argparse.Namespace) -> int:
    from study._storage import storage_root

    storage = storage_root(args.storage) if args.storage else None
    path = last_study(storage)
    if path is None:
        where = f" under {storage}" if storage else ""
        raise StudyLaunchError(f"no study has been run from this machine{where} yet")
    print(path)
    return 0


def _console(args: argparse.Namespace, cfg: Any) -> Any:
    """The run's console (:mod:`study._console`); Ray Tune's output off unless ``-v``."""
    from study._console import Console
    from study._report import trial_epochs
    from study.space import count_trials

    if not args.verbose:
        # Ray's old reporter obeys verbose=0; the new one would still print.
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        for name in ("ray.tune", "ray.train", "ray.air"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    style = (
        "json" if args.json else "quiet" if args.quiet else "plain" if args.verbose else "normal"
    )
    return Console(
        swept=[p.name for p in cfg.space],
        metric=cfg.metrics[0].name,
        mode=cfg.metrics[0].mode,
        epochs=trial_epochs(cfg),
        total=count_trials(cfg),
        style=style,
    )


def _summarise(results: Any, cfg: Any, args: argparse.Namespace, console: Any) -> int:
    """The end of a run: the closing table, the study directory, the exit code."""
    from study._report import best_trials, trial_rows
    from study.launch import is_complete

    where = _study_path(results)
    if args.print_dir_to:
        _write_dir(args.print_dir_to, where)
    views = console.views()
    labels = {k: v.label for k, v in views.items() if v.state in ("done", "errored")}
    started = frozenset(k for k, v in views.items() if v.started)
    complete = is_complete(results, cfg) and not console.interrupted
    resume = f"{PROG} resume {shlex.quote(where)}"
    if args.json:
        rows = trial_rows(results, cfg, labels, started)
        end = {
            "event": "study_end",
            "directory": where,
            "status": "finished" if complete else "interrupted",
            "trials": rows,
        }
        if not complete:
            end["resume"] = resume
        print(json.dumps(end, default=str))
    else:
        print()
        print(best_trials(results, cfg, top=args.top, labels=labels, started=started))
        print(f"\nstudy directory: {where}")
        if complete and not args.quiet:
            print(f"TensorBoard: tensorboard --logdir {shlex.quote(where)}")
    if not complete:
        if not args.json:
            print("\nthe study stopped before every trial ended; continue it with:")
            print(resume)
        return 130
    if results.num_errors:
        print(f"{PROG}: {results.num_errors} trial(s) failed", file=sys.stderr)
        return 1
    return 0


def _write_dir(target: str, where: str) -> None:
    from xsam_contract import atomic_write

    try:
        atomic_write(target, where + "\n")
    except OSError as exc:
        raise StudyLaunchError(f"--print-dir-to {target}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _study_path(results: Any) -> str:
    """The study directory of a ResultGrid, as a URI for remote storage (Ray
    gives the path inside the file system)."""
    path = str(results.experiment_path)
    kind = getattr(getattr(results, "filesystem", None), "type_name", "local")
    if kind in ("local", "py::local", None) or "://" in path:  # py::local: study._durable
        return path
    return f"{'gs' if kind == 'gcs' else kind}://{path}"


def _launch_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of run_study/resume_study from ``_add_launch_options``."""
    return {
        "address": args.address,
        "trainable": _load_trainable(args.trainable),
        "verbose": 2 if args.verbose else 0,  # else our console (study._console) speaks
        "allow_local_storage": args.allow_local_storage,
        "command": args.argv,
    }


def _load_trainable(spec: str | None) -> Callable[[dict], Any] | None:
    if spec is None:
        return None
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise StudyLaunchError(f"--trainable: got {spec!r}, allowed: MODULE:FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StudyLaunchError(f"--trainable: cannot import {module_name} ({exc})") from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise StudyLaunchError(f"--trainable: {module_name} has no function {attr}")
    return func


def _is_storage_full(exc: BaseException) -> bool:
    """A full disk or quota (ENOSPC, EDQUOT) under the storage or Ray's temp directory."""
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _is_user_error(exc: BaseException) -> bool:
    """Errors that are the user's to fix: reported in one line, no traceback."""
    if isinstance(exc, (StudyError, ConnectionError, PermissionError)):
        return True
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return True
    # The other layers' validation errors (trainables.loop.ConfigError,
    # analysis' AnalysisError, …) are ValueErrors raised for bad input.
    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, ValueError) and module in ("trainables", "analysis")


def _silence_stdout() -> None:
    # Python would report the broken pipe again when flushing stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename:
        text = f"file not found: {exc.filename}"
    elif isinstance(exc, (IsADirectoryError, NotADirectoryError, PermissionError)) and getattr(
        exc, "filename", None
    ):
        text = f"{exc.strerror}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
