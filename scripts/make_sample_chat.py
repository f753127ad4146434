"""Write data/samples/assistant.jsonl: the bundled causal-LM sample, written for this project.

    python scripts/make_sample_chat.py [--rows 320] [--seed 7]

Chat-format rows (`{"messages": [{role, content}, ...]}`) of checkable tasks, each answered in
one consistent style: arithmetic, unit conversions, capitals, word games, sorting,
opposites, review labels (with a system message), and two-turn follow-ups. Deterministic
for a seed, so the file in git is exactly what this script writes.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "data" / "samples" / "assistant.jsonl"
CAPITALS = {
    "France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Germany": "Berlin",
    "Portugal": "Lisbon", "Kenya": "Nairobi", "Japan": "Tokyo", "Canada": "Ottawa",
    "Egypt": "Cairo", "Peru": "Lima", "Norway": "Oslo", "Greece": "Athens",
    "Poland": "Warsaw", "Chile": "Santiago", "Ghana": "Accra", "India": "New Delhi",
    "Austria": "Vienna", "Cuba": "Havana", "Ireland": "Dublin", "Sweden": "Stockholm",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "Argentina": "Buenos Aires",
    "Australia": "Canberra", "Brazil": "Brasilia", "Mexico": "Mexico City",
    "Turkey": "Ankara", "Morocco": "Rabat", "Nepal": "Kathmandu", "Finland": "Helsinki",
}
OPPOSITES = {"hot": "cold", "tall": "short", "early": "late", "happy": "sad", "open": "closed",
             "full": "empty", "light": "dark", "fast": "slow", "hard": "soft", "rich": "poor",
             "loud": "quiet", "wet": "dry", "old": "young", "strong": "weak", "near": "far"}
WORDS = ["planet", "orange", "river", "garden", "window", "silver", "pencil", "market",
         "forest", "bridge", "candle", "rocket", "lemon", "tiger", "castle", "violin"]
UNITS = [("kilometres", "metres", 1000), ("metres", "centimetres", 100), ("hours", "minutes", 60),
         ("minutes", "seconds", 60), ("kilograms", "grams", 1000), ("litres", "millilitres", 1000)]
REVIEWS = {
    "positive": ["a warm, funny film with a great cast", "the best meal I have had this year",
                 "clear instructions and it worked first time", "lovely staff and a quiet room",
                 "gripping from the first page to the last", "sturdy, light and well made"],
    "negative": ["the plot drags and the jokes fall flat", "cold food and a long wait",
                 "it broke after two days of use", "noisy room and rude staff",
                 "I gave up on it halfway through", "flimsy and far too expensive"],
}
LABELLER = "You label product and film reviews. Answer with one word: positive or negative."


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def arithmetic(rng: random.Random) -> list[dict]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    op, word, value = rng.choice([("+", "plus", a + b), ("-", "minus", a - b),
                                  ("*", "times", a * b)])
    return [user(f"What is {a} {word} {b}?"), assistant(f"{a} {op} {b} = {value}.")]


def conversion(rng: random.Random) -> list[dict]:
    big, small, factor = rng.choice(UNITS)
    n = rng.randint(2, 12)
    return [user(f"Convert {n} {big} to {small}."),
            assistant(f"{n} {big} is {n * factor} {small}.")]


def capital(rng: random.Random) -> list[dict]:
    country = rng.choice(sorted(CAPITALS))
    return [user(f"What is the capital of {country}?"),
            assistant(f"The capital of {country} is {CAPITALS[country]}.")]


def follow_up(rng: random.Random) -> list[dict]:
    first, second = rng.sample(sorted(CAPITALS), 2)
    return [user(f"What is the capital of {first}?"), assistant(f"{CAPITALS[first]}."),
            user(f"And of {second}?"), assistant(f"{CAPITALS[second]}.")]


def word_game(rng: random.Random) -> list[dict]:
    word = rng.choice(WORDS)
    if rng.random() < 0.5:
        return [user(f"Reverse the word '{word}'."), assistant(word[::-1])]
    return [user(f"How many letters are in '{word}'?"),
            assistant(f"'{word}' has {len(word)} letters.")]


def sorting(rng: random.Random) -> list[dict]:
    numbers = rng.sample(range(1, 60), rng.randint(3, 6))
    listed = ", ".join(map(str, numbers))
    return [user(f"Sort these numbers from smallest to largest: {listed}."),
            assistant(", ".join(map(str, sorted(numbers))))]


def opposite(rng: random.Random) -> list[dict]:
    word = rng.choice(sorted(OPPOSITES))
    return [user(f"What is the opposite of '{word}'?"),
            assistant(f"The opposite of '{word}' is '{OPPOSITES[word]}'.")]


def review(rng: random.Random) -> list[dict]:
    label = rng.choice(sorted(REVIEWS))
    return [{"role": "system", "content": LABELLER},
            user(f"Review: {rng.choice(REVIEWS[label])}"), assistant(label)]


TASKS = (arithmetic, conversion, capital, follow_up, word_game, sorting, opposite, review)


def rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < n:
        messages = rng.choice(TASKS)(rng)
        key = json.dumps(messages)
        if key not in seen:  # no duplicates: clean would drop them anyway
            seen.add(key)
            out.append({"messages": messages})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows(args.rows, args.seed)),
                   encoding="utf-8")
    print(f"wrote {args.rows} rows to {OUT}")


if __name__ == "__main__":
    main()
