"""mmfit's errors; the CLI prints any of them (and mmcache's) as one line with exit code 1."""

from mmcache.errors import MMCacheError


class MMFitError(MMCacheError):
    """Base class of every error mmfit raises on purpose."""


class ConfigError(MMFitError):
    """A config value or combination that cannot work."""


class DataError(MMFitError):
    """Labels, splits or fields that do not fit the cache."""


class TrainingError(MMFitError):
    """Training cannot go on (e.g. a NaN loss)."""


class CheckpointError(MMFitError):
    """A checkpoint that is corrupt, foreign, or does not match the cache."""
