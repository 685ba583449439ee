"""User-facing error types: each message names the offending key or file and what was expected."""


class AutoQRAError(Exception):
    """Base class for errors caused by user input (config, data, model, plan)."""


class ConfigError(AutoQRAError):
    """Invalid pipeline configuration."""


class DatasetError(AutoQRAError):
    """Malformed or missing dataset file."""


class ModelError(AutoQRAError):
    """Base model cannot be provisioned (unknown id offline, missing directory, bad config)."""


class PlanError(AutoQRAError):
    """A plan does not fit the model or the search space."""
