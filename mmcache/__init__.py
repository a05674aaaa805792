"""mmcache: decode videos with ffmpeg once, run frozen encoders, keep the features in a verifiable cache."""

__version__ = "0.1.0"


def __getattr__(name):
    # the API is imported lazily so `import mmcache` stays fast and free of torch until needed
    if name == "extract":
        from .extraction import extract

        return extract
    if name in ("open_cache", "verify_cache"):
        from . import cache

        return getattr(cache, name)
    raise AttributeError(name)


__all__ = ["__version__", "extract", "open_cache", "verify_cache"]
