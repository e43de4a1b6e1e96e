"""Training code of each study. Nothing here imports Ray, MLflow or the CLI."""
