"""Phase 1a + LoRA: compressed-embedding QA with a LoRA sweep (study D).

Read in order: config.py (what can be set), data.py (SQuAD v1.1 reader and synthetic QA, one
path), metrics.py (official SQuAD F1/EM, collapse diagnostics), model.py (compressor, adapter,
LoRA, greedy decoding), base_model.py (the tiny Llama: tokenizer, pretraining, cache; loading
a real model), train.py (the loop).

Importing the package loads its config only (no torch): the training function is
`trainables.phase1a_lora.train.train`, imported where a trial runs.
"""

from trainables.phase1a_lora.config import METRICS, PROFILES, Config

__all__ = ["METRICS", "PROFILES", "Config"]
