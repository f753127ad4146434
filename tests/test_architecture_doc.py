"""docs/architecture.md is the first page a newcomer reads: it is checked against the code.

The protocol section must name every member of `objectives.TaskType` and nothing that is not
one (it once said `ROLES` where the code says `ROLE_SETS`, and left six members out); its
example declaration is the code's; and every file path a doc names exists.
"""

from __future__ import annotations

import re

from conftest import REPO

from tunesmith import objectives, steps

PAGE = REPO / "docs" / "architecture.md"


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = re.compile(r"^##+ ", re.M).search(text, start + len(title) + 3)
    return text[start:end.start() if end else len(text)]


def _protocol_names_in(section: str) -> set[str]:
    """Backticked identifiers in the constants paragraph and the functions table: `NAME`,
    `check_base`, ... (not paths, keys like `train.lr`, calls or code)."""
    return {name for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", section)}


def test_the_protocol_section_names_every_member_and_no_other():
    section = _section(PAGE.read_text(encoding="utf-8"), "The task-type protocol")
    named = _protocol_names_in(section)
    missing = sorted(set(objectives.PROTOCOL) - named)
    assert not missing, f"docs/architecture.md leaves out protocol members: {missing}"
    # Upper-case names and the functions table's names must be real members.
    table = [line for line in section.splitlines() if line.startswith("| ")][2:]
    cells = [line.split("|")[2] for line in table]
    for _ in range(3):  # drop the (explanations), nested ones too: they name other things
        cells = [re.sub(r"\([^()]*\)", "", cell) for cell in cells]
    in_table = {n for cell in cells for n in _protocol_names_in(cell)}
    constants = {n for n in named if n.isupper() and len(n) > 2}
    unknown = sorted((in_table | constants) - set(objectives.PROTOCOL))
    assert not unknown, f"docs/architecture.md names protocol members the code lacks: {unknown}"


PAGES = [REPO / "README.md", REPO / "bench" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_every_path_a_doc_names_exists():
    """README, bench/README and docs/: a file or folder they name exists (a name that ends
    where a glob starts, `tests/test_acceptance_*.py`, matches something)."""
    absent = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for path in set(re.findall(r"(?<![\w./-])((?:tunesmith|tasks|flows|tests|bench|docs|"
                                   r"scripts)/[\w/.<>-]*\w)", text)):
            if "<" not in path and not (REPO / path).exists() and \
                    not any(REPO.glob(path + "*")):
                absent.append(f"{page.relative_to(REPO)}: {path}")
    assert not absent, "docs name files that do not exist:\n" + "\n".join(sorted(absent))


def test_the_declaration_example_is_the_code():
    """The page's example declaration is the tokenize step's real one."""
    text = PAGE.read_text(encoding="utf-8")
    example = text[text.index('"tokenize": Step('):]
    example = example[:example.index("\n)")]
    real = steps.declaration("tokenize")
    for field in ("reads", "outputs", "uses"):
        shown = re.search(rf"{field}=\(([^)]*)\)", example).group(1)
        assert tuple(re.findall(r'"([^"]+)"', shown)) == getattr(real, field), field
