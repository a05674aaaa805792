"""Cache storage: atomic publish, WebDataset tar shards, HDF5 shards, the manifest."""
