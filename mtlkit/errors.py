"""Errors a user can cause. The CLI prints them as one line, without a traceback."""


class MtlkitError(Exception):
    """Base of every error caused by user input (config, data, files, arguments)."""


class ConfigError(MtlkitError):
    """An invalid configuration: unknown key or name, wrong type, bad file."""


class DataError(MtlkitError):
    """Invalid or missing data files: the message names the file and what was expected."""
