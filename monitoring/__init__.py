"""Monitoring: drift statistics (pure), the DriftMonitor, metric definitions, Prometheus and
Grafana files."""
