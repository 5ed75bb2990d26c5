"""payroute.serving: ranker, BentoML scoring service, client and dispatcher."""
