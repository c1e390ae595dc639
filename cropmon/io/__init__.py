"""I/O at the edges: the prediction raster (`raster`), the ground-truth fields (`vector`) and the outputs
(`outputs`, atomic). No analysis here: these modules read and write, the engine and the report decide."""
