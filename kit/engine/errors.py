"""The kit's own errors. Each message names the cause and what to do, so the CLI prints it as it is.

Every one derives from `KitError`, and from the built-in error it always was (`ConfigError` is a
`ValueError`, `CheckpointError` a `RuntimeError`, ...), so `except ValueError` still catches it.

Example:
    >>> from kit.engine.config import ConfigError
    >>> issubclass(ConfigError, KitError) and issubclass(ConfigError, ValueError)
    True
"""

from __future__ import annotations


class KitError(Exception):
    """Base of every kit error: its message says what went wrong and what to do about it."""
