"""payroute.simulator: the seeded payment world (PSPs, issuers, incidents, fees, chargebacks)."""
