"""The train stage: `python -m train` trains a model preset and writes one run folder per run."""
