"""The drift monitor: do the latest logged predictions still look like the model's reference?

    python -m going_modular.deploy.monitor --log predictions.jsonl [--window 200] [--report drift.html]

Compares the latest `window` predictions of the log (those of the reference's model) with the
reference (`monitor.reference`: the bundle's own, or --reference FILE), one check per line:

    unknown rate    Fisher's exact test, one-sided: more images flagged unknown than the reference
    label mix       chi-square test of the predicted label counts (window vs reference)
    confidence      two-sample Kolmogorov-Smirnov test of the top probability
    ood score       Mann-Whitney U test, one-sided: higher open-set scores than the reference (a
                    location test: more power than KS for the shift that matters, a rise)
    brightness      KS test of the mean luma of the model's input
    contrast        KS test of its standard deviation
    aspect ratio    KS test of width / height as sent (a rotated or cropped camera feed)
    latency         median latency over that of the log's first predictions (not a test: a ratio)

Each statistical check alarms below alpha / (number of checks) (Bonferroni): with the default
alpha 0.05, a window of in-distribution traffic raises a false alarm in at most ~5% of windows,
whatever the checks' correlation. The tests allow for the reference's own sampling noise
(two-sample tests, the reference's real size). Exit status: 0 nothing drifted, 1 something
drifted, 2 the check could not run (no log, empty log, another model's log...).

NumPy and the standard library only, like the rest of the serving wing: the p-values are the
textbook ones (tests/test_monitor.py checks them against SciPy).
"""
from __future__ import annotations

import argparse
import html
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from going_modular.deploy import cli
from going_modular.deploy.bundle import model_id as bundle_model_id
from going_modular.deploy.errors import UserError
from going_modular.deploy.monitor.log import read_log
from going_modular.deploy.monitor.reference import REFERENCE_FORMAT, REFERENCE_KEY, SAMPLED, aspect

DEFAULT_WINDOW = 200
DEFAULT_ALPHA = 0.05
LATENCY_FACTOR = 2.0  # alarm when the median latency doubled
MIN_PREDICTIONS = 20  # fewer than this in the window: the tests would say nothing
EXIT_DRIFT = 1
REFERENCE_HINT = ("python -m going_modular.deploy.monitor.reference --bundle BUNDLE --data TEST_IMAGES "
                  "--out reference.json")


class MonitorError(UserError, ValueError):
    """The monitor cannot check this log (empty, another model's, no reference...): one line says why."""


# -- tests (NumPy + math; checked against SciPy in the tests) ------------------------------------
def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (the KS statistic's limit, times sqrt(n))."""
    if x <= 0.18:
        return 1.0
    terms = sum((-1) ** (k - 1) * math.exp(-2 * k * k * x * x) for k in range(1, 101))
    return min(1.0, max(0.0, 2 * terms))


def ks_2samp(a, b, n_b: int | None = None) -> tuple[float, float]:
    """(D, asymptotic p-value) of the two-sample Kolmogorov-Smirnov test: Kolmogorov's limit
    distribution at sqrt(n m / (n + m)) D, slightly above the exact p-value at these sizes (fewer
    alarms, never more). n_b: the size of the sample `b` stands for (a reference kept as
    quantiles), default len(b)."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    x = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, x, "right") / len(a) - np.searchsorted(b, x, "right") / len(b))))
    n, m = len(a), n_b or len(b)
    return d, kolmogorov_sf(math.sqrt(n * m / (n + m)) * d)


def mann_whitney_greater(a, b) -> tuple[float, float]:
    """(U / (n m), one-sided p-value) of the Mann-Whitney U test that `a` tends to exceed `b`:
    U / (n m) estimates P(a value of a > a value of b), 0.5 when neither is shifted. Normal
    approximation with the tie and continuity corrections. A reference kept as quantiles counts as
    its SAMPLE_SIZE values (fewer than it stands for: a more cautious test)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n, m = len(a), len(b)
    _, inverse, counts = np.unique(np.concatenate([a, b]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # average ranks of ties, from 1
    u = float(ranks[:n].sum() - n * (n + 1) / 2)
    total = n + m
    variance = n * m / 12 * (total + 1 - float((counts ** 3 - counts).sum()) / (total * (total - 1)))
    if variance <= 0:
        return u / (n * m), 1.0
    z = (u - n * m / 2 - 0.5) / math.sqrt(variance)
    return u / (n * m), 0.5 * math.erfc(z / math.sqrt(2))


def _gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x) (series below a + 1, else a continued fraction)."""
    if x <= 0:
        return 1.0
    log_prefix = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    tiny = 1e-300
    b, c, d = x + 1 - a, 1 / tiny, 1 / (x + 1 - a)
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_prefix) * h)


def chi2_sf(statistic: float, dof: int) -> float:
    return _gamma_q(dof / 2, statistic / 2) if dof > 0 else 1.0


def chi2_2xk(counts_a, counts_b) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, p-value) of Pearson's chi-square test that two count vectors
    share one distribution (categories empty in both dropped)."""
    table = np.array([counts_a, counts_b], dtype=np.float64)
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2 or (table.sum(1) == 0).any():
        return 0.0, 0, 1.0
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    return statistic, dof, chi2_sf(statistic, dof)


def fisher_greater(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """One-sided p-value of Fisher's exact test that sample a's rate (k_a of n_a) exceeds b's."""
    total, successes = n_a + n_b, k_a + k_b

    def log_pmf(k: int) -> float:
        return (math.lgamma(successes + 1) - math.lgamma(k + 1) - math.lgamma(successes - k + 1)
                + math.lgamma(total - successes + 1) - math.lgamma(n_a - k + 1)
                - math.lgamma(total - successes - n_a + k + 1)
                - (math.lgamma(total + 1) - math.lgamma(n_a + 1) - math.lgamma(n_b + 1)))

    top = min(successes, n_a)
    return min(1.0, sum(math.exp(log_pmf(k)) for k in range(k_a, top + 1)))


# -- checks ----------------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    test: str
    statistic: float | None
    p_value: float | None  # None: not a statistical test (latency) or skipped
    threshold: float | None  # alarm below it (p-value) or, for latency, above it (ratio)
    drifted: bool
    detail: str
    window: list | None = None  # the values compared, for the report
    reference: list | None = None

    @property
    def skipped(self) -> bool:
        return self.statistic is None

    def result(self) -> str:
        """The statistic, its threshold and what it means, in words."""
        if self.skipped:
            return self.detail
        if self.p_value is None:
            measure = f"{self.test} {self.statistic:.2f} (alarm above {self.threshold:g})"
        else:
            measure = f"{self.test} {self.statistic:.3f}, p={self.p_value:.2g} (alarm below {self.threshold:.2g})"
        return f"{measure}; {self.detail}"

    def line(self) -> str:
        flag = "skip " if self.skipped else "DRIFT" if self.drifted else "ok   "
        return f"{flag} {self.name:<13} {self.result()}"


NUMERIC = (("confidence", "prob", lambda r: r.get("prob")), ("ood score", "ood_score", lambda r: r.get("ood_score")),
           ("brightness", "brightness", lambda r: r.get("brightness")),
           ("contrast", "contrast", lambda r: r.get("contrast")), ("aspect ratio", "aspect", aspect))


def run_checks(records: list[dict], reference: dict, window: int = DEFAULT_WINDOW, alpha: float = DEFAULT_ALPHA,
               latency_factor: float = LATENCY_FACTOR) -> tuple[list[Check], list[dict]]:
    """(checks, the window's records): the latest `window` of `records` (one model's, oldest first)
    against `reference`. Raises MonitorError when there are fewer than MIN_PREDICTIONS."""
    if len(records) < MIN_PREDICTIONS:
        raise MonitorError(f"only {len(records)} predictions to check; the monitor needs at least {MIN_PREDICTIONS}")
    recent = records[-window:]
    n = len(recent)
    samples = reference["samples"]
    planned = []
    if reference.get("unknown") is not None and all(r.get("known") is not None for r in recent):
        planned.append("unknown")
    planned.append("labels")
    planned += [name for name, key, _ in NUMERIC if samples.get(key)]
    each = alpha / len(planned)
    checks = []

    if "unknown" in planned:
        k = sum(r["known"] is False for r in recent)
        k0, n0 = reference["unknown"], reference["images"]
        p = fisher_greater(k, n, k0, n0)
        checks.append(Check("unknown rate", "Fisher exact, rate", k / n, p, each, p < each,
                            f"{k / n:.1%} of {n} flagged unknown vs {k0 / n0:.1%} of the reference's {n0}"))
    else:
        checks.append(Check("unknown rate", "", None, None, None, False,
                            "no open-set score in the log or the reference"))

    names = list(reference["labels"])
    counts = dict.fromkeys(names, 0)
    for r in recent:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    ref_counts = [reference["labels"].get(c, 0) for c in counts]
    statistic, dof, p = chi2_2xk(list(counts.values()), ref_counts)
    top = max(counts, key=counts.get)
    ref_share = reference["labels"].get(top, 0) / reference["images"]
    checks.append(Check("label mix", f"chi-square ({dof} dof)", statistic, p, each, p < each,
                        f"most predicted: {top} {counts[top] / n:.0%} vs {ref_share:.0%} in the reference",
                        window=list(counts.items()), reference=ref_counts))

    for name, key, get in NUMERIC:
        if name not in planned:
            checks.append(Check(name, "", None, None, None, False, "not in the reference"))
            continue
        # Rounded as the reference was: a tie (many photos are 4:3) must stay a tie.
        values = [round(v, SAMPLED[key]) for v in map(get, recent) if v is not None]
        if len(values) < MIN_PREDICTIONS:
            checks.append(Check(name, "", None, None, None, False, f"only {len(values)} logged values"))
            continue
        if key == "ood_score":  # directional: only a rise means traffic the model finds unfamiliar
            statistic, p = mann_whitney_greater(values, samples[key])
            test = "Mann-Whitney P(higher)"
        else:
            (statistic, p), test = ks_2samp(values, samples[key], n_b=reference["images"]), "KS D"
        checks.append(Check(name, test, statistic, p, each, p < each,
                            f"median {statistics.median(values):.3g} vs {statistics.median(samples[key]):.3g}",
                            window=values, reference=samples[key]))

    baseline = [r["latency"] for r in records[:min(window, len(records) - n)] if r.get("latency") is not None]
    latest = [r["latency"] for r in recent if r.get("latency") is not None]
    if len(baseline) >= MIN_PREDICTIONS and latest:
        before, now = statistics.median(baseline), statistics.median(latest)
        ratio = now / before if before > 0 else math.inf
        checks.append(Check("latency", "median ratio", ratio, None, latency_factor, ratio > latency_factor,
                            f"median {now * 1000:.1f} ms vs {before * 1000:.1f} ms over the log's first "
                            f"{len(baseline)} predictions", window=latest, reference=baseline))
    else:
        checks.append(Check("latency", "", None, None, None, False,
                            f"needs {MIN_PREDICTIONS}+ logged predictions before the window to compare with"))
    return checks, recent


# -- reference and log ------------------------------------------------------------------------
def load_reference(bundle: Path | None, reference: Path | None) -> tuple[dict, str, str]:
    """(reference, its model id, where it came from): --reference FILE, else the bundle's metadata."""
    if reference is not None:
        try:
            document = json.loads(Path(reference).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise MonitorError(f"cannot read the reference {reference}: {e}") from e
        if not isinstance(document, dict) or document.get("format") != REFERENCE_FORMAT:
            raise MonitorError(f"{reference} is not a FoodVision reference (format {REFERENCE_FORMAT})")
        if bundle is not None and bundle_model_id(bundle) != document.get("model_id"):
            raise MonitorError(f"{reference} is the reference of model {document.get('model_id')}, "
                               f"not of {bundle} ({bundle_model_id(bundle)})")
        return document, document.get("model_id"), str(reference)
    from going_modular.deploy.bundle import open_session

    _, meta = open_session(bundle, num_threads=1)
    if REFERENCE_KEY not in meta:
        raise MonitorError(f"{bundle} was exported without a reference; compute one with `{REFERENCE_HINT}` "
                           f"and pass --reference")
    return meta[REFERENCE_KEY], bundle_model_id(bundle), f"{bundle.name} (embedded)"


def model_records(records: list[dict], model: str) -> tuple[list[dict], dict[str, int]]:
    """The records of `model`, and how many records each other model id has."""
    mine, others = [], {}
    for r in records:
        if r.get("model_id") == model:
            mine.append(r)
        else:
            others[str(r.get("model_id"))] = others.get(str(r.get("model_id")), 0) + 1
    return mine, others


# -- report ----------------------------------------------------------------------------------
def _svg_histograms(window: list, reference: list, bins: int = 20, width: int = 320, height: int = 90) -> str:
    lo, hi = min(min(window), min(reference)), max(max(window), max(reference))
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    shapes = []
    for values, colour in ((reference, "#888"), (window, "#d62728")):
        share = np.histogram(values, edges)[0] / len(values)
        peak = max(share.max(), 1e-9)
        points = " ".join(f"{i * width / bins:.1f},{height - s / peak * (height - 4):.1f} "
                          f"{(i + 1) * width / bins:.1f},{height - s / peak * (height - 4):.1f}"
                          for i, s in enumerate(share))
        shapes.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
    return (f'<svg width="{width}" height="{height + 16}" role="img">{"".join(shapes)}'
            f'<text x="0" y="{height + 14}" font-size="11">{lo:.3g}</text>'
            f'<text x="{width}" y="{height + 14}" font-size="11" text-anchor="end">{hi:.3g}</text></svg>')


def write_report(path: Path, checks: list[Check], log_path: Path, source: str, model: str, n: int) -> Path:
    """An HTML page: the verdict, one row per check, the window's and the reference's distributions."""
    drifted = [c.name for c in checks if c.drifted]
    verdict = f"DRIFT: {', '.join(drifted)}" if drifted else "no drift"
    rows = []
    for c in checks:
        figure = ""
        if c.window and c.reference and c.name == "label mix":
            figure = "<br>".join(f"{html.escape(label)}: {w} / {r}"
                                 for (label, w), r in zip(c.window, c.reference, strict=True))
        elif c.window and c.reference:
            figure = _svg_histograms(c.window, c.reference)
        status = "skipped" if c.skipped else "DRIFT" if c.drifted else "ok"
        rows.append(f"<tr class='{status}'><td>{status}</td><td>{html.escape(c.name)}</td>"
                    f"<td>{html.escape(c.result())}</td><td>{figure}</td></tr>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>FoodVision drift report</title>
<style>body{{font-family:sans-serif;margin:2em}} td{{border-top:1px solid #ddd;padding:4px 8px;vertical-align:top}}
tr.DRIFT td:first-child{{color:#d62728;font-weight:bold}} tr.skipped{{color:#888}}</style></head><body>
<h1>FoodVision drift report: {html.escape(verdict)}</h1>
<p>Log {html.escape(str(log_path))}: the latest {n} predictions of model {html.escape(model)},
against the reference {html.escape(source)}. Curves: <span style="color:#888">reference</span>,
<span style="color:#d62728">latest window</span> (label mix: window / reference counts).</p>
<table><tr><th></th><th>check</th><th>result</th><th>distributions</th></tr>{"".join(rows)}</table>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


# -- command line ------------------------------------------------------------------------------
def get_args_parser() -> argparse.ArgumentParser:
    from going_modular.deploy.predictor import DEFAULT_BUNDLE

    p = argparse.ArgumentParser(prog="python -m going_modular.deploy.monitor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", required=True, type=Path, help="the prediction log (its rotated files are read too)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="the latest predictions to check")
    p.add_argument("--bundle", type=Path, default=None,
                   help=f"the bundle that wrote the log: its model id and embedded reference "
                        f"(default: {DEFAULT_BUNDLE})")
    p.add_argument("--reference", type=Path, default=None,
                   help="a reference JSON from `python -m going_modular.deploy.monitor.reference` instead")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help="false-alarm rate of a window, all checks together")
    p.add_argument("--latency-factor", type=float, default=LATENCY_FACTOR,
                   help="alarm when the median latency exceeds the log's first predictions' by this factor")
    p.add_argument("--report", type=Path, default=None, help="write an HTML report here")
    return p


def main(argv=None) -> int:
    from going_modular.deploy.predictor import DEFAULT_BUNDLE

    args = get_args_parser().parse_args(argv)
    if args.window < MIN_PREDICTIONS:
        raise MonitorError(f"--window must be at least {MIN_PREDICTIONS}")
    if not 0 < args.alpha < 1:
        raise MonitorError("--alpha must be between 0 and 1")
    bundle = args.bundle or (None if args.reference else DEFAULT_BUNDLE)
    reference, model, source = load_reference(bundle, args.reference)
    try:
        contents = read_log(args.log)
    except OSError as e:  # no log (yet), or a folder: say so in one line, exit 2
        raise MonitorError(str(e)) from e
    if not contents.records:
        raise MonitorError(f"{args.log} holds no predictions ({contents.skipped} other lines)")
    records, others = model_records(contents.records, model)
    if not records:
        found = ", ".join(f"{m} ({k})" for m, k in others.items())
        raise MonitorError(f"{args.log} holds predictions of model {found}, not of {model} (the reference's "
                           f"{source}): pass the --bundle or --reference of the model that wrote it")
    notes = []
    if others:
        notes.append(f"ignored {sum(others.values())} predictions of other models ({', '.join(others)})")
    if contents.skipped:
        notes.append(f"skipped {contents.skipped} lines ({contents.invalid} torn or not JSON, "
                     f"{contents.foreign} foreign)")
    if len(records) < args.window:
        notes.append(f"the log holds {len(records)} predictions of this model, fewer than --window {args.window}: "
                     f"checking them all")
    checks, recent = run_checks(records, reference, args.window, args.alpha, args.latency_factor)
    print(f"monitor: latest {len(recent)} predictions of model {model} in {args.log} vs reference {source} "
          f"({reference['images']} images)")
    for note in notes:
        print(f"note: {note}")
    for check in checks:
        print(check.line())
    drifted = [c.name for c in checks if c.drifted]
    if args.report:
        try:
            print(f"report: {write_report(args.report, checks, args.log, source, model, len(recent))}")
        except OSError as e:  # the verdict still counts: cron must hear about drift without its report
            print(f"warning: cannot write the report {args.report} ({e.strerror or e})", file=sys.stderr)
    print(f"DRIFT: {', '.join(drifted)}" if drifted else "no drift")
    return EXIT_DRIFT if drifted else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
