"""User-facing errors.

Anything a user can cause (a bad flag, a missing file, a model that is not prepared, a
server that is down) raises :class:`ThinksearchError` with one line that says what is wrong
and what to do. The CLI prints that line without a traceback and exits with status 2.
"""


class ThinksearchError(Exception):
    """An error caused by input or environment, explained in one line."""


class ConfigError(ThinksearchError, ValueError):
    """A configuration value (YAML key or CLI flag) is unknown or invalid."""
