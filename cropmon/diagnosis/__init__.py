"""Analysis: the per-field table in, tables out (pandas in, pandas out). No I/O, no prose, no figures, no Dask.

`metrics` (per-crop and confusion tables), `diagnose` (underperforming crops; `diagnose_run` gathers a whole
diagnosis), `blocks` (spatial blocks), `select` (the active-learning plan), `pooled` (many AOIs), `compare` (two
runs), `uncertainty` (per-field scores without GT), `unlabelled` (fields to label without GT), `suspects` (labels
that disagree with a confident, pure prediction), `ranking` (precision at k of a ranking, where GT exists);
thresholds in `settings.DiagnosisSettings`.
"""
