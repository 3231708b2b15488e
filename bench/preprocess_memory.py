"""Preprocessing: images/s and peak memory of ``petvision.preprocess`` against the book's loop.

    python bench/preprocess_memory.py [--quick] [--images 300] [--size 200]

Both run on the same generated pets (``petvision.data.synthetic`` through the download stage), each in
a fresh subprocess:

* the book's loop: ``img_to_array(load_img(path, target_size))`` into ``np.zeros(..., "float32")``
  images and uint8 targets, one image after another (the book's notebook), importing
  ``keras.utils`` as it does;
* ``petvision.preprocess.run_preprocess`` with one worker (all in the measured process), and with
  one worker per core.

A single process's peak is its own ``VmHWM`` (not ``ru_maxrss``, which on Linux starts from the
parent's size at fork: a benchmark parent that imported TensorFlow would inflate every child).
With worker processes, the peak is the largest sum of the RSS of the whole process tree, sampled
every 20 ms.

Besides the total peak, each child reports its peak right after its imports, so the growth that
the data causes is told apart from what the libraries cost (TensorFlow for the book's loop).
The preprocess stage does more than the book's loop: it decodes every image twice (a check pass,
then the conversion) and writes the classification arrays too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

# A process's own peak: VmHWM, the high-water mark of its memory since it started (getrusage's
# ru_maxrss would not do: Linux carries the parent's size at fork over into the child's).
HWM = textwrap.dedent("""
    def hwm_kb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
""")

BOOK_LOOP = HWM + textwrap.dedent("""
    import json, os, random, sys, time
    import numpy as np
    from keras.utils import img_to_array, load_img   # the book: from tensorflow.keras.utils import ...

    raw, size = sys.argv[1], int(sys.argv[2])
    input_dir, target_dir = os.path.join(raw, "images"), os.path.join(raw, "annotations", "trimaps")
    input_img_paths = sorted(os.path.join(input_dir, f) for f in os.listdir(input_dir) if f.endswith(".jpg"))
    target_paths = sorted(os.path.join(target_dir, f) for f in os.listdir(target_dir)
                          if f.endswith(".png") and not f.startswith("."))
    img_size = (size, size)
    num_imgs = len(input_img_paths)
    random.Random(1337).shuffle(input_img_paths)
    random.Random(1337).shuffle(target_paths)
    after_imports = hwm_kb()

    def path_to_input_image(path):
        return img_to_array(load_img(path, target_size=img_size))

    def path_to_target(path):
        img = img_to_array(load_img(path, target_size=img_size, color_mode="grayscale"))
        img = img.astype("uint8") - 1
        return img

    start = time.perf_counter()
    input_imgs = np.zeros((num_imgs,) + img_size + (3,), dtype="float32")
    targets = np.zeros((num_imgs,) + img_size + (1,), dtype="uint8")
    for i in range(num_imgs):
        input_imgs[i] = path_to_input_image(input_img_paths[i])
        targets[i] = path_to_target(target_paths[i])
    seconds = time.perf_counter() - start
    print(json.dumps({"images": num_imgs, "seconds": seconds, "after_imports_kb": after_imports, "workers": 1,
                      "peak_kb": hwm_kb()}))
""")

PROJECT = HWM + textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    import common
    from petvision import preprocess
    from petvision.data import conversion

    folder = sys.argv[2]
    images, seg, cls, workers = (int(a) for a in sys.argv[3:7])
    cfg = common.config(common.data_overrides(common.Path(folder), images, seg, cls, workers))
    after_imports = hwm_kb()
    start = time.perf_counter()
    report = preprocess.run_preprocess(cfg)
    seconds = time.perf_counter() - start
    print(json.dumps({"images": report["usable_pairs"], "seconds": seconds, "after_imports_kb": after_imports,
                      "workers": conversion.worker_count(workers), "peak_kb": hwm_kb()}))
""")


def run_child(code: str, *args: str) -> dict:
    """Run ``python -c code args``; its JSON line, plus ``tree_peak_kb``: the largest sum of the
    RSS of it and its worker processes, sampled every 20 ms while it runs."""
    import psutil

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        root, tree_peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            total = 0
            try:
                for member in [root, *root.children(recursive=True)]:
                    total += member.memory_info().rss
            except psutil.NoSuchProcess:  # one ended between the listing and the reading
                pass
            tree_peak = max(tree_peak, total // 1024)
            time.sleep(0.02)
        out = proc.stdout.read()
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(
                f"benchmark child failed ({proc.returncode}): {err.read().decode(errors='replace')[-3000:]}"
            )
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["tree_peak_kb"] = tree_peak
    return result


def measure(images: int, size: int, cls_size: int, folder: Path) -> dict:
    raw = common.generated_pets(folder, images, seg_size=size, cls_size=cls_size)
    bench_dir = str(Path(__file__).resolve().parent)
    runs = {
        "the book's loop (float32 arrays)": run_child(BOOK_LOOP, str(raw), str(size)),
        "petvision.preprocess, 1 worker": run_child(
            PROJECT, bench_dir, str(folder), str(images), str(size), str(cls_size), "1"
        ),
        "petvision.preprocess, 1 worker per core": run_child(
            PROJECT, bench_dir, str(folder), str(images), str(size), str(cls_size), "0"
        ),
    }
    for run in runs.values():
        # One process: its own exact high-water mark; several: the sampled sum over the tree.
        run["peak_used_kb"] = (
            run["peak_kb"] if run["workers"] == 1 else max(run["tree_peak_kb"], run["peak_kb"])
        )
    return {"images": images, "size": size, "cls_size": cls_size, "runs": runs}


def markdown(res: dict) -> str:
    mib = lambda kb: kb / 1024  # noqa: E731
    book = res["runs"]["the book's loop (float32 arrays)"]
    rows = []
    for name, run in res["runs"].items():
        # Several processes: the workers' own imports are in the peak too, so no growth figure.
        growth = (
            common.fmt(mib(run["peak_used_kb"] - run["after_imports_kb"]), 0)
            if run["workers"] == 1
            else "n/a"
        )
        rows.append(
            [
                name,
                run["workers"],
                common.fmt(run["images"] / run["seconds"], 0),
                common.fmt(mib(run["peak_used_kb"]), 0),
                common.fmt(mib(run["after_imports_kb"]), 0),
                growth,
                f"{run['peak_used_kb'] / book['peak_used_kb']:.2f}",
            ]
        )
    n, s = res["images"], res["size"]
    book_arrays = 7390 * (s * s * 3 * 4 + s * s) / 2**30
    return "\n".join(
        [
            f"{n} generated pets, segmentation arrays at {s}x{s} (preprocess also writes the classification "
            f"arrays at {res['cls_size']}x{res['cls_size']} and decodes each image twice).\n",
            common.table(
                [
                    "what",
                    "processes",
                    "images/s",
                    "peak RSS (MiB)",
                    "after imports (MiB)",
                    "growth with the data (MiB)",
                    "peak vs the book's loop",
                ],
                rows,
            ),
            "",
            "Peak RSS: one process's own high-water mark (`VmHWM`); with worker processes, the "
            "largest sum of the RSS of the main process and its workers, sampled every 20 ms "
            "(shared library pages count once per process, so this overstates a little). "
            '"After imports" is the measured process\'s peak before '
            "its first image (TensorFlow, which `keras.utils` imports, is most of the book's loop's).",
            "",
            f"The book's arrays grow with the dataset: for the real set's 7,390 images at {s} px they alone "
            f"take {book_arrays:.1f} GiB; preprocess's memory does not depend on the number of images "
            "(each worker holds one image and one chunk's mapped rows).",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 60 images")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=200, help="segmentation size (the book's 200)")
    parser.add_argument("--cls-size", type=int, default=180)
    parser.add_argument(
        "--folder", type=Path, help="keep the generated data here (default: a temporary folder)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.images = 60
    with common.work_folder(args.folder, "bench-preprocess-") as folder:
        res = measure(args.images, args.size, args.cls_size, folder)
    return common.report(res, markdown(res), args.json)


if __name__ == "__main__":
    main()
