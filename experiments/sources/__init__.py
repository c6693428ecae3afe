"""Data sources, one module each: what a source holds, read into a plan (sources.plan) that
experiments.prepare decodes into the cache. The LSUN, folder, .npy and arrays plans are still in
experiments.prepare."""
