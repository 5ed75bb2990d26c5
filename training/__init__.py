"""payroute.training: approval and cost models, calibration, evaluation and MLflow registry."""
