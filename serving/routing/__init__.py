"""Routing engine: eligibility, objective, Thompson-sampling bandit, propensities, cascade order."""
