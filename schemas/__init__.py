"""JSON Schemas of mmcache/mmfit, installed as package data (the files live in schemas/)."""
