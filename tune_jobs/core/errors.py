"""The one exception type for mistakes a user can fix (config, overrides, YAML, data files)."""


class ConfigError(Exception):
    """A user error. The CLI prints it as one line and exits 2; nothing has been written."""
