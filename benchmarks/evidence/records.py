"""Reading back a resumable run's result files: one JSON file per unit of work."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List


def read_json_records(folder: str) -> List[Dict[str, Any]]:
    """Every ``*.json`` file under ``folder`` (recursively), loaded, in a fixed order (folders as walked, files sorted)."""
    records = []
    for root, _, files in os.walk(folder):
        for f in sorted(files):
            if f.endswith(".json"):
                with open(os.path.join(root, f)) as fh:
                    records.append(json.load(fh))
    return records
