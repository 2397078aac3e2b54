"""Training: Ray Tune search over scikit-learn model families, tracked and registered in MLflow."""
