"""Shared library of the pipeline: config, data, model, artifact manifest, CLI."""
