"""Causal LM in the registry: the tuned model logged with MLflow's transformers flavour as a
chat model (llm/v1/chat), and its components loaded back for evaluate's champion re-score."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow

from tunesmith.errors import EnvironmentProblem
from tunesmith.registry.store import model_uri, pins, version_for
from tunesmith.tracking import configure

if TYPE_CHECKING:
    from tunesmith.config import Config


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
            task="llm/v1/chat", pip_requirements=pins())
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
