"""Write seed inputs for the fuzz targets from the shared test vectors (docs/test-vectors).

``python3 fuzz/seeds.py DIR`` writes DIR/envelope/<name> (whole envelopes) and DIR/codecs/<name>
(their decoded bodies, JSON and msgpack). libFuzzer adds what it finds to the same directories.
"""

import base64
import json
import sys
from pathlib import Path

VECTORS = Path(__file__).resolve().parent.parent / "docs" / "test-vectors" / "envelopes.json"


def main(out: Path) -> None:
    for target in ("envelope", "codecs"):
        (out / target).mkdir(parents=True, exist_ok=True)
    for vector in json.loads(VECTORS.read_text()):
        name = "seed-" + "".join(c if c.isalnum() else "-" for c in vector["name"])
        raw = vector["envelope"].encode()
        (out / "envelope" / name).write_bytes(raw)
        try:
            body = base64.b64decode(json.loads(raw)["body"])
        except (ValueError, KeyError, TypeError, RecursionError):  # the vectors include bad envelopes
            continue
        (out / "codecs" / name).write_bytes(body)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
