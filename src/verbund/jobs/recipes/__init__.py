"""Training recipes: self-contained scripts copied into a job's folder and run at a site.

A recipe is started as ``python recipe.py JOB_DIR``. It reads ``JOB_DIR/params.json`` and
``JOB_DIR/input/training`` (and ``input/validation`` if given), appends JSON lines with
progress and metrics to ``JOB_DIR/metrics.jsonl``, writes its artifacts to
``JOB_DIR/output/`` and exits 0; on failure it exits non-zero with the reason as the
last line of stderr. Recipes import nothing from Verbund: the sites need only Python and
the recipe's own packages.
"""
