"""Analysis: the per-field table in, tables out (pandas in, pandas out). No I/O, no prose, no figures, no Dask.

`metrics` (per-crop and confusion tables), `diagnose` (underperforming crops; `diagnose_run` gathers a whole
diagnosis), `blocks` (spatial blocks), `select` (the active-learning plan), `pooled` (many AOIs), `compare` (two
runs); thresholds in `settings.DiagnosisSettings`.
"""
