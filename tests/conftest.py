import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # tests/comfy_host.py and shared test helpers

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
