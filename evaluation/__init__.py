"""Routing policy benchmark and off-policy evaluation."""
