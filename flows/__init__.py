"""Prefect flows, installed as `tunesmith.flows`. A worker running a deployment imports
`tunesmith.flows.retrain` directly, not through the `tunesmith` command, so the package applies
the same environment defaults first."""

from tunesmith import env_defaults

env_defaults.apply()
