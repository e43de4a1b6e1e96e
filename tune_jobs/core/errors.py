"""The one exception type for mistakes a user can fix (config, overrides, YAML, data files)."""


class ConfigError(Exception):
    """A user error. The CLI prints it as one line and exits 2; nothing has been written."""


def one_line(exc: BaseException | str) -> str:
    """The error as the one line the CLI prints: newlines and control characters escaped."""
    text = str(exc).strip() or type(exc).__name__
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
