"""A child process that reads mask files with taalasc's reader and answers one line each.

gdstk is C code and crashes on some corrupt files (see docs/bad-input.md), so fuzz tests feed
it files through this worker: a crash or a hang kills only the worker, and the test reports the
file. Memory is capped with RLIMIT_AS so that "unbounded memory" shows up as MemoryError.

Protocol: argv[1] = PDK name, argv[2] = address-space cap in bytes; then one path per stdin
line; one answer per stdout line: "ok", "MaskError", or "TypeName: message".
"""

import os
import resource
import sys

cap = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

from taalasc.config import load_pdk  # noqa: E402
from taalasc.formats.readback import read_vias  # noqa: E402
from taalasc.errors import MaskError  # noqa: E402

pdk = load_pdk(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    try:
        read_vias(Path(line.rstrip("\n")), pdk)
        answer = "ok"
    except MaskError:
        answer = "MaskError"
    except BaseException as exc:  # noqa: BLE001 - report anything else to the test
        answer = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
    print(answer, flush=True)
