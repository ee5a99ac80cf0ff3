"""Statistics, pictures and pages over datasets and runs: the dataset audit, figures, the report, the memory plan."""
