"""cropmon: per-crop agreement, confusions and an active-learning plan for crop-type rasters, on Dask."""

import logging

__version__ = "0.1.0"

# The library logs; the CLI configures logging (a NullHandler keeps library users quiet by default).
logging.getLogger(__name__).addHandler(logging.NullHandler())
