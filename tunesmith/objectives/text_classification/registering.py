"""Text classification in the registry: the fine-tuned classifier logged as an MLflow pyfunc
model from code (served.py beside this file: texts in; label, score, prob_<label> out)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow

from tunesmith.registry.store import pins

if TYPE_CHECKING:
    from tunesmith.config import Config

SERVED_CODE = Path(__file__).with_name("served.py")


def log_classifier(cfg: Config, model_dir: Path, labels: list[str]) -> Any:
    """Log `model_dir` (a transformers classifier) as a pyfunc model into the active run."""
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "text")]),
        outputs=Schema(
            [ColSpec("string", "label"), ColSpec("double", "score")]
            + [ColSpec("double", f"prob_{label}") for label in labels]
        ),
    )
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(SERVED_CODE),
        artifacts={"model": str(model_dir)},
        model_config={"max_length": cfg.tokenize.max_length,
                      "batch_size": cfg.evaluate.batch_size},
        signature=signature,
        input_example=pd.DataFrame({"text": ["an example text to classify"]}),
        pip_requirements=pins(),
    )
