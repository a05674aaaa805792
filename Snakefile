# The workflow: videos -> planned shards extracted in parallel -> verified cache -> mmfit -> report.
# Settings: workflows/config/config.yaml (schema: schemas/workflow-config.schema.json);
# rules: workflows/rules/*.smk; profiles (local, slurm): workflows/profiles/. See README "Workflow".

configfile: "workflows/config/config.yaml"


include: "workflows/rules/common.smk"
include: "workflows/rules/videos.smk"
include: "workflows/rules/extract.smk"
include: "workflows/rules/train.smk"
include: "workflows/rules/publish.smk"


rule all:
    input:
        REPORT,
