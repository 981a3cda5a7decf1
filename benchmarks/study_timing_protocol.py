"""The study's interleaved timing protocol (snnkernels/study/throughput.py) on one (table,
width, T) group, at the models' initial weights (no training first): the dense twin (like for
like and as trained) against TopK 1%, TopK 5% and ActiveWindow 0.2, each hidden layer `width`
wide.

    python benchmarks/study_timing_protocol.py --table synthetic_64 --width 2048 --steps 10 \
        --rounds 200 --out benchmarks/results/study_timing_w2048_T10.json
"""

from __future__ import annotations

import argparse
import json

import torch

from snnkernels.study import throughput as TP
from snnkernels.study.arms import ARMS, DENSE_TWIN, ModelConfig
from snnkernels.study.data import load_dataset, make_split
from snnkernels.study.runner import tensors

SPARSE = ("topk_1", "topk_5", "aw_0.2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="synthetic_64")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="time steps T")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", help="JSON file for the rows")
    args = parser.parse_args()
    split = make_split(load_dataset(args.table), 0)
    X, y = tensors(split, "cpu")[:2]
    network = ModelConfig(hidden=(args.width,) * args.layers, T=args.steps)
    models = {}
    for arm in (DENSE_TWIN,) + SPARSE:
        torch.manual_seed(0)  # the same initial weights for every arm
        model = ARMS[arm].build(split.num_features, split.num_classes, network)
        if arm == DENSE_TWIN:
            models[DENSE_TWIN], models[TP.AS_TRAINED] = TP.like_for_like(model), model
        else:
            models[arm] = model
    times = TP.interleaved_steps(models, X, y, batch_size=args.batch_size, steps=args.rounds)
    rows = TP.summarize(times, DENSE_TWIN)
    meta = {"table": args.table, "hidden": list(network.hidden), "T": args.steps,
            "batch_size": args.batch_size, "threads": torch.get_num_threads(),
            "torch": torch.__version__}
    print(json.dumps(meta))
    for r in rows:
        ci = r.get("speedup_ci")
        speed = (f"speedup {r['speedup']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] "
                 f"(±{100 * r['ci_half_width']:.1f}%)" if ci else "reference")
        print(f"{r['arm']:34s} step {1e3 * r['step_median_s']:7.1f} ms "
              f"(IQR {1e3 * r['step_iqr_s'][0]:.1f}-{1e3 * r['step_iqr_s'][1]:.1f}) "
              f"fwd {1e3 * r['forward_median_s']:.1f} bwd {1e3 * r['backward_median_s']:.1f} "
              f"opt {1e3 * r['optimizer_median_s']:.1f}  {speed}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
