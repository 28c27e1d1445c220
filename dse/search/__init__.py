"""Optuna search under an accuracy-loss budget: static space, seeds, racing objective, run directory, hold-out check.

Entry point: :func:`run_search` (see :mod:`dse.search.study`); the model-dependent context is built by
:func:`dse.search.context.build_context` from a budget file.
"""
from dse.search.space import SearchSpace
from dse.search.study import SearchContext, SearchSettings, run_search

__all__ = ["SearchSpace", "SearchContext", "SearchSettings", "run_search"]
