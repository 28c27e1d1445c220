"""Budget texts shared by the CLI tests."""

# The smallest search that runs end to end: 40 images, 3 trials, one process, one fidelity, one hold-out check.
TINY_BUDGET = """
[data]
images = 40
[search]
n_trials = 3
workers = 1
racing = [0]
n_holdout = 1
"""
