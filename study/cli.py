"""The ``xsam-tune`` command.

Subcommands::

    xsam-tune run CONFIG [--set KEY=VALUE ...] [--address ADDR] [--storage PATH]
                         [--name NAME] [--dry-run] [--allow-local-storage]
    xsam-tune resume DIR [--address ADDR] [--allow-local-storage]
    xsam-tune last-study
    xsam-tune results|plot|report DIR ...   (from analysis/cli.py, when present)

A user error (invalid study file, missing file, unreachable cluster, …) ends
with one line ``xsam-tune: error: <message>`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from study._errors import StudyError, StudyLaunchError
from study._state import last_study

__all__ = ["build_parser", "main"]

PROG = "xsam-tune"
# Subcommands defined here (the others come from analysis/cli.py).
_STUDY_VERBS = frozenset({"run", "resume", "last-study"})

_EPILOG = """\
examples:
  xsam-tune run configs/quickstart.yaml
  xsam-tune run configs/degradation.yaml --set trial.epochs=5 --dry-run
  xsam-tune run configs/degradation.yaml --set trial.dataset=cifar10 \\
      --set trial.model=resnet18 --set resources.gpu=0.5 --address auto
  xsam-tune resume studies/degradation
  xsam-tune report $(xsam-tune last-study)
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``xsam-tune`` command.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 success, 1 some trials failed, 2 user error,
        130 interrupted.
    """
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
        return int(func(args) or 0)
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
        help="print the directory of the most recent study run from this machine",
        description="Print the directory of the most recent study run or resumed from "
        "this machine (e.g. xsam-tune report $(xsam-tune last-study)).",
    )
    last.set_defaults(func=_cmd_last_study)

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
        "--top", type=int, default=10, metavar="N", help="best trials shown at the end (10)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output from Ray Tune")
    p.add_argument("-v", "--verbose", action="store_true", help="print every reported result")


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

    results = run_study(cfg, storage=args.storage, name=args.name, **_launch_options(args))
    return _summarise(results, cfg, args.top)


def _cmd_resume(args: argparse.Namespace) -> int:
    from study.launch import read_study_config, resume_study

    cfg = read_study_config(args.directory)
    results = resume_study(args.directory, **_launch_options(args))
    return _summarise(results, cfg, args.top)


def _cmd_last_study(args: argparse.Namespace) -> int:
    path = last_study()
    if path is None:
        raise StudyLaunchError("no study has been run from this machine yet")
    print(path)
    return 0


def _summarise(results: Any, cfg: Any, top: int) -> int:
    from study._report import best_trials
    from study.launch import is_complete

    where = _study_path(results)
    print()
    print(best_trials(results, cfg, top=top))
    print(f"\nstudy directory: {where}")
    if not is_complete(results, cfg):
        print(
            f"{PROG}: the study stopped before all trials finished; continue it with "
            f"`{PROG} resume {where}`",
            file=sys.stderr,
        )
        return 130
    if results.num_errors:
        print(f"{PROG}: {results.num_errors} trial(s) failed", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _study_path(results: Any) -> str:
    """The study directory of a ResultGrid, as a URI for remote storage (Ray
    gives the path inside the file system)."""
    path = str(results.experiment_path)
    kind = getattr(getattr(results, "filesystem", None), "type_name", "local")
    if kind in ("local", None) or "://" in path:
        return path
    return f"{'gs' if kind == 'gcs' else kind}://{path}"


def _launch_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of run_study/resume_study from ``_add_launch_options``."""
    return {
        "address": args.address,
        "trainable": _load_trainable(args.trainable),
        "verbose": 0 if args.quiet else 2 if args.verbose else 1,
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
