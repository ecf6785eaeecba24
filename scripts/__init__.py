"""Helper scripts of the make targets (data, engines, job submission)."""
