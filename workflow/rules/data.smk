rule data_prepare:
    """Write the train/validation/test splits (bundled synthetic set, Alpaca file or hub id) as JSONL."""
    localrule: True
    input:
        get_data_inputs,
        prefetched="results/prefetch/data/{dataset}.json",
    output:
        train="results/data/{dataset}/train.jsonl",
        validation="results/data/{dataset}/validation.jsonl",
        test="results/data/{dataset}/test.jsonl",
        general_search="results/data/{dataset}/general_search.jsonl",
        general_heldout="results/data/{dataset}/general_heldout.jsonl",
        manifest="results/data/{dataset}/manifest.json",
    params:
        spec=config_keys("data", DATA_KEYS),
        seed=config["seed"],
        code=code_sha("data", "manifest.py", "io.py"),
    cache: "omit-software"
    log:
        "results/logs/data_prepare/{dataset}.log",
    conda:
        "../../envs/autoqra.yaml"
    script:
        "../scripts/data_prepare.py"
