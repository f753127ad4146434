"""Causal-LM instruction tuning: conversations in, loss on the assistant's tokens only.

The protocol (tunesmith.objectives.TaskType), in step order. A dataset maps one of three
shapes (`columns`): a chat column (`messages` of {role, content}, or ShareGPT's {from, value}),
Alpaca's instruction (+ optional input) and response, or a prompt and a response. Clean turns
every row into `messages` (`chat.py` here), dropping rows by reason. Rows are rendered with
the tokenizer's chat template, or with `train.prompt_template` when it has none, by the same
function for training, evaluation and serving.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from tunesmith.config import Config
    from tunesmith.training.options import TrainOptions
    from tunesmith.validation.suites import Batch

NAME = "causal-lm"
ROLE_SETS = (("messages",), ("instruction", "response"), ("prompt", "response"))
LABELLED = False
BASELINE = "untuned base"
# A candidate must beat the untuned base's perplexity by 0.1%: below that, two models score
# the test set alike up to fp32 summation noise (a run that learnt nothing is not better).
BASELINE_MIN_GAIN = 0.001
PREDICTS = ("response",)
PEFT_TASK = "CAUSAL_LM"
PRIMARY_METRIC = "perplexity"  # register.primary_metric when unset
DEFAULT_BASE = "SmolLM2-135M-Instruct"  # model.base when unset (tunesmith.models)
MEASURES = frozenset({"eval_loss", "perplexity", "n_tokens", "exact_match", "model_size_mb"})
# The template decides the tokens (validate counts truncation, tokenize encodes), the scored
# text (evaluate, which also scores the untuned base) and what the served model renders.
READS: dict[str, tuple[str, ...]] = {
    "validate": ("model.base", "tokenize.max_length", "train.prompt_template"),
    "tokenize": ("train.prompt_template",),
    "evaluate": ("train.prompt_template", "model.base"),
    "register": ("train.prompt_template",),
}
INPUTS: dict[str, tuple[str, ...]] = {"validate": ("base_model",), "evaluate": ("base_model",)}
# train.lr for a ~135M decoder (SmolLM2): LoRA at 1e-3 (datasets/assistant.yaml, and the usual
# order for small causal LMs), full fine-tuning at 3e-5 (bench/llm_sst2.py).
LR_DEFAULTS: dict[str, dict[str, float]] = {"adamw": {"full": 3e-5, "lora": 1e-3,
                                                      "qlora": 1e-3}}
# train.batch_tokens when unset, per device: micro-batches of at most this many (padded)
# tokens, so the default batch of 32 rows fits at instruction lengths. CPU: SmolLM2-135M
# LoRA on Alpaca rows peaks at 2.4 GB with 512 (3.1 GB with 768, 3.7 GB with 1024, out of
# 24 GB unbounded), all at ~230 tokens/s (docs/training.md). CUDA: not measured yet (the GPU
# suite, bench/gpu_suite.py); 8,192 tokens is ~8 GB of SmolLM2 activations in bf16.
BATCH_TOKENS: dict[str, int] = {"cpu": 512, "cuda": 8192}
N_SAMPLES = 8  # generated answers shown in the eval report
# dataset add: rows rendered to choose tokenize.max_length (2,000 render in ~2 s with
# SmolLM2's template), and the share of them the length must cover
MEASURE_ROWS = 2000
COVER = 0.99
SAMPLES = "samples.table.jsonl"  # *.table.jsonl in eval/ become MLflow tables


def check_base(config: dict) -> str | None:
    """None if `config` (a base's config.json) is a causal language model."""
    archs = config.get("architectures") or []
    if archs and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return (f"is a {archs[0]} ({config.get('model_type')}), not a causal language model; "
                "use one such as SmolLM2-135M-Instruct")
    return None


# ---------------------------------------------------------------------- ingest, clean


def _mapped(cfg: Config) -> dict[str, str]:
    """role -> source column, for the first complete shape the dataset maps."""
    cols = cfg.columns
    for roles in ROLE_SETS:
        if all(getattr(cols, r) for r in roles):
            extra = ("input",) if roles[0] == "instruction" and cols.input else ()
            return {r: getattr(cols, r) for r in (*roles[:1], *extra, *roles[1:])}
    raise AssertionError("config validation guarantees a complete shape")


def _as_text(value: Any) -> Any:
    """A chat cell as JSON text (lists from JSON/parquet sources; strings as they are)."""
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "tolist"):
        value = value.tolist()
    return json.dumps(value, ensure_ascii=False, default=lambda v: v.tolist())


def read_source(cfg: Config, staging: Path) -> tuple[pd.DataFrame, dict]:
    """The mapped columns, renamed to their roles; a chat column kept as JSON text."""
    from tunesmith.sources import ingest_table

    mapped = _mapped(cfg)
    frame, manifest = ingest_table(cfg, staging, list(mapped.values()))
    frame = frame.rename(columns={col: role for role, col in mapped.items()})
    if "messages" in frame:
        frame["messages"] = frame["messages"].map(_as_text)
    return frame, manifest


def conversation(row: dict[str, Any]) -> list[dict[str, str]]:
    """One ingested row (by role) as messages; ShapeError (with a reason) if it is not one."""
    from tunesmith.objectives.causal_lm.chat import ShapeError, to_messages

    if "messages" in row:
        value = row["messages"]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ShapeError("bad_shape", f"messages is not JSON: {value[:60]!r}") from None
        return to_messages({"messages": value})
    if "instruction" in row:
        return to_messages({"instruction": row["instruction"], "input": row.get("input"),
                            "output": row["response"]})
    return to_messages({"prompt": row["prompt"], "response": row["response"]})


def split_turns(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """(the conversation before its last assistant turn, that turn's content)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def clean(cfg: Config, staging: Path) -> dict:
    """Every row as `messages` (dropped by reason when it is not a usable conversation),
    contents Unicode-normalised and stripped (whitespace inside kept: code and lists need
    it), duplicates dropped; the source's splits, else a random one. Splits hold `messages`
    (JSON), `context` (JSON: the conversation before its last answer, the leak check's key),
    `prompt` (the last user turn, for reading) and `response` (the last assistant turn, the
    reference)."""
    import unicodedata

    import pandas as pd

    from tunesmith import cleaning as C
    from tunesmith.objectives.causal_lm.chat import ShapeError

    raw = pd.read_parquet(cfg.dirs.raw / "rows.parquet")
    rows_in, opts = len(raw), cfg.clean
    form = None if opts.unicode_form == "none" else opts.unicode_form
    convs, errors = [], {}
    for i, row in enumerate(raw.to_dict("records")):
        try:
            msgs = conversation(row)
        except ShapeError as exc:
            errors[i] = (exc.reason, str(exc))
            convs.append(None)
            continue
        convs.append([{"role": m["role"], "content": (unicodedata.normalize(form, m["content"])
                                                      if form else m["content"]).strip()}
                      for m in msgs])
    frame = pd.DataFrame({"messages": [json.dumps(c, ensure_ascii=False) if c else None
                                       for c in convs]}, index=raw.index)
    if "split" in raw:  # the source's own splits (sources.GIVEN_SPLIT)
        frame["split"] = raw["split"]
    drops: dict[str, dict] = {}
    dropped: list[pd.DataFrame] = []
    for reason in sorted({r for r, _ in errors.values()}):
        rows = [i for i, (r, _) in errors.items() if r == reason]
        drops[reason] = {"count": len(rows), "examples": [
            {"row": i + 1, "error": errors[i][1][:200]} for i in rows[:5]]}
        dropped.append(raw.loc[rows].assign(reason=reason))
    frame = frame.loc[frame["messages"].notna()]
    contexts, responses = zip(*(split_turns(json.loads(m)) for m in frame["messages"]),
                              strict=True) if len(frame) else ((), ())
    frame["context"] = [json.dumps(c, ensure_ascii=False) for c in contexts]
    frame["prompt"] = [next((m["content"] for m in reversed(c) if m["role"] == "user"), "")
                       for c in contexts]
    frame["response"] = list(responses)

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal frame
        if mask.any():
            drops[reason] = {"count": int(mask.sum()),
                             "examples": C.examples(frame, mask, col="prompt")}
            dropped.append(frame.loc[mask].assign(reason=reason))
            frame = frame.loc[~mask]

    if opts.dedup:
        drop(C.within_split(frame["messages"], frame, opts.split).duplicated(),
             "duplicate_exact")
        key = C.dedup_key(frame["messages"])
        drop(C.within_split(key, frame, opts.split).duplicated(), "duplicate_normalised")
    C.require_rows(frame, drops, rows_in, cfg.source.path, labelled=False)
    assignment, splits_from = C.assign_splits(frame, pd.Series("all", index=frame.index),
                                              opts.split)
    C.publish_dropped(staging, dropped)
    turns = frame["messages"].map(lambda m: sum(x["role"] == "assistant" for x in json.loads(m)))
    system = frame["messages"].map(lambda m: json.loads(m)[0]["role"] == "system")
    return {"rows_in": rows_in, "rows_out": len(frame), "dropped": drops,
            "splits_from": splits_from, "text_chars": C.length_stats(frame["prompt"]),
            "response_chars": C.length_stats(frame["response"]),
            "conversations": {"multi_turn": int((turns > 1).sum()),
                              "with_system": int(system.sum())},
            **C.write_splits(staging, frame, assignment,
                             ["messages", "context", "prompt", "response"])}


def describe(root: Path, src: Any, columns: dict[str, str | None],
             label_map: dict[str, str]) -> dict:
    """`dataset add`: recognise the shape from the source's columns (a chat column, Alpaca's
    instruction/input/output, or --prompt-col/--response-col) and map it."""
    from tunesmith.datasets import local_source
    from tunesmith.errors import ConfigError
    from tunesmith.sources import read_table, require_columns

    local = local_source(root, src)
    frame = read_table(local, src)
    found = set(frame.columns)
    if columns.get("prompt") and columns.get("response"):
        mapping = {"prompt": columns["prompt"], "response": columns["response"]}
    elif chat := next((c for c in ("messages", "conversations") if c in found), None):
        mapping = {"messages": chat}
    elif {"instruction", "output"} <= found:
        mapping = {"instruction": "instruction", "response": "output"}
        if "input" in found:
            mapping["input"] = "input"
    else:
        raise ConfigError(
            f"{local}: no chat column (messages, conversations), no Alpaca instruction/output "
            f"and no --prompt-col/--response-col (columns: {', '.join(sorted(found)[:10])})")
    require_columns(frame, list(mapping.values()), local)
    return {"columns": mapping, "model": {"base": DEFAULT_BASE},
            "train": {"method": "lora"}}


def measure(cfg: Config) -> tuple[dict, list[str]]:
    """`dataset add`: `tokenize.max_length` from the rendered rows, the smallest multiple of
    64 tokens that covers 99% of them (MEASURE_ROWS sampled), within the base's context; and
    the line saying what it chose and how many rows it cuts. Instruction rows run to hundreds
    of tokens: 31 of 102 Alpaca rows exceeded the text default of 128, and validation refused
    the dataset."""
    import math

    import numpy as np

    from tunesmith.datasets import local_source
    from tunesmith.models import resolve_base
    from tunesmith.objectives.causal_lm.chat import ShapeError, rendered_length
    from tunesmith.sources import read_table
    from tunesmith.tokenization import load_tokenizer

    mapped = _mapped(cfg)
    frame = read_table(local_source(cfg.root, cfg.source), cfg.source)
    if len(frame) > MEASURE_ROWS:
        frame = frame.sample(MEASURE_ROWS, random_state=cfg.clean.split.seed)
    tokenizer = load_tokenizer(resolve_base(cfg.model.base, cfg.root, tokenizer_only=True))
    lengths = []
    for row in frame.to_dict("records"):
        by_role = {role: row[col] for role, col in mapped.items()}
        if "messages" in by_role:
            by_role["messages"] = _as_text(by_role["messages"])
        try:
            lengths.append(rendered_length(conversation(by_role), tokenizer,
                                           cfg.train.prompt_template))
        except (ShapeError, ValueError):
            continue  # clean drops it and says why
    if not lengths:
        return {}, []
    tokens = np.asarray(lengths)
    p99 = float(np.percentile(tokens, COVER * 100))
    context = context_length(cfg, tokenizer)
    chosen = max(64, math.ceil(p99 / 64) * 64)
    chosen = min(chosen, context) if context else chosen
    cut = int((tokens > chosen).sum())
    line = (f"tokenize.max_length: {chosen} tokens, covering {1 - cut / len(tokens):.1%} of "
            f"{len(tokens)} rendered rows (p50 {int(np.median(tokens))}, p99 {math.ceil(p99)}, "
            f"longest {int(tokens.max())}); {cut} rows cut"
            + (f"; base context {context}" if context else ""))
    return {"tokenize": {"max_length": chosen}}, [line]


def context_length(cfg: Config, tokenizer: Any) -> int | None:
    """The most tokens the base attends to: its config's position limit, else the
    tokenizer's `model_max_length` when that is a real number (many say 1e30)."""
    from tunesmith.preflight import base_config

    config = base_config(cfg) or {}
    limits = [config.get(k) for k in ("max_position_embeddings", "n_positions")]
    limits.append(getattr(tokenizer, "model_max_length", None))
    real = [int(v) for v in limits if isinstance(v, int | float) and 0 < v < 1_000_000]
    return min(real) if real else None


def report_lines(report: dict) -> list[str]:
    from tunesmith.cleaning import report_lines as common

    lines = common(report, "error")
    for what, key in (("prompt", "text_chars"), ("response", "response_chars")):
        if chars := report.get(key):
            lines.append(f"  {what} length (chars): p5 {chars['p5']}, p50 {chars['p50']}, "
                         f"p95 {chars['p95']}, max {chars['max']}")
    if conv := report.get("conversations"):
        lines.append(f"  conversations: {conv['multi_turn']} multi-turn, "
                     f"{conv['with_system']} with a system message")
    return lines


def suite(cfg: Config, frames: dict[str, pd.DataFrame]) -> list[Batch]:
    """Columns, lengths, rows, no prompt in two splits; and the token budget: the share of
    rows `tokenize.max_length` truncates, and of rows it leaves nothing to learn from (tokenize
    drops those), each at most `validate.max_truncated_share`."""
    import great_expectations.expectations as gxe
    import pandas as pd

    from tunesmith.models import resolve_base
    from tunesmith.objectives.causal_lm.chat import render
    from tunesmith.tokenization import load_tokenizer
    from tunesmith.validation.suites import Batch, bounded_by, causal_lm

    batches = causal_lm(cfg, frames)
    if not all("messages" in f for f in frames.values()):
        return batches  # the split suites report the missing column
    tokenizer = load_tokenizer(resolve_base(cfg.model.base, cfg.root, tokenizer_only=True))
    rows = []
    for split, frame in frames.items():
        for i, (messages, prompt) in enumerate(zip(frame["messages"], frame["prompt"],
                                                   strict=True)):
            r = render(json.loads(messages), tokenizer, cfg.tokenize.max_length,
                       cfg.train.prompt_template)
            rows.append({"split": split, "row": i, "prompt": str(prompt)[:80],
                         "tokens": r["full_length"], "truncated": r["full_length"] > r["length"],
                         "nothing_to_learn": r["n_supervised"] == 0})
    mostly = 1.0 - cfg.validate_.max_truncated_share
    budget = bounded_by("tokenize.max_length", "validate.max_truncated_share")
    return batches + [Batch("tokens", pd.DataFrame(rows), [
        gxe.ExpectColumnValuesToBeInSet(column="truncated", value_set=[False], mostly=mostly,
                                        **budget),
        gxe.ExpectColumnValuesToBeInSet(column="nothing_to_learn", value_set=[False],
                                        mostly=mostly, **budget),
    ], row_id=["split", "row", "tokens"])]


# -------------------------------------------------------------------------- tokenize


def rendering_template(tokenizer: Any, template: str) -> tuple[str, str]:
    """("chat", the tokenizer's chat template) or ("plain", train.prompt_template)."""
    from tunesmith.objectives.causal_lm.chat import has_chat_template

    return ("chat", tokenizer.chat_template) if has_chat_template(tokenizer) else ("plain",
                                                                                   template)


def encode(cfg: Config, base: str, staging: Path) -> dict:
    """Each conversation rendered (chat template, else train.prompt_template), labels -100
    except the assistant's tokens; rows that keep no supervised token are dropped and counted."""
    import hashlib

    import numpy as np
    import pandas as pd

    from tunesmith import tokenization as T
    from tunesmith.objectives.causal_lm.chat import render

    tokenizer = T.load_tokenizer(base)
    kind, text = rendering_template(tokenizer, cfg.train.prompt_template)
    digest = hashlib.sha256(text.encode()).hexdigest()
    max_len = cfg.tokenize.max_length
    rows, lengths, counts = {}, {}, {"truncated": 0, "supervision_cut": 0,
                                     "dropped_no_supervision": 0}
    for split in ("train", "val", "test"):
        frame = pd.read_parquet(cfg.dirs.clean / f"{split}.parquet")
        cols: dict[str, list] = {"input_ids": [], "labels": [], "length": []}
        for messages in frame["messages"]:
            r = render(json.loads(messages), tokenizer, max_len, cfg.train.prompt_template)
            counts["truncated"] += r["full_length"] > r["length"]
            counts["supervision_cut"] += r["n_supervised"] < r["n_supervised_full"]
            if r["n_supervised"] == 0:
                counts["dropped_no_supervision"] += 1
                continue
            for key in cols:
                cols[key].append(r[key])
        T.save_split(cols, staging / split, fingerprint=f"{cfg.name}-{split}")
        rows[split], lengths[split] = len(cols["length"]), np.asarray(cols["length"], np.int64)
    report = T.token_report(rows, lengths, counts["truncated"], max_len)
    return {**report, **counts, "template": kind, "template_sha256": digest,
            "meta": {"template": kind, "template_sha256": digest},
            "tags": {"template.kind": kind, "template.sha256": digest}}


# ------------------------------------------------------- train (training core: no pydantic)


def load_model(base: str, labels: list[str] | None, opts: TrainOptions, **kw: Any) -> Any:
    from transformers import AutoModelForCausalLM

    from tunesmith.training.methods import load_pretrained

    return load_pretrained(AutoModelForCausalLM, base, opts, labels=None, attention=True, **kw)


def training_data(tokenized: Path, base: str, opts: TrainOptions) -> tuple:
    from tunesmith.training.data import TokenizedDataset, load_text_tokenizer

    return (TokenizedDataset.load(tokenized / "train"), TokenizedDataset.load(tokenized / "val"),
            load_text_tokenizer(base))


def collator(tokenizer: Any, opts: TrainOptions) -> Any:
    from tunesmith.objectives.causal_lm.training import causal_collator

    return causal_collator(tokenizer, opts.packing)


def training_loss() -> Any | None:
    from tunesmith.objectives.causal_lm.training import supervised_loss

    return supervised_loss


def metric_fns() -> tuple[Any, Any]:
    return None, None  # validation reports the loss only (prediction_loss_only)


def best_metric(opts: TrainOptions) -> tuple[str, bool]:
    """The validation loss (or perplexity) whatever `metric_for_best` says: no accuracy here."""
    metric = opts.metric_for_best if opts.metric_for_best in ("loss", "perplexity") else "loss"
    return metric, False


def finish_val_metrics(metrics: dict[str, float]) -> dict[str, float]:
    from tunesmith.objectives.causal_lm.training import perplexity

    return {**metrics, "perplexity": perplexity(metrics["loss"])}


# ------------------------------------------------------------------------- evaluate


def _test_rows(cfg: Config) -> tuple[list[list[dict]], list[str]]:
    """The test conversations and the reference (last assistant) answer of each."""
    import pandas as pd

    from tunesmith.errors import DataError

    path = cfg.dirs.clean / "test.parquet"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the clean step first")
    test = pd.read_parquet(path)
    if "messages" not in test:
        raise DataError(f"{path}: no messages column; run the clean step again")
    convs = [json.loads(m) for m in test["messages"]]
    return convs, [split_turns(c)[1] for c in convs]


def _score(cfg: Config, model: Any, tokenizer: Any, out: Path | None, column: str) -> dict:
    """Loss and perplexity on test; greedy answers (every row when the answers are labels,
    then exact match, else the first N_SAMPLES); answers go into out/SAMPLES as `column`."""
    from tunesmith.objectives.causal_lm import evaluation as E

    convs, refs = _test_rows(cfg)
    template = cfg.train.prompt_template
    scores: dict[str, Any] = {"n": len(convs), **E.lm_loss(
        model, tokenizer, convs, cfg.tokenize.max_length, template, cfg.evaluate.batch_size)}
    labels = E.label_like(refs)
    todo = range(len(convs)) if labels else range(min(N_SAMPLES, len(convs)))
    longest = max((len(tokenizer(refs[i], add_special_tokens=False)["input_ids"]) for i in todo),
                  default=1)
    answers = E.generate(model, tokenizer, [split_turns(convs[i])[0] for i in todo], template,
                         max_new_tokens=longest + 4 if labels else E.MAX_NEW_TOKENS)
    if labels:
        scores["exact_match"] = E.exact_match(answers, refs)
    if out is not None:
        _add_samples(out, column, convs, refs, answers[:N_SAMPLES])
    return scores


def _add_samples(out: Path, column: str, convs: list, refs: list[str], answers: list[str]) -> None:
    """The generations table: one row per sampled test prompt, a column per model."""
    from tunesmith.objectives.causal_lm import evaluation as E

    path = out / SAMPLES
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] \
        if path.is_file() else [{"prompt": split_turns(c)[0][-1]["content"], "reference": r}
                                for c, r in zip(convs[:len(answers)], refs, strict=False)]
    for row, answer in zip(rows, answers, strict=False):
        row[column] = answer
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    (out / "samples.md").write_text(E.samples_markdown(rows), encoding="utf-8")


def score_candidate(cfg: Config, out: Path) -> dict:
    """The fine-tuned model: response-token loss and perplexity on test, greedy answers
    beside the references (samples.md, and an MLflow table), exact match for label answers."""
    from tunesmith import plots
    from tunesmith.objectives.causal_lm.evaluation import load_lm
    from tunesmith.objectives.classification.evaluation import model_size

    model, tokenizer = load_lm(cfg.dirs.model / "model")
    report = _score(cfg, model, tokenizer, out, "generated")
    report.update(model_size(cfg.dirs.model / "model", model))
    if (curve := plots.read_curve(cfg.dirs.model / "curve.csv")) is not None:
        plots.training_curves_png(curve, out / "training_curves.png")
    return report


def score_baseline(cfg: Config, out: Path, keep: Callable[[dict], bool]) -> dict | None:
    """The untuned base model on the same rows: what fine-tuning must beat (never served,
    so `keep` is not asked)."""
    from tunesmith.models import resolve_base
    from tunesmith.objectives.causal_lm.evaluation import load_lm

    model, tokenizer = load_lm(resolve_base(cfg.model.base, cfg.root))
    return _score(cfg, model, tokenizer, out, "base")


def score_majority(cfg: Config) -> dict | None:
    return None  # no classes: nothing to collapse onto


def score_champion(cfg: Config) -> dict | None:
    """The registered champion on this test split (None: not comparable)."""
    import sys

    from tunesmith.objectives.causal_lm.registering import load_chat_components
    from tunesmith.registry.store import CHAMPION

    try:
        model, tokenizer = load_chat_components(cfg, CHAMPION)
        return _score(cfg, model, tokenizer, None, "champion")
    except Exception as exc:  # noqa: BLE001 - any failure means "not comparable"
        print(f"evaluate: the champion could not be re-scored: {exc}", file=sys.stderr)
        return None


# --------------------------------------------------------------------- register, predict


def log_model(cfg: Config, model_dir: Path) -> Any:
    """MLflow's transformers flavour, as a chat model (llm/v1/chat): the tokenizer carries
    the template training rendered with (its chat template, or one made from
    train.prompt_template), so serving renders prompts the same way."""
    from tunesmith.objectives.causal_lm.registering import log_chat_model

    return log_chat_model(cfg, model_dir, cfg.train.prompt_template)


def log_baseline(cfg: Config, eval_dir: Path) -> Any | None:
    return None  # the untuned base is measured, not served as "the baseline model"


def sample_inputs(cfg: Config) -> pd.DataFrame:
    import pandas as pd

    path = cfg.dirs.clean / "test.parquet"
    prompts = pd.read_parquet(path)["prompt"].astype(str).head(2).tolist() \
        if path.is_file() else []
    return pd.DataFrame({"prompt": prompts or ["Say hello."]})


def predict_inputs(cfg: Config, values: list[str], table: Path | None) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"prompt": [str(v) for v in values]})


def serve(model: Any, inputs: pd.DataFrame, options: dict[str, Any]) -> pd.DataFrame:
    """One chat request per prompt (greedy unless a temperature is given: the logged model
    samples with top_k 1 by default, see registering.log_chat_model); `response`."""
    import pandas as pd

    _quiet_bpe_cleanup()
    answers = []
    for prompt in inputs["prompt"]:
        request: dict[str, Any] = {"messages": [{"role": "user", "content": str(prompt)}],
                                   "max_tokens": int(options.get("max_new_tokens") or 64)}
        if options.get("temperature"):
            request.update(temperature=float(options["temperature"]), top_k=50)
        reply = model.predict(request)
        answers.append(reply[0]["choices"][0]["message"]["content"].strip())
    return pd.DataFrame({"response": answers})


def _quiet_bpe_cleanup() -> None:
    """MLflow's chat model decodes with clean_up_tokenization_spaces=True; transformers 5
    ignores it for BPE tokenizers (rightly: it would strip spaces) and logs a warning the
    user can do nothing about, in every register and predict. Drop that record only."""
    import logging

    class BpeCleanupNote(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.msg).startswith("Ignoring clean_up_tokenization_spaces")

    target = logging.getLogger("transformers.tokenization_utils_tokenizers")
    if not any(type(f).__name__ == "BpeCleanupNote" for f in target.filters):
        target.addFilter(BpeCleanupNote())


def input_columns(cfg: Config) -> list[str]:
    return [c for c in (cfg.columns.prompt, cfg.columns.instruction, "prompt", "text") if c]


def card_lines(cfg: Config) -> list[str]:
    return [
        "## Intended use", "",
        f"Answering instructions like those in `{cfg.source.path}`; served with "
        f"`tunesmith predict --dataset {cfg.name} \"...\"`.", "",
        "## Limitations", "",
        "- Only as good as its training data: instructions unlike it get answers of unknown "
        "quality; generations can be wrong with full confidence.",
        f"- A conversation is truncated to {cfg.tokenize.max_length} tokens.",
        "- Metrics come from one test split; small splits give wide error bars.", "",
    ]
