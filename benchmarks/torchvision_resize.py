"""torchvision resize: onnxviz against Pillow (torchvision's PIL path) on the shared photos, and its speed.

Run from the repository root: python benchmarks/torchvision_resize.py (needs Pillow and ../shared/data)."""
import sys, time, glob, numpy as np
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from PIL import Image
from onnxviz.run.images import load_image, resize_image
from test_presets import torchvision_pil
print("photo: ours-vs-torchvision max/mean | old --resize crop vs torchvision mean/max | stretch vs torchvision mean/max")
for p in sorted(glob.glob(str(ROOT.parent / "shared" / "data" / "images" / "*"))):
    ref = torchvision_pil(Image.open(p).convert("RGB"), 256, 224, 224).astype(float)
    rgb = load_image(p)
    ours = resize_image(rgb, 224, 224, "256").astype(float)
    crop = resize_image(rgb, 224, 224, "crop").astype(float)
    st = resize_image(rgb, 224, 224, "stretch").astype(float)
    print(p.split('/')[-1], int(np.abs(ours-ref).max()), np.abs(ours-ref).mean(), "|", round(np.abs(crop-ref).mean(),1), int(np.abs(crop-ref).max()), "|", round(np.abs(st-ref).mean(),1), int(np.abs(st-ref).max()))
# timing: ours vs Pillow vs nearest crop, alternating, medians
rgb = load_image(str(ROOT.parent / "shared" / "data" / "images" / "coffee.png"))
pil = Image.fromarray(rgb)
t = {"ours": [], "pillow": [], "crop": []}
for _ in range(30):
    a = time.perf_counter(); resize_image(rgb, 224, 224, "256"); t["ours"].append(time.perf_counter() - a)
    a = time.perf_counter(); torchvision_pil(pil, 256, 224, 224); t["pillow"].append(time.perf_counter() - a)
    a = time.perf_counter(); resize_image(rgb, 224, 224, "crop"); t["crop"].append(time.perf_counter() - a)
print({k: round(float(np.median(v)) * 1e3, 2) for k, v in t.items()}, "ms median, coffee.png 600x400 -> 256 -> 224")
