"""Errors a user can cause. The CLI prints each as one line and exits non-zero."""


class TunesmithError(Exception):
    """Base: the message is the whole story (file, field or row), no traceback needed."""

    exit_code = 1


class ConfigError(TunesmithError):
    """Bad params.yaml, dataset YAML or --set override."""

    exit_code = 2


class DataError(TunesmithError):
    """The source data can't be read or doesn't fit the dataset's configuration."""

    exit_code = 3


class ValidationFailed(TunesmithError):
    """Great Expectations found problems; the run stops before any training."""

    exit_code = 4


class EnvironmentProblem(TunesmithError):
    """The machine can't do what was asked (e.g. QLoRA without CUDA, missing model)."""

    exit_code = 5
