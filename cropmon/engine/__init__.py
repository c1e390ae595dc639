"""The engine: ground-truth fields and the prediction raster in, the per-field table out, on a Dask cluster.

The only Dask code of cropmon. `analyse.analyse_fields` is the entry point: fields are prepared (`fields`),
rasterized into a lazy zone grid with the raster's own chunks (`rasterize`, `scanline`), reduced per chunk with
flox (`zonal`), computed once, and assembled into the per-field table (`assemble`). Imports go down only: the engine
may use io, cluster, tasks, runtime and the base modules, never diagnosis or report.
"""
