"""The scale-to-zero section: the activator's figures (make bench-activator's, run as make
bench's activator part), as that command prints them, with how they were measured."""

from __future__ import annotations

from bench.comparisons.compare_activator import report
from bench.report.results import ActivatorPart


def activator_lines(part: ActivatorPart) -> list[str]:
    figures = part.figures
    if "warm" not in figures:
        return [f"- {note}" for note in figures.get("notes", ["no figures"])]
    return [
        "The real activator alone on its core; the real sidecar (apiKey, log off), the nginx "
        "stand-in for TF Serving and the load on the other. A ModelServing and its Deployment "
        "on a KWOK node whose pod addresses this machine serves, no operator; the sidecar "
        "answers at every pod address at once (a pod ready at once). The activator's share of "
        "an answer from zero is the answer's time minus the pod's own ready time (the scale "
        "at 1 to the pod Ready, as the API server reports them): target 50 ms. "
        "`make bench-activator` runs this part alone.",
        "",
        "```",
        report(figures),
        "```",
    ]
