"""Prints how long the synthetic generator takes (pairs per second) at a few sizes."""

import tempfile
import time

from pathvqa.synth import generator as synthetic

for pairs, size in ((2000, 96), (2000, 224)):
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        synthetic.write(out, {"train": pairs}, size=size, seed=0, progress=False)
        seconds = time.perf_counter() - start
    print(f"{pairs} pairs at {size} px: {seconds:.1f} s ({pairs / seconds:.0f} pairs/s)")
