"""Process tuning for the client and the workers: GDAL's block cache, Arrow's allocator, and the worker plugin that
applies both to every worker of a cluster, present and future."""

from __future__ import annotations

GDAL_BLOCK_CACHE_BYTES = 64 * 2**20


def return_freed_memory() -> None:
    """Let pyarrow allocate through the C allocator, which gives freed memory back to the OS.

    pandas' string columns and GDAL's Arrow reads live in Arrow memory; Arrow's own pool (mimalloc) keeps what a
    step frees, so reading the fields' attributes of a 4x AOI left ~100 MB held after the step.
    """
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def limit_gdal_block_cache(max_bytes: int = GDAL_BLOCK_CACHE_BYTES) -> None:
    """Cap GDAL's raster block cache in this process (default: 5 % of RAM).

    cropmon reads every strip exactly once, so cached blocks are never reused; left at its default the cache
    grows with the AOI until it holds ~1.2 GB per worker on a 24 GiB machine.
    """
    from rasterio.env import set_gdal_config

    set_gdal_config("GDAL_CACHEMAX", int(max_bytes))



def worker_plugin():
    """A Dask worker plugin that applies `limit_gdal_block_cache` and `return_freed_memory` on every worker,
    present and future (registered by cluster.connect)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class ProcessTuning(WorkerPlugin):
        name = "cropmon-process-tuning"

        def setup(self, worker) -> None:
            limit_gdal_block_cache()
            return_freed_memory()

    return ProcessTuning()
