# gunicorn's settings for the portal's web container (deploy/Dockerfile, docker-compose.yml): the portal on port
# 8000, the access log on stdout, and a logger that keeps the sign-in callback's authorization code out of both
# logs (portal/logs.py).
bind = "0.0.0.0:8000"  # the container's port; the ingress is in front
workers = 3
accesslog = "-"
logger_class = "portal.logs.GunicornLogger"


def child_exit(server, worker):  # noqa: ARG001 - gunicorn's hook signature
    """With PROMETHEUS_MULTIPROC_DIR (README: "Health and metrics"), a worker that exits leaves its counters in
    the directory for /metrics to keep adding up; this marks its live gauges dead so they stop counting."""
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
