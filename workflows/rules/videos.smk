# Input videos: labelled demo clips (only when the config says `videos.synthesize`), and the weights
# choice for encoders given weights=cached-or-random.

if VIDEOS["synthesize"]:

    rule make_demo_videos:
        output:
            sheet=SHEET,
            labels=f"{OUT}/videos/labels.csv",
        log:
            f"{LOGS}/make_demo_videos.log",
        params:
            folder=sheet_folder,
            per_class=VIDEOS["synthesize"]["per_class"],
            duration=VIDEOS["synthesize"]["duration"],
            size=VIDEOS["synthesize"]["size"],
            design=VIDEOS["synthesize"].get("design", "classes"),
            seed=VIDEOS["synthesize"].get("seed", 0),
        conda:
            "../envs/mmcache.yaml"
        shell:
            "python -m mmcache.synth {params.folder:q} --per-class {params.per_class}"
            " --duration {params.duration} --size {params.size} --design {params.design}"
            " --seed {params.seed} > {log:q} 2>&1"


rule vision_weights:
    output:
        choice=weights_choice("{model}"),
        note=weights_choice("{model}", "note"),
    log:
        f"{LOGS}/vision_weights/{{model}}.log",
    conda:
        "../envs/mmcache.yaml"
    shell:
        # DEFAULT when the pretrained weights are in the torch hub cache, else random; the log says which.
        "python -m mmcache.demo {wildcards.model} > {output.choice:q} 2> {log:q} && cp {log:q} {output.note:q}"
