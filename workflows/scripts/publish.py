"""The `publish` rule's job: mmcache push of the workflow's verified cache, in-process, with the
config's storage options (see workflows/rules/publish.smk)."""

from pathlib import Path

from mmcache.errors import MMCacheError
from mmcache.publish import push
from mmcache.transport import configured

sm = snakemake  # noqa: F821 -- the object Snakemake's script directive provides
url, cache, log = sm.params.url, sm.params.cache, Path(sm.log[0])
if not url:
    log.write_text("publish.url is not set\n")
    raise SystemExit("publish: set publish.url in the config (e.g. --config publish='{url: s3://bucket/cache}')")
try:
    with configured(sm.config["publish"]["storage_options"]):
        r = push(cache, url)
except MMCacheError as e:
    log.write_text(f"error: {e}\n")
    raise SystemExit(f"publish: {e}") from None
log.write_text(
    f"pushed {cache} to {url}: {r.copied} file(s) uploaded ({r.bytes_copied} bytes), {r.skipped} already there; "
    f"fields: {', '.join(r.fields)}\n"
)
