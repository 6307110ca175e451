"""The errors a user can cause, in a module that imports nothing heavy (stage entry points catch them)."""


class ConfigError(ValueError):
    """A params.yaml value is missing, unknown or not allowed."""


class ModelError(ValueError):
    """A model directory, resolution or dtype this toolkit cannot use."""


class StoreError(RuntimeError):
    """A store is missing, incomplete, or of another kind or format."""
