"""The `snnkernels study` experiment: data, arms, training, attacks, statistics and the report."""
