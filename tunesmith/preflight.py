"""What can be known before any step runs, checked before any step runs.

`check(cfg)` raises the one-line error a user would otherwise meet steps later (after
ingest, clean and validate ran): the base model is missing or does not fit the task type,
QLoRA without CUDA, a method the model family cannot run. `tunesmith run` (before the flow
starts), the flow itself (for deployment runs), `tunesmith step` and dvc.yaml's first stage
(`tunesmith resolve`) call it. Cheap: it reads the base's config.json, imports torch only
for QLoRA's CUDA check.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith import objectives
from tunesmith.config import Config
from tunesmith.errors import ConfigError, EnvironmentProblem
from tunesmith.training.families import NO_ATTENTION


def base_config(cfg: Config) -> dict | None:
    """The base model's config.json, or None for a hub id (not checkable offline). A named base
    whose folder needs a conversion answers with its recorded `config_facts` instead."""
    from tunesmith.models import NAMED_BASES, named_base, resolve_base

    named = named_base(cfg.model.base, cfg.root)
    if named is not None and named.config_facts is not None:
        return dict(named.config_facts)
    resolved = Path(resolve_base(cfg.model.base, cfg.root))
    if not resolved.is_dir():
        return None
    path = resolved / "config.json"
    if not path.is_file():
        raise EnvironmentProblem(f"model.base {cfg.model.base!r}: {resolved} has no config.json; "
                                 "it is not a transformers model folder")
    if not any(resolved.glob("*.safetensors")) and any(
            resolved.glob(p) for p in ("*.bin", "*.pt", "*.pth", "*.ckpt")) and \
            cfg.model.base not in NAMED_BASES:
        # Pickle weights run code when loaded: a model is loaded from safetensors only.
        raise EnvironmentProblem(
            f"model.base {cfg.model.base!r}: {resolved} has only pickle weights (.bin/.pt); "
            "tunesmith loads safetensors only: save it with save_pretrained(..., "
            "safe_serialization=True)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EnvironmentProblem(f"{path}: not valid JSON ({exc})") from None


def check(cfg: Config) -> None:
    """Raise the first problem that would stop a step later (see the module docstring)."""
    task = objectives.get(cfg.task)
    config = base_config(cfg)
    if config is not None and (problem := task.check_base(config)):
        raise ConfigError(f"model.base {cfg.model.base!r}: {problem}")
    method = cfg.train.method
    if method == "qlora":
        from tunesmith.training.methods import check_environment

        check_environment(cfg.train)
    if method in ("lora", "qlora") and config is not None and not cfg.train.lora.target_modules \
            and config.get("model_type") in NO_ATTENTION:
        raise ConfigError(
            f"train.method={method}: {config.get('model_type')} has no attention layers for "
            "LoRA's default targets; set train.lora.target_modules, or use train.method=freeze "
            "or head_only")
