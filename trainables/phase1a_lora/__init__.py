"""Phase 1a + LoRA: compressed-embedding QA with a LoRA sweep (study D, shared/DESIGN.md).

Read in order: config.py (what can be set), data.py (SQuAD v1.1 reader and synthetic QA, one
path), metrics.py (official SQuAD F1/EM, collapse diagnostics), model.py (compressor, adapter,
LoRA, greedy decoding), base_model.py (the tiny Llama: tokenizer, pretraining, cache; loading
a real model), train.py (the loop).
"""

from trainables.phase1a_lora.config import PROFILES, Config
from trainables.phase1a_lora.train import METRICS, estimate, train

__all__ = ["METRICS", "PROFILES", "Config", "estimate", "train"]
