"""Image classification in the registry: the fine-tuned CNN logged as an MLflow pyfunc model
from code (served.py beside this file: image paths in; label, score, prob_<label> out)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow

from tunesmith.registry.store import no_example_hint, pins

if TYPE_CHECKING:
    from tunesmith.config import Config

SERVED_CODE = Path(__file__).with_name("served.py")


def log_image_classifier(cfg: Config, model_dir: Path, labels: list[str]) -> Any:
    """Log `model_dir` (model + image processor) as a pyfunc: image paths in, labels out."""
    import PIL
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "image")]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]
                       + [ColSpec("double", f"prob_{label}") for label in labels]),
    )
    with no_example_hint():
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVED_CODE),
            artifacts={"model": str(model_dir)},
            model_config={"batch_size": cfg.evaluate.batch_size},
            signature=signature,
            # No input example: it would have to be an image file that exists wherever the
            # model is loaded; register's smoke test predicts real test images instead.
            pip_requirements=[*pins(), f"pillow=={PIL.__version__}"],
        )
