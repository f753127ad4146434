"""The model registry: the pure champion gate (`gate`) and thin MLflow side effects (`store`).

`store` imports MLflow, so it is imported only where it is used.
"""

from tunesmith.registry.gate import Decision, Gate, should_promote

__all__ = ["Decision", "Gate", "should_promote"]
