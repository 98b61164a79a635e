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


rule build_gemma3_model:
    """Gemma 3 270M, a real pretrained model: its PyPI GGUF package converted once to safetensors."""
    output:
        directory(GEMMA3_MODEL_DIR),
    log:
        "results/logs/models/gemma3-270m.log",
    conda:
        "../../envs/gemma3.yaml"
    script:
        "../scripts/build_gemma3_model.py"
