"""Routing policy benchmark and off-policy evaluation.

- ``logged`` (LoggedFeedback) → ``ope`` (IPS, SNIPS, DM, DR; bootstrap CIs, ESS) → ``offpolicy`` (on a
  history, validation against the simulator's truth) → ``ope_cli`` (``payroute evaluate``).
- ``policies`` (interface, static baselines, oracle), ``adaptive`` (success rate, discounted Thompson),
  ``model_policies`` (model greedy, payroute) → ``stream`` (common random numbers) → ``harness`` →
  ``metrics`` → ``scenarios`` + ``bench`` → ``report``/``plots`` → ``cli`` (``payroute bench``).
"""
