"""The run's web surface: the dashboard, the JSON API, /healthz, /metrics and server-sent events."""
