"""The evaluate stage: every exported artifact in its real runtime, accuracy and latency side by side.

`python -m evaluate --help`; the API is

    from evaluate.run import evaluate_all
    report = evaluate_all(cfg, latency=True, gates_on=True, progress=print)

with everything else (manifest, report folder, --limit, baseline) read from the config `cfg`.
"""
