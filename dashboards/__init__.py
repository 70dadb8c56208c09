"""Grafana dashboards generated from code, and their upload."""
