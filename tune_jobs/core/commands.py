"""Commands the service prints for a person to paste (resume, replay, report, browse): each word
quoted for a POSIX shell where it needs it, so a folder such as `my sweeps/résultats` pastes as
one argument."""

from __future__ import annotations

import shlex
from os import PathLike


def command_line(*words: str | PathLike[str]) -> str:
    """The words as one shell command line; a word that needs no quoting is left as it is."""
    return " ".join(shlex.quote(str(w)) for w in words)


def resume_command(script: str, sweep_id: str, results_dir: str | PathLike[str] | None = None) -> str:
    """The command that resumes sweep `sweep_id`, run with the study's entry `script` (as the
    user ran it) from the folder it was started in; `results_dir` when not the default."""
    where = () if results_dir is None else ("--results-dir", results_dir)
    return command_line("python", script, "--resume", sweep_id, *where)
