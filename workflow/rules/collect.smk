if SHARDS == 1:

    rule collect_activations:
        """Per-pair activation counts (the GPU rule): one row per layer x neuron."""
        input:
            pairs=pair_table("{pair}"),
            model=model_inputs,
        output:
            f"{RESULTS}/activations/{{pair}}.parquet",
        log:
            f"{LOGS}/activations/{{pair}}.log",
        conda:
            "../../envs/torch.yaml"
        resources:
            gpu=1,
        params:
            model=model_params(),
            collect=collect_params(),
            # the count table's layout: tables of an older layout rerun by themselves
            table_version=COUNT_SCHEMA_VERSION,
            shard=0,
        script:
            "../scripts/collect_activations.py"

else:

    rule collect_activations:
        """One shard of a pair's sentences (the GPU rule); shards are summed by merge_shards."""
        input:
            pairs=pair_table("{pair}"),
            model=model_inputs,
        output:
            temp(f"{RESULTS}/activations/shards/{{pair}}.{{shard}}-of-{SHARDS}.parquet"),
        log:
            f"{LOGS}/activations/{{pair}}.{{shard}}-of-{SHARDS}.log",
        conda:
            "../../envs/torch.yaml"
        resources:
            gpu=1,
        params:
            model=model_params(),
            collect=collect_params(),
            # the count table's layout: tables of an older layout rerun by themselves
            table_version=COUNT_SCHEMA_VERSION,
            shard=lambda wildcards: int(wildcards.shard),
        script:
            "../scripts/collect_activations.py"

    rule merge_shards:
        """Counts are additive: a pair's table is the sum of its shards."""
        input:
            expand(
                f"{RESULTS}/activations/shards/{{{{pair}}}}.{{shard}}-of-{SHARDS}.parquet",
                shard=range(SHARDS),
            ),
        output:
            f"{RESULTS}/activations/{{pair}}.parquet",
        log:
            f"{LOGS}/activations/{{pair}}.merge.log",
        conda:
            "../../envs/data.yaml"
        script:
            "../scripts/merge_shards.py"
