"""Hand-made result files for the report tests: a DataFrame as TSV, anything else as JSON."""

import json
from pathlib import Path

import pandas as pd


def write(path: Path, obj) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, pd.DataFrame):
        obj.to_csv(path, sep="\t", index=False)
    else:
        path.write_text(json.dumps(obj))
    return str(path)
