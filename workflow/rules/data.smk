rule pair_table:
    """One translation direction as a table (id, src_lang, tgt_lang, src, tgt): EC40 or the demo."""
    input:
        dataset_files,
    output:
        f"results/data/{DATASET}/{SPLIT}/{{pair}}.parquet",
    log:
        f"results/logs/data/{DATASET}/{SPLIT}/{{pair}}.log",
    conda:
        "../../envs/data.yaml"
    params:
        dataset=dataset_params(),
    script:
        "../scripts/pair_table.py"
