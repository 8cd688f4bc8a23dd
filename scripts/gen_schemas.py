"""Write schemas/json/ from the pydantic models (schemas/catalog.py).

.venv/bin/python scripts/gen_schemas.py          # rewrite the files
.venv/bin/python scripts/gen_schemas.py --check  # exit 1 when they drift
"""

from __future__ import annotations

import sys
from pathlib import Path

from thunderhelm.schemas.catalog import ENTRIES, rendered

OUT = Path(__file__).resolve().parents[1] / "schemas" / "json"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    expected = {e.file_name: rendered(e) for e in ENTRIES}
    stale = sorted(p.name for p in OUT.glob("*.json") if p.name not in expected)
    drift = [
        n
        for n, text in expected.items()
        if not (OUT / n).is_file() or (OUT / n).read_text() != text
    ]
    if check:
        for name in drift + stale:
            print(f"schemas/json/{name} differs from the models; run scripts/gen_schemas.py")
        return 1 if drift or stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (OUT / name).unlink()
    for name, text in expected.items():
        (OUT / name).write_text(text)
    print(f"wrote {len(expected)} schemas to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
