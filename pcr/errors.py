"""The errors a user can cause, in a module that imports nothing heavy (stage entry points catch them).

Every user error is a `PcrError`: stage entry points print it as one line and exit 2. Anything else is a
bug and keeps its traceback.
"""


class PcrError(Exception):
    """Base of the errors a user's params, model or files cause."""


class ConfigError(PcrError, ValueError):
    """A params.yaml value is missing, unknown or not allowed."""


class ModelError(PcrError, ValueError):
    """A model directory, resolution or dtype this toolkit cannot use."""


class StoreError(PcrError, RuntimeError):
    """A store or another stage output is missing, incomplete, or of another kind or format."""
