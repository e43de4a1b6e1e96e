"""The sweep service, written once: config, search spaces, planning, the Ray adapter, the
MLflow callback, the runner, the CLI and the report plumbing. Studies only declare."""

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.study import Study

__all__ = ["ConfigError", "Study"]
