"""The console script's first moment: Ctrl-C before a command runs exits quietly with 130.

Python's own SIGINT handler raises KeyboardInterrupt wherever the program is, so a Ctrl-C
while the CLI's modules load (a fraction of a second) would print a traceback. From the
moment this module loads until a command takes over (:func:`hand_over`, called as each
command starts), a SIGINT ends the process at once: nothing has been read or written yet.
Only the interpreter's own start, before any neurocli code runs, is out of its reach.

The console script also skips pydantic's search of every installed package for plugins
(about 25 ms of each run, a plugin being an observer neurocli has no use for), unless the
user's environment sets ``PYDANTIC_DISABLE_PLUGINS`` itself. ``import neurocli`` from a
program keeps that program's plugins.
"""

import os
import signal
import sys

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def _quiet_exit(signum, frame) -> None:
    sys.stderr.write("error: interrupted; nothing was written\n")
    sys.stderr.flush()
    os._exit(130)  # EXIT_SIGINT; nothing to flush or save yet


if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when imported by a program that chose
    signal.signal(signal.SIGINT, _quiet_exit)


def hand_over() -> None:
    """From here on a Ctrl-C is the command's: it raises KeyboardInterrupt, as Python's default."""
    if signal.getsignal(signal.SIGINT) is _quiet_exit:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main() -> None:
    from neurocli.cli import main as cli_main

    cli_main()
