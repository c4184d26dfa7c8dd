"""Importing alexnet_aa, listing backends and running on NumPy import neither cupy nor mlx."""

import subprocess
import sys

CODE = """
import sys
import alexnet_aa
names = alexnet_aa.registered_backends()
model = alexnet_aa.AlexNet("torchvision", "numpy")
model(alexnet_aa.example_input("torchvision"))
heavy = sorted(m for m in ("cupy", "mlx", "torch", "array_api_strict") if m in sys.modules)
print(",".join(heavy))
"""


def test_no_heavy_imports():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing alexnet_aa pulled in: {out.stdout.strip()}"
