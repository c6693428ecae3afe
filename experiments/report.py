"""summary.md: a run's answer (experiments.stats.summarize) as markdown: the plan, the verdicts
against the baseline, every pair, the ranking, the sweeps and the per-arm tables."""

from augcompare.experiments.stats import (
    ALPHA,
    COMPARED,
    EXACT_SIGN_FLIPS,
    LABELS,
    eliminated,
    is_fraction,
    p_text,
    points,
    seeds_for_sign_flip,
    smallest_sign_flip_p,
)


def _seeds_text(seeds):
    return ", ".join(str(seed) for seed in seeds)


def _ranking_lines(summary):
    """The Ranking section of summary.md."""
    metric, ranking = summary["primary"]["metric"], summary["ranking"]
    leader, family = ranking["leader"], len(summary["pairs"])
    seeds = ranking.get("seeds")
    every = sorted({seed for arm in ranking["order"] for seed in summary["arms"][arm]["seeds"]})
    over = (f"over seeds {_seeds_text(seeds)}, the seeds every ranked arm counted (seed(s) "
            f"{_seeds_text(sorted(set(every) - set(seeds)))} left out: some arm has no result for them)"
            if seeds and seeds != every else "over the seeds every ranked arm counted" if seeds
            else "over each arm's own seeds (no seed is common to every arm)")
    lines = ["## Ranking", "",
             f"Arms by mean {LABELS[metric]} {over}, best first. The evidence is each arm's comparison with `{leader}` "
             f"from every pair of arms, Holm-adjusted across all {family} pairs: the best arm is picked by the same "
             "seeds, and only a correction over every pair covers whichever arm comes out on top"
             + (f" (a comparison with `{summary['baseline']}` is the one above, Holm-adjusted across the baseline's "
                "comparisons, so that a pair shows one verdict)" if summary["comparisons"] == "baseline" else "")
             + ". An arm that any verdict in this summary shows worse than another arm is never offered as a pick."
             + (" Arms the pilot eliminated come last, marked, with their means and comparisons over the pilot seeds "
                "they ran; the seeds above are those of the arms that went on." if ranking.get("eliminated") else ""),
             "",
             f"| rank | arm | {LABELS[metric]} | difference from {leader} | 95% CI | P(beats {leader}) [95% CI] | "
             f"p (Holm) | verdict against {leader} |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    stopped = eliminated(summary)
    for rank, arm in enumerate(ranking["order"], 1):
        mean = _mean_std(metric, ranking["means"][arm])
        evidence = ranking["vs_best"].get(arm)
        if arm in stopped:  # ranked last: its mean and comparisons are over the pilot seeds it ran
            arm = f"{arm} (eliminated after {stopped[arm]['seeds']} pilot seeds)"
        if arm == leader:
            lines.append(f"| {rank} | **{arm}** | {mean} | {'best' if ranking['best'] else 'leader'} | | | | |")
        elif evidence is None:
            lines.append(f"| {rank} | {arm} | {mean} | no seeds in common | | | | |")
        else:
            lines.append(f"| {rank} | {arm} | {mean} | {points(metric, evidence['mean'], True)} | "
                         f"{_interval(metric, evidence['ci95'])} | {_improvement(evidence['prob_improvement'])} | "
                         f"{p_text(evidence['p_holm'])} | {_verdict_cell(evidence)} |")
    most = max((pair["primary"]["seeds"] for pair in summary["pairs"]), default=0)
    if ranking["best"]:
        direct = all(entry and entry["verdict"] == "worse" for entry in ranking["vs_best"].values())
        last = (f"**Best: {ranking['best']}.** Every other arm is shown worse than it"
                + ("." if direct else " or than another arm."))
    elif most < seeds_for_sign_flip():
        last = (f"**No separable best.** At {most} seed(s) no comparison can be shown better or worse (the exact "
                f"sign-flip test's smallest p is {smallest_sign_flip_p(most):.3g}); {seeds_for_sign_flip()} seeds can. "
                "The order above is by mean alone.")
    elif ranking["picks"]:
        last = (f"**No separable best.** {', '.join(ranking['picks'])} could equally be picked on this evidence "
                "(none is shown worse than any arm).")
    else:
        last = "**No separable best.** Every arm is shown worse than another (their comparisons use different seeds)."
    return lines + ["", last]


def _verdict_cell(entry):
    """A verdict and, where it is inconclusive for a reason worth naming, the reason."""
    return entry["verdict"] + (f" ({entry['reason']})" if entry.get("reason") else "")


def _value(value):
    return f"{value:g}"


def _sweep_lines(summary):
    """The Sweeps section of summary.md: per sweep, the best value and those not shown worse."""
    metric = summary["primary"]["metric"]
    lines = ["## Sweeps", "",
             "Each sweep's arms by value: the values that could be picked (no verdict shows them worse than another "
             f"value; from every pair, Holm-adjusted as in the ranking), best mean {LABELS[metric]} first, and the "
             "best value where only one can; the differences are from the baseline (strength.png draws them).", ""]
    for name, sweep in summary["sweeps"].items():
        values = ", ".join(_value(value) for value in sweep["values"])
        if sweep.get("leader") is None:
            lines.append(f"- **{name}** ({sweep['setting']} = {values}): no value has finished yet.")
            continue
        if sweep["best"] is not None:
            lines.append(f"- **{name}** ({sweep['setting']} = {values}): best {sweep['setting']} = "
                         f"**{_value(sweep['best'])}** (`{sweep['best_arm']}`); every other value is shown worse than "
                         "it or than another value.")
        else:
            picks = ", ".join(_value(value) for value in sweep["picks"])
            lines.append(f"- **{name}** ({sweep['setting']} = {values}): no separable best; "
                         + (f"{sweep['setting']} = {picks} could equally be picked." if picks
                            else "every value is shown worse than another."))
        for point in sweep["points"]:
            against = (f"against {point['against']}, {_verdict_cell(point)}" if point["against"]
                       else "the arm's own mean (no baseline)")
            lines.append(f"  - {sweep['setting']} = {_value(point['value'])}: "
                         f"{points(metric, point['mean'], bool(point['against']))} "
                         f"{_interval(metric, point['ci95'])} {against}")
    return lines


def _interval(metric, interval):
    if interval is None:
        return "n/a (one seed)"
    return f"[{points(metric, interval[0], True)}, {points(metric, interval[1], True)}]"


def _mean_std(metric, stat):
    if stat is None:
        return "n/a"
    text = points(metric, stat["mean"]) if metric != "selected_epoch" else f"{stat['mean']:.1f}"
    if stat.get("std") is not None:
        text += " ± " + (points(metric, stat["std"]) if metric != "selected_epoch" else f"{stat['std']:.1f}")
    return text


def _p_equals(value):
    """'p = 0.03' or 'p < 0.001', for sentences."""
    text = p_text(value)
    return f"p < {text[1:]}" if text.startswith("<") else f"p = {text}"


def verdict_sentence(arm, baseline, entry, min_effect):
    """The primary comparison of one arm in words."""
    metric, mean, verdict_ = entry["metric"], entry["mean"], entry["verdict"]
    unit = "points" if is_fraction(metric) else ""
    size = f"{points(metric, abs(mean))} {unit}".strip()
    interval = _interval(metric, entry["ci95"])
    threshold = f"{points(metric, min_effect)} {unit}".strip()
    if verdict_ in ("better", "worse"):
        direction = "higher" if mean > 0 else "lower"
        small = (entry["ci95"] and max(abs(entry["ci95"][0]), abs(entry["ci95"][1])) < min_effect)
        return (f"**{arm}: {verdict_}** than {baseline}: {LABELS[metric]} {size} {direction}, 95% CI {interval}, "
                f"Holm-adjusted {_p_equals(entry['p_holm'])}" + (f" (but by less than the smallest effect of interest, "
                                                            f"{threshold})" if small else "")
                + (f" ({entry['reason']}: every seed gave the same difference, so the interval has no width; the "
                   "exact sign-flip test decides)" if entry.get("reason") else "") + ".")
    if verdict_ == "equivalent":
        return (f"**{arm}: equivalent** to {baseline}: the 90% interval {_interval(metric, entry['ci90'])} lies inside "
                f"±{threshold}, the smallest effect of interest.")
    mde = entry.get("mde")
    more = (f" At {entry['seeds']} seeds the smallest difference this run detects with 80% power is "
            f"{points(metric, mde)} {unit}".rstrip() + "." if mde is not None else "")
    reason = entry.get("reason")
    if reason and reason.startswith("no spread"):
        reason += (": every seed gave the same difference, which says nothing about how much it varies, so "
                   "neither a difference nor equivalence can be shown")
    return (f"**{arm}: inconclusive** against {baseline}: difference {points(metric, mean, True)} {unit}, 95% CI "
            f"{interval}, Holm-adjusted {_p_equals(entry['p_holm'])}; neither a difference nor equivalence within "
            f"±{threshold} is shown" + (f" ({reason})" if reason else "") + f".{more}")


def _improvement(value):
    """'0.83 [0.36, 1.00]': a probability of improvement and its 95% interval."""
    if value is None:
        return "n/a"
    return f"{value['estimate']:.2f} [{value['ci95'][0]:.2f}, {value['ci95'][1]:.2f}]"


def _efficiency(entry):
    return "n/a" if entry["pairing_efficiency"] is None else f"{entry['pairing_efficiency']:.2f}"


def _elimination_lines(summary):
    """What the pilot's racing stopped (design["eliminated"]), each arm with its pilot comparison."""
    design, metric = summary["design"], summary["primary"]["metric"]
    if "eliminate_alpha" not in design:
        return []
    stopped = design.get("eliminated") or {}
    head = (f"Elimination after the pilot: every pair compared by the paired t-test, Holm across every pair, at "
            f"{design['eliminate_alpha']:g} (the exact sign-flip test cannot reach that level at a pilot's size); "
            f"an arm shown worse than another trained no more seeds, and its comparisons here use the pilot seeds it "
            f"ran. The seed count came from every pair's pilot spread, whichever arms stopped.")
    if not stopped:
        return ["", head + " No arm was eliminated."]
    lines = ["", head, "", "| eliminated arm | after seeds | worse than | pilot difference | p (Holm, pilot) |",
             "| --- | --- | --- | --- | --- |"]
    for arm, stop in stopped.items():
        lines.append(f"| {arm} | {stop['seeds']} | {stop['worse_than']} | {points(metric, stop['difference'], True)} "
                     f"| {p_text(stop['p_holm'])} |")
    return lines


def to_markdown(summary, name):
    """summary.md: the primary comparison first, with the verdict in words, then (three arms or
    more) the ranking and the sweeps, then the arms and the secondary paired differences."""
    primary = summary["primary"]
    metric, baseline = primary["metric"], summary["baseline"]
    extended = "pairs" in summary
    lines = [f"# {name}: summary", ""]
    compared = {arm: entry["primary"] for arm, entry in summary["vs_baseline"].items() if "primary" in entry}
    lines += [f"## Primary metric: {LABELS[metric]}", ""]
    unit = " points" if is_fraction(metric) else ""
    floor = primary.get("noise_floor")
    floor_text = (f" Noise floor: on {floor['test_images']} test images one arm's accuracy has a binomial standard "
                  f"error of {floor['binomial_se'] * 100:.1f} points." if floor else "")
    alpha = primary.get("alpha", ALPHA)
    rule_text = (f" A verdict of better or worse needs Holm-adjusted p < {alpha:g} and sign-flip p < {alpha:g} (at "
                 f"least {seeds_for_sign_flip(alpha)} seeds"
                 + (f"; {ALPHA:g} - {ALPHA - alpha:g}, the pilot's elimination level: Bonferroni across the two looks "
                    f"keeps the chance of any false better/worse in the run under {ALPHA:g}; the intervals stay 95%"
                    if alpha < ALPHA else "") + "); equivalent needs the 90% interval inside ±min_effect, "
                 "differences that vary across seeds, and a noise floor within min_effect.")
    improvement_text = (" P(better) is the probability of improvement: the chance that the arm beats the other on a "
                        "seed drawn at random (ties count half), with its exact 95% interval.")
    if extended and summary["comparisons"] == "all" and summary["pairs"]:
        pairs = summary["pairs"]
        lines += [f"Declared before the run (analysis.primary). Every pair of arms over the seeds both ran: arm - other, "
                  f"mean, 95% paired-t interval, p-values Holm-adjusted across all {len(pairs)} pair(s) (every pair is "
                  f"one more chance of a false finding, so the family is larger and each correction stricter than "
                  f"against one baseline), a sign-flip permutation test as a check (exact up to {EXACT_SIGN_FLIPS} "
                  f"seeds); smallest effect of interest ±{points(metric, primary['min_effect'])}{unit}."
                  + improvement_text + floor_text + rule_text, ""]
        lines += ["| arm | other | seeds | difference | 95% CI | P(better) [95% CI] | p (Holm) | p (sign-flip) | verdict "
                  "| detectable (80% power) | pairing efficiency |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for pair in pairs:
            entry = pair["primary"]
            lines.append(f"| {pair['arm']} | {pair['other']} | {entry['seeds']} | {points(metric, entry['mean'], True)} "
                         f"| {_interval(metric, entry['ci95'])} | {_improvement(entry['prob_improvement'])} | "
                         f"{p_text(entry['p_holm'])} | {p_text(entry['p_sign_flip'])} | {_verdict_cell(entry)} | "
                         f"{points(metric, entry['mde'])} | {_efficiency(entry)} |")
        if compared:
            lines.append("")
        lines += [verdict_sentence(arm, baseline, entry, primary["min_effect"]) for arm, entry in compared.items()]
    elif compared:
        lines += [f"Declared before the run (analysis.primary). Arm - `{baseline}` over paired seeds: mean, 95% "
                  f"paired-t interval, p-values Holm-adjusted across the {len(compared)} arm(s) compared with "
                  f"`{baseline}`, a sign-flip permutation test as a check (exact up to {EXACT_SIGN_FLIPS} seeds); "
                  f"smallest effect of interest ±{points(metric, primary['min_effect'])}"
                  + (" points" if is_fraction(metric) else "") + "."
                  + (improvement_text if extended else "") + floor_text + rule_text, ""]
        if extended:
            lines += ["| arm | seeds | difference | 95% CI | P(better) [95% CI] | p (Holm) | p (sign-flip) | verdict | "
                      "detectable (80% power) | pairing efficiency |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        else:
            lines += ["| arm | seeds | difference | 95% CI | p (Holm) | p (sign-flip) | verdict | detectable (80% power) "
                      "| pairing efficiency |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for arm, entry in compared.items():
            improvement = f" {_improvement(entry['prob_improvement'])} |" if extended else ""
            lines.append(f"| {arm} | {entry['seeds']} | {points(metric, entry['mean'], True)} | "
                         f"{_interval(metric, entry['ci95'])} |{improvement} {p_text(entry['p_holm'])} | "
                         f"{p_text(entry['p_sign_flip'])} | {_verdict_cell(entry)} | {points(metric, entry['mde'])} | "
                         f"{_efficiency(entry)} |")
        lines.append("")
        lines += [verdict_sentence(arm, baseline, entry, primary["min_effect"]) for arm, entry in compared.items()]
    elif len(summary["arms"]) < 2:
        lines.append("One arm: nothing is compared; add another arm.")
    elif baseline is None:
        lines.append("No arm has seeds in common with another yet.")
    else:
        lines.append("No arm has seeds in common with the baseline yet.")
    design = summary.get("design")
    if design and (compared or extended):
        lines += ["", f"Seeds chosen by Stein's two-stage design: a pilot of {len(design['pilot_seeds'])} seeds "
                  f"gave a paired sd of {design['planning_sd'] * 100:.2f} points (the largest over the "
                  f"{'pairs' if summary.get('comparisons') == 'all' else 'arms'}); "
                  f"{design['seeds_needed']} seeds reach a 95% half-width of {design['target_half_width']:g} "
                  f"points" + (f", capped at {len(design['seeds'])} (analysis.max_seeds)" if design["capped"]
                               else f"; {len(design['seeds'])} were run") + "."]
        lines += _elimination_lines(summary)
    if summary.get("ranking"):
        lines += [""] + _ranking_lines(summary)
    if summary.get("sweeps"):
        lines += [""] + _sweep_lines(summary)
    secondary = [m for m in ("test_accuracy", "selected_test_accuracy", "final_val_accuracy", "final_accuracy",
                             "test_gap", "selected_epoch", "seconds_per_epoch") if m != metric]
    lines += ["", "## Arms (secondary)", "",
              f"Mean ± std over seeds; accuracies in %, at the last of {summary['epochs']} epochs (or the epoch a job "
              "stopped early) unless 'val-selected'.", "",
              "| arm | seeds | " + " | ".join([LABELS[metric] + " (primary)"] + [LABELS[m] for m in secondary]) + " |",
              "| --- " * (len(secondary) + 3) + "|"]
    for arm, per_arm in summary["arms"].items():
        if not per_arm["seeds"]:
            lines.append(f"| {arm} | 0 | not finished |" + " |" * len(secondary))
            continue
        cells = [_mean_std(m, per_arm.get(m)) for m in [metric] + secondary]
        lines.append(f"| {arm} | {len(per_arm['seeds'])} | " + " | ".join(cells) + " |")
    others = [m for m in COMPARED if m != metric]
    if summary["vs_baseline"]:
        lines += ["", "## Paired differences (secondary)", "",
                  f"Arm - `{baseline}`, mean [95% paired-t interval], not corrected across arms; accuracy in "
                  "percentage points.", "", "| arm | seeds | " + " | ".join(LABELS[m] for m in others) + " |",
                  "| --- " * (len(others) + 2) + "|"]
        for arm, entry in summary["vs_baseline"].items():
            cells = [f"{points(m, entry[m]['mean'], True)} {_interval(m, entry[m]['ci95'])}" if m in entry else "n/a"
                     for m in others]
            lines.append(f"| {arm} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
    notes = [f"- {arm} seed {failure['seed']} failed: {failure['reason']}"
             for arm, per_arm in summary["arms"].items() for failure in per_arm["failed"]]
    notes += [f"- {arm} seed {seed} stopped early (train.early_stopping)"
              for arm, per_arm in summary["arms"].items() for seed in per_arm["stopped_early"]]
    if notes:
        lines += ["", "Jobs that did not train every epoch (failed ones are left out of the tables):", ""] + notes
    return "\n".join(lines) + "\n"
