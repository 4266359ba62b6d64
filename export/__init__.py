"""Export stage: a Keras checkpoint -> SavedModel, ONNX and TFLite artifacts plus a manifest.

`python -m export --help`; the API is `export.run.export_all(cfg, ...)`.
"""
