"""The `mft` command. `main(argv) -> int` so tests can call it; errors print one line and exit non-zero.

parser.py     the command line: one builder per command (`build_parser`)
commands.py   what each command does (`cmd_<name>`): build the config, call the library, print
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings
from collections.abc import Callable

from mft.cli.commands import (
    cmd_compare,
    cmd_debate,
    cmd_report,
    cmd_reproduce,
    cmd_run,
    cmd_serve,
    cmd_stage,
    cmd_toy,
    cmd_validate,
)
from mft.cli.parser import STAGES, build_parser
from mft.errors import MftError

HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "debate": cmd_debate,
    "validate": cmd_validate,
    "toy": cmd_toy,
    "run": cmd_run,
    "serve": cmd_serve,
    "report": cmd_report,
    "reproduce": cmd_reproduce,
    "compare": cmd_compare,
    **dict.fromkeys(STAGES, cmd_stage),
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        # Library deprecation chatter (e.g. peft calling deprecated transformers APIs) is not for users.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # peft notes each time a finetuned agent's adapter replaces the previous one: expected here
        warnings.filterwarnings("ignore", message=r"Adapter .* was active which is now deleted")
    if args.debug:  # model loading shows the libraries' messages too (`quiet_loading`)
        os.environ["MFT_DEBUG"] = "1"
    try:
        return HANDLERS[args.command](args)
    except MftError as exc:
        if args.debug:
            raise
        print(f"mft: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mft: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except OSError as exc:
        if args.debug or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" while writing {exc.filename}" if exc.filename else ""
        print(
            f"mft: error: no space left on the device{where}; everything finished before it is kept "
            "(hint: free some space, then re-run the same command to resume)",
            file=sys.stderr,
        )
        return 28
    finally:
        if args.debug:
            os.environ.pop("MFT_DEBUG", None)


def entrypoint() -> None:
    sys.exit(main())
