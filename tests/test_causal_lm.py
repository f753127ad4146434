"""Causal-LM instruction tuning end to end: data shapes, the template contract, the untuned
base as the baseline, the chat model in the registry and `predict`.

Fast tests use SmolLM2's architecture shrunk (tests/conftest.py `tiny_llama`) with the real
SmolLM2 tokenizer and chat template; the `slow` one LoRA-tunes the real 135M model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import run_cli
from conftest import REPO, alpaca_rows
from registry_helpers import one_torch_thread  # noqa: F401 (a fixture, used by name)

from tunesmith.config import load_config
from tunesmith.errors import ConfigError, DataError
from tunesmith.steps import STEPS
from tunesmith.tasks.runner import run_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LABELLER = "Answer positive or negative."


def conversations(n: int) -> list[dict]:
    """Label-like answers (exact match is scored), some with a system message, some two-turn."""
    words = ["great", "lovely", "superb", "awful", "dull", "boring"]
    rows = []
    for i in range(n):
        word = words[i % len(words)]
        label = "positive" if i % len(words) < 3 else "negative"
        question = f"Review {i}: a {word} film. Positive or negative?"
        messages = [{"role": "user", "content": question},
                    {"role": "assistant", "content": label}]
        if i % 4 == 0:
            messages.insert(0, {"role": "system", "content": LABELLER})
        if i % 5 == 0:
            messages = [{"role": "user", "content": f"Say hi {i}."},
                        {"role": "assistant", "content": "hi"}, *messages[-2:]]
        rows.append({"messages": messages})
    return rows


def chat_project(root: Path, base: Path, rows: list[dict], extra: str = "") -> Path:
    (root / "datasets").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "data" / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "datasets" / "chat.yaml").write_text(f"""task: causal-lm
source: {{path: data/chat.jsonl}}
columns: {{messages: messages}}
validate: {{min_rows: 10}}
model: {{base: {base}}}
tokenize: {{max_length: 96}}
train: {{epochs: 3, lr: 3.0e-3, batch_size: 8, warmup_ratio: 0.0, early_stopping_patience: 0}}
evaluate: {{latency_examples: 2}}
{extra}""")
    return root


def test_bad_rows_are_dropped_by_reason_naming_the_row(tmp_path, tiny_llama):
    rows = conversations(40)
    rows[3] = {"messages": [{"role": "user", "content": "nobody answers"}]}
    rows[7] = {"messages": [{"role": "robot", "content": "beep"},
                            {"role": "assistant", "content": "boop"}]}
    rows[9] = {"messages": [{"role": "user", "content": "empty?"},
                            {"role": "assistant", "content": "  "}]}
    rows[11] = {"conversations": [{"from": "human", "value": "ShareGPT?"},
                                  {"from": "gpt", "value": "yes"}]}  # not the mapped column
    cfg = load_config("chat", chat_project(tmp_path / "proj", tiny_llama, rows))
    run_step(cfg, "ingest")
    result = run_step(cfg, "clean")
    assert result.dropped == {"no_assistant_turn": 1, "unknown_role": 1, "empty_response": 1,
                              "bad_shape": 1}
    report = json.loads((cfg.dirs.clean / "report.json").read_text())
    assert report["dropped"]["unknown_role"]["examples"][0]["row"] == 8  # 1-based source row
    assert "'robot'" in report["dropped"]["unknown_role"]["examples"][0]["error"]
    test = pd.read_parquet(cfg.dirs.clean / "test.parquet")
    assert list(test.columns) == ["messages", "context", "prompt", "response"]


def test_alpaca_json_keeps_the_input_and_sharegpt_maps_roles(tmp_path, tiny_llama):
    root = chat_project(tmp_path / "proj", tiny_llama, conversations(1))
    alpaca = [{"instruction": "Find the area of a circle given its radius.", "input": "r = 2",
               "output": "12.57"}] + [{"instruction": f"Echo {i}.", "input": "", "output": str(i)}
                                     for i in range(30)]
    (root / "data" / "alpaca.json").write_text(json.dumps(alpaca))
    share = [{"conversations": [{"from": "system", "value": "Be brief."},
                                {"from": "human", "value": f"Count to {i}."},
                                {"from": "gpt", "value": " ".join(map(str, range(1, i + 1)))}]}
             for i in range(1, 31)]
    (root / "data" / "share.jsonl").write_text("".join(json.dumps(r) + "\n" for r in share))
    for name, source in (("alpaca", "data/alpaca.json"), ("share", "data/share.jsonl")):
        (root / "datasets" / f"{name}.yaml").write_text(
            (root / "datasets" / "chat.yaml").read_text()
            .replace("data/chat.jsonl", source)
            .replace("{messages: messages}", "{instruction: instruction, input: input, "
                     "response: output}" if name == "alpaca" else "{messages: conversations}"))
    cfg = load_config("alpaca", root)
    run_step(cfg, "ingest")
    run_step(cfg, "clean")
    frames = pd.concat(pd.read_parquet(cfg.dirs.clean / f"{s}.parquet") for s in
                       ("train", "val", "test"))
    circle = next(json.loads(m) for m in frames["messages"] if "circle" in m)
    assert circle[0] == {"role": "user",
                         "content": "Find the area of a circle given its radius.\n\nr = 2"}
    cfg = load_config("share", root)
    run_step(cfg, "ingest")
    run_step(cfg, "clean")
    first = json.loads(pd.read_parquet(cfg.dirs.clean / "train.parquet")["messages"][0])
    assert [m["role"] for m in first] == ["system", "user", "assistant"]


def test_dataset_add_recognises_the_shape(tmp_path, tiny_llama, monkeypatch, capsys):
    root = chat_project(tmp_path / "proj", tiny_llama, conversations(40))
    args = ["dataset", "add", "talk", "--source", "data/chat.jsonl", "--task", "causal-lm"]
    result = run_cli([*args, "--no-check"], root, monkeypatch, capsys)
    assert result.code == 0, result.err
    import yaml

    spec = yaml.safe_load((root / "datasets" / "talk.yaml").read_text())
    assert spec["columns"] == {"messages": "messages"}
    assert spec["model"] == {"base": "SmolLM2-135M-Instruct"}  # the causal default, written
    (root / "data" / "plain.csv").write_text("a,b\nx,y\n")
    bad = run_cli(["dataset", "add", "plain", "--source", "data/plain.csv", "--task",
                   "causal-lm", "--no-check"], root, monkeypatch, capsys)
    assert bad.code == ConfigError.exit_code and "no chat column" in bad.err


def test_the_pipeline_on_a_chat_dataset(tmp_path, tiny_llama, monkeypatch, capsys):
    """All seven steps: loss on assistant tokens only, the untuned base as the baseline,
    the template digest on the run and the version, a chat model in the registry that
    renders prompts as training did, and `predict` answering."""
    from mlflow import MlflowClient

    from tunesmith import tracking
    from tunesmith.objectives.causal_lm.chat import prompt_ids
    from tunesmith.objectives.causal_lm.registering import load_chat_components

    root = chat_project(tmp_path / "proj", tiny_llama, conversations(90))
    cfg = load_config("chat", root)
    results = {s: run_step(cfg, s) for s in STEPS}

    tokens = json.loads((cfg.dirs.tokenized / "token_report.json").read_text())
    assert tokens["template"] == "chat" and tokens["dropped_no_supervision"] == 0
    report = json.loads((cfg.dirs.eval / "metrics.json").read_text())
    assert report["baseline"]["name"] == "untuned base"
    # A random 2-layer model on 49k tokens starts near ln(49152) = 10.8; three epochs on
    # label answers must get well below the untouched copy of itself.
    assert report["baseline"]["eval_loss"] > 9.0
    assert report["eval_loss"] < report["baseline"]["eval_loss"] - 2.0
    assert 0.0 <= report["exact_match"] <= 1.0 and "exact_match" in report["baseline"]
    samples = [json.loads(x) for x in (cfg.dirs.eval / "samples.table.jsonl").read_text()
               .splitlines()]
    assert set(samples[0]) == {"prompt", "reference", "generated", "base"}
    assert (cfg.dirs.eval / "samples.md").read_text().startswith("# Generated answers")

    reg = results["register"]
    assert reg.version == 1 and "champion" in reg.aliases
    assert any(r.startswith("pass baseline: perplexity") for r in reg.decision.reasons)
    client = MlflowClient(tracking.tracking_uri(cfg), tracking.tracking_uri(cfg))
    version = client.get_model_version("chat", "1")
    assert version.tags["template.sha256"] == tokens["template_sha256"]
    assert client.get_run(reg.run_id).data.tags["template.kind"] == "chat"
    tables = {a.path for a in client.list_artifacts(reg.run_id, "eval")}
    assert "eval/samples.json" in tables  # the MLflow table of generations

    # Train/serve identity: the served tokenizer renders a prompt exactly as training did.
    model, served = load_chat_components(cfg, "champion")
    from transformers import AutoTokenizer

    trained = AutoTokenizer.from_pretrained(cfg.dirs.model / "model")
    convo = [{"role": "system", "content": LABELLER}, {"role": "user", "content": "Review: ok"}]
    assert prompt_ids(convo, served) == prompt_ids(convo, trained)
    assert served.chat_template == trained.chat_template

    res = run_cli(["predict", "-d", "chat", "--max-new-tokens", "3", "Review 1: a lovely film."],
                  root, monkeypatch, capsys)
    assert res.code == 0, res.err
    answer, prompt = res.out.strip().split("\t")
    assert prompt == "Review 1: a lovely film." and answer.strip()


def test_a_candidate_no_better_than_its_base_is_never_champion(tmp_path, tiny_llama):
    """The gate's baseline for a causal LM is the untuned base: a run that learnt nothing
    (its perplexity is the base's) is registered as challenger only."""
    root = chat_project(tmp_path / "proj", tiny_llama, conversations(60))
    cfg = load_config("chat", root, ["train.lr=1.0e-12", "train.max_steps=1"])
    results = {s: run_step(cfg, s) for s in STEPS}
    report = json.loads((cfg.dirs.eval / "metrics.json").read_text())
    assert report["perplexity"] == pytest.approx(report["baseline"]["perplexity"], rel=1e-4)
    reg = results["register"]
    assert reg.aliases == ["challenger"]
    assert any(r.startswith("FAIL baseline: perplexity") and "untuned base" in r
               for r in reg.decision.reasons)


def test_a_conversation_format_without_the_mapped_column_is_one_line(tmp_path, tiny_llama,
                                                                    monkeypatch, capsys):
    root = chat_project(tmp_path / "proj", tiny_llama, conversations(20))
    path = root / "datasets" / "chat.yaml"
    path.write_text(path.read_text().replace("{messages: messages}", "{messages: turns}"))
    res = run_cli(["step", "ingest", "--dataset", "chat"], root, monkeypatch, capsys)
    assert res.code == DataError.exit_code and "column 'turns' not found" in res.err


@pytest.mark.slow
def test_lora_on_the_real_smollm2_beats_the_untuned_model(tmp_path):
    """The bundled sample on SmolLM2-135M-Instruct with the dataset's own settings, shortened
    to 30 optimizer steps: test loss falls below the base's (~6-8 minutes on 2 cores)."""
    pytest.importorskip("gguf")
    root = tmp_path / "proj"
    (root / "datasets").mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    shutil.copy(REPO / "datasets" / "assistant.yaml", root / "datasets" / "assistant.yaml")
    (root / "data" / "samples").mkdir(parents=True)
    shutil.copy(REPO / "data" / "samples" / "assistant.jsonl", root / "data" / "samples")
    cfg = load_config("assistant", root, ["train.max_steps=30"])
    for step in STEPS[:-1]:
        run_step(cfg, step)
    report = json.loads((cfg.dirs.eval / "metrics.json").read_text())
    print(f"test loss {report['eval_loss']:.3f} vs base {report['baseline']['eval_loss']:.3f}")
    assert report["eval_loss"] < report["baseline"]["eval_loss"]


def test_lm_loss_on_supervised_positions_equals_the_full_logits_loss(tiny_llama):
    """lm_loss runs the LM head on the supervised positions only (3 of ~100 for a label
    word); the mean must equal the loss over full logits, rows in any order and padding."""
    import torch

    from tunesmith.objectives.causal_lm import evaluation as E
    from tunesmith.objectives.causal_lm.chat import IGNORE, render

    model, tok = E.load_lm(tiny_llama)
    convs = [[{"role": "user", "content": "word " * n},
              {"role": "assistant", "content": "positive" if n % 2 else "negative maybe"}]
             for n in (3, 40, 7, 19, 1)]
    got = E.lm_loss(model, tok, convs, 128, None, batch_size=2)
    total = count = 0
    with torch.inference_mode():
        for conv in convs:  # one row at a time: no padding at all
            row = render(conv, tok, 128, None)
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1]
            target = torch.tensor(row["labels"][1:])
            total += float(torch.nn.functional.cross_entropy(
                logits, target, ignore_index=IGNORE, reduction="sum"))
            count += int((target != IGNORE).sum())
    assert got["n_tokens"] == count
    assert got["eval_loss"] == pytest.approx(total / count, rel=1e-4)


# get_peft_model directly (not wrap_lora, which filters it): peft 0.21 reads transformers 5's
# deprecated is_gradient_checkpointing alias.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
@pytest.mark.parametrize("lora", [False, True])
def test_supervised_loss_equals_the_models_own_loss(tiny_llama, lora):
    """The train step's causal loss runs the LM head on supervised positions only; loss and
    gradients must equal transformers' own (labels=) loss, packed rows and LoRA included."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.objectives.causal_lm.chat import render
    from tunesmith.objectives.causal_lm.training import causal_collator, supervised_loss

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    rows = [render([{"role": "user", "content": "word " * n},
                    {"role": "assistant", "content": "yes" if n % 2 else "no, not really"}],
                   tok, 128, None) for n in (3, 11, 6)]
    batch = causal_collator(tok, packing=True)(
        [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    ours = supervised_loss(model, batch)
    ours.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    theirs = model(**batch).loss
    theirs.backward()
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-5)
    assert grads
    for name, param in model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(grads[name], param.grad, rtol=1e-4, atol=1e-6)


def test_dataset_add_sizes_max_length_from_the_rendered_rows(tmp_path, tiny_llama,
                                                             monkeypatch, capsys):
    """Alpaca JSON with rows of hundreds of tokens: `dataset add` measures the rendered rows
    and writes a tokenize.max_length that covers >= 99% of them, and says so; `--set` writes
    any key and wins over the measurement; a refused add names the options that accept it."""
    import numpy as np
    import yaml
    from transformers import AutoTokenizer

    from tunesmith.objectives.causal_lm.chat import to_messages

    root = chat_project(tmp_path / "proj", tiny_llama, conversations(20))
    rows = alpaca_rows(120)
    (root / "data" / "alpaca.json").write_text(json.dumps(rows))
    args = ["dataset", "add", "recipes", "--source", "data/alpaca.json", "--task", "causal-lm"]
    tok = AutoTokenizer.from_pretrained(tiny_llama)  # the named base's real tokenizer
    lengths = np.array([len(tok.apply_chat_template(to_messages(r), return_dict=False))
                        for r in rows])
    assert (lengths > 128).mean() > 0.3  # the text default would refuse this data

    refused = run_cli([*args, "--set", "tokenize.max_length=64"], root, monkeypatch, capsys)
    assert refused.code == 4
    assert "--set tokenize.max_length=... (now 64)" in refused.out
    assert not (root / "datasets" / "recipes.yaml").exists()

    added = run_cli([*args, "--set", "train.batch_size=4"], root, monkeypatch, capsys)
    assert added.code == 0, added.out + added.err
    spec = yaml.safe_load((root / "datasets" / "recipes.yaml").read_text())
    chosen = spec["tokenize"]["max_length"]
    assert chosen % 64 == 0 and (lengths <= chosen).mean() >= 0.99
    assert chosen - 64 < np.percentile(lengths, 99)  # the smallest such multiple of 64
    assert spec["train"] == {"method": "lora", "batch_size": 4}  # --set written too
    assert f"tokenize.max_length: {chosen} tokens, covering" in added.out
    assert "validation: passed" in added.out

    again = run_cli([*args, "--force", "--no-check", "--set", "tokenize.max_length=1024"],
                    root, monkeypatch, capsys)
    assert again.code == 0
    spec = yaml.safe_load((root / "datasets" / "recipes.yaml").read_text())
    assert spec["tokenize"] == {"max_length": 1024}  # the user's value, not the measured one
