rule pair_table:
    """One translation direction of one split as a table (id, src_lang, tgt_lang, src, tgt)."""
    input:
        dataset_files,
    output:
        f"results/data/{DATASET}/{{split}}/{{pair}}.parquet",
    log:
        f"results/logs/data/{DATASET}/{{split}}/{{pair}}.log",
    conda:
        "../../envs/data.yaml"
    params:
        dataset=lambda wildcards: dataset_params(wildcards.split),
        # evaluate.holdout_fraction: which part of the split's cut this table keeps (None: all)
        holdout=lambda wildcards: holdout_params(wildcards.split),
    script:
        "../scripts/pair_table.py"
