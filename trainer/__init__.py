"""Wide & deep trainer, evaluation, export and serving for the preprocessed data."""
