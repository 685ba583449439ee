# The paper's tables and figures, read only from result files under results/: deleting
# paper_figures/ and running `snakemake paper` rebuilds them without re-running any training.
# Figures are per model (suffix _{model}), tables cover all models. Every file is listed in
# `snakemake --report report.html` with its caption from workflow/report/.
PAPER_OPTUNA = config.get("optuna_search", {}).get("enabled", False)


# paper_outputs() (common.smk) lists every file the rules below write.


rule paper_tables:
    """Tables 1-4 (main results, efficiency, ablations, search cost) as CSV and LaTeX."""
    localrule: True
    input:
        aggregate="results/summary/aggregate.tsv",
        search_cost="results/summary/search_cost.tsv",
        uncertainty="results/summary/uncertainty.tsv",
    output:
        table1_main_csv=report(
            "paper_figures/table1_main.csv",
            caption="../report/table1.rst",
            category="Tables",
            labels={"table": "table1_main", "format": "CSV"},
        ),
        table1_main_tex=report(
            "paper_figures/table1_main.tex",
            caption="../report/table1.rst",
            category="Tables",
            labels={"table": "table1_main", "format": "TEX"},
        ),
        table2_efficiency_csv=report(
            "paper_figures/table2_efficiency.csv",
            caption="../report/table2.rst",
            category="Tables",
            labels={"table": "table2_efficiency", "format": "CSV"},
        ),
        table2_efficiency_tex=report(
            "paper_figures/table2_efficiency.tex",
            caption="../report/table2.rst",
            category="Tables",
            labels={"table": "table2_efficiency", "format": "TEX"},
        ),
        table3_ablations_csv=report(
            "paper_figures/table3_ablations.csv",
            caption="../report/table3.rst",
            category="Tables",
            labels={"table": "table3_ablations", "format": "CSV"},
        ),
        table3_ablations_tex=report(
            "paper_figures/table3_ablations.tex",
            caption="../report/table3.rst",
            category="Tables",
            labels={"table": "table3_ablations", "format": "TEX"},
        ),
        table4_search_cost_csv=report(
            "paper_figures/table4_search_cost.csv",
            caption="../report/table4.rst",
            category="Tables",
            labels={"table": "table4_search_cost", "format": "CSV"},
        ),
        table4_search_cost_tex=report(
            "paper_figures/table4_search_cost.tex",
            caption="../report/table4.rst",
            category="Tables",
            labels={"table": "table4_search_cost", "format": "TEX"},
        ),
    params:
        methods=config["methods"],
        models=MODELS,
    log:
        "results/logs/paper_tables.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/paper_tables.py"


rule paper_fig1_quant_error:
    """Figure 1: quantization error before fine-tuning vs HF score after it (random plans)."""
    localrule: True
    input:
        random="results/random/{model}/summary.json",
    output:
        pdf=report(
            "paper_figures/fig1_quant_error_vs_score_{model}.pdf",
            caption="../report/fig1.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "quantization error vs. score", "format": "PDF"},
        ),
        png=report(
            "paper_figures/fig1_quant_error_vs_score_{model}.png",
            caption="../report/fig1.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "quantization error vs. score", "format": "PNG"},
        ),
    log:
        "results/logs/paper_fig1_quant_error/{model}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/paper_fig1_quant_error.py"


rule paper_fig2_pareto:
    """Figure 2: memory vs HF score of the searched plans, the Stage-1 front, the final plan and the baselines."""
    localrule: True
    input:
        front="results/search/{model}/autoqra/front.json",
        history="results/final/{model}/autoqra/history.json",
        budget="results/memory/{model}/budget.json",
        methods_hf="results/methods_hf/{model}.tsv",
    output:
        pdf=report(
            "paper_figures/fig2_pareto_{model}.pdf",
            caption="../report/fig2.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "Pareto front", "format": "PDF"},
        ),
        png=report(
            "paper_figures/fig2_pareto_{model}.png",
            caption="../report/fig2.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "Pareto front", "format": "PNG"},
        ),
    params:
        labels=method_labels(),
    log:
        "results/logs/paper_fig2_pareto/{model}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/paper_fig2_pareto.py"


rule paper_fig3_search_efficiency:
    """Figure 3: hypervolume per generation of every variant; best feasible HF score vs cost in HF-equivalents."""
    localrule: True
    input:
        hypervolumes=expand("results/search/{{model}}/{variant}/hypervolume.tsv", variant=VARIANTS),
        history="results/final/{model}/autoqra/history.json",
        budget="results/memory/{model}/budget.json",
        # optional: absent (empty) when the config runs no random search / no optuna search
        random="results/random/{model}/summary.json" if uses_random() else [],
        optuna="results/optuna/{model}/summary.json" if PAPER_OPTUNA else [],
        methods_hf="results/methods_hf/{model}.tsv",
    output:
        pdf=report(
            "paper_figures/fig3_search_efficiency_{model}.pdf",
            caption="../report/fig3.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "search efficiency", "format": "PDF"},
        ),
        png=report(
            "paper_figures/fig3_search_efficiency_{model}.png",
            caption="../report/fig3.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "search efficiency", "format": "PNG"},
        ),
    params:
        variants=VARIANTS,
        heldout_methods=fig3_heldout_methods(),
    log:
        "results/logs/paper_fig3_search_efficiency/{model}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/paper_fig3_search_efficiency.py"


rule paper_fig4_plan:
    """Figure 4: bits and ranks per block of the final AutoQRA plan with the priors I_q and I_r."""
    localrule: True
    input:
        plan="results/final/{model}/autoqra/plan.json",
        priors="results/sensitivity/{model}/priors.tsv",
    output:
        pdf=report(
            "paper_figures/fig4_plan_{model}.pdf",
            caption="../report/fig4.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "final plan", "format": "PDF"},
        ),
        png=report(
            "paper_figures/fig4_plan_{model}.png",
            caption="../report/fig4.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "final plan", "format": "PNG"},
        ),
    log:
        "results/logs/paper_fig4_plan/{model}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/paper_fig4_plan.py"


rule paper_fig5_stage2:
    """Figure 5: utility of the Stage-1 plans and of each Stage-2 batch, best so far, trust-region radius."""
    localrule: True
    input:
        history="results/final/{model}/autoqra/history.json",
    output:
        pdf=report(
            "paper_figures/fig5_stage2_{model}.pdf",
            caption="../report/fig5.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "Stage-2 refinement", "format": "PDF"},
        ),
        png=report(
            "paper_figures/fig5_stage2_{model}.png",
            caption="../report/fig5.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "Stage-2 refinement", "format": "PNG"},
        ),
    log:
        "results/logs/paper_fig5_stage2/{model}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/paper_fig5_stage2.py"


rule paper_fig6_priors:
    """Figure 6: I_q vs I_r per block with their correlations."""
    localrule: True
    input:
        priors="results/sensitivity/{model}/priors.tsv",
        correlations="results/sensitivity/{model}/correlations.json",
    output:
        pdf=report(
            "paper_figures/fig6_priors_{model}.pdf",
            caption="../report/fig6.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "sensitivity priors", "format": "PDF"},
        ),
        png=report(
            "paper_figures/fig6_priors_{model}.png",
            caption="../report/fig6.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "sensitivity priors", "format": "PNG"},
        ),
    log:
        "results/logs/paper_fig6_priors/{model}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/paper_fig6_priors.py"


rule paper:
    """Target: every paper table and figure (snakemake paper)."""
    localrule: True
    input:
        paper_outputs(),


rule paper_table5_claims:
    """Table 5: each claim of the paper beside our number with its 95 % CI and a verdict."""
    localrule: True
    input:
        aggregate="results/summary/aggregate.tsv",
        uncertainty="results/summary/uncertainty.tsv",
        histories=expand("results/final/{model}/autoqra/history.json", model=MODELS) if "autoqra" in VARIANTS else [],
        plans=expand("results/methods/{model}/{method}/plan.json", model=MODELS, method=METHODS),
        search_cost="results/summary/search_cost.tsv",
        methods_hf=expand("results/methods_hf/{model}.tsv", model=MODELS),
        fronts=expand("results/search/{model}/{variant}/front.json", model=MODELS, variant=VARIANTS),
        priors=expand("results/sensitivity/{model}/priors.tsv", model=MODELS),
        random=expand("results/random/{model}/summary.json", model=MODELS) if uses_random() else [],
    output:
        csv=report(
            "paper_figures/table5_claims.csv",
            caption="../report/table5.rst",
            category="Tables",
            labels={"table": "table5_claims", "format": "CSV"},
        ),
        tex=report(
            "paper_figures/table5_claims.tex",
            caption="../report/table5.rst",
            category="Tables",
            labels={"table": "table5_claims", "format": "TEX"},
        ),
    params:
        methods=methods_unlabelled(),
        models=MODELS,
        bits=config["search_space"]["bits"],
        ranks=config["search_space"]["ranks"],
    log:
        "results/logs/paper_table5_claims.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/paper_table5_claims.py"
