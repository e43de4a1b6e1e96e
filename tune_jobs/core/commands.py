"""Commands the service prints for a person to paste (resume, replay, report, browse): each word
quoted for a POSIX shell where it needs it, so a folder such as `my sweeps/résultats` pastes as
one argument."""

from __future__ import annotations

import shlex
from os import PathLike


def command_line(*words: str | PathLike[str]) -> str:
    """The words as one shell command line; a word that needs no quoting is left as it is."""
    return " ".join(shlex.quote(str(w)) for w in words)
