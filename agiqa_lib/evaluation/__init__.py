"""Level 3: metrics, the generator-mean baseline, the typed results file and the report."""
