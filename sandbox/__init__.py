"""Sandbox PSPs: loopback HTTP servers driven by the simulator world, with a charge ledger."""
