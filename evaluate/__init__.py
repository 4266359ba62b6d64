"""The evaluate stage: every exported artifact in its real runtime, accuracy and latency side by side.

    from evaluate.run import evaluate_all
    report = evaluate_all(cfg, manifest_path=None, report_dir=None, limit=None, latency=True)
"""
