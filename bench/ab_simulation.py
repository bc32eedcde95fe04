"""Error rates of the experiment report's tests when it is read every day, by simulation.

    .venv/bin/python bench/ab_simulation.py [--experiments 2000] [--days 30] [--users-per-day 100]
        [--suggestions-per-user 10] [--p-control 0.30] [--effects 0.01 0.02 0.03 0.05]
        [--taus 0.01 0.02 0.03 0.05 0.1] [--user-sd 0.1] [--seed 1]

Under H0 (equal arms) it prints how often each test ever declares a difference: the mSPRT the
report uses, a z-test at alpha read every day (the inflation the mSPRT prevents), and a z-test
read once at the end. Under each effect it prints power and the median day of detection, then
the same for other values of tau, then H0 again with users who differ in acceptance rate.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from feedback.stats import DEFAULT_TAU, SimulationResult, simulate_peeking  # noqa: E402


def row(label: str, r: SimulationResult) -> str:
    se = SimulationResult.standard_error(r.msprt_rate, r.experiments)
    day = "-" if r.median_detection_day is None else f"{r.median_detection_day:g}"
    return f"{label:<28} {r.msprt_rate:>7.3f} ±{se:.3f} {r.peeking_rate:>9.3f} {r.final_rate:>9.3f} {day:>9}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experiments", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--users-per-day", type=int, default=100)
    ap.add_argument("--suggestions-per-user", type=int, default=10)
    ap.add_argument("--p-control", type=float, default=0.30)
    ap.add_argument("--effects", type=float, nargs="*", default=[0.01, 0.02, 0.03, 0.05])
    ap.add_argument("--taus", type=float, nargs="*", default=[0.01, 0.02, 0.03, 0.05, 0.1])
    ap.add_argument("--user-sd", type=float, default=0.1, help="sd of per-user acceptance rates (0 to skip)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    common = dict(users_per_day=args.users_per_day, suggestions_per_user=args.suggestions_per_user,
                  days=args.days, experiments=args.experiments, alpha=args.alpha, rng=rng)
    per_arm_day = args.users_per_day // 2 * args.suggestions_per_user
    print(f"{args.experiments} experiments, {args.days} daily looks, {per_arm_day} suggestions per arm per day, "
          f"p_control={args.p_control}, alpha={args.alpha}, tau={DEFAULT_TAU} unless stated")
    header = f"{'scenario':<28} {'mSPRT':>7} {'(MC se)':>7} {'daily z':>9} {'final z':>9} {'med. day':>9}"
    print(header, "-" * len(header), sep="\n")
    started = time.perf_counter()
    p = args.p_control
    print(row("H0 (false positives)", simulate_peeking(p, p, **common)))
    for effect in args.effects:
        print(row(f"+{effect * 100:g} pp (power)", simulate_peeking(p, p + effect, **common)))
    for tau in args.taus:
        if tau == DEFAULT_TAU:
            continue
        print(row(f"H0, tau={tau:g}", simulate_peeking(p, p, tau=tau, **common)))
        for effect in args.effects:
            print(row(f"+{effect * 100:g} pp, tau={tau:g}", simulate_peeking(p, p + effect, tau=tau, **common)))
    if args.user_sd > 0:
        print(row(f"H0, user sd {args.user_sd:g}", simulate_peeking(p, p, user_sd=args.user_sd, **common)))
    print(f"\n{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
