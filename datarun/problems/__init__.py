"""Problems: native kits (problem.toml), RAMP kits (problem.py), the test split and the CV
folds frozen at registration, and the workflows that say which files a submission holds."""
