"""Batch-size profiler of the denoising study (trainables/denoising/profiler_cli.py).

python tune_jobs/denoising_profiler.py --batch-sizes 256 512 1024   # local profile; --help for the rest
"""

import tune_jobs.core.startup  # noqa: F401  (first: a Ctrl-C while importing exits quietly)
from trainables.denoising.profiler_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
