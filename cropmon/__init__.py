"""cropmon: per-crop agreement, confusions and an active-learning plan for crop-type rasters, on Dask.

Start reading at `cropmon.pipeline.run`: it follows a run from its inputs to its outputs and hands each step to the
package that owns it (`io`, `engine`, `analysis`, `report`; `twin` makes the digital twin). README, Development,
draws the map and the direction imports go.
"""

import logging

__version__ = "0.1.0"

# The library logs; the CLI configures logging (a NullHandler keeps library users quiet by default).
logging.getLogger(__name__).addHandler(logging.NullHandler())
