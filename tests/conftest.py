import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # tests/comfy_host.py and shared test helpers

import torch  # noqa: E402

# Tests use small tensors: one thread avoids OpenMP spin-waiting when the machine is busy (two
# threads on a loaded 2-core box ran small-tensor tests ~17x slower) and keeps results stable.
torch.set_num_threads(int(os.environ.get("ORBITFORGE_TEST_THREADS", "1")))
