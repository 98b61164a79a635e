# One collection rule. With collect.shards (SHARDS) > 1 it counts one shard of a pair's sentences
# ({shard}, a temporary table) and merge_shards sums the shards into the pair's table; with 1 shard
# it writes the pair's table itself.
COLLECT_OUTPUT = (
    f"{RESULTS}/activations/{{pair}}.parquet"
    if SHARDS == 1
    else temp(f"{RESULTS}/activations/shards/{{pair}}.{{shard}}-of-{SHARDS}.parquet")
)
COLLECT_LOG = (
    f"{LOGS}/activations/{{pair}}.log"
    if SHARDS == 1
    else f"{LOGS}/activations/{{pair}}.{{shard}}-of-{SHARDS}.log"
)


rule collect_activations:
    """Per-pair (or per-shard) activation counts (the GPU rule): one row per layer x neuron."""
    input:
        pairs=pair_table("{pair}"),
        model=model_inputs,
    output:
        COLLECT_OUTPUT,
    log:
        COLLECT_LOG,
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=1,
    params:
        model=model_params,
        collect=collect_params(),
        # the count table's layout: tables of an older layout rerun by themselves
        table_version=COUNT_SCHEMA_VERSION,
        shard=lambda wildcards: int(wildcards.get("shard", 0)),
    script:
        "../scripts/collect_activations.py"


if SHARDS > 1:

    rule merge_shards:
        """Counts are additive: a pair's table is the sum of its shards."""
        input:
            expand(
                f"{RESULTS}/activations/shards/{{pair}}.{{shard}}-of-{SHARDS}.parquet",
                shard=range(SHARDS),
                allow_missing=True,  # {model} and {pair} stay the job's wildcards
            ),
        output:
            f"{RESULTS}/activations/{{pair}}.parquet",
        log:
            f"{LOGS}/activations/{{pair}}.merge.log",
        conda:
            "../../envs/data.yaml"
        script:
            "../scripts/merge_shards.py"
