# Extraction as Snakemake jobs: plan shards (checkpoint) -> one job per shard -> finalize -> verify.
#
# `mmcache finalize` removes <cache>/plan/ and <cache>/parts/ once it has written the manifest. So:
# * the checkpoint's declared output is a copy of the shard list that stays (PLAN). A declared output
#   that finalize removed would leave the checkpoint unresolved on the next run, and Snakemake would
#   then miss a changed sheet or encoder list;
# * the parts are temp(): once gone they do not make the shard jobs run again;
# * the manifest is update(): finalize extends it in place, so Snakemake must not delete it first.
# A finished run is then a no-op, and a changed sheet, encoder list or shard size re-plans (the new
# plan holds only what the cache lacks).


checkpoint plan:
    input:
        sheet=SHEET,
        weights=weights_choices,
    output:
        plan=PLAN,
    log:
        f"{LOGS}/plan.log",
    params:
        cache=cache_of_plan,
        encoders=encoder_flags,
        format=EXTRACT["format"],
        shard_size=EXTRACT["shard_size"],
    conda:
        "../envs/mmcache.yaml"
    shell:
        "mmcache plan {input.sheet:q} {params.encoders} --out {params.cache:q} --format {params.format}"
        " --shard-size {params.shard_size} > {log:q} 2>&1"
        " && cp {params.cache:q}/plan/plan.json {output.plan:q}"


rule extract_shard:
    input:
        plan=PLAN,
    output:
        part=temp(f"{CACHE}/parts/{{shard}}.json"),
    log:
        f"{LOGS}/extract_shard/{{shard}}.log",
    threads: EXTRACT["threads"]
    resources:
        gpu=GPUS,
    params:
        cache=cache_of_part,
        timeout=EXTRACT["timeout"],
    conda:
        "../envs/mmcache.yaml"
    shell:
        # --threads: torch and ffmpeg keep to the job's threads (else each job would use every core)
        "mmcache run-shard {params.cache:q} {wildcards.shard} --timeout {params.timeout} --threads {threads}"
        " > {log:q} 2>&1"


rule finalize:
    input:
        plan=PLAN,
        parts=planned_parts,
    output:
        manifest=update(f"{CACHE}/manifest.json"),
    log:
        f"{LOGS}/finalize.log",
    params:
        cache=cache_of_output,
    conda:
        "../envs/mmcache.yaml"
    shell:
        # finalize also removes temp files that killed run-shard jobs left behind
        "mmcache finalize {params.cache:q} > {log:q} 2>&1"


rule extract_features:
    input:
        manifest=f"{CACHE}/manifest.json",
    output:
        verified=touch(VERIFIED),
    log:
        f"{LOGS}/verify.log",
    params:
        cache=cache_of_input,
    conda:
        "../envs/mmcache.yaml"
    shell:
        "mmcache verify {params.cache:q} > {log:q} 2>&1"
