"""payroute.features: feature declarations, offline builder and online store from one definition."""
