# `snakemake publish`: push the verified cache to config["publish"]["url"] (an object store, the Hub,
# or a directory) with mmcache push: every file checked against its sha256, the manifest last, and a
# re-run sends only what is not there yet. Runs where snakemake runs (localrule): uploads need the
# network and credentials of the submitting machine, not of a compute node.


rule publish:
    input:
        manifest=f"{CACHE}/manifest.json",
        verified=VERIFIED,
    log:
        f"{LOGS}/publish.log",
    params:
        cache=cache_of_input,
        url=config["publish"]["url"],
    localrule: True
    conda:
        "../envs/mmcache.yaml"
    script:
        # a script, not a shell command: storage options never appear on a logged command line
        "../scripts/publish.py"
