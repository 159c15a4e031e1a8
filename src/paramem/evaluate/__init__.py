"""Evaluate: every method side by side on the same probes and the same base model, scored the same
way (run.py), the LoCoMo experiment (experiment.py), MiLP's personalised replies (personalised.py)."""
