"""Thin MLflow registry side effects: log, register, read and move aliases, load.

The registered model of a dataset is named after the dataset. Aliases: `challenger` (the
latest evaluated version) and `champion` (what `predict` serves).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from tunesmith.config import Config
from tunesmith.errors import EnvironmentProblem
from tunesmith.tracking import configure, tracking_uri

CHAMPION = "champion"
CHALLENGER = "challenger"
# MLflow "models from code" files: each task type's served model, and the classical baseline
# (text or images) served the same way.
OBJECTIVES = Path(__file__).resolve().parent.parent / "objectives"
MODEL_CODE = OBJECTIVES / "text_classification" / "served.py"
IMAGE_CODE = OBJECTIVES / "image_classification" / "served.py"
BASELINE_CODE = Path(__file__).with_name("sklearn_classifier.py")
BASELINE_MODEL = "baseline_model"  # its name in the run, next to the fine-tuned `model`
BASELINE_DIR = "baseline_model"  # where evaluate saves it, under the eval folder


def model_uri(name: str, alias: str) -> str:
    return f"models:/{name}@{alias}"


def version_for(cfg: Config, alias: str) -> ModelVersion | None:
    """The version holding `alias` in the dataset's registered model, or None."""
    client = configure(cfg)
    try:
        return client.get_model_version_by_alias(cfg.name, alias)
    except MlflowException:
        return None


def get_version(cfg: Config, version: int) -> ModelVersion:
    """Version `version` of the dataset's model, or a one-line error naming it."""
    try:
        return configure(cfg).get_model_version(cfg.name, str(version))
    except MlflowException:
        raise EnvironmentProblem(
            f"registered model {cfg.name!r} has no version {version} ({tracking_uri(cfg)})"
        ) from None


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
        python_model=str(MODEL_CODE),
        artifacts={"model": str(model_dir)},
        model_config={"max_length": cfg.tokenize.max_length,
                      "batch_size": cfg.evaluate.batch_size},
        signature=signature,
        input_example=pd.DataFrame({"text": ["an example text to classify"]}),
        pip_requirements=_pins(),
    )


def _pins() -> list[str]:
    """Pinned to what trained it; the CPU build of torch serves fine anywhere."""
    import pandas as pd
    import torch
    import transformers

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"transformers=={transformers.__version__}",
        f"pandas=={pd.__version__}",
    ]


def chat_template_for(template: str) -> str:
    """A Jinja chat template that renders one user turn as `template` does (a tokenizer without
    a chat template was trained on `template.format(prompt=...)`), so serving renders alike."""
    prefix, _, suffix = template.partition("{prompt}")

    def literal(text: str) -> str:
        return "{{ " + repr(text) + " }}" if text else ""

    return ("{% for m in messages %}{% if m['role'] == 'user' %}" + literal(prefix)
            + "{{ m['content'] }}" + literal(suffix)
            + "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}"
            "{% endfor %}")


def log_chat_model(cfg: Config, model_dir: Path, template: str) -> Any:
    """Log `model_dir` (a causal LM) with MLflow's transformers flavour as a chat model
    (task llm/v1/chat: messages in, an OpenAI-style completion out), weights included, so it
    loads offline. A tokenizer without a chat template gets one made from `template`."""
    import logging

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template_for(template)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True,
                                                 trust_remote_code=False)
    # The chat flavour passes a request's fields to generate() but has no do_sample field:
    # sampling on with top_k 1 is greedy by default, and a request's top_k/temperature
    # (tunesmith predict --temperature) turn real sampling on.
    model.generation_config.do_sample, model.generation_config.top_k = True, 1
    tokenizer.clean_up_tokenization_spaces = False  # BPE: the clean-up would drop spaces
    # The flavour looks up a model card and a licence on the hub (offline: two warnings).
    quiet = logging.getLogger("mlflow.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer}, name="model",
            task="llm/v1/chat", pip_requirements=_pins())
    finally:
        quiet.setLevel(level)


def load_chat_components(cfg: Config, alias: str) -> tuple[Any, Any]:
    """The model and tokenizer of `models:/NAME@alias` (a chat model), for re-scoring."""
    configure(cfg)
    if version_for(cfg, alias) is None:
        raise EnvironmentProblem(f"registered model {cfg.name!r} has no alias {alias!r}")
    parts = mlflow.transformers.load_model(model_uri(cfg.name, alias), return_type="components")
    model, tokenizer = parts["model"].eval(), parts["tokenizer"]
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


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
            python_model=str(IMAGE_CODE),
            artifacts={"model": str(model_dir)},
            model_config={"batch_size": cfg.evaluate.batch_size},
            signature=signature,
            # No input example: it would have to be an image file that exists wherever the
            # model is loaded; register's smoke test predicts real test images instead.
            pip_requirements=[*_pins(), f"pillow=={PIL.__version__}"],
        )


@contextlib.contextmanager
def no_example_hint() -> Iterator[None]:
    """MLflow's "An input example was not provided" UserWarning, silenced for the models
    that have a signature and no possible example (image paths exist only where logged)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*An input example was not provided",
                                category=UserWarning)
        yield


def log_baseline_classifier(cfg: Config, baseline_dir: Path, labels: list[str],
                            input_column: str) -> Any:
    """Log the classical baseline evaluate saved (an MLflow sklearn model) as a pyfunc that
    answers like the fine-tuned classifier: `input_column` values in (texts or image
    paths), label, score, prob_* out (tunesmith/registry/sklearn_classifier.py)."""
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
            name=BASELINE_MODEL, python_model=str(BASELINE_CODE),
            artifacts={"baseline": str(baseline_dir)},
            model_config={"labels": list(labels), "input": input_column},
            signature=signature, input_example=example, pip_requirements=pins,
        )


def smoke_test(uri: str, inputs: Any, expect: tuple[str, ...], serve: Any) -> None:
    """Load the logged model the way `predict` will and `serve` it `inputs`, or raise.

    MLflow's own check of the input example only warns on failure, and a version that
    cannot load must never be registered, let alone become champion.
    """
    try:
        # No requirements check: they were just inferred from this environment.
        out = serve(mlflow.pyfunc.load_model(uri, suppress_warnings=True), inputs,
                    {"max_new_tokens": 8})
    except Exception as exc:  # noqa: BLE001 - whatever breaks, the model is unusable
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EnvironmentProblem(
            f"{uri}: the logged model does not load and predict: {first}"
        ) from exc
    if tuple(out.columns[: len(expect)]) != tuple(expect) or len(out) != len(inputs):
        raise EnvironmentProblem(f"{uri}: the logged model returned {list(out.columns)}")


def versions_of_job(cfg: Config, job: str) -> dict[str, ModelVersion]:
    """{model.family: version} of the versions register made for `job` (its step key): the
    ones a killed register left, which the next one finishes instead of duplicating."""
    if not job:
        return {}
    client = configure(cfg)
    try:
        found = client.search_model_versions(f"name = '{cfg.name}'")
    except MlflowException:
        return {}
    return {mv.tags.get("model.family", "fine-tuned"): mv for mv in found
            if mv.tags.get("register.job") == job}


def register_version(cfg: Config, uri: str, tags: dict[str, str] | None = None) -> ModelVersion:
    """A new version of the dataset's registered model from a logged model uri, created
    with `tags` in the same call (a version never exists without them)."""
    client = configure(cfg)
    try:
        client.get_registered_model(cfg.name)
    except MlflowException:
        client.create_registered_model(
            cfg.name, description=f"tunesmith {cfg.task} model for dataset {cfg.name}"
        )
    # register_model waits until the version is READY (a remote store may copy first).
    return mlflow.register_model(uri, cfg.name, tags=tags)


def set_alias(cfg: Config, alias: str, version: int | str) -> None:
    configure(cfg).set_registered_model_alias(cfg.name, alias, str(version))


def move_champion(cfg: Config, version: int, action: str, note: str = "") -> int | None:
    """Point `champion` at `version` by hand (promote/rollback); returns the previous version.

    The move is recorded on the version as tags (`<action>.at`, `<action>.from`) and as a
    line appended to its description.
    """
    client = configure(cfg)
    mv = get_version(cfg, version)
    before = version_for(cfg, CHAMPION)
    previous = int(before.version) if before else None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    client.set_model_version_tag(cfg.name, mv.version, f"{action}.at", stamp)
    client.set_model_version_tag(cfg.name, mv.version, f"{action}.from", str(previous))
    client.set_model_version_tag(cfg.name, mv.version, "gate.decision", f"manual {action}")
    line = f"{stamp}: manual {action} to champion (was version {previous}). {note}".strip()
    description = f"{mv.description}\n\n{line}" if mv.description else line
    client.update_model_version(cfg.name, mv.version, description=description)
    set_alias(cfg, CHAMPION, mv.version)  # last: a failure above leaves the champion alone
    return previous


def load_pyfunc(cfg: Config, alias: str = CHAMPION, *, check_requirements: bool = True) -> Any:
    """Load `models:/NAME@alias` as a pyfunc model, or raise a one-line error.

    `check_requirements`: MLflow warns when the model's pinned packages differ from this
    environment's, which `predict` users need to see. evaluate re-scoring the champion
    turns it off: the gate compares the two models in this environment whatever their
    pins, and the check scans every installed distribution (0.8 s, the first time in a
    process, measured on the SST-2 champion)."""
    configure(cfg)
    if version_for(cfg, alias) is None:
        raise EnvironmentProblem(
            f"registered model {cfg.name!r} has no version with alias {alias!r} "
            f"({tracking_uri(cfg)}): run the pipeline or `tunesmith promote` first"
        )
    return mlflow.pyfunc.load_model(model_uri(cfg.name, alias),
                                    suppress_warnings=not check_requirements)
