"""The report: prose, figures and files. Numbers come from the diagnosis package; this package words them
(`document`: the blocks and their Markdown/HTML renderers), draws them (`plots`, every figure), and writes them
(`single` for one AOI, `pooled` for many, `compare` for two runs; `map_window` reads the few polygons its map
shows)."""
