"""Tests of trainer/: input, model, heads, training, export, report and
trainer.predict."""
