# Train a fusion with unimodal baselines on the verified cache, then show the comparison table.


rule train:
    input:
        verified=VERIFIED,
        manifest=f"{CACHE}/manifest.json",
    output:
        report=f"{RUN}/report.md",
        table=f"{RUN}.table.txt",  # beside the run folder: mmfit wants --out empty or a run of its own
    log:
        f"{LOGS}/train.log",
    threads: TRAIN["threads"]
    resources:
        gpu=GPUS,
    params:
        cache=cache_of_input,
        run=run_folder,
        options=train_flags,
        fusion=TRAIN["fusion"],
        epochs=TRAIN["epochs"],
        seed=TRAIN["seed"],
        device=config["device"],
    conda:
        "../envs/mmcache.yaml"
    shell:
        "mmfit train --cache {params.cache:q} {params.options} --fusion {params.fusion} --epochs {params.epochs}"
        " --seed {params.seed} --device {params.device} --out {params.run:q} --overwrite --unimodal-baselines"
        " > {output.table:q} 2> {log:q}"


rule report:
    input:
        notes=weights_notes,
        table=rules.train.output.table,
    output:
        report=REPORT,
    log:
        f"{LOGS}/report.log",
    localrule: True
    conda:
        "../envs/mmcache.yaml"
    shell:
        "cat {input:q} > {output.report:q} 2> {log:q} && cat {output.report:q}"
