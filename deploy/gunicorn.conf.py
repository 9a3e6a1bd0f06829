# gunicorn's settings for the portal's web container (deploy/Dockerfile, docker-compose.yml): the portal on port
# 8000, the access log on stdout, and a logger that keeps the sign-in callback's authorization code out of both
# logs (portal/logs.py).
bind = "0.0.0.0:8000"  # the container's port; the ingress is in front
workers = 3
accesslog = "-"
logger_class = "portal.logs.GunicornLogger"
