"""Chat rows for instruction tuning: render with the tokenizer's chat template, loss on assistant
tokens only, and the exact prompt serving feeds the model.

Pure functions over a Hugging Face tokenizer; only the standard library is imported.

Supervised tokens (labels != -100) are, for EVERY assistant turn, the tokens of its content plus
the turn's end-of-turn token (SmolLM2/ChatML: `<|im_end|>`), so the model learns to stop. The
turn header (`<|im_start|>assistant\\n`), everything the user/system said, and whatever the
template writes after the end-of-turn token (ChatML's "\\n") get -100.

Locating assistant tokens. Templates without `{% generation %}` markers (SmolLM2's has none) give
no mask, so each assistant turn i is found by token diff: the ids of `messages[:i]` rendered with
`add_generation_prompt=True` end where the turn's content starts, and the ids of `messages[:i+1]`
end just past it. This needs the *prefix property*: each of those renders is a token prefix of
the next and of the whole conversation. It holds for SmolLM2 (ChatML text grows by appending;
`<|im_start|>`/`<|im_end|>` are special tokens and ByteLevel pre-tokenisation splits at the "\\n"
before the content, so no BPE merge crosses a boundary) -- tests check it on real rows. Where a
row breaks it (a template that renders history differently from the generation prompt, e.g.
one that drops past reasoning, or one whose injected default system message depends on the
first role), the row falls back to character offsets: each message's content is found verbatim,
in order, in the rendered text and the tokens overlapping an assistant content, plus the special
token right after it, are supervised. A row neither method can place raises ValueError.

Train/serve identity: `prompt_ids(messages[:-1])` is `apply_chat_template(...,
add_generation_prompt=True)`, the ids serving feeds `generate`, and on the token-diff path the
rendered row starts with exactly those ids (tests assert it).

Tokenizers without a chat template use a plain-text `template` with `{prompt}` (e.g.
`"### Instruction:\\n{prompt}\\n\\n### Response:\\n"`) for single-turn user/assistant rows:
`tokenizer(template.format(prompt=...))` (special tokens such as BOS added as the tokenizer
does), then the response's ids without special tokens, then eos -- the same layout as
`causal_lm.tokenize_causal`.

Truncation keeps the START of the row and cuts the end (`ids[:max_length]`), never dropping a
row silently: `render` returns `full_length`, `n_supervised_full` and `n_supervised` so the caller
counts rows truncated and rows left with nothing supervised (`truncation_counts`). Why the start
and not the end: (1) every kept token then sees exactly the context it had in the full row, so
nothing kept teaches the model to answer a question it was never shown; cutting the start would
remove the system message and the instruction while keeping the answer; (2) every row still begins
the way serving's prompt does (`<|im_start|>system ...`), so training never shows the model a
context shape serving cannot produce; (3) the first answer tokens, conditioned on the whole
prompt, are the most valuable; (4) it is the tokenizer default (truncation_side="right"). The
cost: a cut answer loses its end-of-turn token (that row does not teach stopping), and a row whose
prompt alone fills `max_length` keeps no supervised token -- `n_supervised == 0` flags it, the
caller should drop and count it. Note `causal_lm.tokenize_causal` (plain prompt/response rows)
cuts the prompt's start instead; chat rows deliberately do not, for reasons (1)-(2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

IGNORE = -100  # label value the cross-entropy loss skips
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}

Messages = list[dict[str, str]]


class ShapeError(ValueError):
    """A row that is not a usable conversation; `reason` names the kind, for drop counts
    (bad_shape, unknown_role, no_assistant_turn, empty_response)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- data shapes


def to_messages(row: Mapping[str, Any]) -> Messages:
    """`messages` for one data row, whichever common shape it has:

    - `messages`: a list of `{role, content}` (system/user/assistant, multi-turn);
    - `conversations` (ShareGPT): a list of `{from, value}`, `human`/`user` -> user,
      `gpt`/`assistant` -> assistant, `system` -> system (either key accepts either item shape);
    - Alpaca: `instruction`, optional `input`, `output` -- a non-empty `input` is kept, after the
      instruction and a blank line;
    - `prompt` / `response` pairs.

    Raises ValueError (one line) for an unknown shape or role, no assistant turn, or an empty
    assistant content.
    """
    for key in ("messages", "conversations"):
        value = row.get(key)
        if value is not None and not _missing(value):
            if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
                raise ShapeError("bad_shape",
                                 f"`{key}` must be a list of messages, got {type(value).__name__}")
            return validate_messages([_message(item, key, i) for i, item in enumerate(value)])
    if "instruction" in row and "output" in row:
        instruction, extra = _text(row["instruction"]), _text(row.get("input"))
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return validate_messages(
            [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": _text(row["output"])},
            ]
        )
    if "prompt" in row and "response" in row:
        return validate_messages(
            [
                {"role": "user", "content": _text(row["prompt"])},
                {"role": "assistant", "content": _text(row["response"])},
            ]
        )
    keys = ", ".join(sorted(map(str, row))) or "none"
    raise ShapeError(
        "bad_shape", "row has none of messages / conversations / instruction+output / "
        f"prompt+response (keys: {keys})")


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> Messages:
    """Plain `[{role, content}]` dicts, checked: known roles, string contents, at least one
    assistant turn, no empty assistant content. Raises ValueError with a one-line message."""
    out: Messages = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ShapeError("bad_shape",
                             f"message {i} is a {type(m).__name__}, not a {{role, content}} dict")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ShapeError("unknown_role",
                             f"message {i} has unknown role {role!r} (expected one of {ROLES})")
        if not isinstance(content, str):
            raise ShapeError("bad_shape",
                             f"message {i} ({role}) content is {type(content).__name__}, not str")
        if role == "assistant" and not content.strip():
            raise ShapeError("empty_response", f"message {i} is an empty assistant turn")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise ShapeError("no_assistant_turn",
                         f"conversation has no assistant turn ({len(out)} messages)")
    return out


def _message(item: Any, key: str, i: int) -> dict[str, str]:
    if not isinstance(item, Mapping):
        raise ShapeError("bad_shape", f"{key}[{i}] is a {type(item).__name__}, not a mapping")
    if "from" in item:
        who = item.get("from")
        role = SHAREGPT_ROLES.get(str(who).lower()) if isinstance(who, str) else None
        if role is None:
            raise ShapeError(
                "unknown_role", f"{key}[{i}] has unknown ShareGPT role {who!r} (expected one of "
                f"{tuple(SHAREGPT_ROLES)})")
        return {"role": role, "content": item.get("value")}
    return {"role": item.get("role"), "content": item.get("content")}


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _text(value: Any) -> str:
    """A cell as text: None / NaN (a missing pandas cell) is empty; anything else must be str."""
    if value is None or _missing(value):
        return ""
    if not isinstance(value, str):
        raise ShapeError("bad_shape",
                         f"expected text, got {type(value).__name__}: {str(value)[:40]!r}")
    return value


# --------------------------------------------------------------------------- rendering


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_ids(messages: Sequence[Mapping[str, Any]], tokenizer: Any,
               template: str | None = None) -> list[int]:
    """The ids serving feeds `generate` for a conversation whose next turn is the assistant's:
    the chat template with `add_generation_prompt=True`, or `template.format(prompt=...)` for a
    single user message when the tokenizer has no chat template. `render` starts every training
    row with these same ids (for the conversation up to its last assistant turn)."""
    msgs = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
    if not msgs or msgs[-1]["role"] == "assistant":
        raise ValueError("prompt_ids takes the conversation without its final assistant message")
    for i, m in enumerate(msgs):
        if m["role"] not in ROLES or not isinstance(m["content"], str):
            raise ValueError(f"message {i} needs a role in {ROLES} and a str content")
    if has_chat_template(tokenizer):
        return _chat_ids(tokenizer, msgs, generation_prompt=True)
    if len(msgs) != 1 or msgs[0]["role"] != "user":
        raise ValueError("a plain template renders a single user message; this tokenizer has no "
                         "chat template")
    return list(tokenizer(_format(template, msgs[0]["content"]))["input_ids"])


def render(messages: Sequence[Mapping[str, Any]], tokenizer: Any, max_length: int,
           template: str | None = None) -> dict[str, Any]:
    """One training row: `input_ids`, `labels` (-100 except assistant contents + end-of-turn),
    `length`, `full_length` (before truncation), `n_supervised` (supervised tokens kept),
    `n_supervised_full` (before truncation) and `method` ("tokens", "offsets" or "plain").

    The tokenizer's chat template renders the row when it has one; `template` (with `{prompt}`)
    is used only when it has none. Truncation keeps the start (see the module docstring).
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    msgs = validate_messages(messages)
    if has_chat_template(tokenizer):
        ids, mask, method = _render_chat(msgs, tokenizer)
    else:
        ids, mask = _render_plain(msgs, tokenizer, template)
        method = "plain"
    n_full = sum(mask)
    full_length = len(ids)
    ids, mask = ids[:max_length], mask[:max_length]
    labels = [t if keep else IGNORE for t, keep in zip(ids, mask, strict=True)]
    return {
        "input_ids": ids,
        "labels": labels,
        "length": len(ids),
        "full_length": full_length,
        "n_supervised": sum(mask),
        "n_supervised_full": n_full,
        "method": method,
    }


def rendered_length(messages: Sequence[Mapping[str, Any]], tokenizer: Any,
                    template: str | None = None) -> int:
    """Tokens `render` gives the whole row before truncation, rendered once (no masking)."""
    msgs = validate_messages(messages)
    if has_chat_template(tokenizer):
        return len(_chat_ids(tokenizer, msgs, generation_prompt=False))
    return len(_render_plain(msgs, tokenizer, template)[0])


def truncation_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """For a tokenize report: rows, rows truncated, rows whose answer lost tokens, and rows left
    with no supervised token (the caller should drop those and say how many)."""
    counts = {"rows": 0, "truncated": 0, "supervision_cut": 0, "no_supervision": 0}
    for r in rows:
        counts["rows"] += 1
        counts["truncated"] += r["full_length"] > r["length"]
        counts["supervision_cut"] += r["n_supervised"] < r["n_supervised_full"]
        counts["no_supervision"] += r["n_supervised"] == 0
    return counts


def _format(template: str | None, prompt: str) -> str:
    if not template or "{prompt}" not in template:
        raise ValueError("the tokenizer has no chat template; pass a plain template containing "
                         "{prompt}")
    return template.format(prompt=prompt)


def _render_plain(msgs: Messages, tokenizer: Any, template: str | None) -> tuple[list, list]:
    if [m["role"] for m in msgs] != ["user", "assistant"]:
        roles = "/".join(m["role"] for m in msgs)
        raise ValueError(f"a plain template renders single-turn user/assistant rows, got {roles}; "
                         "use a tokenizer with a chat template for system or multi-turn rows")
    p_ids = prompt_ids(msgs[:1], tokenizer, template)
    r_ids = list(tokenizer(msgs[1]["content"], add_special_tokens=False)["input_ids"])
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    response = r_ids + eos
    return p_ids + response, [False] * len(p_ids) + [True] * len(response)


def _chat_ids(tokenizer: Any, msgs: Messages, generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(
        msgs, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False
    )
    if isinstance(out, Mapping):  # older signatures may still hand back an encoding
        out = out["input_ids"]
    return list(out)


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for idx, tok in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(idx))
    return ids


def _render_chat(msgs: Messages, tokenizer: Any) -> tuple[list[int], list[bool], str]:
    full = _chat_ids(tokenizer, msgs, generation_prompt=False)
    special = _special_ids(tokenizer)
    mask = [False] * len(full)
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        before = _chat_ids(tokenizer, msgs[:i], generation_prompt=True) if i else None
        through = _chat_ids(tokenizer, msgs[: i + 1], generation_prompt=False)
        if before is None or not (_is_prefix(before, through) and _is_prefix(through, full)):
            return full, _mask_by_offsets(msgs, tokenizer, full, special), "offsets"
        start = len(before)
        stop = len(through)
        ends = [j for j in range(start, stop) if through[j] in special]
        if ends and ends[-1] > start:  # keep the end-of-turn token, not what follows it
            stop = ends[-1] + 1
        for j in range(start, stop):
            mask[j] = True
    return full, mask, "tokens"


def _is_prefix(a: list[int], b: list[int]) -> bool:
    return len(a) <= len(b) and b[: len(a)] == a


def _mask_by_offsets(msgs: Messages, tokenizer: Any, full: list[int],
                     special: set[int]) -> list[bool]:
    """Fallback: find each message's content verbatim, in order, in the rendered text, and mark
    the tokens overlapping an assistant content plus a special token right after it."""
    text = tokenizer.apply_chat_template(msgs, add_generation_prompt=False, tokenize=False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    if ids != full:
        raise ValueError("chat template: the rendered text does not re-tokenize to the same ids; "
                         "cannot locate the assistant turns")
    mask = [False] * len(ids)
    cursor = 0
    for i, m in enumerate(msgs):
        content = m["content"]
        at = text.find(content, cursor)
        if at < 0 and content.strip():
            content = content.strip()  # templates that trim contents
            at = text.find(content, cursor)
        if at < 0:
            raise ValueError(f"chat template: message {i} ({m['role']}) does not appear verbatim "
                             "in the rendered conversation; cannot locate the assistant turns")
        end = at + len(content)
        cursor = end
        if m["role"] != "assistant":
            continue
        last = None
        for j, (s, e) in enumerate(offsets):
            if e > at and s < end:
                mask[j] = True
                last = j
        if last is not None and last + 1 < len(ids) and ids[last + 1] in special:
            mask[last + 1] = True
    return mask
