#!/usr/bin/env python
"""Runs the LIF CPU benchmark suite (benchmarks/test_bench_lif.py) and writes
<out>/lif_cpu.json and <out>/lif_cpu.md: median times, speedups of the fused op over snnTorch
and the reference, GB/s on the bytes that must move, % of this machine's copy bandwidth, the
machine, and PASS/FAIL for each performance target (reported, never an exit failure).

    python benchmarks/run_benchmarks.py            # full run -> benchmarks/results/
    python benchmarks/run_benchmarks.py --quick    # smoke run -> benchmarks/results/quick/
    python benchmarks/run_benchmarks.py --out DIR  # write the results elsewhere
    python benchmarks/run_benchmarks.py --threads 1  # torch threads (default: torch's default)

Exit status: 0 when every benchmark ran, 1 when some failed or none produced results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
IMPLS = ("fused", "reference", "snntorch")
IMPL_LABELS = {
    "fused": "fused (snnkernels.lif)",
    "reference": "reference (snnkernels.reference.lif)",
    "snntorch": "snnTorch Leaky loop",
}
MODES = ("fwd", "fwd+bwd")
# (what, N, implementation compared with or None for bandwidth, mode, required value)
TARGETS = (
    ("fused fwd+bwd speedup vs snnTorch", 256, "snntorch", "fwd+bwd", 10.0),
    ("fused fwd+bwd speedup vs snnTorch", 1024, "snntorch", "fwd+bwd", 5.0),
    ("fused fwd+bwd speedup vs reference", 256, "reference", "fwd+bwd", 5.0),
    ("fused fwd+bwd speedup vs reference", 1024, "reference", "fwd+bwd", 5.0),
    ("fused fwd % of copy bandwidth", 4096, None, "fwd", 50.0),
    ("fused fwd+bwd % of copy bandwidth", 4096, None, "fwd+bwd", 50.0),
)
# The Markdown warns that timings are inflated when the benchmark threads plus the cores other
# processes kept busy exceed the machine's cores by more than this.
CONTENTION_SLACK = 0.25
# Environment variables that change what the op's time means (threads, page allocation).
ENV_KEYS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "THP_MEM_ALLOC_ENABLE")


def log(msg: str) -> None:
    print(f"[run_benchmarks] {msg}", flush=True)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def git_info() -> dict:
    # Only uncommitted changes to what is measured matter for reproducing the numbers.
    measured = ["csrc", "snnkernels", "setup.py"]
    return {
        "revision": git("rev-parse", "HEAD") or "unknown",
        "measured_code_dirty": bool(git("status", "--porcelain", "--", *measured)),
    }


def run_suite(json_path: Path, quick: bool, threads: int | None) -> int:
    cmd = [
        sys.executable, "-m", "pytest", str(BENCH_DIR), "-v",
        f"--benchmark-json={json_path}",
        "--benchmark-columns=median,min,max,rounds",
        "--benchmark-sort=name",
    ]
    if quick:
        cmd.append("--lif-quick")
    if threads:
        cmd.append(f"--lif-threads={threads}")
    log("running: " + " ".join(cmd))
    return subprocess.run(cmd, cwd=REPO).returncode


def collect(bench_json: dict) -> dict:
    """{N: {impl: {mode: stats}}} from pytest-benchmark's JSON."""
    results: dict = {}
    for b in bench_json["benchmarks"]:
        info, stats = b["extra_info"], b["stats"]
        if "gbps" not in info:
            continue
        results.setdefault(info["N"], {}).setdefault(info["impl"], {})[info["mode"]] = {
            "median_ms": stats["median"] * 1e3,
            "min_ms": stats["min"] * 1e3,
            "max_ms": stats["max"] * 1e3,
            "iqr_ms": stats["iqr"] * 1e3,
            "rounds": stats["rounds"],
            "bytes": info["bytes"],
            "gbps": info["gbps"],
            "pct_of_copy": info["pct_of_copy"],
            "spike_rate": info["spike_rate"],
            "shape": [info["T"], info["B"], info["N"]],
        }
    return dict(sorted(results.items()))


def speedups(results: dict) -> dict:
    """{N: {other impl: {mode: median(other) / median(fused)}}}"""
    out: dict = {}
    for n, by_impl in results.items():
        fused = by_impl.get("fused", {})
        for impl in IMPLS[1:]:
            for mode in MODES:
                if mode in fused and mode in by_impl.get(impl, {}):
                    ratio = by_impl[impl][mode]["median_ms"] / fused[mode]["median_ms"]
                    out.setdefault(n, {}).setdefault(impl, {})[mode] = ratio
    return out


def check_targets(results: dict, speedup: dict) -> list[dict]:
    checked = []
    for what, n, other, mode, required in TARGETS:
        if other is None:
            value = results.get(n, {}).get("fused", {}).get(mode, {}).get("pct_of_copy")
            unit = "%"
        else:
            value = speedup.get(n, {}).get(other, {}).get(mode)
            unit = "x"
        status = "NOT MEASURED" if value is None else ("PASS" if value >= required else "FAIL")
        checked.append({"target": f"{what} at N={n}", "N": n, "mode": mode, "unit": unit,
                        "required": required, "measured": value, "status": status})
    return checked


def fmt(value, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def markdown(summary: dict) -> str:
    m, cb = summary["machine"], summary["copy_bandwidth"]
    lines = [
        f"# LIF CPU benchmarks ({summary['mode']} run)",
        "",
        f"- date: {m['date']}; git revision {m['git']['revision'][:12]}"
        + (" (with uncommitted changes to the measured code)" if m["git"]["measured_code_dirty"]
           else ""),
        f"- CPU: {m['cpu_model']}, {m['logical_cores']} logical cores; load average "
        f"{m['loadavg_before'][0]:.2f} before, {m['loadavg_after'][0]:.2f} after (1 min); "
        f"other processes kept {fmt(m['other_processes_cores'], '.2f')} cores busy during the "
        f"{m['suite_wall_s']:.0f} s run",
        f"- torch {m['torch']} (torch threads: {m['torch_threads']}), snnTorch {m['snntorch']}, "
        f"Python {m['python']}; snnkernels build: {json.dumps(m['snnkernels_build_info'])}",
        f"- environment: {json.dumps(m['env'])}",
        f"- copy bandwidth (`dst.copy_(src)`, 256 MiB float32, read + write counted): "
        f"**{cb['gbps']:.2f} GB/s** with the benchmarks' {cb['threads']} thread(s), "
        f"{cb['gbps_1thread']:.2f} GB/s with 1 thread",
        "- setup: x time-major [T=25, B=256, N] float32 ~ N(0.2, 1); beta 0.9, threshold 1.0, "
        "subtract reset, reset delay, atan surrogate. fwd+bwd times the op's forward and "
        "backward with precomputed upstream gradients for spk and mem (no loss).",
        "- bytes that must move per element: fwd 3 x 4 B (x, spk, mem), fwd+bwd 7 x 4 B "
        "(+ grad_spk, grad_mem, saved mem, grad_x). GB/s = those bytes / median time.",
    ]
    busy = m["other_processes_cores"]
    if busy is not None and busy + m["torch_threads"] > m["logical_cores"] + CONTENTION_SLACK:
        lines.append(
            f"- **warning: shared machine.** Other processes kept {busy:.2f} of "
            f"{m['logical_cores']} cores busy, so the benchmarks' {m['torch_threads']} threads "
            "did not each have a core: a parallel region waits for its slowest thread's time "
            "slice, so timings are inflated and quantized, more so for the loops (hundreds of "
            "small parallel ops per call) than for the fused op (one or two per call)."
        )
    lines.append("")
    for n, by_impl in summary["results"].items():
        any_stats = next(iter(next(iter(by_impl.values())).values()))
        lines += [
            f"## N = {n}: x {any_stats['shape']}, spike rate {any_stats['spike_rate']:.1%}",
            "",
            "| implementation | fwd ms | fwd+bwd ms | fwd GB/s (% copy) | fwd+bwd GB/s (% copy) "
            "| fused speedup fwd | fused speedup fwd+bwd |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for impl in IMPLS:
            stats = by_impl.get(impl, {})
            ratio = summary["speedups"].get(n, {}).get(impl, {})
            cells = [IMPL_LABELS[impl]]
            cells += [fmt(stats.get(mode, {}).get("median_ms"), ".2f") for mode in MODES]
            for mode in MODES:
                s = stats.get(mode)
                cells.append("n/a" if s is None else f"{s['gbps']:.2f} ({s['pct_of_copy']:.0f}%)")
            for mode in MODES:
                cells.append("1.00x" if impl == "fused" and mode in stats
                             else fmt(ratio.get(mode), ".2f", "x"))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Targets", "", "| target | required | measured | result |", "|---|---:|---:|---|"]
    for t in summary["targets"]:
        spec = ".1f" if t["unit"] == "%" else ".2f"
        lines.append(f"| {t['target']} | >= {t['required']:g}{t['unit']} | "
                     f"{fmt(t['measured'], spec, t['unit'])} | {t['status']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: N <= 1024, 3 rounds, no warm-up")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for lif_cpu.json and lif_cpu.md (default: "
                        "benchmarks/results, or benchmarks/results/quick with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the benchmarks (default: torch's default)")
    args = parser.parse_args(argv)
    if args.out is None:
        # A smoke run must not overwrite the committed full results (results/quick is ignored).
        args.out = RESULTS_DIR / "quick" if args.quick else RESULTS_DIR
    args.out.mkdir(parents=True, exist_ok=True)
    mode = "quick" if args.quick else "full"

    loadavg_before = os.getloadavg()
    busy_before, ours_before, start = cpu_busy_seconds(), children_cpu_seconds(), time.monotonic()
    log(f"{mode} run; 1-min load average {loadavg_before[0]:.2f} on {os.cpu_count()} cores "
        "(other processes on the cores inflate multi-threaded timings)")
    fd, tmp_name = tempfile.mkstemp(prefix="lif_cpu_pytest_benchmark_", suffix=".json")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        rc = run_suite(tmp, args.quick, args.threads)
        raw = json.loads(tmp.read_text()) if tmp.stat().st_size else None
    finally:
        tmp.unlink(missing_ok=True)
    if raw is None or not raw.get("benchmarks"):
        log(f"no benchmark results (pytest exit status {rc}, see above); nothing written")
        return 1

    # Cores kept busy by other processes while the suite ran: their time slices are what makes
    # multi-threaded timings on a shared machine slow and erratic.
    busy_after, wall = cpu_busy_seconds(), time.monotonic() - start
    other_cores = None
    if busy_before is not None and busy_after is not None:
        others = (busy_after - busy_before) - (children_cpu_seconds() - ours_before)
        other_cores = max(0.0, others / wall)
    mi = raw["machine_info"]
    machine = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": git_info(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": mi.get("torch"),
        "torch_threads": mi.get("torch_threads"),
        "snntorch": mi.get("snntorch"),
        "snnkernels_build_info": mi.get("snnkernels_build_info"),
        "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg(),
        "other_processes_cores": other_cores,
        "suite_wall_s": wall,
    }
    results = collect(raw)
    speedup = speedups(results)
    summary = {
        "mode": mode,
        "pytest_exit_status": rc,
        "machine": machine,
        "copy_bandwidth": mi.get("copy_bandwidth"),
        "results": results,
        "speedups": speedup,
        "targets": check_targets(results, speedup),
    }
    json_path, md_path = args.out / "lif_cpu.json", args.out / "lif_cpu.md"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    md = markdown(summary)
    md_path.write_text(md)

    print()
    print(md)
    for t in summary["targets"]:
        print(f"{t['status']:>12}  {t['target']}: {fmt(t['measured'], '.2f', t['unit'])} "
              f"(required >= {t['required']:g}{t['unit']})")
    log(f"wrote {json_path} and {md_path}")
    if rc != 0:
        log(f"pytest exit status {rc}: some benchmarks failed; the tables show n/a for them")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
