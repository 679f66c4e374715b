"""The console script's start-up, with the garbage collector paused while it lasts.

Start-up makes tens of thousands of objects (modules, classes, functions) that live as long as the
process: the collector's passes over them while they are made, and its full collection at exit, find
nothing to free (~10 ms of a cold `introspect inspect`). So `introspect.command` pauses the collector
(`pause`) until the command says start-up is over (`started`); what start-up made is then frozen out
of every later collection, and at exit everything is (`exiting`): the process's memory goes back to
the system whole, as Instagram's servers skip that last collection. A library, or a test calling the
commands, never pauses it, and keeps its collector as it set it.
"""

from __future__ import annotations

import gc

#: Whether `pause` paused the collector and start-up is not over yet.
_paused = False


def pause() -> None:
    """Start-up begins: the collector waits for `started`."""
    global _paused
    _paused = True
    gc.disable()


def started() -> None:
    """Start-up is over (a command's imports are made): the collector runs again, as usual, over
    what is made from now on. Does nothing unless `pause` paused it."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def exiting() -> None:
    """The command is done and the process ends: nothing is left for the collector to free that the
    system does not take back whole."""
    started()
    gc.freeze()
