"""Models side by side: this run's model beside compare.models' result folders, per scoring method.

Selected neurons per layer on relative depth, the cross-model correlation of the group x group IoU
matrices (Mantel test), a null model's selection and stability numbers beside its real model's, and
the ablation specificity per model when every compared model has ablation tables
(neurospec/compare/compare.py, docs/methods.md#models-side-by-side).
"""


rule compare:
    """One scoring method across the compared models: tables and two figures."""
    input:
        scores=compare_inputs("scores"),
        stability=compare_inputs("stability"),
        ablation=compare_inputs("ablation"),
    output:
        depth=f"{COMPARE_DIR}/{{method}}_depth.parquet",
        correlation=f"{COMPARE_DIR}/{{method}}_correlation.parquet",
        null=f"{COMPARE_DIR}/{{method}}_null.parquet",
        specificity=f"{COMPARE_DIR}/{{method}}_specificity.parquet",
        depth_figure=report(
            f"{COMPARE_DIR}/{{method}}_depth.png",
            caption="../report/compare_depth.rst",
            category="Models side by side",
            subcategory=selection_label,
            labels={
                "figure": "Selected neurons on relative depth",
                "method": "{method}",
            },
        ),
        summary_figure=report(
            f"{COMPARE_DIR}/{{method}}_summary.png",
            caption="../report/compare_summary.rst",
            category="Models side by side",
            subcategory=selection_label,
            labels={
                "figure": "IoU-matrix correlation and stability vs null",
                "method": "{method}",
            },
        ),
        vectors=[
            f
            for name in ("depth", "summary")
            for f in vector_files(f"{COMPARE_DIR}/{{method}}_{name}.png")
        ],
    log:
        f"results/logs/compare/{DATASET}/{SPLIT}/{{method}}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        formats=figure_formats(),
        models=COMPARE_MODELS,
        options=compare_params(),
        prefix=f"{COMPARE_DIR}/{{method}}",
    script:
        "../scripts/compare_models.py"
