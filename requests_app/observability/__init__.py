"""Health, readiness and Prometheus metrics (README: "Health and metrics")."""
