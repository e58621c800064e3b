"""How fast the report pages open in Chromium, from file://, for a real render.

    python benchmarks/report_pages.py OUT [--images 1000] [--repeats 3]

OUT is the output folder of `onnxviz render`. For each image folder in it: the time to the
page's load event, and until the first layer's tiles are drawn from the exact maps. Then the
run page of a run of `--images` images (made by linking OUT's image folders again and again,
so every file is a real one): the time to its load event, until the compare view shows its
first page of images, and until it shows the next one. Timings, not a test: prints a table
and one JSON line. Needs Playwright and a Chromium (`--chromium`, default /usr/bin/chromium).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxviz.report import render_page as report  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


def image_page(browser, folder: Path) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    t = time.perf_counter()
    page.goto((folder / "index.html").as_uri())
    page.wait_for_load_state("load")
    loaded = time.perf_counter() - t
    page.locator("section.layer.map").first.scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelector('section.layer.map b.live canvas')", timeout=60000)
    drawn = time.perf_counter() - t
    t = time.perf_counter()
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_timeout(50)
    page.screenshot()  # paints the end of the page
    to_end = time.perf_counter() - t
    context.close()
    return {"load_s": loaded, "first_layer_drawn_s": drawn, "scroll_to_end_s": to_end, "errors": len(errors)}


def run_page(browser, out: Path) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    t = time.perf_counter()
    page.goto((out / "index.html").as_uri())
    page.wait_for_load_state("load")
    loaded = time.perf_counter() - t
    page.wait_for_function("() => document.querySelector('#compare').dataset.ready === '1'", timeout=120000)
    first = time.perf_counter() - t
    t = time.perf_counter()
    page.click("#cmp-next")
    page.wait_for_function("() => document.querySelector('#compare').dataset.ready === '2'", timeout=120000)
    following = time.perf_counter() - t
    context.close()
    return {"load_s": loaded, "first_compare_page_s": first, "next_compare_page_s": following}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    run = json.loads((args.out / "run.json").read_text())
    folders = [args.out / i["folder"] for i in run["images"]]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        big = Path(tmp)
        images = []
        for n in range(args.images):
            source = run["images"][n % len(run["images"])]
            name = f"{n:05d}-{source['folder']}"
            (big / name).symlink_to(args.out / source["folder"], target_is_directory=True)
            images.append(dict(source, folder=name))
        shutil.copytree(args.out / "assets", big / "assets")
        report.write_run(big, dict(run, images=images))
        for _ in range(args.repeats):  # alternating, so that other work on the machine falls on all alike
            for folder in folders:
                results.setdefault(folder.name, []).append(image_page(browser, folder))
            results.setdefault(f"run of {args.images}", []).append(run_page(browser, big))
        browser.close()
    summary = {}
    print(f"{'page':<28} {'median seconds (of ' + str(args.repeats) + ')'}")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        summary[name] = med
        print(f"{name:<28} " + "  ".join(f"{k} {v:.2f}" if k != "errors" else f"errors {v:.0f}" for k, v in med.items()))
    sizes = {f.name: sum(x.stat().st_size for x in f.rglob("*") if x.is_file()) for f in folders}
    print(json.dumps({"pages": summary, "folder_bytes": sizes}))


if __name__ == "__main__":
    main()
