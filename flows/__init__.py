"""Prefect flows. A worker running a deployment imports `flows.retrain` directly, not through
the `tunesmith` command, so the package applies the same environment defaults first."""

from tunesmith import env_defaults

env_defaults.apply()
