"""Tokenized splits on disk -> torch datasets, samplers and collators.

The tokenize step writes each split with `datasets.Dataset.save_to_disk`; an accelerator
machine may not have `datasets`, so the arrow files are read with pyarrow alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc
import torch
from torch.utils.data import Dataset, Sampler


def read_split(split_dir: Path) -> pa.Table:
    """All `data-*.arrow` shards of a `save_to_disk` split as one table."""
    shards = sorted(Path(split_dir).glob("data-*.arrow"))
    if not shards:
        raise FileNotFoundError(f"{split_dir}: no data-*.arrow files (run the tokenize step)")
    tables = []
    for shard in shards:
        with pa.memory_map(str(shard)) as source:
            tables.append(pyarrow.ipc.open_stream(source).read_all())
    return pa.concat_tables(tables)


def read_meta(tokenized_dir: Path) -> dict[str, Any]:
    """`meta.json` written by the tokenize step (task, labels, base_model, max_length, digest)."""
    path = Path(tokenized_dir) / "meta.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class TokenizedDataset(Dataset):
    """Rows of `input_ids` / `labels` as python lists; the collator makes tensors."""

    def __init__(self, table: pa.Table) -> None:
        self.input_ids: list[list[int]] = table.column("input_ids").to_pylist()
        self.labels: list[Any] = table.column("labels").to_pylist()
        if "length" in table.column_names:
            self.lengths = [int(n) for n in table.column("length").to_pylist()]
        else:
            self.lengths = [len(ids) for ids in self.input_ids]

    @classmethod
    def load(cls, split_dir: Path) -> TokenizedDataset:
        return cls(read_split(split_dir))

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}

    def n_tokens(self) -> int:
        return sum(self.lengths)


class LengthGroupedSampler(Sampler[int]):
    """Random order with similar lengths batched together, reproducible per (seed, epoch).

    transformers' own sampler draws from the global RNG when an epoch starts, so a run
    resumed from a checkpoint would see different batches. Seeding by epoch makes the
    order a pure function of (seed, epoch): same in every DDP process and after resume.
    As in transformers, the rows are shuffled, cut into megabatches of 50 batches, and each
    megabatch runs longest batch first. Shuffling the batches of a megabatch as well (as
    this sampler did until 2026-12-01) ran a MiniLM CPU epoch at 0.82x of a Trainer with
    transformers' sampler though it padded 6% less; in this order it runs at 1.16x
    (docs/benchmarks.md, section 2). Not verified why: batches that only shrink can reuse
    the memory the previous one freed, while a wider batch after a narrower one cannot.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=gen).tolist()
        mega = self.batch_size * 50
        out: list[int] = []
        for start in range(0, len(order), mega):
            out.extend(sorted(order[start : start + mega], key=lambda i: -self.lengths[i]))
        return iter(out)


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Micro-batches of at most `budget` tokens (rows x the longest row, the padded width; the
    sum of lengths when `packed`) and at most `max_rows` rows, in the LengthGroupedSampler's
    order, so memory follows tokens rather than rows. A row longer than the budget goes alone.

    Activations grow with the tokens of a micro-batch: SmolLM2-135M LoRA on CPU holds ~1.7 MB
    per token, so 32 Alpaca rows padded to 476 tokens (15k tokens) ran out of 24 GB while 32
    rows of SST-2 (~40 tokens) need ~2 GB. The number of micro-batches changes a little with
    each epoch's order; `__len__` is the current epoch's (the Trainer reads it per epoch).
    No `batch_size` attribute: accelerate then shards micro-batches of varying size as they are.
    """

    def __init__(self, lengths: list[int], budget: int, max_rows: int, seed: int,
                 grouped: bool = True, packed: bool = False, shuffle: bool = True) -> None:
        # shuffle False: evaluation, longest first (LongestFirstSampler's order)
        self.order: Sampler[int] = LengthGroupedSampler(
            lengths if grouped else [0] * len(lengths), max_rows, seed) if shuffle else \
            LongestFirstSampler(lengths)
        self.lengths, self.budget, self.max_rows, self.packed = lengths, budget, max_rows, packed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.order, LengthGroupedSampler):
            self.order.set_epoch(epoch)
        self.batches = self.plan(list(self.order))

    def plan(self, order: list[int]) -> list[list[int]]:
        """Consecutive rows of `order` cut where the next row would break the budget."""
        batches: list[list[int]] = []
        current: list[int] = []
        widest = total = 0
        for i in order:
            n = self.lengths[i]
            cost = total + n if self.packed else (len(current) + 1) * max(widest, n)
            if current and (cost > self.budget or len(current) == self.max_rows):
                batches.append(current)
                current, widest, total = [], 0, 0
            current.append(i)
            widest, total = max(widest, n), total + n
        return batches + ([current] if current else [])

    def mean_rows(self) -> float:
        return len(self.lengths) / max(len(self.batches), 1)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class LongestFirstSampler(Sampler[int]):
    """Evaluation order: longest first, so each batch pads to about its own length.

    Metrics are computed over the whole pass, so the order changes nothing but the time
    (about half of it on SST-2-like data, where lengths vary 10x).
    """

    def __init__(self, lengths: list[int]) -> None:
        self.order = sorted(range(len(lengths)), key=lambda i: -lengths[i])

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        return iter(self.order)


class CausalPadCollator:
    """Right-pads `input_ids` with the pad id and `labels` with -100 (ignored by the loss)."""

    def __init__(self, pad_id: int, multiple_of: int = 1) -> None:
        self.pad_id = pad_id
        self.multiple_of = multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        width = math.ceil(longest / self.multiple_of) * self.multiple_of
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.tensor(f["input_ids"])
            labels[row, :n] = torch.tensor(f["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def load_text_tokenizer(base: str) -> Any:
    """The base model's tokenizer; GPT-2 style vocabularies get eos as their pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pad_multiple() -> int:
    """Width multiple to pad batches to: 8 where tensor cores want it (CUDA), else 1.

    On CPU there is nothing to align to, and rounding costs real work: SST-2 batches are
    ~16 tokens wide, so rounding up to 8 adds up to half the tokens; padding to 8 on CPU
    ran the MiniLM train step ~20% slower (bench/train_throughput.py, docs/benchmarks.md).
    """
    return 8 if torch.cuda.is_available() else 1


def padding_collator(tokenizer: Any) -> Any:
    """Dynamic padding to the batch's longest row (rounded to `pad_multiple()`)."""
    from transformers import DataCollatorWithPadding

    multiple = pad_multiple()
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple if multiple > 1 else None)
