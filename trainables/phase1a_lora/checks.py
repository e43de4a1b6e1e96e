"""Checks of a trial's config that need the outside world (run before Ray starts):
the model folder and the SQuAD files. Each raises ValueError naming the setting and the fix."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from trainables.common import user_path
from trainables.phase1a_lora.config import Config
from trainables.phase1a_lora.data import HUB, read_squad


def looks_like_path(text: str) -> bool:
    """A hub name is `org/name`; anything else (absolute, ./, ~, more parts) is a folder."""
    return text.startswith(("/", ".", "~")) or text.count("/") != 1


@lru_cache(maxsize=8)
def _squad_questions(path: str, mtime: float) -> int:
    return len(read_squad(Path(path)))


def check_data(cfg: Config) -> None:
    if cfg.data.source != "squad":
        return
    for key, text in (("data.path", cfg.data.path), ("data.val_path", cfg.data.val_path)):
        if not text or text.startswith(HUB):
            continue  # hub:org/name is read with the user's access when the trial starts
        path = user_path(text)
        if not path.is_file():
            raise ValueError(f"{key}={text}: no such file; point it at a SQuAD v1.1 JSON file (train-v1.1.json)")
        _squad_questions(str(path), path.stat().st_mtime)


def check_model(cfg: Config) -> None:
    if cfg.model.source != "pretrained":
        return
    text = cfg.model.path
    path = user_path(text)
    if not path.exists():
        if looks_like_path(text):
            raise ValueError(
                f"model.path={text}: no such folder; give a folder saved with save_pretrained or a hub name like org/model"
            )
        return  # a hub name: loaded (or refused) by from_pretrained with the user's access
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"model.path={text}: no config.json in the folder; save the model with save_pretrained")
    try:
        meta = json.loads(config.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"model.path={text}: {config} is not JSON ({str(exc)[:100]}); save the model again with save_pretrained"
        ) from None
    if not isinstance(meta, dict):
        raise ValueError(
            f"model.path={text}: {config} holds a {type(meta).__name__}, not a model's settings; "
            "save the model again with save_pretrained"
        )
    width = meta.get("hidden_size")
    if cfg.compression.kind == "pca" and isinstance(width, int) and cfg.compression.d_z > width:
        raise ValueError(
            f"compression.d_z={cfg.compression.d_z} is above the width of {text} (hidden_size={width}), and PCA "
            f"keeps at most that many directions; use compression.d_z=1..{width}"
        )
    depth = meta.get("num_hidden_layers")
    if cfg.lora.enabled and not cfg.lora.of_layers and isinstance(depth, int) and cfg.lora.layers > depth:
        raise ValueError(f"lora.layers={cfg.lora.layers} is beyond the model's {depth} layers; use 1..{depth}")


def check(cfg: Config) -> None:
    check_model(cfg)
    check_data(cfg)
