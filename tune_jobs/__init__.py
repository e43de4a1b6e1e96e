"""Entry points of the studies (`python tune_jobs/<study>.py`) and the sweep machinery in core/."""
