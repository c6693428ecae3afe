"""Data sources, one module each (lsun, folder, npy, arrays, tfds, keras): what a source holds,
read into a plan (sources.plan: which items, in which split, with which label) that
experiments.prepare decodes into the cache. A new source is a module with plan(data, root,
scratch), named in prepare.PLANS."""
