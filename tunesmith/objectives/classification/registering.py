"""The classical baseline in the registry (text and images alike): what evaluate fitted and
saved, logged as an MLflow pyfunc model from code (served_baseline.py beside this file) that
answers like the fine-tuned classifier, so either family can be champion."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow

from tunesmith.registry.store import no_example_hint

if TYPE_CHECKING:
    from tunesmith.config import Config

SERVED_CODE = Path(__file__).with_name("served_baseline.py")
BASELINE_MODEL = "baseline_model"  # its name in the run, next to the fine-tuned `model`
BASELINE_DIR = "baseline_model"  # where evaluate saves it, under the eval folder


def log_baseline(cfg: Config, eval_dir: Path, input_column: str) -> Any | None:
    """The baseline evaluate saved under `eval_dir`, logged into the active run (None when
    evaluate saved none)."""
    path = eval_dir / BASELINE_DIR
    return log_baseline_classifier(cfg, path, cfg.labels, input_column) if path.is_dir() \
        else None


def log_baseline_classifier(cfg: Config, baseline_dir: Path, labels: list[str],
                            input_column: str) -> Any:
    """Log the classical baseline evaluate saved (an MLflow sklearn model) as a pyfunc that
    answers like the fine-tuned classifier: `input_column` values in (texts or image
    paths), label, score, prob_* out (served_baseline.py)."""
    import pandas as pd
    import sklearn
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", input_column)]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]
                       + [ColSpec("double", f"prob_{label}") for label in labels]),
    )
    pins = [f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}",
            f"pandas=={pd.__version__}"]
    if input_column == "image":
        import PIL

        pins.append(f"pillow=={PIL.__version__}")
    example = pd.DataFrame({"text": ["an example text to classify"]}) \
        if input_column == "text" else None
    with no_example_hint():
        return mlflow.pyfunc.log_model(
            name=BASELINE_MODEL, python_model=str(SERVED_CODE),
            artifacts={"baseline": str(baseline_dir)},
            model_config={"labels": list(labels), "input": input_column},
            signature=signature, input_example=example, pip_requirements=pins,
        )
