rule build_demo_model:
    """The demo model: a tiny seeded Cohere model and a BPE tokenizer trained on the demo corpus."""
    output:
        directory(DEMO_MODEL_DIR),
    log:
        "results/logs/models/demo.log",
    conda:
        "../../envs/torch.yaml"
    params:
        shapes=config["demo_model"],
    script:
        "../scripts/build_demo_model.py"
