"""What analysis.eliminate saves, for the plan of cifar10.toml and fashion_mnist.toml. Run from the
repository root: python results/racing/savings.py (seconds; output in savings.txt).

1. Replay of the racing decision on the policies reference run (7 arms, the arms of cifar10.toml and
fashion_mnist.toml): each 5-seed subset of its 6 seeds as the pilot, the plan of the bundled files
(target_half_width 0.5, max_seeds 12, comparisons all). Its data is the demo's, not CIFAR-10.
2. Simulated pilots (below). 3. The chance that equal arms lose one at the pilot (should be <= 0.01)."""
import itertools, json
import numpy as np
from augcompare.experiments import stats
s = json.load(open("results/policies/reference/summary.json"))
vals = {a: dict(zip(v["seeds"], v["test_accuracy"]["values"])) for a, v in s["arms"].items()}
arms = list(vals)
for pilot in itertools.combinations(range(6), 5):
    pv = {a: {k: vals[a][k] for k in pilot} for a in arms}
    sds = [np.std([pv[a][k] - pv[b][k] for k in pilot], ddof=1) for a, b in itertools.combinations(arms, 2)]
    n = max(5, stats.stein_seeds(max(sds) * 100, 5, 0.5, 10**9))
    n_run = min(n, 12)
    out = stats.pilot_eliminations(pv, "test_accuracy", 0.01)
    full = len(arms) * n_run
    going = len(arms) - len(out)
    raced = len(arms) * 5 + (going if going >= 2 else 0) * (n_run - 5)
    print(f"pilot seeds {pilot}: plan {n} seeds (runs {n_run}); eliminated {sorted(out)}; "
          f"jobs {full} -> {raced} (saved {full - raced}, {100 * (full - raced) / full:.0f}%)")


def jobs(means, rng, pilot=5, most=12, half=0.5):
    shared = rng.normal(0, 0.005, pilot)
    pv = {a: dict(enumerate(m + shared + rng.normal(0, 0.007, pilot))) for a, m in means.items()}
    sds = [np.std([pv[a][k] - pv[b][k] for k in range(pilot)], ddof=1) for a, b in itertools.combinations(means, 2)]
    n = min(most, stats.stein_seeds(max(sds) * 100, pilot, half, 10**9))
    out = stats.pilot_eliminations(pv, "test_accuracy", 0.01)
    going = len(means) - len(out)
    return len(means) * n, len(means) * pilot + (going if going >= 2 else 0) * (n - pilot), len(out)

scenarios = {
    "policies-like (means of the policies reference, points)": [69.6, 81.6, 65.8, 63.4, 69.0, 69.5, 68.8],
    "spread out (0, -1, -2, ..., -6 points)": [70 - i for i in range(7)],
    "close (all within 0.6 points)": [70, 69.9, 69.8, 69.7, 69.6, 69.5, 69.4],
}
rng = np.random.default_rng(0)
for name, means in scenarios.items():
    results = np.array([jobs({f"a{i}": m / 100 for i, m in enumerate(means)}, rng) for _ in range(200)])
    full, raced, out = results.mean(axis=0)
    print(f"{name}: jobs {full:.1f} -> {raced:.1f} (saved {full - raced:.1f}, {100 * (full - raced) / full:.0f}%), "
          f"{out:.1f} arms eliminated on average (200 simulated pilots)")

rng = np.random.default_rng(1)
hits = 0
for _ in range(2000):
    shared = rng.normal(0, 0.005, 5)
    equal = {f"a{i}": dict(enumerate(0.7 + shared + rng.normal(0, 0.007, 5))) for i in range(7)}
    hits += bool(stats.pilot_eliminations(equal, "test_accuracy", 0.01))
print(f"7 equal arms: a pilot eliminated some arm in {hits} of 2000 simulated pilots ({hits / 2000:.3f})")
