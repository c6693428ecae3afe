"""The answer of a run: per-arm metrics over seeds and, against the baseline, paired differences
with scipy.stats (paired-t interval, exact sign-flip test, Holm across arms, minimum detectable
effect) and a verdict on the primary metric, declared before the run (analysis.primary).

Accuracies are fractions in [0, 1] here; the tables show percentage points. "Points" for a loss
metric are hundredths of the loss, so that analysis.min_effect reads the same way for both.
summary.json says so under "units"; the Python API's pair comparisons are in points.
experiments.report writes the summary as markdown.
"""

import math

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05          # two-sided level of every test and of the 95% intervals
EQUIVALENCE = 0.90    # the interval that must lie inside +-min_effect for "equivalent" (two one-sided tests at 5%)
POWER = 0.80          # for the minimum detectable effect
EXACT_SIGN_FLIPS = 16  # up to 2^16 sign patterns the sign-flip test is exact; beyond, seeded Monte Carlo
# Paired differences closer than this are the same: accuracies are counts / n, whose differences
# round to a last bit that varies from seed to seed (2/997 - 0/997 != 971/997 - 969/997 in floats).
SAME = 1e-9

UNITS = ("accuracies, accuracy gaps, their differences and intervals, min_effect and noise floors: fractions in "
         "[0, 1] (summary.md shows them x 100, in percentage points); losses and their differences as they are "
         "(min_effect and noise floors in hundredths of them); p-values and P(better) are probabilities")

# Per-job metrics, from its history rows and its record. "final" is the last epoch trained;
# "selected" the epoch val chose (train.monitor); test metrics are measured once, at the end.
METRICS = ("test_accuracy", "test_loss", "selected_test_accuracy", "selected_test_loss", "final_val_accuracy",
           "final_val_loss", "best_val_accuracy", "final_accuracy", "generalization_gap", "test_gap",
           "selected_epoch", "seconds_per_epoch")
# Paired differences against the baseline; the primary metric first, the others are secondary.
COMPARED = ("test_accuracy", "test_loss", "selected_test_accuracy", "selected_test_loss", "final_val_accuracy",
            "final_val_loss", "best_val_accuracy", "test_gap")
LABELS = {"test_accuracy": "test accuracy (final weights)", "test_loss": "test loss (final weights)",
          "selected_test_accuracy": "test accuracy (val-selected epoch)",
          "selected_test_loss": "test loss (val-selected epoch)", "final_val_accuracy": "final val accuracy",
          "final_val_loss": "final val loss", "best_val_accuracy": "best val accuracy (selected on val: biased up)",
          "final_accuracy": "final train accuracy", "generalization_gap": "train - val accuracy at the end",
          "test_gap": "train - test accuracy at the end", "selected_epoch": "val-selected epoch",
          "seconds_per_epoch": "s/epoch (median)"}


def lower_is_better(metric):
    return metric.endswith("loss") or metric.endswith("gap")


def is_fraction(metric):
    return "accuracy" in metric or metric.endswith("gap")


def job_metrics(rows, record):
    """The metrics of one job from its history rows (in epoch order) and its record (runs.json)."""
    last = rows[-1]
    metrics = {
        "final_val_accuracy": last["val_accuracy"], "final_val_loss": last["val_loss"],
        "best_val_accuracy": max(row["val_accuracy"] for row in rows), "final_accuracy": last["accuracy"],
        "generalization_gap": last["accuracy"] - last["val_accuracy"],
        # The median: the first epoch also traces and compiles the step.
        "seconds_per_epoch": float(np.median([row["epoch_seconds"] for row in rows])),
        "epochs": last["epoch"],
    }
    for key in ("test_accuracy", "test_loss", "selected_test_accuracy", "selected_test_loss", "selected_epoch"):
        if record.get(key) is not None:
            metrics[key] = record[key]
    if "test_accuracy" in metrics:
        metrics["test_gap"] = last["accuracy"] - metrics["test_accuracy"]
    return metrics


def describe(values):
    """Mean and sample standard deviation (None for one value) of a list of numbers."""
    values = [float(v) for v in values]
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": std, "values": values}


def paired_difference(treated, control, confidence=1 - ALPHA):
    """Mean of treated - control over paired seeds with the paired-t confidence interval (under
    "ci95": the 95% one unless confidence says otherwise) and p-value (scipy.stats.ttest_rel);
    no interval with fewer than two pairs. Where every pair differs by the same amount (within
    SAME: float rounding) the t-test
    has no spread to test against (scipy gives NaN; its limit, p = 0, would overclaim, as equal
    differences come easily from accuracies on a finite test split): the p-value is then the exact
    sign-flip test's, which needs no variance (2 / 2^n; 1 for no difference), so the arm stays in
    Holm's family. The interval is then the point [mean, mean]: no spread, which verdict() never
    takes for equivalence."""
    treated, control = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    differences = treated - control
    mean, n = float(differences.mean()), len(differences)
    if n < 2:
        return {"mean": mean, "ci95": None, "p": None, "n": n}
    if np.ptp(differences) <= SAME:  # every seed gave the same difference: no spread to test against
        return {"mean": mean, "ci95": [mean, mean], "p": sign_flip_p(differences), "n": n}
    test = stats.ttest_rel(treated, control)
    interval = test.confidence_interval(confidence)
    return {"mean": mean, "ci95": [float(interval.low), float(interval.high)], "p": float(test.pvalue), "n": n}


def sign_flip_p(differences, seed=0):
    """Two-sided p-value of the paired sign-flip permutation test (mean difference): exact over
    all 2^n sign patterns up to n = 16, else 100,000 seeded random patterns."""
    differences = np.asarray(differences, dtype=float)
    if len(differences) < 2 or np.all(differences == 0):
        return 1.0
    exact = len(differences) <= EXACT_SIGN_FLIPS
    result = stats.permutation_test((differences,), np.mean, permutation_type="samples", vectorized=True,
                                    n_resamples=np.inf if exact else 100_000, alternative="two-sided",
                                    rng=np.random.default_rng(seed))
    return float(result.pvalue)


def holm(p_values):
    """Holm's step-down adjustment of p-values for the arms compared with one baseline: the i-th
    smallest p is multiplied by (m - i + 1), then made monotone and capped at 1. A few lines of
    arithmetic (no distribution); scipy.stats has Benjamini-Hochberg but not Holm."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def minimum_detectable_effect(sd, n, alpha=ALPHA, power=POWER):
    """The smallest true mean difference a two-sided paired t-test at level alpha detects with
    the given power over n seeds when the paired differences have standard deviation sd (from the
    noncentral t distribution). None with fewer than two seeds or no spread."""
    if n < 2 or not sd:
        return None
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(effect):
        noncentrality = effect * math.sqrt(n) / sd
        # The far tail is negligible where it underflows (scipy gives NaN there for tiny df).
        far = np.nan_to_num(stats.nct.cdf(-critical, df, noncentrality), nan=0.0)
        return stats.nct.sf(critical, df, noncentrality) + far - power
    upper = sd / math.sqrt(n)
    while shortfall(upper) < 0:
        upper *= 2
    return float(optimize.brentq(shortfall, 0.0, upper))


def pairing_efficiency(treated, control):
    """1 - Var(d) / (Var(a) + Var(b)): the share of the variance that pairing the seeds removes
    (0: none, as if the arms were independent; near 1: the seed's noise is shared)."""
    treated, control = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    if len(treated) < 2:
        return None
    total = np.var(treated, ddof=1) + np.var(control, ddof=1)
    if total == 0:
        return None
    return float(1 - np.var(treated - control, ddof=1) / total)


def verdict(metric, difference, interval90, p_holm, min_effect, p_sign_flip=None, sd=None, floor=None, alpha=ALPHA):
    """The verdict of one primary comparison (every threshold at alpha: ALPHA = 0.05, or
    final_alpha() where the pilot eliminated arms):

    better | worse: the Holm-adjusted p < alpha and the exact sign-flip test's own p < alpha (it
      needs no normal errors, but its smallest p over n seeds is 2 / 2^n: 6 seeds at least), by
      the sign that favours the arm;
    equivalent: at least two seeds whose differences spread (sd > 0: seeds that all agree show
      nothing about the noise), the 90% interval inside +-min_effect, and a test split that
      resolves min_effect (floor, one arm's binomial standard error on it, at most min_effect;
      None: not known, not checked);
    inconclusive: anything else (comparison_reason says why).
    difference, interval90, sd, floor and min_effect in the metric's units (fractions for accuracies)."""
    if p_holm is not None and p_holm < alpha and p_sign_flip is not None and p_sign_flip < alpha:
        favourable = difference < 0 if lower_is_better(metric) else difference > 0
        return "better" if favourable else "worse"
    if (interval90 is not None and -min_effect < interval90[0] and interval90[1] < min_effect and sd
            and (floor is None or floor <= min_effect)):
        return "equivalent"
    return "inconclusive"


def smallest_sign_flip_p(seeds):
    """The smallest two-sided p the exact sign-flip test reaches over this many seeds: 2 / 2^n."""
    return 1.0 if seeds < 2 else min(1.0, 2 / 2 ** seeds)


def seeds_for_sign_flip(alpha=ALPHA):
    """The fewest seeds whose exact sign-flip test can reach p < alpha (6 at 0.05)."""
    return next(n for n in range(2, 64) if smallest_sign_flip_p(n) < alpha)


def comparison_reason(entry, min_effect, alpha=ALPHA):
    """Why a comparison is inconclusive, in a few words (None where nothing in particular held it
    back or it is not inconclusive): one seed, no spread, the sign-flip test or Holm's correction
    where the 95% interval excludes 0, or a test split too small for equivalence. No spread is
    said whatever the verdict: its interval has no width and shows nothing."""
    seeds, metric = entry["seeds"], entry["metric"]
    if seeds >= 2 and not entry["sd"]:
        return f"no spread across {seeds} seeds"
    if entry["verdict"] != "inconclusive":
        return None
    if seeds < 2:
        return "one seed"
    reasons = []
    low, high = entry["ci95"]
    if low > 0 or high < 0:  # a difference shows before the correction and the sign-flip check
        if entry["p_sign_flip"] >= alpha:
            reasons.append(f"sign-flip p = {p_text(entry['p_sign_flip'])} at {seeds} seeds")
        if entry["p_holm"] is not None and entry["p_holm"] >= alpha:
            reasons.append(f"Holm-adjusted p = {p_text(entry['p_holm'])}")
    interval90, floor = entry["ci90"], entry.get("noise_floor")
    if (-min_effect < interval90[0] and interval90[1] < min_effect and floor is not None and floor > min_effect):
        reasons.append(f"noise floor {points(metric, floor)} > ±{points(metric, min_effect)}")
    return "; ".join(reasons) or None


def design_warnings(seeds, primary, min_effect, test_count=None, arms=None, most=None):
    """Warnings, for the start of a run, where its design cannot reach a verdict it asks for:
    too few seeds for the sign-flip test (better/worse; with Stein's design, seeds is the pilot
    and most the largest count it may run), a test split too small to measure an accuracy to
    within min_effect (points; equivalent), two arms with the same settings (arms: name ->
    settings). Each says what would do."""
    lines = []
    enough = seeds_for_sign_flip()
    if most is not None and seeds < enough <= most:
        lines.append(f"warning: the two-stage design may stop at its {seeds} pilot seed(s), which cannot show an arm "
                     f"better or worse (the exact sign-flip test's smallest p is {smallest_sign_flip_p(seeds):.3g}); "
                     f"analysis.pilot_seeds = {enough} makes sure it can")
    elif (most if most is not None else seeds) < enough:
        seeds, setting = (seeds, "train.seeds") if most is None else (most, "analysis.max_seeds")
        lines.append(f"warning: {seeds} seed(s) cannot show an arm better or worse: the exact sign-flip test's "
                     f"smallest p over {seeds} seed(s) is {smallest_sign_flip_p(seeds):.3g}, not below {ALPHA:g}; give "
                     f"at least {enough} seeds ({setting})")
    share = (min_effect / 100) ** 2 * (test_count or 0)  # p(1 - p) <= n * min_effect^2: the accuracies resolved
    if primary.endswith("test_accuracy") and test_count and share < 0.25:
        low = (1 - math.sqrt(1 - 4 * share)) / 2
        lines.append(f"warning: on {test_count} test images an accuracy between {low * 100:.0f}% and "
                     f"{(1 - low) * 100:.0f}% has a binomial standard error above min_effect ({min_effect:g} points), "
                     f"so no arm there can be shown equivalent; {math.ceil(0.25 / (min_effect / 100) ** 2)} test "
                     "images (or a larger analysis.min_effect) would do")
    names = list(arms or {})
    for i, arm in enumerate(names):
        for other in names[i + 1:]:
            if arms[arm] == arms[other]:
                lines.append(f"warning: arms {arm} and {other} are the same set (identical settings): they differ by "
                             "seed noise at most, so their comparison can show no difference; change or remove one")
    return lines


def final_alpha(design):
    """The level of the final verdicts: ALPHA, or ALPHA - eliminate_alpha where the two-stage
    design could eliminate arms after its pilot (Bonferroni across the two looks, so that the
    chance of any false better/worse over the whole run stays under ALPHA)."""
    return ALPHA - (design or {}).get("eliminate_alpha", 0.0)


def pilot_eliminations(values, metric, alpha):
    """Racing after the pilot: which arms stop there. values: arm -> {seed: primary value} over the
    pilot (fractions for accuracies). Every pair is compared over the seeds both arms counted by
    the paired t-test (paired_difference's p), Holm across every pair; an arm is shown worse where
    some pair's Holm-adjusted p < alpha and its mean difference is unfavourable. The t-test, not
    the exact sign-flip test that verdicts also need: the sign-flip's smallest p over n seeds is
    2 / 2^n (0.0625 at 5), so it could never reach alpha = 0.01 at a pilot's size.
    Returns arm -> {"seeds": pilot seeds the arm counted, "worse_than": the arm of its smallest
    Holm p, "difference": arm - that arm (metric units), "p_holm": it}; none where every arm would
    stop (failed jobs leaving different seeds to different pairs), so one arm always goes on."""
    arms = list(values)
    tested = []
    for i, arm in enumerate(arms):
        for other in arms[i + 1:]:
            shared = sorted(set(values[arm]) & set(values[other]))
            difference = paired_difference([values[arm][s] for s in shared], [values[other][s] for s in shared])
            if difference["p"] is not None:
                tested.append((arm, other, difference["mean"], difference["p"]))
    adjusted = holm([p for *_, p in tested]) if tested else []
    stopped = {}
    for (arm, other, mean, _), p_holm in sorted(zip(tested, adjusted), key=lambda item: item[1]):
        if p_holm >= alpha or mean == 0:
            continue
        worse, better = (arm, other) if (mean > 0) == lower_is_better(metric) else (other, arm)
        if worse not in stopped:
            stopped[worse] = {"seeds": len(values[worse]), "worse_than": better,
                              "difference": mean if worse == arm else -mean, "p_holm": p_holm}
    return {} if len(stopped) == len(arms) else stopped


def stein_seeds(pilot_sd, pilot_n, half_width, max_seeds, confidence=1 - ALPHA):
    """Stein's two-stage design: the number of seeds that brings the paired-t interval's
    half-width to half_width, given the pilot's standard deviation of the paired differences
    and its t quantile (pilot_n - 1 degrees of freedom); at least pilot_n, at most max_seeds."""
    quantile = stats.t.ppf(0.5 + confidence / 2, pilot_n - 1)
    needed = math.ceil((quantile * pilot_sd / half_width) ** 2) if pilot_sd > 0 else pilot_n
    return max(pilot_n, min(max_seeds, needed))


def stein_interval(differences, pilot_sd, pilot_n, confidence=1 - ALPHA):
    """Stein's interval: mean of all n differences +- t(pilot_n - 1) * pilot_sd / sqrt(n), exact
    coverage for the two-stage design whatever the true variance."""
    differences = np.asarray(differences, dtype=float)
    half = stats.t.ppf(0.5 + confidence / 2, pilot_n - 1) * pilot_sd / math.sqrt(len(differences))
    mean = float(differences.mean())
    return [mean - half, mean + half]


def binomial_noise_floor(accuracy, count, confidence=1 - ALPHA):
    """How precisely one arm's accuracy is measured on a test split of count images, whatever
    the seeds: the binomial standard error and the Clopper-Pearson interval's half-width."""
    if not count:
        return None
    successes = int(round(accuracy * count))
    interval = stats.binomtest(successes, count).proportion_ci(confidence_level=confidence)
    return {"test_images": count, "binomial_se": math.sqrt(accuracy * (1 - accuracy) / count),
            "ci95_half_width": (interval.high - interval.low) / 2}


def baseline_arm(arms, augments, named=""):
    """The arm others are compared with: the one named (analysis.baseline), else the one named
    baseline, else the first that does not augment, else None. augments(settings) tells whether
    an arm's settings augment."""
    if named:
        return named
    if "baseline" in arms:
        return "baseline"
    return next((name for name, settings in arms.items() if not augments(settings)), None)


def compared_pairs(arms, baseline, comparisons="baseline"):
    """The (arm, other) pairs of the primary comparisons, each read as arm - other: every arm
    against the baseline, or every pair (comparisons = "all", or no baseline), the later arm in
    display order against the earlier with the baseline first."""
    if baseline is not None and comparisons == "baseline":
        return [(arm, baseline) for arm in arms if arm != baseline]
    ordered = ([baseline] if baseline is not None else []) + [arm for arm in arms if arm != baseline]
    return [(ordered[j], ordered[i]) for i in range(len(ordered)) for j in range(i + 1, len(ordered))]


def probability_of_improvement(treated, control, metric, confidence=1 - ALPHA):
    """P(treated beats control on a seed drawn at random), over paired seeds (Bouthillier et al.
    2021): (wins + ties / 2) / n. Its interval is exact (Clopper-Pearson, scipy.stats.binomtest):
    the lower end is that of the wins alone and the upper end that of wins and ties together, so
    it holds the tie-splitting estimate's target at the stated level whatever the ties (with
    none, it is Clopper-Pearson's interval). A bootstrap interval would not do at a handful of
    seeds: it takes only n + 1 values and undercovers."""
    differences = np.subtract(np.asarray(treated, dtype=float), np.asarray(control, dtype=float))
    n = len(differences)
    wins = int(np.sum(differences < 0 if lower_is_better(metric) else differences > 0))
    ties = int(np.sum(differences == 0))
    if not n:
        return None
    low = stats.binomtest(wins, n).proportion_ci(confidence_level=confidence).low
    high = stats.binomtest(wins + ties, n).proportion_ci(confidence_level=confidence).high
    return {"estimate": (wins + ties / 2) / n, "ci95": [float(low), float(high)], "wins": wins, "ties": ties,
            "seeds": n}


def _extended(arms, comparisons, sweeps):
    """Whether a run asks for more than a two-arm comparison with the baseline: then the summary
    adds every pair, the probability of improvement, a ranking (three arms or more) and sweeps.
    A two-arm run's summary stays as it was."""
    return len(arms) >= 3 or comparisons == "all" or bool(sweeps)


def summarize(history, arms, epochs, jobs, primary="test_accuracy", min_effect=1.0, baseline=None,
              test_count=None, design=None, comparisons="baseline", sweeps=None):
    """summary.json's content.

    history: rows of history.csv; arms: names in display order; jobs: (arm, seed) -> record of an
    ended job (runs.json), with its status (finished | stopped_early | failed) and test results.
    Finished and early-stopped jobs count; failed ones are listed with their reason. Paired
    differences use the seeds counted in both arms. min_effect is in points (see the module).
    comparisons: "baseline" or "all" (analysis.comparisons; without a baseline every pair is
    compared); sweeps: the experiment's sweeps (name -> {setting, values, arms}); test_count: the
    test split's size, for the noise floor that equivalence needs. Each primary comparison's
    verdict is verdict()'s (what each verdict needs is listed there), with comparison_reason()'s
    reason where it is inconclusive or has no spread. Where the design eliminated arms after its
    pilot (design["eliminated"]), the verdicts run at final_alpha(design) and a stopped arm's
    comparisons use the pilot seeds it ran (the seeds both arms counted, as for a failed job).
    """
    alpha = final_alpha(design)
    by_job = {}
    for row in history:
        by_job.setdefault((row["arm"], row["seed"]), []).append(row)
    counted = {key: job_metrics(sorted(by_job[key], key=lambda r: r["epoch"]), record)
               for key, record in jobs.items() if record["status"] != "failed" and key in by_job}
    extended = _extended(arms, comparisons, sweeps) or (baseline is None and len(arms) >= 2)
    every_pair = comparisons == "all" or baseline is None
    family = compared_pairs(arms, baseline, comparisons)
    correction = (f"Holm across every pair of arms ({len(family)} comparisons)" if every_pair
                  else "Holm across the arms compared with the baseline")
    summary = {"epochs": epochs, "baseline": baseline, "arms": {}, "vs_baseline": {},
               "primary": {"metric": primary, "label": LABELS[primary], "min_effect": min_effect / 100,
                           "confidence": 1 - ALPHA, "correction": correction},
               "design": design, "units": UNITS}
    if alpha != ALPHA:  # the verdicts' level where the pilot could eliminate arms (else ALPHA, said nowhere else)
        summary["primary"]["alpha"] = alpha
    for arm in arms:
        seeds = sorted(seed for (name, seed) in counted if name == arm)
        per_arm = {"seeds": seeds}
        for metric in METRICS:
            values = [counted[arm, seed][metric] for seed in seeds if metric in counted[arm, seed]]
            if values and len(values) == len(seeds):
                per_arm[metric] = describe(values)
        per_arm["stopped_early"] = sorted(seed for (name, seed), record in jobs.items()
                                          if name == arm and record["status"] == "stopped_early")
        per_arm["failed"] = [{"seed": seed, "reason": record["reason"]}
                             for (name, seed), record in sorted(jobs.items())
                             if name == arm and record["status"] == "failed"]
        summary["arms"][arm] = per_arm
    if baseline is not None and summary["arms"][baseline].get(primary):
        base_primary = summary["arms"][baseline][primary]["mean"]
        if primary.endswith("test_accuracy"):
            summary["primary"]["noise_floor"] = binomial_noise_floor(base_primary, test_count)
    compared = [arm for arm in arms if baseline is not None and arm != baseline]
    for arm in compared:
        shared = _shared(counted, arm, baseline)
        if not shared:
            continue
        entry = {"seeds": shared}
        for metric in COMPARED:
            if all(metric in counted[a, s] for a in (arm, baseline) for s in shared):
                entry[metric] = paired_difference([counted[arm, s][metric] for s in shared],
                                                  [counted[baseline, s][metric] for s in shared])
        if primary in entry:
            entry["primary"] = _comparison(counted, arm, baseline, shared, primary, design, extended, baseline,
                                           test_count)
        summary["vs_baseline"][arm] = entry
    if not extended:
        _adjust([entry["primary"] for entry in summary["vs_baseline"].values() if "primary" in entry], min_effect / 100,
                alpha)
        return summary
    # Every pair, with Holm across all of them: the ranking and the sweeps' best values are read
    # from this family whatever analysis.comparisons says, because the best arm is picked by the
    # same seeds and only a correction over every pair covers whichever arm comes out on top.
    pairs = []
    for arm, other in compared_pairs(arms, baseline, "all"):
        shared = _shared(counted, arm, other)
        if shared and all(primary in counted[a, s] for a in (arm, other) for s in shared):
            pairs.append({"arm": arm, "other": other, "seeds": shared,
                          "primary": _comparison(counted, arm, other, shared, primary, design, True, baseline,
                                                                 test_count)})
    _adjust([pair["primary"] for pair in pairs], min_effect / 100, alpha)
    vs_baseline = [entry["primary"] for entry in summary["vs_baseline"].values() if "primary" in entry]
    if every_pair:
        by_pair = {(pair["arm"], pair["other"]): pair["primary"] for pair in pairs}
        for arm, entry in summary["vs_baseline"].items():
            if "primary" in entry:
                entry["primary"].update({key: by_pair[arm, baseline][key] for key in ("p_holm", "verdict", "reason")})
    else:
        _adjust(vs_baseline, min_effect / 100, alpha)
    summary["comparisons"] = "all" if every_pair else "baseline"
    summary["pairs"] = pairs
    # A pair shows one verdict wherever it appears: the ranking and the sweeps read a comparison
    # with the baseline from the baseline's family above, every other pair from every pair's.
    shown = pairs if every_pair else [
        {**pair, "primary": summary["vs_baseline"][pair["arm"]]["primary"]} if pair["other"] == baseline else pair
        for pair in pairs]
    ranking = _ranking(summary, shown, primary, arms)
    if ranking:
        summary["ranking"] = ranking
    if sweeps:
        summary["sweeps"] = {name: _sweep_summary(summary, shown, primary, sweep) for name, sweep in sweeps.items()}
    return summary


def _shared(counted, arm, other):
    return sorted(seed for (name, seed) in counted if name == arm and (other, seed) in counted)


def _comparison(counted, arm, other, seeds, primary, design, with_improvement, baseline, test_count=None):
    """The primary comparison arm - other over the paired seeds, before Holm's adjustment
    (_adjust fills p_holm, the verdict and the reason). Its noise floor is one arm's binomial
    standard error on the test split at the two arms' mean accuracy (test accuracies only)."""
    treated = [counted[arm, s][primary] for s in seeds]
    control = [counted[other, s][primary] for s in seeds]
    differences = np.subtract(treated, control)
    difference = paired_difference(treated, control)
    sd = (None if len(seeds) < 2 else 0.0 if np.ptp(differences) <= SAME else float(np.std(differences, ddof=1)))
    entry = {
        "metric": primary, "mean": difference["mean"], "ci95": difference["ci95"],
        "ci90": paired_difference(treated, control, confidence=EQUIVALENCE)["ci95"], "p": difference["p"],
        "p_holm": None, "p_sign_flip": sign_flip_p(differences), "verdict": None, "seeds": len(seeds), "sd": sd,
        "mde": minimum_detectable_effect(sd, len(seeds)), "pairing_efficiency": pairing_efficiency(treated, control)}
    if primary.endswith("test_accuracy") and test_count:
        entry["noise_floor"] = binomial_noise_floor(float(np.mean(treated + control)), test_count)["binomial_se"]
    # The two-stage design keys each pilot sd by the arm (against the baseline) or by "arm - other".
    pilot_sd = (design or {}).get("pilot_sd", {})
    sd_of_pilot = pilot_sd.get(f"{arm} - {other}") or (pilot_sd.get(arm) if other == baseline else None)
    if sd_of_pilot:
        entry["stein_ci95"] = stein_interval(differences, sd_of_pilot,
                                             design.get("pilot_pairs", len(design["pilot_seeds"])))
    if with_improvement:
        entry["prob_improvement"] = probability_of_improvement(treated, control, primary)
    return entry


def _adjust(entries, min_effect, alpha=ALPHA):
    """Holm's adjustment across a family of primary comparisons, and each one's verdict at alpha."""
    testable = [entry for entry in entries if entry["p"] is not None]
    for entry, p_holm in zip(testable, holm([entry["p"] for entry in testable]) if testable else []):
        entry["p_holm"] = p_holm
    for entry in entries:
        entry["verdict"] = verdict(entry["metric"], entry["mean"], entry["ci90"], entry["p_holm"], min_effect,
                                   entry["p_sign_flip"], entry["sd"], entry.get("noise_floor"), alpha)
        entry["reason"] = comparison_reason(entry, min_effect, alpha)


_OPPOSITE = {"better": "worse", "worse": "better", "equivalent": "equivalent", "inconclusive": "inconclusive"}


def _against(pairs, arm, other):
    """The comparison arm - other from the pairs, turned around where it is stored as other - arm."""
    for pair in pairs:
        if (pair["arm"], pair["other"]) == (arm, other):
            return pair["primary"]
        if (pair["arm"], pair["other"]) == (other, arm):
            entry = pair["primary"]
            improvement = entry["prob_improvement"]
            return {**entry, "mean": -entry["mean"],
                    "ci95": None if entry["ci95"] is None else [-entry["ci95"][1], -entry["ci95"][0]],
                    "ci90": None if entry["ci90"] is None else [-entry["ci90"][1], -entry["ci90"][0]],
                    "verdict": _OPPOSITE[entry["verdict"]],
                    "prob_improvement": {**improvement, "estimate": 1 - improvement["estimate"],
                                         "ci95": [1 - improvement["ci95"][1], 1 - improvement["ci95"][0]],
                                         "wins": improvement["seeds"] - improvement["wins"] - improvement["ties"]}}
    return None


def _best_first(summary, primary, arms):
    """(the arms with a primary metric, best mean first; the seeds the means are over; each arm's
    describe() over them): the seeds every one of them counted, so that a failed job does not
    move an arm up or down (each arm's own seeds, and None, where no seed is common to all).
    Arms the pilot eliminated (eliminated()) come last, by their mean over the seeds they ran:
    the common seeds are those of the arms that went on."""
    measured = [arm for arm in arms if summary["arms"][arm].get(primary)]
    if not measured:
        return [], None, {}
    by_seed = {arm: dict(zip(summary["arms"][arm]["seeds"], summary["arms"][arm][primary]["values"]))
               for arm in measured}
    stopped = eliminated(summary)
    going_on = [arm for arm in measured if arm not in stopped] or measured
    common = sorted(set.intersection(*(set(by_seed[arm]) for arm in going_on)))
    described = {arm: describe([by_seed[arm][seed] for seed in common]
                               if common and arm in going_on else list(by_seed[arm].values()))
                 for arm in measured}
    order = sorted(measured, key=lambda arm: (arm not in going_on, described[arm]["mean"] * (
        1 if lower_is_better(primary) else -1)))
    return order, common or None, described


def eliminated(summary):
    """arm -> how the pilot stopped it (design["eliminated"]), {} where none stopped."""
    return (summary.get("design") or {}).get("eliminated") or {}


def _evidence(entry):
    keys = ("mean", "ci95", "p_holm", "verdict", "reason", "seeds", "prob_improvement")
    return None if entry is None else {key: entry.get(key) for key in keys}


def _shown_worse(summary, pairs, arms):
    """The arms that some verdict in the summary (from every pair or against the baseline) shows
    worse than another of the arms."""
    verdicts = [(pair["arm"], pair["other"], pair["primary"]["verdict"]) for pair in pairs]
    verdicts += [(arm, summary["baseline"], entry["primary"]["verdict"])
                 for arm, entry in summary["vs_baseline"].items() if "primary" in entry]
    return {(other if verdict_ == "better" else arm) for arm, other, verdict_ in verdicts
            if verdict_ in ("better", "worse") and arm in arms and other in arms}


def _picks(summary, pairs, order):
    """(the arms that could be picked: none is shown worse than any arm by any verdict in the
    summary, best mean first; the best: the one pick, else None, no separable best)."""
    worse = _shown_worse(summary, pairs, order) | set(eliminated(summary))
    picks = [arm for arm in order if arm not in worse]
    return picks, (picks[0] if len(picks) == 1 else None)


def _ranking(summary, pairs, primary, arms):
    """Arms by the primary metric's mean over the seeds every one of them counted (order, seeds;
    means: each arm's describe() over those seeds),
    the arms that could be picked (picks, also as not_worse: no verdict in the summary, from every
    pair or against the baseline, shows them worse than any arm), the best (the only pick, else
    None: no separable best), the leader (the first pick by mean, or the first arm where every
    arm is shown worse than another) and each arm's comparison with the leader (vs_best, from the
    every-pair family; eliminated, where the pilot stopped arms: those arms, last in the order, their
    means and comparisons over the pilot seeds they ran). None with fewer than three measured arms."""
    order, seeds, described = _best_first(summary, primary, arms)
    if len(order) < 3:
        return None
    picks, best = _picks(summary, pairs, order)
    leader = picks[0] if picks else order[0]
    evidence = {arm: _evidence(_against(pairs, arm, leader)) for arm in order if arm != leader}
    ranking = {"order": order, "seeds": seeds, "means": described, "best": best, "leader": leader, "picks": picks,
               "not_worse": picks, "vs_best": evidence}
    if eliminated(summary):
        ranking["eliminated"] = [arm for arm in order if arm in eliminated(summary)]
    return ranking


def _sweep_summary(summary, pairs, primary, sweep):
    """A sweep's values that could be picked (picks: no verdict in the summary shows the arm worse
    than another arm of the sweep; best mean, over the seeds all its arms counted, first), its
    best value (the only pick, else None: no separable best; not_worse: the other picks), the
    leader (the first pick), and each value's difference from the baseline (from the arm's own
    mean and 95% t interval where there is no baseline)."""
    values = dict(zip(sweep["arms"], sweep["values"]))
    order, seeds, _ = _best_first(summary, primary, sweep["arms"])
    result = {"setting": sweep["setting"], "values": sweep["values"], "arms": sweep["arms"], "best": None,
              "best_arm": None, "leader": None, "picks": [], "not_worse": [], "seeds": seeds, "points": []}
    if not order:
        return result
    picks, best = _picks(summary, pairs, order)
    leader = picks[0] if picks else order[0]
    result.update(best=None if best is None else values[best], best_arm=best, leader=values[leader],
                  picks=[values[arm] for arm in picks], not_worse=[values[arm] for arm in picks if arm != best])
    baseline = summary["baseline"]
    for arm in sweep["arms"]:
        entry = summary["vs_baseline"].get(arm, {}).get("primary")
        if entry is not None:
            point = {"mean": entry["mean"], "ci95": entry["ci95"], "against": baseline, "verdict": entry["verdict"],
                     "reason": entry.get("reason")}
        elif summary["arms"][arm].get(primary):
            measured = summary["arms"][arm][primary]
            interval = (None if measured["std"] is None else list(stats.t.interval(
                1 - ALPHA, len(measured["values"]) - 1, loc=measured["mean"],
                scale=measured["std"] / math.sqrt(len(measured["values"])))))
            point = {"mean": measured["mean"], "ci95": interval, "against": None, "verdict": None}
        else:
            continue
        result["points"].append({"value": values[arm], "arm": arm, **point})
    return result


def pair_comparisons(summary):
    """The primary comparisons of a summary: {(arm, other): {verdict, reason, difference, ci95,
    p_holm, seeds}} read as arm - other, from every pair where the summary has them, else
    against the baseline. difference and ci95 in points (x 100, as analysis.min_effect)."""
    if "pairs" in summary:
        entries = [((pair["arm"], pair["other"]), pair["primary"]) for pair in summary["pairs"]]
    else:
        entries = [((arm, summary["baseline"]), entry["primary"]) for arm, entry in summary["vs_baseline"].items()
                   if "primary" in entry]
    return {key: {"verdict": entry["verdict"], "reason": entry.get("reason"), "difference": entry["mean"] * 100,
                  "ci95": None if entry["ci95"] is None else [value * 100 for value in entry["ci95"]],
                  "p_holm": entry["p_holm"], "seeds": entry["seeds"]} for key, entry in entries}


def ranked(summary):
    """(the arms best first by the primary metric over the seeds they all counted; the best arm,
    or None where the top cannot be separated): the ranking's where the summary has one (three
    arms or more), else that of the two arms, the best the one the comparison shows better."""
    if summary.get("ranking"):
        return summary["ranking"]["order"], summary["ranking"]["best"]
    order = _best_first(summary, summary["primary"]["metric"], list(summary["arms"]))[0]
    verdicts = [(arm, other, entry["verdict"]) for (arm, other), entry in pair_comparisons(summary).items()]
    if len(order) == 2 and len(verdicts) == 1 and verdicts[0][2] in ("better", "worse"):
        arm, other, verdict_ = verdicts[0]
        return order, arm if verdict_ == "better" else other
    return order, None


def p_text(value):
    """A p-value as the tables show it."""
    if value is None:
        return "n/a"
    return f"{value:.2g}" if value >= 0.001 else "<0.001"


def points(metric, value, signed=False, digits=1):
    """A metric or difference as shown in the tables: accuracies in percentage points, losses
    as they are."""
    if value is None:
        return "n/a"
    if is_fraction(metric):
        return f"{value * 100:{'+' if signed else ''}.{digits}f}"
    return f"{value:{'+' if signed else ''}.{digits + 2}f}"
