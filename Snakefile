# GPIC: permissively licensed web images -> a captioned, deduplicated, packed image-text corpus.
# Stages, their data contracts and the results layout: docs/architecture.md; each job is one .smk file.

import os

from snakemake.utils import min_version, validate

min_version("9.0")

# Every job imports gpic from this checkout, whichever environment runs it (workflow/envs/):
# a job runs the code of the workflow that scheduled it.
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        filter(
            None, [os.path.join(workflow.basedir, "src"), os.environ.get("PYTHONPATH")]
        )
    )
)


configfile: "config.yaml"


validate(config, schema="src/gpic/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/partition.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/assess.smk"
include: "workflow/rules/dedup.smk"
include: "workflow/rules/caption.smk"
include: "workflow/rules/pack.smk"
include: "workflow/rules/provenance.smk"
include: "workflow/rules/publish.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/report.smk"


# The default target only gathers; every other job reads or writes enough to belong on a node
# (publish hashes every packed file, report reads every index).
localrules:
    all,


rule all:
    default_target: True
    input:
        all_outputs(),
