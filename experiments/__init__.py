"""The experiment harness: configuration, data sources, paired runs, statistics and figures."""
