import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # tests/comfy_host.py and shared test helpers

import pytest  # noqa: E402
import torch  # noqa: E402

# Tests use small tensors: one thread avoids OpenMP spin-waiting when the machine is busy (two
# threads on a loaded 2-core box ran small-tensor tests ~17x slower) and keeps results stable.
THREADS = int(os.environ.get("ORBITFORGE_TEST_THREADS", "1"))
torch.set_num_threads(THREADS)


# A benchmark's main() run by a test sets its own --threads and keeps them: every module (its
# module-scoped fixtures fit scenes and build models) and every test starts from THREADS again.
@pytest.fixture(scope="module", autouse=True)
def _threads_per_module():
    torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _threads_per_test():
    torch.set_num_threads(THREADS)
