"""Cache storage: atomic publish, WebDataset tar shards, HDF5 shards, the manifest, the lock."""

from .hdf5 import H5ShardWriter
from .tar import TarShardWriter

WRITERS = {"webdataset": TarShardWriter, "hdf5": H5ShardWriter}  # backend -> shard writer
