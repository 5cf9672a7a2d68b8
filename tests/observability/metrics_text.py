"""Reading a Prometheus scrape in tests, with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, frozenset[tuple[str, str]]]


class Scrape:
    """Every sample of one scrape, by name and labels."""

    def __init__(self, text: str) -> None:
        self.samples: dict[Key, float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                self.samples[key] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels, 0 when absent (a counter not yet counted)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample of `name` whose labels include these."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def buckets(self, name: str, **labels: str) -> dict[str, float]:
        """A histogram's cumulative buckets by their `le` bound."""
        wanted = set(labels.items())
        out: dict[str, float] = {}
        for (n, ls), value in self.samples.items():
            if n == f"{name}_bucket" and wanted <= ls:
                le = dict(ls)["le"]
                out[le] = out.get(le, 0.0) + value
        return out


def delta(after: Scrape, before: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)
