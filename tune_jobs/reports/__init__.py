"""Study reports, each built from a sweep's MLflow runs (see tune_jobs.core.reporting)."""
