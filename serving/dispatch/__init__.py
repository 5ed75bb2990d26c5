"""Fallback dispatcher: walks a ranking across PSPs, never double-charges, reports every outcome."""
