"""mmfit: train fusion and head layers on an mmcache feature cache."""
