"""Component-count scaling of in-context mixture regression (study A).

python tune_jobs/phase1.py                       # K in {1,2,3,4,5,6,8,10}, local profile
python tune_jobs/phase1.py --dry-run             # the trials, without running anything
python tune_jobs/phase1.py --experiment phase2   # contexts per component (phase 3, 4 alike)
python tune_jobs/phase1.py profile=full --address auto   # the paper's model on a GPU cluster
"""

import tune_jobs.core.startup  # noqa: F401  (first: a Ctrl-C while importing exits quietly)
from trainables.phase1.study import STUDY
from tune_jobs.core.cli import main

if __name__ == "__main__":
    raise SystemExit(main(STUDY))
