"""Phase 1a + LoRA: does LoRA with minimal supervision improve F1 over pure reconstruction?
(study D; the seed's 11-configuration sweep with ASHA on val/f1)

python tune_jobs/phase1a_lora.py                          # 11 configs, tiny Llama + synthetic QA (~20 min, 2 cores)
python tune_jobs/phase1a_lora.py data.samples=300 trainer.epochs=1   # the seed's smoke size
SAMPLES=300 EPOCHS=1 python tune_jobs/phase1a_lora.py     # the same: SAMPLES/EPOCHS become those overrides
python tune_jobs/phase1a_lora.py --quick                  # 1-2 minute smoke version
python tune_jobs/phase1a_lora.py profile=full resources.gpu=1 --address auto   # Llama-3.1-8B, SQuAD from the hub
python tune_jobs/report.py phase1a_lora                   # rebuild the report from MLflow
"""

import os
import sys

import tune_jobs.core.startup  # noqa: F401  (first: a Ctrl-C while importing exits quietly)
from trainables.phase1a_lora.study import STUDY
from tune_jobs.core.cli import main

# The seed's smoke sizes as environment variables: SAMPLES=300 EPOCHS=1 python tune_jobs/phase1a_lora.py
SEED_ENV = {"SAMPLES": "data.samples", "EPOCHS": "trainer.epochs"}


def seed_overrides(argv: list[str]) -> list[str]:
    """SAMPLES / EPOCHS as overrides placed first, so the command line's own overrides win."""
    return [f"{key}={os.environ[var]}" for var, key in SEED_ENV.items() if os.environ.get(var)] + argv


if __name__ == "__main__":
    raise SystemExit(main(STUDY, seed_overrides(sys.argv[1:])))
