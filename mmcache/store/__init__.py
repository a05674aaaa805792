"""Cache storage: shard formats (FORMATS: tar and HDF5 writers and readers), atomic publish, the
manifest and its entries, listed-file opening, the lock."""

from .formats import FORMATS, ShardFormat, shard_format
from .hdf5_writer import H5ShardWriter
from .tar_writer import TarShardWriter

__all__ = ["FORMATS", "H5ShardWriter", "ShardFormat", "TarShardWriter", "shard_format"]
