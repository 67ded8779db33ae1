"""``dehaze evaluate``'s FADE is the service's bounded computation (issue 13, class 3).

``training.metrics.fade`` used to pad sides under 16 px and score the rest at full size: a 3×2,000,000 image would
have been scored at 32 megapixels (about 16 s and 10 GB, extrapolating the 23 s and 5.3 GB measured at 16 MP).
It now calls ``service.density.fade_of_array``, so its cost is bounded at every aspect ratio and its score equals
the service's for the same pixels. The cost is measured in a child process (peak resident memory is per process),
in CPU seconds, since the tests may run niced beside other work.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.density import MAX_FADE_PIXELS, fade_of_array, fade_of_bytes
from training.metrics import fade

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]

_MAX_CPU_SECONDS = 8.0  # CPU time, not wall time (the tests run niced beside other work): about 1-2 s measured
_MAX_GROWTH_MIB = 1500  # peak resident growth while scoring, inputs excluded (the old code: ~10 GB for 3×2,000,000)


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A textured uint8 RGB image (the same kind of scene as tests/service/test_density.py)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    pattern = np.stack([(xs * 9) % 256, (ys * 13) % 256, ((xs ^ ys) * 3) % 256], axis=-1)
    return np.clip(0.7 * pattern + 0.3 * rng.integers(0, 256, pattern.shape), 0, 255).astype(np.uint8)


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_thin_image_scores_as_the_service_scores_it() -> None:
    """4000 wide × 3 high: evaluation, the service's array path and ``/density``'s bytes path agree."""
    rgb = _scene(3, 4000)
    expected = fade_of_array(rgb)
    assert fade(rgb / 255.0) == pytest.approx(expected, rel=1e-9, nan_ok=True)
    assert fade_of_bytes(_png(rgb)) == pytest.approx(expected, rel=1e-9, nan_ok=True)


def test_evaluation_passes_its_bound_to_the_shared_function() -> None:
    """A smaller bound is the service's score under that bound (``DEHAZE_DENSITY_MAX_PIXELS``)."""
    rgb = _scene(300, 200, seed=1)
    assert fade(rgb / 255.0, max_pixels=64 * 64) == pytest.approx(fade_of_array(rgb, 64 * 64), rel=1e-9)


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from service.density import fade_of_array
    from training.metrics import fade
    from tests.training.test_fade_bound import _scene

    def status_mib(field: str) -> float:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024

    height, width = int(sys.argv[1]), int(sys.argv[2])
    fade(_scene(16, 16) / 255.0)  # loads FADE's reference models outside the measurement
    rgb = _scene(height, width)
    image = rgb / 255.0  # what evaluate passes: a float image in [0, 1]
    before = status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # Linux: the peak (VmHWM) restarts from the current resident size
    started, cpu_started = time.perf_counter(), time.process_time()
    score = fade(image)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    growth = status_mib("VmHWM") - before
    service = fade_of_array(rgb)
    print(json.dumps(dict(score=score, seconds=seconds, cpu_seconds=cpu_seconds, growth_mib=growth, service=service)))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status and resets its peak")
@pytest.mark.parametrize(("height", "width"), [(3, 2_000_000), (2000, 2400)], ids=["3x2000000", "2400x2000"])
def test_evaluation_fade_is_bounded_in_time_and_memory(height: int, width: int) -> None:
    """A very thin image and a large one: bounded cost, the service's score.

    Memory is the growth of the child's peak resident size (reset just before scoring, Linux's ``clear_refs``)
    over its size then, so the inputs are excluded; the bound is loose on purpose, and still an order of
    magnitude under what the unbounded computation needed.
    """
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(height), str(width)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=_REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    logger.info("FADE of %dx%d in evaluation: %s", width, height, result)
    assert result["cpu_seconds"] < _MAX_CPU_SECONDS, result
    assert result["growth_mib"] < _MAX_GROWTH_MIB, result
    assert result["score"] == pytest.approx(result["service"], rel=1e-9, nan_ok=True)
    assert MAX_FADE_PIXELS == 1 << 20  # the default both use
